"""Evaluation: loss and error sums over a split, and loss/error barriers along linear paths (Eq. 1).

Every number is a sum over examples divided once by the number of examples (not a mean of batch means).
Text tasks (GLUE) also count each network's confusion matrix, summed over the batches like the other sums, from
which the task's metric follows (accuracy, F1, Matthews correlation: :func:`butterfly_jax.core.metrics.metric_from_confusion`)
and its barrier (:func:`pair_barriers`). Images are normalised with the training set's channel statistics;
other inputs (token ids: ``mean`` and ``std`` None) reach the model as they are.
The networks of a family's barrier curves are evaluated together: the K children themselves (the curves'
end points) and, for each child k >= 1, the interior points ``interpolate(child_0, child_k, alpha)``. They run
through ``lax.map`` over networks, ``eval.alpha_chunk`` at a time under ``vmap``, one data batch at a time.

Models with BatchNorm are evaluated with statistics re-estimated for each network of the table (children
included) on the same ``eval.norm_stats_examples`` unaugmented training examples, in batches of the training
batch size, before any evaluation (:func:`estimate_norm_stats`): an interpolated, perturbed or permuted
network's own statistics, as in Git Re-Basin's and the paper's evaluation of BatchNorm networks.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from butterfly_jax.core import hosts, metrics, placement, tree_math
from butterfly_jax.core.batches import normalize


def barrier_from_curve(alphas, values) -> float:
  """Eq. 1 on a grid: ``max_i values[i] - ((1 - alphas[i]) * values[0] + alphas[i] * values[-1])``.

  ``values[i]`` is measured at ``(1 - alphas[i]) * theta_A + alphas[i] * theta_B``; ``alphas`` run from 0 to 1.
  Includes the end points, where the difference is 0, so the barrier is >= 0. NaN if any value is NaN.
  """
  a = np.asarray(alphas, np.float64)
  v = np.asarray(values, np.float64)
  if a.ndim != 1 or a.shape != v.shape or len(a) < 2:
    raise ValueError(f"barrier_from_curve: alphas and values must be 1-D of the same length >= 2, "
                     f"got shapes {a.shape} and {v.shape}")
  if a[0] != 0 or a[-1] != 1:
    raise ValueError(f"barrier_from_curve: alphas must run from 0 to 1, got {a[0]} .. {a[-1]}")
  if not np.all(np.isfinite(v)):
    return float("nan")
  linear = v[0] + a * (v[-1] - v[0])
  return float(np.max(v - linear))


def alpha_grid(num_alphas: int) -> np.ndarray:
  return np.linspace(0.0, 1.0, num_alphas)


def network_table(num_children: int, alphas):
  """(a, b, alpha) per network to evaluate: the children, then each pair's interior points."""
  a, b, al = [], [], []
  for k in range(num_children):
    a.append(k), b.append(k), al.append(0.0)
  for k in range(1, num_children):
    for alpha in alphas[1:-1]:
      a.append(0), b.append(k), al.append(float(alpha))
  return np.asarray(a, np.int32), np.asarray(b, np.int32), np.asarray(al, np.float32)


def _pooled(moments):
  """Per-batch moments ``{"mean": [nb, C], "var": [nb, C]}`` (nested per layer) -> the moments of all the
  batches' examples together: the mean of the means, and the mean of the variances plus the variance of
  the means (equal batch sizes)."""
  if set(moments) == {"mean", "var"} and not isinstance(moments["mean"], dict):
    mean = jnp.mean(moments["mean"], 0)
    return {"mean": mean, "var": jnp.mean(moments["var"], 0) + jnp.mean(jnp.square(moments["mean"] - mean), 0)}
  return {k: _pooled(v) for k, v in moments.items()}


def model_input(inputs, mean, std):
  """What the model reads: uint8 images normalised with ``mean`` and ``std``; with both None (token ids), the
  inputs as they are."""
  return inputs if mean is None else normalize(inputs, mean, std)


def make_stats_estimator(moments_fn, alpha_chunk: int):
  """Jitted ``(children, a, b, alpha, images_u8 [nb, B, ...], mean, std) -> statistics`` of every network of
  the table (leaves stacked over its rows); ``moments_fn`` from :func:`butterfly_jax.models.make_moments`."""

  @jax.jit
  def estimate(children, a, b, alpha, images, mean, std):
    def fn(row):
      ia, ib, al = row
      params = tree_math.interpolate(tree_math.unstack(children, ia), tree_math.unstack(children, ib), al)
      _, moments = jax.lax.scan(lambda carry, imgs: (carry, moments_fn(params, model_input(imgs, mean, std))),
                                None, images)
      return _pooled(moments)
    return jax.lax.map(fn, (a, b, alpha), batch_size=alpha_chunk if alpha_chunk > 1 else None)

  return estimate


def estimate_norm_stats(estimator, children, table, images, indices, batch_size, mean, std, mesh=None):
  """BatchNorm statistics of every network of ``table`` on the training examples ``indices`` (a multiple
  of ``batch_size`` of them, unaugmented), leaves stacked over the table's rows; each batch split over
  ``mesh``'s data axis, if it has one (the moments are then all-reduced: the same statistics)."""
  if len(indices) % batch_size or not len(indices):
    raise ValueError(f"estimate_norm_stats: {len(indices)} examples are not a positive multiple of the batch "
                     f"size {batch_size}")
  idx = jnp.asarray(np.asarray(indices).reshape(-1, batch_size))
  a, b, alpha = (jnp.asarray(t) for t in table)
  return estimator(children, a, b, alpha, placement.shard_batch(images[idx], mesh, axis=1), mean, std)


EVAL_DTYPES = {"float32": jnp.float32, "float16": jnp.float16, "bfloat16": jnp.bfloat16}


def _cast(tree, dtype):
  """The floating leaves of ``tree`` as ``dtype`` (token ids and other integers as they are)."""
  return jax.tree_util.tree_map(lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, tree)


def make_eval_batch(apply_fn, alpha_chunk: int, num_classes: int | None = None, dtype: str = "float32"):
  """Jitted ``(children, a, b, alpha, stats, inputs, labels, weights, mean, std) -> (loss_sums, error_sums)``, with
  ``num_classes`` also ``confusion [networks, C, C]`` (the weighted counts of label i predicted j); ``stats``:
  None, or BatchNorm statistics stacked over the networks (:func:`estimate_norm_stats`); ``mean``, ``std``:
  :func:`model_input`. ``dtype`` (``eval.dtype``): each network is interpolated in float32, then its forward
  runs with parameters and inputs in that precision (``float16``: the authors' evaluation under CUDA autocast);
  the loss is computed from float32 logits."""
  compute = EVAL_DTYPES[dtype]

  def one_network(children, x, y, w):
    def fn(row):
      ia, ib, alpha, stats = row
      params = tree_math.interpolate(tree_math.unstack(children, ia), tree_math.unstack(children, ib), alpha)
      if compute != jnp.float32:
        params, x_in = _cast(params, compute), _cast(x, compute)
      else:
        x_in = x
      logits, _ = apply_fn(params, x_in, stats)
      logits = logits.astype(jnp.float32)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      predicted = jnp.argmax(logits, -1)
      wrong = (predicted != y).astype(jnp.float32)
      if num_classes is None:
        return jnp.sum(loss * w), jnp.sum(wrong * w)
      confusion = jnp.zeros(num_classes * num_classes, jnp.float32).at[y * num_classes + predicted].add(w)
      return jnp.sum(loss * w), jnp.sum(wrong * w), confusion.reshape(num_classes, num_classes)
    return fn

  @jax.jit
  def eval_batch(children, a, b, alpha, stats, images, labels, weights, mean, std):
    x = model_input(images, mean, std)
    fn = one_network(children, x, labels, weights)
    return jax.lax.map(fn, (a, b, alpha, stats), batch_size=alpha_chunk if alpha_chunk > 1 else None)

  return eval_batch


def padded_batches(indices, batch_size: int):
  """The examples ``indices`` in batches of ``batch_size``: ``(start, batch, m)`` with the batch's first ``m``
  indices real and the last batch padded with index 0 to the full size, so every batch has one shape (one
  compilation); the caller gives the padded examples no weight."""
  for start in range(0, len(indices), batch_size):
    idx = np.asarray(indices[start:start + batch_size])
    m = len(idx)
    yield start, (np.concatenate([idx, np.zeros(batch_size - m, idx.dtype)]) if m < batch_size else idx), m


@jax.jit
def take(arrays, idx):
  """Rows ``idx`` of each array of ``arrays``, in one compiled program (eager indexing compiles half a dozen
  small programs per array and shape)."""
  return tuple(x[idx] for x in arrays)


def evaluate_networks(eval_batch, children, table, images, labels, indices, batch_size, mean, std, progress=None,
                      stats=None, mesh=None):
  """Mean loss and error of each network of ``table`` over the examples ``indices`` (device arrays in), and
  where ``eval_batch`` counts them (:func:`make_eval_batch` with ``num_classes``) each network's confusion
  matrix over those examples, int64 ``[networks, C, C]``; ``stats``: the networks' BatchNorm statistics, for
  models with BatchNorm; each batch split over ``mesh``'s data axis, if it has one."""
  a, b, alpha = (jnp.asarray(t) for t in table)
  n = len(indices)
  sums = None
  for _, idx, m in padded_batches(indices, batch_size):
    w = np.ones(batch_size, np.float32)
    w[m:] = 0  # padded examples weigh 0
    batch = placement.shard_batch((*take((images, labels), idx), jnp.asarray(w)), mesh)
    out = hosts.fetch(eval_batch(children, a, b, alpha, stats, *batch, mean, std))
    out = [np.asarray(x, np.float64) for x in out]
    sums = out if sums is None else [s + x for s, x in zip(sums, out)]
    if progress is not None:
      progress(m)
  if len(sums) == 2:
    return sums[0] / n, sums[1] / n
  return sums[0] / n, sums[1] / n, np.rint(sums[2]).astype(np.int64)  # counts, each exact in float32 per batch


def family_curves(loss, err, num_children: int, alphas):
  """Splits ``evaluate_networks`` output into per-child means and per-pair curves (child 0 -> child k)."""
  inner = len(alphas) - 2
  out = {"child_loss": loss[:num_children], "child_error": err[:num_children], "curves": []}
  for k in range(1, num_children):
    sl = slice(num_children + (k - 1) * inner, num_children + k * inner)
    out["curves"].append({
        "loss": np.concatenate([[loss[0]], loss[sl], [loss[k]]]),
        "error": np.concatenate([[err[0]], err[sl], [err[k]]]),
    })
  return out


def add_metric_curves(curves, metric: str, confusion, num_children: int, alphas):
  """Adds the task metric (:data:`butterfly_jax.core.metrics.METRICS`) of each network, from its confusion matrix
  (``confusion [networks, C, C]``, the table's order), to one split's :func:`family_curves`: ``child_metric`` and
  each pair's ``curves[k - 1]["metric"]``. Returns ``curves``."""
  values = np.asarray([metrics.metric_from_confusion(metric, cm) for cm in confusion], np.float64)
  inner = len(alphas) - 2
  curves["child_metric"] = values[:num_children]
  for k in range(1, num_children):
    sl = slice(num_children + (k - 1) * inner, num_children + k * inner)
    curves["curves"][k - 1]["metric"] = np.concatenate([[values[0]], values[sl], [values[k]]])
  return curves


# The barriers of a pair's path, and the quantity whose Eq. 1 each is: loss and error as they are; the task metric
# (text tasks: accuracy, F1, Matthews correlation, where higher is better) read as an error, 1 - metric, which has
# the same barrier as -metric: how far the metric falls below the straight line between the two networks.
BARRIER_OF = {"loss": lambda v: v, "error": lambda v: v, "metric": lambda v: 1.0 - v}


def pair_barriers(curves_by_split, alphas, k):
  """``(barriers, path_finite)`` of a family's curves (``{split: family_curves(...)}``), lists over the pairs
  (0, k), k >= 1: the loss and error barriers per split (and, where the curves hold it, the task metric's:
  :data:`BARRIER_OF`), and per split whether the loss and error are finite at every point of the pair's path.
  Where they are not, every barrier of that split is NaN (null in results.json; the error of non-finite logits is
  arbitrary) and the flag says why: with finite end points, a network inside the path blew up."""
  barriers, path_finite = [], []
  for j in range(1, k):
    barrier, finite = {}, {}
    for split in ("train", "test"):
      curve = curves_by_split[split]["curves"][j - 1]
      finite[split] = bool(all(np.all(np.isfinite(np.asarray(curve[m], np.float64))) for m in ("loss", "error")))
      barrier[split] = {m: barrier_from_curve(alphas, of(np.asarray(curve[m], np.float64))) if finite[split]
                        else float("nan") for m, of in BARRIER_OF.items() if m in curve}
    barriers.append(barrier)
    path_finite.append(finite)
  return barriers, path_finite
