"""Random keys come from roles, never from state.

A seed is split once into named keys (``fold_in`` of a fixed role number); every step folds in the step
number. The twins share every key but the perturbation key, which only the perturbation uses.
"""

import jax

ROLES = {"init": 0, "data": 1, "augment": 2, "perturb": 3, "eval": 4, "init_stats": 5}


def role_keys(seed: int, perturb_seed: int = -1) -> dict[str, jax.Array]:
  """``{role: key}`` for ``seed``; ``perturb_seed >= 0`` derives the perturbation key from it alone."""
  root = jax.random.key(seed)
  keys = {role: jax.random.fold_in(root, i) for role, i in ROLES.items()}
  if perturb_seed is not None and perturb_seed >= 0:
    keys["perturb"] = jax.random.fold_in(jax.random.key(perturb_seed), ROLES["perturb"])
  return keys
