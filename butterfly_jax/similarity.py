"""Function-space comparisons of two networks: angular CKA of representations, logit ensembles, disagreement.

Angular CKA (Williams et al. 2021) is ``arccos`` of linear CKA,
``CKA(X, Y) = ||X_c^T Y_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` with column-centred features, in
radians: 0 means identical up to rotation and isotropic scaling, pi/2 means unrelated. It is computed from
running sums (``sum x``, ``X^T X``, ``X^T Y``, ...), so any number of examples can be streamed through in
batches; the sums are kept in float64 on the host.
"""

import numpy as np


class CKAAccumulator:
  """Streams batches of paired features ``(x [b, d_x], y [b, d_y])``; :meth:`angle` gives angular CKA."""

  def __init__(self):
    self.n = 0
    self.sx = self.sy = self.xtx = self.yty = self.xty = None

  def update_sums(self, n, sx, sy, xtx, yty, xty):
    """Adds precomputed batch sums (e.g. from the device): count, column sums, X^T X, Y^T Y, X^T Y."""
    parts = [np.asarray(v, np.float64) for v in (sx, sy, xtx, yty, xty)]
    if self.sx is None:
      self.sx, self.sy, self.xtx, self.yty, self.xty = parts
    else:
      for name, v in zip(("sx", "sy", "xtx", "yty", "xty"), parts):
        setattr(self, name, getattr(self, name) + v)
    self.n += int(n)

  def update(self, x, y):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    if len(x) != len(y):
      raise ValueError(f"angular_cka: x and y need the same number of examples, got {len(x)} and {len(y)}")
    self.update_sums(len(x), x.sum(0), y.sum(0), x.T @ x, y.T @ y, x.T @ y)

  def angle(self) -> float:
    if not self.n:
      raise ValueError("angular_cka: no examples")
    mx, my = self.sx / self.n, self.sy / self.n
    cxx = self.xtx - self.n * np.outer(mx, mx)
    cyy = self.yty - self.n * np.outer(my, my)
    cxy = self.xty - self.n * np.outer(mx, my)
    denom = np.linalg.norm(cxx) * np.linalg.norm(cyy)
    if denom == 0:
      return float("nan")  # a constant representation has no angle
    return float(np.arccos(np.clip(np.sum(cxy * cxy) / denom, -1.0, 1.0)))


def angular_cka(x, y, batch_size: int = 4096) -> float:
  """Angular linear CKA between ``x [n, d_x]`` and ``y [n, d_y]`` (radians; 0 = identical up to rotation
  and scale)."""
  acc = CKAAccumulator()
  x, y = np.asarray(x), np.asarray(y)
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"angular_cka: x and y need the same number of examples, got {x.shape[0]} and {y.shape[0]}")
  for i in range(0, len(x), batch_size):
    acc.update(x[i:i + batch_size], y[i:i + batch_size])
  return acc.angle()


def make_pair_batch(apply_fn, feature: str = "penultimate"):
  """Jitted ``(children, stats, images_u8, mean, std) -> (logits [K, B, C], features [K, B, D])``; ``stats``:
  None, or the children's BatchNorm statistics stacked over K.

  The children run one after another (``lax.map``), so each child's outputs do not depend on K; the
  comparisons are then made per pair on the host in float64 (:func:`compare_pairs`), so they do not
  either.
  """
  import jax
  import jax.numpy as jnp

  from butterfly_jax.batches import normalize

  @jax.jit
  def pair_batch(children, stats, images, mean, std):
    x = normalize(images, mean, std)

    def outputs(member):
      params, st = member
      logits, features = apply_fn(params, x, st)
      if feature not in features:
        raise ValueError(f"eval.cka_feature: the model has no feature {feature!r}; it has {sorted(features)}")
      f = features[feature]
      return logits.astype(jnp.float32), f.reshape(f.shape[0], -1).astype(jnp.float32)

    return jax.lax.map(outputs, (children, stats))

  return pair_batch


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def compare_pairs(pair_batch, children, images, labels, indices, batch_size, cka_examples, mean, std, stats=None):
  """Per pair (0, k), k >= 1: the logit-averaged ensemble's test accuracy and loss and the disagreement
  over ``indices``; angular CKA over the first ``cka_examples`` of them (0 = none). A list, one per k.
  ``stats``: the children's BatchNorm statistics (stacked over K), for models with BatchNorm."""
  import jax.numpy as jnp

  from butterfly_jax import hosts
  n = len(indices)
  labels_host = np.asarray(labels)
  ens_loss = ens_correct = disagree = None
  accs = None
  for start in range(0, n, batch_size):
    idx = np.asarray(indices[start:start + batch_size])
    m = len(idx)
    padded = np.concatenate([idx, np.zeros(batch_size - m, idx.dtype)]) if m < batch_size else idx
    logits, feats = hosts.fetch(pair_batch(children, stats, images[jnp.asarray(padded)], mean, std))
    logits = np.asarray(logits, np.float64)[:, :m]
    y = labels_host[idx]
    ens = (logits[:1] + logits[1:]) / 2                              # [K-1, m, C]
    pred0 = logits[0].argmax(-1)
    batch_loss = -np.take_along_axis(_log_softmax(ens), y[None, :, None], -1)[..., 0].sum(-1)
    batch_correct = (ens.argmax(-1) == y[None]).sum(-1)
    batch_disagree = (logits[1:].argmax(-1) != pred0[None]).sum(-1)
    if ens_loss is None:
      ens_loss, ens_correct, disagree = (np.zeros(len(ens)) for _ in range(3))
      accs = [CKAAccumulator() for _ in range(len(ens))]
    ens_loss += batch_loss
    ens_correct += batch_correct
    disagree += batch_disagree
    cka_m = max(0, min(m, cka_examples - start))
    if cka_m:
      feats = np.asarray(feats, np.float64)[:, :cka_m]
      for j, acc in enumerate(accs):
        acc.update(feats[0], feats[j + 1])
  return [{"ensemble": {"accuracy": ens_correct[j] / n, "loss": ens_loss[j] / n},
           "disagreement": disagree[j] / n,
           "cka": acc.angle() if acc.n else None} for j, acc in enumerate(accs)]
