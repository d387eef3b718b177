"""Where a family's members live: a one-axis ``("members",)`` mesh over the devices that split them evenly,
the members' leading axis sharded across it and what every member reads (data, initial parameters) replicated.

Without a mesh (one device) every function leaves its input unchanged.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def member_mesh(num_members: int, max_devices: int = 0, devices=None) -> Mesh | None:
  """A one-axis ``("members",)`` mesh over the most devices (at most ``max_devices``; 0 = all; under
  ``jax.distributed``, every process's) that divide ``num_members`` evenly, or ``None`` when that is one."""
  devices = list(devices if devices is not None else jax.devices())
  n = mesh_size(num_members, len(devices), max_devices)
  return Mesh(np.asarray(devices[:n]), ("members",)) if n > 1 else None


def mesh_size(num_members: int, num_devices: int, max_devices: int = 0) -> int:
  """The most devices (at most ``max_devices``, 0 = no limit) that split ``num_members`` evenly."""
  limit = num_devices if not max_devices else min(max_devices, num_devices)
  return max(d for d in range(1, limit + 1) if num_members % d == 0)


def shard_members(tree, mesh: Mesh | None):
  """Places every leaf's leading (members) axis across ``mesh``; unchanged without a mesh."""
  if mesh is None:
    return tree
  return _put(tree, NamedSharding(mesh, P("members")))


def replicate(tree, mesh: Mesh | None):
  """A copy of ``tree`` on every device of ``mesh``; unchanged without a mesh."""
  if mesh is None:
    return tree
  return _put(tree, NamedSharding(mesh, P()))


def _put(tree, sharding):
  """``jax.device_put``; under ``jax.distributed``, a host or process-local value (the same on every process,
  such as a restored checkpoint) becomes a global array through a callback, since ``device_put`` only
  reaches this process's devices."""
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree_util.tree_map(one, tree)
