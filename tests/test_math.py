"""Tree math and Eq. 1 barriers on hand-made inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import butterfly_jax as bj


def _tree(seed):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {"a": {"kernel": jax.random.normal(k1, (3, 4))}, "b": jax.random.normal(k2, (5,))}


def test_interpolate_endpoints_are_exact_and_midpoint_is_mean():
  a, b = _tree(0), _tree(1)
  np.testing.assert_array_equal(bj.interpolate(a, b, 0.0)["b"], a["b"])
  np.testing.assert_array_equal(bj.interpolate(a, b, 1.0)["a"]["kernel"], b["a"]["kernel"])
  mid = bj.interpolate(a, b, 0.5)
  np.testing.assert_allclose(mid["b"], (a["b"] + b["b"]) / 2, rtol=1e-6)
  np.testing.assert_allclose(bj.interpolate(a, b, 0.25)["b"], 0.75 * a["b"] + 0.25 * b["b"], rtol=1e-5, atol=1e-6)


def test_interpolate_network_with_itself_is_bitwise_itself():
  a = _tree(0)
  for alpha in (0.1, 0.3, 0.7, 0.9):
    out = bj.interpolate(a, a, alpha)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda x, y: bool(jnp.all(x == y)), out, a))


def test_l2_distance():
  a = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(3)}
  b = {"w": jnp.full((2, 2), 1.0), "b": jnp.array([0.0, 0.0, 3.0])}
  assert bj.l2_distance(a, b) == pytest.approx(np.sqrt(4 + 9))
  assert bj.l2_distance(a, a) == 0.0


def test_barrier_of_hand_made_curves():
  alphas = np.linspace(0, 1, 5)
  assert bj.barrier_from_curve(alphas, [1.0, 1.0, 1.0, 1.0, 1.0]) == 0.0
  # a bump of 2 above a line from 1 to 3: line at alpha=0.5 is 2, value 4
  assert bj.barrier_from_curve(alphas, [1.0, 1.5, 4.0, 2.5, 3.0]) == pytest.approx(2.0)
  # a convex curve has barrier 0 (the end points)
  assert bj.barrier_from_curve(alphas, [1.0, 0.5, 0.2, 0.5, 1.0]) == 0.0
  # the sup is taken where the gap is largest, not where the value is largest
  assert bj.barrier_from_curve([0, 0.5, 1], [0.0, 0.6, 1.0]) == pytest.approx(0.1)
  assert np.isnan(bj.barrier_from_curve([0, 0.5, 1], [0.0, np.nan, 1.0]))


def test_barrier_rejects_bad_grids():
  with pytest.raises(ValueError, match="run from 0 to 1"):
    bj.barrier_from_curve([0.1, 0.5, 1.0], [0, 0, 0])
  with pytest.raises(ValueError, match="same length"):
    bj.barrier_from_curve([0, 1], [0, 0, 0])
