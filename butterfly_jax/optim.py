"""Optimizers without their learning rate, and learning-rate schedules.

The optimizer transform produces a direction (momentum buffer, Adam moments, weight decay); the train step
multiplies it by ``-schedule(step - offset)`` itself. Keeping the learning rate out of optax's state lets each
member of a family have its own schedule offset (learning-rate rewinding) inside one jitted step.
"""

import jax.numpy as jnp
import optax


def make_transform(c) -> optax.GradientTransformation:
  """The update direction of ``c.optim``, learning rate excluded (SGD: torch semantics, ``buf = mu*buf + g``).

  ``optim.clip_norm > 0`` rescales the gradient to at most that global L2 norm before anything else (as
  ``torch.nn.utils.clip_grad_norm_`` before ``optimizer.step()``: weight decay is added after clipping)."""
  o = c.optim
  parts = [optax.clip_by_global_norm(float(o.clip_norm))] if o.clip_norm else []
  if o.name in ("sgd", "adam") and o.weight_decay:
    parts.append(optax.add_decayed_weights(o.weight_decay))  # coupled L2, like torch's weight_decay
  if o.name == "sgd":
    if o.momentum:
      parts.append(optax.trace(decay=o.momentum, nesterov=o.nesterov))
  else:
    parts.append(optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps))
    if o.name == "adamw" and o.weight_decay:
      parts.append(optax.add_decayed_weights(o.weight_decay))  # decoupled, scaled by the lr below
  return optax.chain(*parts) if parts else optax.identity()


def make_schedule(c, total_steps: int, warmup_steps: int):
  """``step -> learning rate``; steps past the end keep the last value, negative steps the first."""
  peak, final, name = float(c.optim.lr), float(c.schedule.final_lr), c.schedule.name
  if name == "constant":
    return lambda step: jnp.full((), peak, jnp.float32)
  decay_steps = max(total_steps - warmup_steps, 1)
  if name == "triangular":
    decay = optax.linear_schedule(peak, final, decay_steps)
  else:  # cosine
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=final / peak if peak else 0.0)
  if warmup_steps:
    sched = optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps), decay], [warmup_steps])
  else:
    sched = decay
  return lambda step: jnp.asarray(sched(jnp.clip(step, 0, total_steps)), jnp.float32)
