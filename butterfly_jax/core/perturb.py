"""Perturbations: theta' = theta + sigma * eps, with eps = (eps_hat * M) / ||eps_hat * M|| * E_init.

The definitions are the ICML paper's (its poster's formula); where it is silent, the authors' code
(``gsaltintas/lmc``) decides. BUILD_NOTES.md ("Definitions and recipes") compares every choice with both.

* ``eps_hat`` is the *batch* direction, ``perturb.batch_sign`` times the mean loss gradient on a fresh batch
  drawn with the perturbation key (``+1``, the default: ``theta + sigma * grad``, as the workshop appendix,
  the poster and the authors' ``get_batch_noise`` write it; ``-1``: one extra SGD step), or the *gaussian*
  direction (a draw from each layer's init distribution: a standard normal times the layer's init standard
  deviation).
* ``M`` is a 0/1 mask over the weights: a regex on parameter paths (include, exclude), then optionally a
  random fraction of those, or one single weight.
* ``E_init`` is ``sqrt(Var[theta_0 * M])``: the root of the sum over the masked weights of their init
  variances, the authors' ``get_all_init_l2s`` (``perturb.init_scale="variance"``). Per-layer variances are
  estimated from ``perturb.init_draws`` initialisations of the model (the authors compute them from each
  layer's init formula; the estimates agree to sampling error, which the tests bound). Parameters that
  start as constants (norm scales, biases, a ViT's class token) have variance 0: they add nothing to
  ``E_init`` and get no gaussian noise, the authors' ``get_init_stds(include_constant_params=False)``.
  ``perturb.constant_params=True`` gives them the authors' ``include_constant_params=True`` rule instead:
  the standard deviation of the next randomly initialised layer in the order the model uses its layers
  (projection shortcuts skipped), or ``1/sqrt(units)`` after the last one; it counts in ``E_init`` too.
  ``perturb.init_scale="mean_square"`` is the rule before the definitions' version 2 (``E[theta_0^2]``, so
  norm scales initialised to 1 counted), kept to reproduce old runs.

So the perturbation has L2 norm ``sigma * E_init`` and ``sigma = 0.01`` is 1% of the network's size at init
(of the masked part's size). ``perturb.normalize=False`` skips the normalisation, ``theta + sigma * eps_hat * M``
(the authors' ``normalize_perturb=false``, which their ResNet-20 scripts use: there ``sigma`` scales the raw
gradient like a learning rate, the workshop paper's definition).

``perturb.kind="ulp"`` is the floor below both: each masked weight moves ``sigma`` units in the last place of its
own value (:func:`ulp_steps`; ``sigma`` whole), so one weight moved by one ulp is the smallest perturbation a
float32 network can receive; there is no direction and no ``E_init``.
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from butterfly_jax.core import tree_math


class PerturbationError(ValueError):
  """The perturbation cannot be built (e.g. its direction is zero on the mask)."""


INIT_SCALES = ("variance", "mean_square")  # the rules of E_init (:func:`init_stds`): config.py's choices


@dataclasses.dataclass(frozen=True)
class InitStats:
  """Per-layer statistics of the initialisation: mean of theta^2 and variance across draws (numpy trees)."""
  mean_square: dict
  variance: dict


def init_stats(init_fn, key, draws: int) -> InitStats:
  """Estimates E[theta^2] and Var[theta] per layer from ``draws`` initialisations (variance is exactly 0
  for layers initialised to constants)."""
  total = total_sq = None
  for i in range(draws):
    p = init_fn(jax.random.fold_in(key, i))
    sq = jax.tree_util.tree_map(jnp.square, p)
    total = p if total is None else jax.tree_util.tree_map(jnp.add, total, p)
    total_sq = sq if total_sq is None else jax.tree_util.tree_map(jnp.add, total_sq, sq)
  n = float(draws)
  mean_square = jax.tree_util.tree_map(lambda s2: float(jnp.mean(s2) / n), total_sq)
  if draws > 1:
    variance = jax.tree_util.tree_map(
        lambda s, s2: float(jnp.mean(jnp.maximum(s2 - s * s / n, 0.0)) / (n - 1)), total, total_sq)
  else:
    variance = jax.tree_util.tree_map(lambda s, s2: float(jnp.mean(s2) - jnp.mean(s) ** 2), total, total_sq)
  return InitStats(mean_square, variance)


def init_stds(stats: InitStats, order: dict, constant_params: bool = False, fixed: float = 0.0,
              skip_next=("shortcut",)) -> dict:
  """Per-layer init standard deviations (a tree like ``stats.variance``), by the authors' ``get_init_stds``.

  Randomly initialised layers (variance > 0): the root of their variance, or ``fixed`` when it is > 0 (the
  authors' ViT and BERT take 0.02 for every layer). Layers initialised to constants: 0, or with
  ``constant_params`` the standard deviation of the next randomly initialised layer in ``order``
  (``{path: shape}`` in the order the model first uses its parameters,
  :func:`butterfly_jax.models.registry.param_order`) whose path names none of ``skip_next``, and
  ``1/sqrt(n)`` (``n`` the size of its last axis) when no random layer follows.
  """
  flat_var = tree_math.flat_dict(stats.variance)
  missing = set(flat_var) - set(order)
  if missing:
    raise ValueError(f"init_stds: parameters {sorted(missing)} are not in the parameter order")
  std, nxt = {}, None
  for path in reversed([p for p in order if p in flat_var]):
    var = float(flat_var[path])
    if var > 0:
      std[path] = float(fixed) if fixed > 0 else float(np.sqrt(var))
      if not any(word in path for word in skip_next):
        nxt = std[path]
    elif constant_params:
      units = order[path][-1] if order[path] else 1
      std[path] = nxt if nxt is not None else 1.0 / float(np.sqrt(units))
    else:
      std[path] = 0.0
  return tree_math.unflatten_like(stats.variance, std)


_SINGLE = re.compile(r"^(?P<path>[^\[\]]+)\[(?P<index>[\d,\s]*)\]$")


def effective_exclude(mask_cfg, finetune: bool) -> str:
  """The exclusion regex applied: ``exclude``, joined when fine-tuning by ``exclude_finetune``."""
  parts = [mask_cfg.exclude] + ([mask_cfg.get("exclude_finetune", "")] if finetune else [])
  parts = [p for p in parts if p]
  return parts[0] if len(parts) == 1 else "|".join(f"(?:{p})" for p in parts)


def build_mask(params, mask_cfg, key, finetune: bool = False):
  """A pytree of float32 0/1 arrays shaped like ``params``; raises PerturbationError for a mask that selects nothing.
  ``finetune``: also exclude ``mask_cfg.exclude_finetune`` (:func:`effective_exclude`)."""
  paths = tree_math.flat_paths(params)
  leaves, treedef = jax.tree_util.tree_flatten(params)
  include = re.compile(mask_cfg.include)
  excluded = effective_exclude(mask_cfg, finetune)
  exclude = re.compile(excluded) if excluded else None
  selected = [bool(include.fullmatch(p)) and not (exclude and exclude.fullmatch(p)) for p in paths]
  if not any(selected):
    raise PerturbationError(f"perturb.mask: include={mask_cfg.include!r} exclude={excluded!r} selects no "
                      f"parameter; parameter paths are: {', '.join(paths)}")
  sizes = [int(np.prod(l.shape)) for l in leaves]
  flat = np.concatenate([np.full(n, s, bool) for n, s in zip(sizes, selected)])
  candidates = np.flatnonzero(flat)
  single = mask_cfg.single
  if single:
    chosen = np.zeros_like(flat)
    if single == "random":
      chosen[candidates[int(jax.random.randint(key, (), 0, len(candidates)))]] = True
    else:
      chosen[_single_weight_position(single, paths, leaves, sizes, selected)] = True
    flat = chosen
  elif mask_cfg.fraction < 1.0:
    count = max(1, int(round(mask_cfg.fraction * len(candidates))))
    picked = np.asarray(jax.random.permutation(key, len(candidates)))[:count]
    flat = np.zeros_like(flat)
    flat[candidates[picked]] = True
  out, offset = [], 0
  for leaf, n in zip(leaves, sizes):
    out.append(jnp.asarray(flat[offset:offset + n].reshape(leaf.shape), jnp.float32))
    offset += n
  return jax.tree_util.tree_unflatten(treedef, out)


def parse_single_weight(single: str) -> tuple[str, tuple[int, ...]] | None:
  """``'path[i,j,...]'`` (``perturb.mask.single``, or a run's recorded ``perturb.weight``) as (path, index);
  None if it is not of that form."""
  m = _SINGLE.match(single.strip())
  if not m:
    return None
  return m.group("path").strip(), tuple(int(v) for v in m.group("index").split(",") if v.strip())


def _single_weight_position(single, paths, leaves, sizes, selected) -> int:
  parsed = parse_single_weight(single)
  if parsed is None:
    raise PerturbationError(f"perturb.mask.single: expected '', 'random' or 'path[i,j,...]' such as "
                      f"'{paths[0]}[{','.join('0' * 1 for _ in leaves[0].shape)}]', got {single!r}")
  path, index = parsed
  if path not in paths:
    raise PerturbationError(f"perturb.mask.single: no parameter {path!r}; parameter paths are: {', '.join(paths)}")
  i = paths.index(path)
  shape = leaves[i].shape
  if len(index) != len(shape) or any(not 0 <= a < d for a, d in zip(index, shape)):
    raise PerturbationError(f"perturb.mask.single: index {index} is not inside {path} of shape {tuple(shape)}")
  if not selected[i]:
    raise PerturbationError(f"perturb.mask.single: {path} is excluded by perturb.mask.include/exclude")
  return int(sum(sizes[:i]) + np.ravel_multi_index(index, shape))


def single_weight_name(mask) -> str | None:
  """The one weight a one-weight ``mask`` selects, as ``perturb.mask.single`` writes it (``'dense/kernel[628,4]'``),
  so a run that drew ``single='random'`` can be repeated, or its weight examined; None for any other mask."""
  chosen = [(path, np.argwhere(np.asarray(m) > 0)) for path, m in tree_math.flat_dict(mask).items()]
  chosen = [(path, idx) for path, idx in chosen if len(idx)]
  if len(chosen) != 1 or len(chosen[0][1]) != 1:
    return None
  path, idx = chosen[0]
  return f"{path}[{','.join(str(int(i)) for i in idx[0])}]"


def expected_init_l2(stats: InitStats, mask, stds=None, rule: str = "variance") -> float:
  """``E_init`` of the masked weights: ``sqrt(sum of std^2)`` over them (``rule="variance"``; ``stds`` from
  :func:`init_stds`, by default the plain init standard deviations) or the legacy
  ``sqrt(sum of E[theta_0^2])`` (``rule="mean_square"``)."""
  if rule == "mean_square":
    per_weight = stats.mean_square
  elif rule == "variance":
    per_weight = stats.variance if stds is None else jax.tree_util.tree_map(lambda s: s * s, stds)
  else:
    raise ValueError(f"perturb.init_scale: unknown rule {rule!r}; allowed: {', '.join(INIT_SCALES)}")
  per_leaf = jax.tree_util.tree_map(lambda v, m: float(v) * float(jnp.sum(m)), per_weight, mask)
  return float(np.sqrt(sum(jax.tree_util.tree_leaves(per_leaf))))


def gaussian_direction(key, params, stds):
  """A draw from each layer's init distribution, centred: ``N(0, std^2)`` per weight (``stds``: a tree of
  per-layer standard deviations, :func:`init_stds`; an :class:`InitStats` means the plain ones)."""
  if isinstance(stds, InitStats):
    stds = jax.tree_util.tree_map(np.sqrt, stds.variance)
  leaves, treedef = jax.tree_util.tree_flatten(params)
  std_leaves = jax.tree_util.tree_leaves(stds)
  keys = jax.random.split(key, len(leaves))
  # drawn in float32 also for bf16 parameters (train.param_dtype): the direction is normalised in float32
  out = [jax.random.normal(k, l.shape, jnp.promote_types(l.dtype, jnp.float32)) * s
         for k, l, s in zip(keys, leaves, std_leaves)]
  return jax.tree_util.tree_unflatten(treedef, out)


def batch_direction(loss_fn, params, batch, sign: int = 1):
  """``sign`` times the mean gradient of the loss on ``batch`` (``(x, y)``, or ``(x, y, dropout_key)`` for a
  gradient with dropout on): ``+1`` the paper's (and the authors') ``theta + sigma * grad``, ``-1`` the direction
  of one extra SGD step."""
  grads = jax.grad(loss_fn)(params, *batch)
  return grads if sign == 1 else jax.tree_util.tree_map(lambda g: -g, grads)


@jax.jit
def normalised(direction, mask, target_norm):
  """(direction * mask) / ||direction * mask|| * target_norm, and ||direction * mask||."""
  masked = jax.tree_util.tree_map(jnp.multiply, direction, mask)
  norm = tree_math.tree_norm(masked)
  scale = jnp.where(norm > 0, target_norm / jnp.where(norm > 0, norm, 1.0), 0.0)
  return jax.tree_util.tree_map(lambda d: d * scale, masked), norm


@jax.jit
def unnormalised(direction, mask):
  """``direction * mask`` without normalisation (``perturb.normalize=False``), and its norm."""
  out = jax.tree_util.tree_map(jnp.multiply, direction, mask)
  return out, tree_math.tree_norm(out)


@jax.jit
def ulp_steps(params, mask, n):
  """Each weight where ``mask`` is 1 moved ``n`` units in the last place of its own value (``n`` whole: > 0 toward
  +inf, < 0 toward -inf; ``perturb.kind="ulp"``): ``n`` applications of ``nextafter`` in the weight's own dtype, the
  smallest change a float can take, so ``n = 1`` on one weight is the smallest perturbation a network can receive.
  Exactly ``params`` when ``n == 0``."""
  n = jnp.asarray(n, jnp.int32)

  def one(p, m):
    toward = jnp.where(n > 0, jnp.inf, -jnp.inf).astype(p.dtype)
    moved = jax.lax.fori_loop(0, jnp.abs(n), lambda _, q: jnp.nextafter(q, toward), p)
    return jnp.where(m > 0, moved, p)
  return jax.tree_util.tree_map(one, params, mask)


def num_changed(params, reference) -> int:
  """How many weights of ``params`` differ from ``reference`` (a perturbation below half a weight's spacing rounds
  away: at small σ this counts the weights it actually moved)."""
  return int(sum(int(jnp.sum(a != b)) for a, b in zip(jax.tree_util.tree_leaves(params),
                                                        jax.tree_util.tree_leaves(reference))))


@jax.jit
def apply(params, eps, sigma):
  """theta + sigma * eps; exactly theta when sigma == 0.

  Parameters held in bf16 (``train.param_dtype``) stay bf16: ``theta + sigma * eps`` is computed in float32 and
  rounded to bf16 once, so a weight whose change is under half its bf16 spacing keeps its value (the authors'
  ``p.add_(noise)`` on bf16 OLMo weights; ``bench/bf16_perturbation.py`` measures how much survives).
  """
  def one(p, e):
    if p.dtype == jnp.float32:
      return jnp.where(sigma == 0, p, p + sigma * e)
    moved = (p.astype(jnp.float32) + sigma.astype(jnp.float32) * e.astype(jnp.float32)).astype(p.dtype)
    return jnp.where(sigma == 0, p, moved)
  return jax.tree_util.tree_map(one, params, eps)
