"""A family of K networks advanced together by one jitted step that shares each batch.

The members axis is the leading axis of every leaf of :class:`Family`. It runs as ``vmap`` (one batched
computation), ``sequential`` (the members unrolled one after another inside the same jit: K copies of the
member step in one program) or ``map`` (one compiled member step run once per member, ``lax.map``). Each
member has its own learning-rate offset (learning-rate rewinding) and end step (members past their end step
stay frozen).

What a member's trajectory may depend on: its own initial state, the shared data/augmentation keys, the
step numbers and the config. Under ``map`` it does not depend on its siblings, on K or on its position in the
family by construction: every member runs the same compiled loop body (for K >= 2: XLA inlines the body of a
one-trip loop, so a lone member, the trunk, may compile differently; a tiny BERT with dropout did). Under
``sequential`` each member has its own copy of the step, which XLA compiles separately: for the vision models
the copies were found identical with XLA's loop emitters (the CPU flags a run sets, :mod:`butterfly_jax.io.runtime`;
with its fusion emitters one ResNet's were not), and tests check a child's independence bitwise, but two identical
BERT members were measured to part in their last bits (BUILD_NOTES.md), so text models run under ``map`` on CPU.
A run warns when its σ = 0 twin parts from child 0 all the same. Under ``vmap`` identical members stay
bitwise equal to each other, but XLA may compile the batched step differently for different K, so a
member's last bits may depend on the family's size.

Where the members live (a mesh over devices) is :mod:`butterfly_jax.core.placement`.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from butterfly_jax.core import rng, tree_math


class Family(NamedTuple):
  params: Any        # stacked parameter pytree, leading axis K
  opt_state: Any     # stacked optimizer state
  lr_offset: jax.Array  # int32 [K]: the schedule is evaluated at step - lr_offset
  end_step: jax.Array   # int32 [K]: the member trains on steps < end_step


def new_family(params_list, opt_states, lr_offsets, end_steps) -> Family:
  return Family(tree_math.stack(params_list), tree_math.stack(opt_states),
                jnp.asarray(lr_offsets, jnp.int32), jnp.asarray(end_steps, jnp.int32))


COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # train.compute_dtype / param_dtype
MEMBER_STRATEGIES = ("auto", "vmap", "sequential", "map")  # members.strategy


def cross_entropy(apply_fn, compute_dtype: str = "float32"):
  """Mean softmax cross-entropy of integer labels: ``loss_fn(params, x, y)``.

  ``dropout_key``: a training step's dropout key (passed on to ``apply_fn``; None: deterministic).

  ``compute_dtype="bfloat16"``: mixed precision. The float32 parameters and the inputs are cast to
  bfloat16 for the forward (and so the backward) pass; the loss and the gradients with respect to the
  float32 parameters are float32. Integer inputs (a text model's token ids) stay as they are.

  Parameters held in another dtype (``train.param_dtype="bfloat16"``) are cast to ``compute_dtype`` too, so
  ``float32`` computes on their float32 upcasts; the gradients come out in the parameters' dtype.
  """
  dtype = COMPUTE_DTYPES[compute_dtype]

  def loss_fn(params, x, y, dropout_key=None):
    if dtype != jnp.float32:
      params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
      x = x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
    elif any(p.dtype != jnp.float32 for p in jax.tree_util.tree_leaves(params)):  # bf16 parameters
      params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float32), params)
    logits, _ = apply_fn(params, x) if dropout_key is None else apply_fn(params, x, dropout_key=dropout_key)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y))
  return loss_fn


def descend(lr):
  """``(p, d) -> p - lr * d``: in the parameter's dtype for float32 parameters; for lower-precision ones (bf16)
  computed in float32 and rounded once (the learning rate not rounded to bf16 first)."""
  def step(p, d):
    if p.dtype == jnp.float32:
      return p - lr.astype(p.dtype) * d
    return (p.astype(jnp.float32) - lr.astype(jnp.float32) * d.astype(jnp.float32)).astype(p.dtype)
  return step


def resolve_strategy(strategy: str, backend: str | None = None, text: bool = False) -> str:
  """``auto`` is ``vmap`` on GPU/TPU; on CPU ``sequential``, or ``map`` for a text model (``text``), whose
  unrolled copies were measured to part (measurements in BUILD_NOTES.md)."""
  if strategy != "auto":
    return strategy
  backend = backend or jax.default_backend()
  if backend != "cpu":
    return "vmap"
  return "map" if text else "sequential"


def over_members(fn, strategy: str):
  """Maps ``fn(member_args, shared_args)`` over the leading axis of ``member_args``.

  ``sequential`` unrolls the members inside the jit (K copies of the step in one program); ``map`` runs one
  compiled copy over them (``lax.map``, a loop), which XLA:CPU runs an order of magnitude slower for
  convolution gradients than the unrolled copies (BUILD_NOTES.md), and at the same speed for dense layers.
  """
  if strategy == "vmap":
    return lambda members, shared: jax.vmap(fn, in_axes=(0, None))(members, shared)
  if strategy == "map":
    return lambda members, shared: jax.lax.map(lambda member: fn(member, shared), members)
  if strategy == "sequential":
    def unrolled(members, shared):
      k = jax.tree_util.tree_leaves(members)[0].shape[0]
      outs = [fn(tree_math.unstack(members, i), shared) for i in range(k)]
      return tree_math.stack(outs)
    return unrolled
  raise ValueError(f"members.strategy: unknown strategy {strategy!r}; allowed: "
                   f"{', '.join(s for s in MEMBER_STRATEGIES if s != 'auto')}")


def make_train_step(apply_fn, transform, schedule, batcher, strategy: str, mesh: Mesh | None = None,
                    compute_dtype: str = "float32", member_schedule=None, dropout: bool = False):
  """A jitted ``step(family, data, perm, augment_key, step) -> (family, loss, active)``.

  ``perm`` is the permutation of the training set for the epoch of ``step`` (``batcher.epoch_permutation``).

  One training step of every member on the batch of ``step`` (computed once, shared). ``loss`` and
  ``active`` are per member; members at or past their end step are left unchanged (loss 0). The family
  is donated. One step per call: XLA:CPU is far slower with the step inside a device loop.

  With a ``mesh`` (:func:`butterfly_jax.core.placement.member_mesh`), the family's members are split across its devices with
  ``shard_map``: each device runs ``strategy`` over its own members on the (replicated) batch, so under
  ``sequential`` or ``map`` a member's computation is the same program as on one device. A mesh with a ``data`` axis
  splits the batch over it instead: ``shard_map`` is manual over ``members`` only, the batch is constrained to
  ``P("data")`` and XLA partitions each member's step over the data axis (GSPMD), inserting the all-reduce of
  every batch sum (the loss, the gradients, BatchNorm's moments). The step computes the same function of the
  same batch as on one device; only the order of those sums changes, so the bits may (BUILD_NOTES.md).

  ``compute_dtype``: see :func:`cross_entropy`; parameters and optimizer state keep their dtype (float32, or
  bf16 with ``train.param_dtype``: then the optimizer state is bf16, as optax makes it like the parameters, and
  the update ``p - lr * d`` is computed in float32 and rounded to bf16 once, as torch's optimizers do on bf16
  parameters).

  The learning rate is ``schedule(step - lr_offset)``, or ``member_schedule(step, lr_offset, end_step)`` when
  given (:func:`butterfly_jax.core.optim.make_member_schedule`: the extra-steps decay).

  ``dropout``: the model applies dropout in training (:func:`butterfly_jax.models.registry.has_dropout`); every
  member gets step ``step``'s key (:func:`butterfly_jax.core.rng.step_dropout_key` of ``augment_key``), so twins drop
  the same units.
  """
  loss_fn = cross_entropy(apply_fn, compute_dtype)

  def member_step(member, shared):
    params, opt_state, lr_offset, end_step = member
    x, y, step, dropout_key = shared
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y, dropout_key)
    direction, new_opt = transform.update(grads, opt_state, params)
    lr = schedule(step - lr_offset) if member_schedule is None else member_schedule(step, lr_offset, end_step)
    new_params = jax.tree_util.tree_map(descend(lr), params, direction)
    active = step < end_step
    keep = lambda new, old: jnp.where(active, new, old)
    return (jax.tree_util.tree_map(keep, new_params, params), jax.tree_util.tree_map(keep, new_opt, opt_state),
            jnp.where(active, loss, 0.0), active)

  step_members = over_members(member_step, strategy)
  split_batch = mesh is not None and "data" in mesh.axis_names
  if split_batch:  # manual over the members, automatic (XLA's partitioner) over the data axis
    step_members = jax.shard_map(step_members, mesh=mesh, in_specs=(P("members"), P()), out_specs=P("members"),
                                 axis_names={"members"})
  elif mesh is not None:
    step_members = jax.shard_map(step_members, mesh=mesh, in_specs=(P("members"), P()), out_specs=P("members"))

  def step_fn(family: Family, data, perm, augment_key, step):
    x, y = batcher.step_batch(data, perm, augment_key, step)  # the same batch for every member
    if split_batch:  # the same examples, split over the data axis
      x, y = jax.lax.with_sharding_constraint((x, y), NamedSharding(mesh, P("data")))
    dropout_key = rng.step_dropout_key(augment_key, step) if dropout else None
    params, opt_state, loss, active = step_members(
        (family.params, family.opt_state, family.lr_offset, family.end_step), (x, y, step, dropout_key))
    return family._replace(params=params, opt_state=opt_state), loss, active

  return jax.jit(step_fn, donate_argnums=(0,))


def _member_distances(local_params, init_params, ref0):
  """Unrolled over the (local) members, like the ``sequential`` step: each member's sums are its own program."""
  out = {"l2_from_init": [], "l2_to_child0": [], "finite": []}
  for i in range(jax.tree_util.tree_leaves(local_params)[0].shape[0]):
    p = tree_math.unstack(local_params, i)
    out["l2_from_init"].append(jnp.sqrt(tree_math.sq_l2_distance(p, init_params)))
    out["l2_to_child0"].append(jnp.sqrt(tree_math.sq_l2_distance(p, ref0)))
    out["finite"].append(jnp.all(jnp.stack([jnp.all(jnp.isfinite(l)) for l in jax.tree_util.tree_leaves(p)])))
  return {k: jnp.stack(v) for k, v in out.items()}


def distances(stacked_params, init_params):
  """Per member: L2 distance from ``init_params`` and from member 0, and whether all weights are finite.

  With the members sharded over a mesh, each device measures its own members (``shard_map``), so the sums
  are the same programs, and the same bits, as on one device.
  """
  sharding = getattr(jax.tree_util.tree_leaves(stacked_params)[0], "sharding", None)
  sharded = isinstance(sharding, NamedSharding) and len(sharding.spec) > 0 and sharding.spec[0] == "members"
  return _distances_fn(sharding.mesh if sharded else None)(stacked_params, init_params)


@functools.lru_cache(maxsize=None)
def _distances_fn(mesh):
  def fn(stacked_params, init_params):
    ref0 = tree_math.unstack(stacked_params, 0)
    if mesh is None:
      return _member_distances(stacked_params, init_params, ref0)
    return jax.shard_map(_member_distances, mesh=mesh, in_specs=(P("members"), P(), P()),
                         out_specs=P("members"))(stacked_params, init_params, ref0)
  return jax.jit(fn)
