"""Optimizers (learning rate applied by the step) and schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from butterfly_jax.config import default_config
from butterfly_jax.core import optim


def test_triangular_schedule_peaks_after_warmup_and_ends_at_final():
  c = default_config()
  s = optim.make_schedule(c, total_steps=100, warmup_steps=10)
  assert float(s(0)) == 0.0
  assert float(s(5)) == pytest.approx(0.05)
  assert float(s(10)) == pytest.approx(0.1)
  assert float(s(55)) == pytest.approx(0.05)
  assert float(s(100)) == pytest.approx(0.0, abs=1e-7)
  assert float(s(150)) == pytest.approx(0.0, abs=1e-7)  # past T keeps the last value
  assert float(s(-3)) == 0.0                            # before 0 keeps the first


def test_cosine_and_constant_schedules():
  c = default_config()
  c.schedule.name = "cosine"
  s = optim.make_schedule(c, total_steps=110, warmup_steps=10)
  assert float(s(10)) == pytest.approx(0.1)
  assert float(s(60)) == pytest.approx(0.05, rel=1e-4)
  assert float(s(110)) == pytest.approx(0.0, abs=1e-7)
  c.schedule.name = "constant"
  assert float(optim.make_schedule(c, 100, 10)(0)) == pytest.approx(0.1)


def _run(c, lr, steps=3):
  tx = optim.make_transform(c)
  p = {"w": jnp.array([1.0, -2.0, 3.0])}
  state = tx.init(p)
  grads = [{"w": jnp.array([0.5, 0.1, -0.3]) * (i + 1)} for i in range(steps)]
  for g in grads:
    d, state = tx.update(g, state, p)
    p = jax.tree_util.tree_map(lambda a, b: a - lr * b, p, d)
  return p, grads


def test_sgd_momentum_and_coupled_weight_decay_follow_torch():
  c = default_config()
  c.optim.weight_decay = 0.01
  p, grads = _run(c, lr=0.1)
  w, buf = np.array([1.0, -2.0, 3.0]), np.zeros(3)
  for g in grads:
    g = np.asarray(g["w"]) + 0.01 * w
    buf = 0.9 * buf + g
    w = w - 0.1 * buf
  np.testing.assert_allclose(p["w"], w, rtol=1e-6)


@pytest.mark.parametrize("name,reference", [
    ("adam", lambda lr: optax.adam(lr)),
    ("adamw", lambda lr: optax.adamw(lr, weight_decay=0.1)),
])
def test_adam_and_adamw_match_optax(name, reference):
  c = default_config()
  c.optim.name = name
  c.optim.weight_decay = 0.1 if name == "adamw" else 0.0
  p, grads = _run(c, lr=0.01)
  ref = reference(0.01)
  q = {"w": jnp.array([1.0, -2.0, 3.0])}
  st = ref.init(q)
  for g in grads:
    u, st = ref.update(g, st, q)
    q = optax.apply_updates(q, u)
  np.testing.assert_allclose(p["w"], q["w"], rtol=1e-6)


def test_gradient_clipping_rescales_before_weight_decay_and_momentum_like_torch():
  c = default_config()
  c.optim.weight_decay, c.optim.clip_norm = 0.01, 0.4
  p, grads = _run(c, lr=0.1)
  w, buf = np.array([1.0, -2.0, 3.0]), np.zeros(3)
  for g in grads:  # torch: clip_grad_norm_(params, 0.4), then SGD(momentum=0.9, weight_decay=0.01).step()
    g = np.asarray(g["w"], np.float64)
    g = g * min(1.0, 0.4 / np.linalg.norm(g))
    buf = 0.9 * buf + g + 0.01 * w
    w = w - 0.1 * buf
  np.testing.assert_allclose(p["w"], w, rtol=1e-6)
  c.optim.clip_norm = 0.0
  unclipped, _ = _run(c, lr=0.1)
  assert not np.allclose(unclipped["w"], p["w"])  # the gradients here are larger than 0.4: clipping acts
