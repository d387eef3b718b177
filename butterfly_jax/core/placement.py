"""Where a family's members live: a ``("members",)`` mesh over the devices that split them evenly, the
members' leading axis sharded across it and what every member reads (data, initial parameters) replicated;
or, with a data axis (``members.data_devices``), a 2-D ``("members", "data")`` mesh whose ``data`` axis splits
each member's batches (training, evaluation, perturbation) while its parameters and optimizer state are
replicated over it.

Without a mesh (one device) every function leaves its input unchanged; without a data axis, the batch
functions do.
"""

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P



class PlacementError(ValueError):
  """Devices that cannot hold the members or split the batches as asked; the message names the field."""


def member_mesh(num_members: int, max_devices: int = 0, devices=None, data_devices: int = 1,
                batch_sizes=()) -> Mesh | None:
  """The family's mesh over ``devices`` (default: every process's under ``jax.distributed``).

  ``data_devices`` 1: a one-axis ``("members",)`` mesh over the most devices (at most ``max_devices``; 0 = all)
  that divide ``num_members`` evenly, or ``None`` when that is one. Otherwise (:func:`data_size`) a
  ``("members", "data")`` mesh of ``m x d`` devices: ``d`` devices share each member's batch and the members axis
  takes the most of the remaining ``n // d`` (at most ``max_devices``) that divide ``num_members``.
  """
  devices = list(devices if devices is not None else jax.devices())
  d = data_size(num_members, len(devices), max_devices, data_devices, batch_sizes)
  m = mesh_size(num_members, len(devices) // d, max_devices)
  if d == 1:
    return Mesh(np.asarray(devices[:m]), ("members",)) if m > 1 else None
  return Mesh(np.asarray(devices[:m * d]).reshape(m, d), ("members", "data"))


def mesh_size(num_members: int, num_devices: int, max_devices: int = 0) -> int:
  """The most devices (at most ``max_devices``, 0 = no limit) that split ``num_members`` evenly."""
  limit = num_devices if not max_devices else min(max_devices, num_devices)
  return max(d for d in range(1, limit + 1) if num_members % d == 0)


def data_size(num_members: int, num_devices: int, max_devices: int, data_devices: int, batch_sizes=()) -> int:
  """Devices along the data axis (``members.data_devices``): 1 (none); ``N > 1`` as given, which must divide
  every one of ``batch_sizes`` and be at most ``num_devices``; 0: those left over once the members axis has its
  devices (:func:`mesh_size`), as many as divide every batch size."""
  if data_devices == 1:
    return 1
  if data_devices == 0:
    left = num_devices // mesh_size(num_members, num_devices, max_devices)
    step = math.gcd(*batch_sizes) if batch_sizes else 0
    return max(d for d in range(1, left + 1) if step % d == 0)
  if data_devices > num_devices:
    raise PlacementError(f"members.data_devices: {data_devices} devices per member asked for, {num_devices} available; "
                      f"allowed: 0 (auto), 1, or at most {num_devices}, dividing the batch sizes")
  bad = [b for b in batch_sizes if b % data_devices]
  if bad:
    raise PlacementError(f"members.data_devices: {data_devices} does not divide the batch size(s) {bad}; allowed: 0 "
                      f"(auto), 1, or a common divisor of the batch sizes {tuple(batch_sizes)}")
  return data_devices


def data_devices(mesh: Mesh | None) -> int:
  """Devices along ``mesh``'s data axis (1 without one)."""
  return 1 if mesh is None else int(mesh.shape.get("data", 1))


def member_devices(mesh: Mesh | None) -> int:
  """Devices along ``mesh``'s members axis (1 without a mesh)."""
  return 1 if mesh is None else int(mesh.shape["members"])


def shard_members(tree, mesh: Mesh | None):
  """Places every leaf's leading (members) axis across ``mesh`` (replicated over a data axis); unchanged
  without a mesh."""
  if mesh is None:
    return tree
  return _put(tree, NamedSharding(mesh, P("members")))


def replicate(tree, mesh: Mesh | None):
  """A copy of ``tree`` on every device of ``mesh``; unchanged without a mesh."""
  if mesh is None:
    return tree
  return _put(tree, NamedSharding(mesh, P()))


def batch_spec(axis: int = 0) -> P:
  """The spec of a batch whose examples run along ``axis``, split over the data axis."""
  return P(*([None] * axis), "data")


def shard_batch(tree, mesh: Mesh | None, axis: int = 0):
  """Every leaf's examples axis (``axis``) split over ``mesh``'s data axis; unchanged without one."""
  if data_devices(mesh) == 1:
    return tree
  return _put(tree, NamedSharding(mesh, batch_spec(axis)))


def mesh_of(tree) -> Mesh | None:
  """The mesh ``tree``'s (first) leaf is placed on by a ``NamedSharding``, else None."""
  leaves = jax.tree_util.tree_leaves(tree)
  sharding = getattr(leaves[0], "sharding", None) if leaves else None
  return sharding.mesh if isinstance(sharding, NamedSharding) else None


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
