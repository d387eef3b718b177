"""A family of K networks advanced together by one jitted step that shares each batch.

The members axis is the leading axis of every leaf of :class:`Family`. It runs either as ``vmap`` (one
batched computation) or ``sequential`` (``lax.map`` inside the same jit: the members one after another,
each through the same compiled body). Each member has its own learning-rate offset (learning-rate
rewinding) and end step (members past their end step stay frozen).

What a member's trajectory may depend on: its own initial state, the shared data/augmentation keys, the
step numbers and the config. Under ``sequential`` it does not depend on its siblings, on K or on its
position in the family (tests check this bitwise); under ``vmap`` identical members stay bitwise equal
to each other, but XLA may compile the batched step differently for different K, so a member's last bits
may depend on the family's size.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from butterfly_jax import tree_math


class Family(NamedTuple):
  params: Any        # stacked parameter pytree, leading axis K
  opt_state: Any     # stacked optimizer state
  lr_offset: jax.Array  # int32 [K]: the schedule is evaluated at step - lr_offset
  end_step: jax.Array   # int32 [K]: the member trains on steps < end_step


def new_family(params_list, opt_states, lr_offsets, end_steps) -> Family:
  return Family(tree_math.stack(params_list), tree_math.stack(opt_states),
                jnp.asarray(lr_offsets, jnp.int32), jnp.asarray(end_steps, jnp.int32))


def cross_entropy(apply_fn):
  """Mean softmax cross-entropy of integer labels: ``loss_fn(params, x, y)``."""
  def loss_fn(params, x, y):
    logits, _ = apply_fn(params, x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y))
  return loss_fn


def resolve_strategy(strategy: str, backend: str | None = None) -> str:
  """``auto`` is ``sequential`` on CPU and ``vmap`` on GPU/TPU (measurements in BUILD_NOTES.md)."""
  if strategy != "auto":
    return strategy
  backend = backend or jax.default_backend()
  return "sequential" if backend == "cpu" else "vmap"


def over_members(fn, strategy: str):
  """Maps ``fn(member_args, shared_args)`` over the leading axis of ``member_args``."""
  if strategy == "vmap":
    return lambda members, shared: jax.vmap(fn, in_axes=(0, None))(members, shared)
  if strategy == "sequential":
    return lambda members, shared: jax.lax.map(lambda m: fn(m, shared), members)
  raise ValueError(f"members.strategy: unknown strategy {strategy!r}; allowed: vmap, sequential")


def make_train_chunk(apply_fn, transform, schedule, batcher, strategy: str):
  """A jitted ``chunk(family, data, data_key, augment_key, start, stop) -> (family, stats)``.

  Runs the steps ``start .. stop-1`` (traced bounds: one compilation serves every chunk). ``stats`` holds,
  per member, the summed training loss and number of steps trained in the chunk, and whether every loss
  was finite.
  """
  loss_fn = cross_entropy(apply_fn)

  def member_step(member, shared):
    params, opt_state, lr_offset, end_step = member
    x, y, step = shared
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    direction, new_opt = transform.update(grads, opt_state, params)
    lr = schedule(step - lr_offset)
    new_params = jax.tree_util.tree_map(lambda p, d: p - lr.astype(p.dtype) * d, params, direction)
    active = step < end_step
    keep = lambda new, old: jnp.where(active, new, old)
    return (jax.tree_util.tree_map(keep, new_params, params), jax.tree_util.tree_map(keep, new_opt, opt_state),
            jnp.where(active, loss, 0.0), active)

  step_members = over_members(member_step, strategy)

  def chunk(family: Family, data, data_key, augment_key, start, stop):
    k = family.lr_offset.shape[0]

    def body(step, carry):
      fam, loss_sum, count, finite = carry
      x, y = batcher(data, data_key, augment_key, step)
      params, opt_state, loss, active = step_members(
          (fam.params, fam.opt_state, fam.lr_offset, fam.end_step), (x, y, step))
      fam = fam._replace(params=params, opt_state=opt_state)
      return fam, loss_sum + loss, count + active.astype(jnp.int32), finite & jnp.isfinite(loss)

    init = (family, jnp.zeros((k,), jnp.float32), jnp.zeros((k,), jnp.int32), jnp.ones((k,), bool))
    family, loss_sum, count, finite = jax.lax.fori_loop(start, stop, body, init)
    return family, {"loss_sum": loss_sum, "steps": count, "finite": finite}

  return jax.jit(chunk, donate_argnums=(0,))


@jax.jit
def distances(stacked_params, init_params):
  """Per member: L2 distance from ``init_params`` and from member 0, and whether all weights are finite."""
  ref0 = tree_math.unstack(stacked_params, 0)
  from_init = jax.vmap(lambda p: jnp.sqrt(tree_math.sq_l2_distance(p, init_params)))(stacked_params)
  from_0 = jax.vmap(lambda p: jnp.sqrt(tree_math.sq_l2_distance(p, ref0)))(stacked_params)
  finite = jax.vmap(lambda p: jnp.all(jnp.stack(
      [jnp.all(jnp.isfinite(l)) for l in jax.tree_util.tree_leaves(p)])))(stacked_params)
  return {"l2_from_init": from_init, "l2_to_child0": from_0, "finite": finite}
