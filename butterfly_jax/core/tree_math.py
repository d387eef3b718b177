"""Small pure tree math on parameter pytrees: interpolation, distances, stacking along a members axis."""

import jax
import jax.numpy as jnp
import numpy as np


def interpolate(params_a, params_b, alpha):
  """The pytree ``(1 - alpha) * a + alpha * b``.

  Computed as ``a + alpha * (b - a)``, with ``alpha == 1`` returning ``b``: so ``alpha = 0`` gives ``a`` and
  ``alpha = 1`` gives ``b`` bitwise, and ``interpolate(a, a, alpha)`` is ``a`` bitwise for every alpha.
  """
  def lerp(a, b):
    mixed = a + jnp.asarray(alpha, a.dtype) * (b - a)
    return jnp.where(alpha == 1, b, mixed)
  return jax.tree_util.tree_map(lerp, params_a, params_b)


def sq_l2_distance(params_a, params_b):
  """Squared L2 distance between two pytrees (a jax scalar, float32)."""
  leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
      lambda a, b: jnp.sum(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32))), params_a, params_b))
  return sum(leaves, jnp.zeros((), jnp.float32))


@jax.jit
def _l2(params_a, params_b):
  return jnp.sqrt(sq_l2_distance(params_a, params_b))


def l2_distance(params_a, params_b) -> float:
  """L2 distance between two parameter pytrees of the same structure, as a Python float."""
  return float(_l2(params_a, params_b))


def tree_norm(params):
  """L2 norm of a pytree (a jax scalar)."""
  return jnp.sqrt(sum(jax.tree_util.tree_leaves(
      jax.tree_util.tree_map(lambda a: jnp.sum(jnp.square(a.astype(jnp.float32))), params)),
      jnp.zeros((), jnp.float32)))


@jax.jit
def _stack(trees):
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def stack(trees):
  """Stacks a list of equal-structure pytrees along a new leading (members) axis (one compiled program per
  tree structure, not one per leaf shape)."""
  return _stack(list(trees))


def unstack(tree, index: int):
  """Member ``index`` of a stacked pytree."""
  return jax.tree_util.tree_map(lambda x: x[index], tree)


def num_members(tree) -> int:
  return jax.tree_util.tree_leaves(tree)[0].shape[0]


def path_str(path) -> str:
  """'stage1_block0/conv1/kernel' for a jax key path."""
  parts = []
  for p in path:
    parts.append(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))))
  return "/".join(parts)


def flat_paths(tree) -> list[str]:
  return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def to_numpy(tree):
  return jax.tree_util.tree_map(np.asarray, tree)


def flat_dict(tree) -> dict:
  """``{'layer/param': leaf}`` for a nested parameter dict."""
  return {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten_like(tree, flat: dict):
  """``tree``'s structure with the leaves of ``flat`` (keyed as :func:`flat_dict`)."""
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), [flat[p] for p in flat_paths(tree)])
