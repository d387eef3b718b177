"""Optimizers without their learning rate, and learning-rate schedules.

The optimizer transform produces a direction (momentum buffer, Adam moments, weight decay); the train step
multiplies it by ``-schedule(step - offset)`` itself. Keeping the learning rate out of optax's state lets each
member of a family have its own schedule offset (learning-rate rewinding) inside one jitted step.
"""

import jax.numpy as jnp
import optax


def make_transform(c, total_steps: int | None = None, warmup_steps: int | None = None) -> optax.GradientTransformation:
  """The update direction of ``c.optim``, learning rate excluded (SGD: torch semantics, ``buf = mu*buf + g``).

  ``optim.clip_norm > 0`` rescales the gradient to at most that global L2 norm before anything else (as
  ``torch.nn.utils.clip_grad_norm_`` before ``optimizer.step()``: weight decay is added after clipping).

  ``schedule.name="onecycle"`` with ``schedule.cycle_momentum`` (torch's ``OneCycleLR`` default) replaces
  SGD's momentum, or Adam's ``b1``, by :func:`onecycle_momentum` of the update count, so it needs
  ``total_steps`` and ``warmup_steps``."""
  o = c.optim
  cycle = c.schedule.name == "onecycle" and c.schedule.cycle_momentum
  if cycle:
    if total_steps is None or warmup_steps is None:
      raise ValueError("make_transform: a one-cycle schedule that cycles momentum needs total_steps and warmup_steps")
    beta = onecycle_momentum(total_steps, warmup_steps, c.schedule.base_momentum, c.schedule.max_momentum)
  parts = [optax.clip_by_global_norm(float(o.clip_norm))] if o.clip_norm else []
  if o.name in ("sgd", "adam") and o.weight_decay:
    parts.append(optax.add_decayed_weights(o.weight_decay))  # coupled L2, like torch's weight_decay
  if o.name == "sgd":
    if cycle:
      parts.append(optax.inject_hyperparams(optax.trace)(decay=beta, nesterov=o.nesterov))
    elif o.momentum:
      parts.append(optax.trace(decay=o.momentum, nesterov=o.nesterov))
  elif cycle:
    parts.append(optax.inject_hyperparams(optax.scale_by_adam)(b1=beta, b2=o.b2, eps=o.eps))
  else:
    parts.append(optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps))
    if o.name == "adamw" and o.weight_decay:
      parts.append(optax.add_decayed_weights(o.weight_decay))  # decoupled, scaled by the lr below
  return optax.chain(*parts) if parts else optax.identity()


def _two_phase_cosine(first: float, middle: float, last: float, total_steps: int, warmup_steps: int):
  """torch ``OneCycleLR``'s two cosine phases of a value (``three_phase=False``): from ``first`` at step 0 to
  ``middle`` at step ``warmup - 1``, then to ``last`` at step ``T - 1``; held outside. A function of the step."""
  end1 = float(warmup_steps) - 1.0
  end2 = float(total_steps) - 1.0

  def anneal(start, end, pct):
    return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1.0)

  def sched(step):
    s = jnp.asarray(step, jnp.float32)
    one = anneal(first, middle, jnp.clip(s / jnp.maximum(end1, 1e-12), 0.0, 1.0))
    two = anneal(middle, last, jnp.clip((s - end1) / jnp.maximum(end2 - end1, 1e-12), 0.0, 1.0))
    return jnp.where(s <= end1, one, two)
  return sched


def onecycle(peak: float, total_steps: int, warmup_steps: int, div_factor: float = 25.0,
             final_div_factor: float = 1e4):
  """torch's ``OneCycleLR(max_lr=peak, total_steps=T, pct_start=warmup/T, anneal_strategy="cos")`` with its
  defaults (two phases): cosine from ``peak/25`` up to ``peak`` at step ``warmup - 1``, then cosine down to
  ``peak/25/1e4`` at step ``T - 1``."""
  initial = peak / div_factor
  return _two_phase_cosine(initial, peak, initial / final_div_factor, total_steps, warmup_steps)


def onecycle_momentum(total_steps: int, warmup_steps: int, base: float = 0.85, top: float = 0.95):
  """torch ``OneCycleLR``'s momentum (``cycle_momentum=True``): cosine from ``top`` down to ``base`` while the
  learning rate rises, then back up to ``top`` at step ``T - 1``; a function of the update count."""
  return _two_phase_cosine(top, base, top, total_steps, warmup_steps)


def make_schedule(c, total_steps: int, warmup_steps: int):
  """``step -> learning rate``; steps past the end keep the last value, negative steps the first."""
  peak, final, name = float(c.optim.lr), float(c.schedule.final_lr), c.schedule.name
  if name == "constant":
    return lambda step: jnp.full((), peak, jnp.float32)
  if name == "onecycle":
    sched = onecycle(peak, total_steps, warmup_steps)
    return lambda step: jnp.asarray(sched(jnp.clip(step, 0, total_steps - 1)), jnp.float32)
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


def make_member_schedule(c, total_steps: int, warmup_steps: int, t: int):
  """``(step, lr_offset, end_step) -> learning rate`` of one member of a family.

  A member evaluates the run's schedule at ``step - lr_offset`` (learning-rate rewinding: ``lr_offset = t``).
  A perturbed child that trains past ``T`` (``perturb.extra_steps``, ``end_step = t + T > T``) without
  rewinding follows ``perturb.extra_lr``: ``"decay"`` (the authors' ``same_steps_pperturb``, their
  ``reset_lr_schedule``) continues the schedule to ``a = max(t, warm-up)`` (an unfinished warm-up is
  finished) and from there decays linearly from the learning rate at ``a`` to ``schedule.final_lr`` at
  ``t + T``::

      lr(s) = base(s)                                              s < a
      lr(s) = final + (base(a) - final) * (t + T - s) / (t + T - a)  a <= s < t + T

  so on the triangular schedule perturbed after the warm-up, ``lr(t + j) = lr(t) * (1 - j / T)``.
  ``"hold"`` (before the definitions' version 2) keeps the schedule's value at ``T`` after ``T``.
  """
  base = make_schedule(c, total_steps, warmup_steps)
  final = 0.0 if c.schedule.name == "constant" else float(c.schedule.final_lr)
  decay = c.perturb.extra_lr == "decay" and t > 0
  a = max(t, warmup_steps)
  end = t + total_steps
  base_a = base(a)

  def member_lr(step, lr_offset, end_step):
    plain = base(step - lr_offset)
    if not decay:
      return plain
    frac = jnp.clip((end - step).astype(jnp.float32) / float(max(end - a, 1)), 0.0, 1.0)
    decayed = jnp.asarray(final + (base_a - final) * frac, jnp.float32)
    extended = (end_step > total_steps) & (lr_offset == 0)
    return jnp.where(extended & (step >= a), decayed, plain)
  return member_lr
