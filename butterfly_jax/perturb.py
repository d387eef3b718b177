"""Perturbations: theta' = theta + sigma * eps, with eps = (eps_hat * M) / ||eps_hat * M|| * E_init.

* ``eps_hat`` is the *batch* direction (minus the mean loss gradient on a fresh batch drawn with the
  perturbation key: one extra SGD step) or the *gaussian* direction (a draw from each layer's init
  distribution: a standard normal times the layer's init standard deviation, zero for layers initialised
  to constants such as norm scales and biases).
* ``M`` is a 0/1 mask over the weights: a regex on parameter paths (include, exclude), then optionally a
  random fraction of those, or one single weight.
* ``E_init`` is the expected L2 norm of the masked parameters at initialisation, taken as the root of the
  expected squared norm, ``sqrt(sum over masked weights of E[theta_0^2])``, with ``E[theta_0^2]`` estimated per
  layer from ``perturb.init_draws`` initialisations. So the perturbation has L2 norm ``sigma * E_init`` and
  ``sigma = 0.01`` is 1% of the network's size at init (of the masked part's size).
"""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from butterfly_jax import tree_math
from butterfly_jax.config import ConfigError


class PerturbationError(ValueError):
  """The perturbation cannot be built (e.g. its direction is zero on the mask)."""


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


_SINGLE = re.compile(r"^(?P<path>[^\[\]]+)\[(?P<index>[\d,\s]*)\]$")


def effective_exclude(mask_cfg, finetune: bool) -> str:
  """The exclusion regex applied: ``exclude``, joined when fine-tuning by ``exclude_finetune``."""
  parts = [mask_cfg.exclude] + ([mask_cfg.get("exclude_finetune", "")] if finetune else [])
  parts = [p for p in parts if p]
  return parts[0] if len(parts) == 1 else "|".join(f"(?:{p})" for p in parts)


def build_mask(params, mask_cfg, key, finetune: bool = False):
  """A pytree of float32 0/1 arrays shaped like ``params``; raises ConfigError for a mask that selects nothing.
  ``finetune``: also exclude ``mask_cfg.exclude_finetune`` (:func:`effective_exclude`)."""
  paths = tree_math.flat_paths(params)
  leaves, treedef = jax.tree_util.tree_flatten(params)
  include = re.compile(mask_cfg.include)
  excluded = effective_exclude(mask_cfg, finetune)
  exclude = re.compile(excluded) if excluded else None
  selected = [bool(include.fullmatch(p)) and not (exclude and exclude.fullmatch(p)) for p in paths]
  if not any(selected):
    raise ConfigError(f"perturb.mask: include={mask_cfg.include!r} exclude={excluded!r} selects no "
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


def _single_weight_position(single, paths, leaves, sizes, selected) -> int:
  m = _SINGLE.match(single.strip())
  if not m:
    raise ConfigError(f"perturb.mask.single: expected '', 'random' or 'path[i,j,...]' such as "
                      f"'{paths[0]}[{','.join('0' * 1 for _ in leaves[0].shape)}]', got {single!r}")
  path = m.group("path").strip()
  if path not in paths:
    raise ConfigError(f"perturb.mask.single: no parameter {path!r}; parameter paths are: {', '.join(paths)}")
  i = paths.index(path)
  index = tuple(int(v) for v in m.group("index").split(",") if v.strip())
  shape = leaves[i].shape
  if len(index) != len(shape) or any(not 0 <= a < d for a, d in zip(index, shape)):
    raise ConfigError(f"perturb.mask.single: index {index} is not inside {path} of shape {tuple(shape)}")
  if not selected[i]:
    raise ConfigError(f"perturb.mask.single: {path} is excluded by perturb.mask.include/exclude")
  return int(sum(sizes[:i]) + np.ravel_multi_index(index, shape))


def expected_init_l2(stats: InitStats, mask) -> float:
  """sqrt(sum over masked weights of E[theta_0^2])."""
  per_leaf = jax.tree_util.tree_map(lambda ms, m: ms * float(jnp.sum(m)), stats.mean_square, mask)
  return float(np.sqrt(sum(jax.tree_util.tree_leaves(per_leaf))))


def gaussian_direction(key, params, stats: InitStats):
  """A draw from each layer's init distribution, centred: N(0, Var_init) per weight."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  stds = jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.sqrt, stats.variance))
  keys = jax.random.split(key, len(leaves))
  out = [jax.random.normal(k, l.shape, l.dtype) * s for k, l, s in zip(keys, leaves, stds)]
  return jax.tree_util.tree_unflatten(treedef, out)


def batch_direction(loss_fn, params, batch):
  """Minus the mean gradient of the loss on ``batch``: the direction of one extra SGD step."""
  grads = jax.grad(loss_fn)(params, *batch)
  return jax.tree_util.tree_map(jnp.negative, grads)


@jax.jit
def normalised(direction, mask, target_norm):
  """(direction * mask) / ||direction * mask|| * target_norm, and ||direction * mask||."""
  masked = jax.tree_util.tree_map(jnp.multiply, direction, mask)
  norm = tree_math.tree_norm(masked)
  scale = jnp.where(norm > 0, target_norm / jnp.where(norm > 0, norm, 1.0), 0.0)
  return jax.tree_util.tree_map(lambda d: d * scale, masked), norm


@jax.jit
def apply(params, eps, sigma):
  """theta + sigma * eps; exactly theta when sigma == 0."""
  return jax.tree_util.tree_map(lambda p, e: jnp.where(sigma == 0, p, p + sigma * e), params, eps)
