"""A classification task's metric (accuracy, F1, Matthews correlation) from confusion matrices, which add up over
batches, so an evaluation sums them on device and computes the metric once per network."""

import numpy as np

METRICS = ("accuracy", "f1", "matthews")


def confusion_matrix(predictions, labels, num_classes: int) -> np.ndarray:
  """int64 ``[C, C]``: entry ``[i, j]`` counts the examples of label ``i`` predicted ``j``. Confusion matrices
  of disjoint batches add up to the whole split's."""
  predictions, labels = np.asarray(predictions).ravel(), np.asarray(labels).ravel()
  if predictions.shape != labels.shape:
    raise ValueError(f"confusion_matrix: {predictions.size} predictions but {labels.size} labels")
  for name, x in (("predictions", predictions), ("labels", labels)):
    if x.size and (x.min() < 0 or x.max() >= num_classes):
      raise ValueError(f"confusion_matrix: {name} must lie in [0, {num_classes})")
  flat = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)
  return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def metric_from_confusion(metric: str, confusion) -> float:
  """``metric`` (:data:`METRICS`) of a confusion matrix (rows: labels, columns: predictions), as
  ``sklearn.metrics`` computes it: accuracy; binary F1 of class 1 (0 where class 1 is never predicted nor
  present); Matthews correlation in its multi-class form (0 where a marginal is constant)."""
  cm = np.asarray(confusion, np.float64)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.sum() <= 0:
    raise ValueError(f"metric_from_confusion: expected a square confusion matrix of some examples, got {cm.shape}")
  if metric == "accuracy":
    return float(np.trace(cm) / cm.sum())
  if metric == "f1":
    if cm.shape[0] != 2:
      raise ValueError(f"metric_from_confusion: f1 is binary (GLUE's MRPC and QQP), got {cm.shape[0]} classes")
    tp, fp, fn = cm[1, 1], cm[0, 1], cm[1, 0]
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0
  if metric == "matthews":
    true, pred, n, correct = cm.sum(1), cm.sum(0), cm.sum(), np.trace(cm)
    denominator = np.sqrt((n * n - pred @ pred) * (n * n - true @ true))
    return float((correct * n - true @ pred) / denominator) if denominator else 0.0
  raise ValueError(f"metric: unknown metric {metric!r}; expected one of {', '.join(METRICS)}")


def task_metric(metric: str, predictions, labels, num_classes: int | None = None) -> float:
  """``metric`` (:data:`METRICS`) of integer ``predictions`` against ``labels``; ``num_classes`` defaults to
  what the two hold (at least 2)."""
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  if num_classes is None:
    num_classes = max(2, int(max(predictions.max(initial=0), labels.max(initial=0))) + 1)
  return metric_from_confusion(metric, confusion_matrix(predictions, labels, num_classes))
