"""Function-space comparisons of two networks: angular CKA of representations, logit ensembles, disagreement.

Angular CKA (Williams et al. 2021) is ``arccos`` of linear CKA, in radians: 0 means identical up to rotation
and isotropic scaling, pi/2 means unrelated. Two estimators (``eval.cka_estimator``):

* ``unbiased`` (the default; the authors' code, repsim's ``AngularCKA(use_unbiased_hsic=True)``): the
  centred Gram matrices ``K = X_c X_c^T`` and ``L = Y_c Y_c^T`` with their diagonals zeroed, ``K'`` and
  ``L'``; CKA is ``<K', L'>_F / (||K'||_F ||L'||_F)``. Dropping the ``k(x_i, x_i)`` terms removes the
  finite-sample bias towards 1 of high-dimensional features.
* ``biased``: the same without zeroing the diagonals, ``||X_c^T Y_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)``.

Both are computed from running sums (``sum x``, ``X^T X``, ``X^T Y``, and for the diagonal terms the sums of
``|x|^2 |y|^2``, ``|x|^2 y`` and ``|y|^2 x``), so any number of examples can be streamed through in batches
without an ``n x n`` matrix; the sums are kept in float64 on the host. The diagonal of a centred Gram matrix
is ``|x_i - mean|^2``, expanded around the raw sums (an exact identity; the tests check it against the
Gram matrices themselves).
"""

import numpy as np
from butterfly_jax.core import hosts, placement
from butterfly_jax.core.evaluate import model_input, padded_batches, take

CKA_ESTIMATORS = ("unbiased", "biased")


class CKAAccumulator:
  """Streams batches of paired features ``(x [b, d_x], y [b, d_y])``; :meth:`angle` gives angular CKA."""

  _SUMS = ("sx", "sy", "xtx", "yty", "xty", "nx", "ny", "nxx", "nyy", "nxy", "x_ny", "y_nx", "x_nx", "y_ny")

  def __init__(self, estimator: str = "unbiased"):
    if estimator not in CKA_ESTIMATORS:
      raise ValueError(f"eval.cka_estimator: unknown estimator {estimator!r}; allowed: {', '.join(CKA_ESTIMATORS)}")
    self.estimator = estimator
    self.n = 0
    for name in self._SUMS:
      setattr(self, name, None)

  def update(self, x, y):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    if len(x) != len(y):
      raise ValueError(f"angular_cka: x and y need the same number of examples, got {len(x)} and {len(y)}")
    nx, ny = np.sum(x * x, 1), np.sum(y * y, 1)   # squared norms of the raw examples
    parts = dict(sx=x.sum(0), sy=y.sum(0), xtx=x.T @ x, yty=y.T @ y, xty=x.T @ y, nx=nx.sum(), ny=ny.sum(),
                 nxx=nx @ nx, nyy=ny @ ny, nxy=nx @ ny, x_ny=ny @ x, y_nx=nx @ y, x_nx=nx @ x, y_ny=ny @ y)
    for name, v in parts.items():
      old = getattr(self, name)
      setattr(self, name, v if old is None else old + v)
    self.n += len(x)

  def _diagonal_products(self):
    """``sum_i |x_i - mx|^2 |y_i - my|^2`` and the same for (x, x) and (y, y), from the raw sums."""
    n, mx, my = self.n, self.sx / self.n, self.sy / self.n
    mxx, myy = mx @ mx, my @ my

    def dd(nab, a_nb, b_na, atb, ma, mb, na, nb, sa, sb, maa, mbb):
      # sum_i (|a_i|^2 - 2 a_i.ma + |ma|^2) (|b_i|^2 - 2 b_i.mb + |mb|^2)
      return (nab - 2 * mb @ b_na + mbb * na - 2 * ma @ a_nb + 4 * ma @ atb @ mb - 2 * mbb * (ma @ sa)
              + maa * nb - 2 * maa * (mb @ sb) + n * maa * mbb)

    xy = dd(self.nxy, self.x_ny, self.y_nx, self.xty, mx, my, self.nx, self.ny, self.sx, self.sy, mxx, myy)
    xx = dd(self.nxx, self.x_nx, self.x_nx, self.xtx, mx, mx, self.nx, self.nx, self.sx, self.sx, mxx, mxx)
    yy = dd(self.nyy, self.y_ny, self.y_ny, self.yty, my, my, self.ny, self.ny, self.sy, self.sy, myy, myy)
    return xy, xx, yy

  def cka(self) -> float:
    """Linear CKA (the cosine of :meth:`angle`); NaN for a constant representation."""
    if not self.n:
      raise ValueError("angular_cka: no examples")
    mx, my = self.sx / self.n, self.sy / self.n
    cxx = self.xtx - self.n * np.outer(mx, mx)
    cyy = self.yty - self.n * np.outer(my, my)
    cxy = self.xty - self.n * np.outer(mx, my)
    num, sxx, syy = np.sum(cxy * cxy), np.sum(cxx * cxx), np.sum(cyy * cyy)  # <K, L>, |K|^2, |L|^2
    if self.estimator == "unbiased":
      dxy, dxx, dyy = self._diagonal_products()
      num, sxx, syy = num - dxy, sxx - dxx, syy - dyy
    if not (sxx > 0 and syy > 0):
      return float("nan")  # a constant representation has no angle
    return float(num / np.sqrt(sxx * syy))

  def angle(self) -> float:
    c = self.cka()
    return c if np.isnan(c) else float(np.arccos(np.clip(c, -1.0, 1.0)))


def angular_cka(x, y, batch_size: int = 4096, estimator: str = "unbiased") -> float:
  """Angular linear CKA between ``x [n, d_x]`` and ``y [n, d_y]`` (radians; 0 = identical up to rotation
  and scale); ``estimator``: ``unbiased`` (the authors', repsim's default) or ``biased``."""
  acc = CKAAccumulator(estimator)
  x, y = np.asarray(x), np.asarray(y)
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"angular_cka: x and y need the same number of examples, got {x.shape[0]} and {y.shape[0]}")
  for i in range(0, len(x), batch_size):
    acc.update(x[i:i + batch_size], y[i:i + batch_size])
  return acc.angle()


def make_pair_batch(apply_fn, feature: str = "penultimate"):
  """Jitted ``(children, stats, inputs, mean, std) -> (logits [K, B, C], features [K, B, D])``; ``stats``:
  None, or the children's BatchNorm statistics stacked over K; ``mean``, ``std``: how uint8 images are normalised,
  None for inputs the model reads as they are (token ids: :func:`butterfly_jax.core.evaluate.model_input`).

  The children run one after another (``lax.map``), so each child's outputs do not depend on K; the
  comparisons are then made per pair on the host in float64 (:func:`compare_pairs`), so they do not
  either.
  """
  import jax
  import jax.numpy as jnp


  @jax.jit
  def pair_batch(children, stats, images, mean, std):
    x = model_input(images, mean, std)

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


def compare_pairs(pair_batch, children, images, labels, indices, batch_size, cka_examples, mean, std, stats=None,
                  cka_estimator: str = "unbiased", mesh=None):
  """Per pair (0, k), k >= 1: the logit-averaged ensemble's test accuracy and loss and the disagreement
  over ``indices``; angular CKA (``cka_estimator``) over the first ``cka_examples`` of them (0 = none). A list,
  one per k.
  ``stats``: the children's BatchNorm statistics (stacked over K), for models with BatchNorm; each batch is split
  over ``mesh``'s data axis, if it has one."""
  n = len(indices)
  labels_host = np.asarray(labels)
  ens_loss = ens_correct = disagree = None
  accs = None
  for start, padded, m in padded_batches(indices, batch_size):
    batch = placement.shard_batch(take((images,), padded)[0], mesh)
    logits, feats = hosts.fetch(pair_batch(children, stats, batch, mean, std))
    logits = np.asarray(logits, np.float64)[:, :m]
    y = labels_host[padded[:m]]
    ens = (logits[:1] + logits[1:]) / 2                              # [K-1, m, C]
    pred0 = logits[0].argmax(-1)
    batch_loss = -np.take_along_axis(_log_softmax(ens), y[None, :, None], -1)[..., 0].sum(-1)
    batch_correct = (ens.argmax(-1) == y[None]).sum(-1)
    batch_disagree = (logits[1:].argmax(-1) != pred0[None]).sum(-1)
    if ens_loss is None:
      ens_loss, ens_correct, disagree = (np.zeros(len(ens)) for _ in range(3))
      accs = [CKAAccumulator(cka_estimator) for _ in range(len(ens))]
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
