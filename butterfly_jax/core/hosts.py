"""Several processes (hosts) under ``jax.distributed``: one run, the members axis over every process's devices.

Every process runs the same program; arrays whose members axis spans processes are gathered for the host
(:func:`fetch`, a collective: every process calls it at the same point); only the primary process (0) writes
the run directory. With one process these are plain ``jax.device_get`` and always-primary.
"""

import jax
import numpy as np


def is_primary() -> bool:
  return jax.process_index() == 0


def fetch(tree):
  """Host (numpy) copies of ``tree``'s arrays, gathered across processes where they span several."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  return jax.tree_util.tree_map(one, tree)


def sync(name: str) -> None:
  """Waits until every process reaches ``name`` (no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def agree(flag: bool) -> bool:
  """The primary process's ``flag``, on every process (a collective; itself with one process)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))
