"""Angular CKA properties."""

import numpy as np
import pytest
from scipy.stats import ortho_group

import butterfly_jax as bj
from butterfly_jax.core.similarity import CKAAccumulator


def _x(n=300, d=20, seed=0):
  return np.random.default_rng(seed).normal(size=(n, d))


def test_cka_of_a_representation_with_itself_is_zero():
  x = _x()
  assert bj.angular_cka(x, x) == pytest.approx(0.0, abs=1e-6)


def test_cka_is_symmetric_and_invariant_to_rotation_scale_and_translation():
  x = _x()
  y = np.tanh(x @ np.random.default_rng(1).normal(size=(20, 12)))
  base = bj.angular_cka(x, y)
  assert 0.1 < base < np.pi / 2
  assert bj.angular_cka(y, x) == pytest.approx(base, abs=1e-9)
  q = ortho_group.rvs(20, random_state=2)
  assert bj.angular_cka(x @ q, y) == pytest.approx(base, abs=1e-9)
  assert bj.angular_cka(x, 7.5 * y + 3.0) == pytest.approx(base, abs=1e-9)
  assert bj.angular_cka(x @ q * 0.01, y) == pytest.approx(base, abs=1e-9)


def test_cka_is_not_invariant_to_anisotropic_scaling_and_grows_for_unrelated_features():
  x = _x()
  stretched = x * np.linspace(0.1, 10, 20)
  assert bj.angular_cka(x, stretched) > 0.05
  assert bj.angular_cka(x, _x(seed=5)) > bj.angular_cka(x, x + 0.1 * _x(seed=5))


def test_streamed_batches_equal_one_pass_and_the_gram_formula():
  x, y = _x(n=1000), _x(n=1000, d=7, seed=3) + _x(n=1000, seed=0)[:, :7]
  streamed = bj.angular_cka(x, y, batch_size=64, estimator="biased")
  whole = bj.angular_cka(x, y, batch_size=10_000, estimator="biased")
  # the Gram (example-space) formula of (biased) linear CKA, with the centring matrix H
  h = np.eye(1000) - 1 / 1000
  kx, ky = h @ x @ x.T @ h, h @ y @ y.T @ h
  gram = np.arccos(np.sum(kx * ky) / (np.linalg.norm(kx) * np.linalg.norm(ky)))
  assert streamed == pytest.approx(whole, abs=1e-9)
  assert streamed == pytest.approx(gram, abs=1e-7)


def test_bad_inputs():
  with pytest.raises(ValueError, match="same number of examples"):
    bj.angular_cka(_x(n=10), _x(n=11))
  with pytest.raises(ValueError, match="no examples"):
    CKAAccumulator().angle()


def _repsim_angle(x, y, unbiased=True):
  """repsim's AngularCKA (linear kernel) written out: centred Gram matrices H X X^T H, their diagonals zeroed
  when unbiased, each scaled to unit Frobenius norm, and arccos of their inner product."""
  n = len(x)
  h = np.eye(n) - 1 / n
  points = []
  for z in (x, y):
    k = h @ z @ z.T @ h
    if unbiased:
      k = k * (1 - np.eye(n))
    points.append(k / np.linalg.norm(k))
  return np.arccos(np.clip(np.sum(points[0] * points[1]), -1, 1))


@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_streamed_cka_equals_the_gram_matrix_computation(estimator):
  rng = np.random.default_rng(4)
  x = np.maximum(rng.normal(size=(600, 40)) + 2.0, 0)   # non-negative features with a large mean, like ReLUs
  y = np.maximum(x @ rng.normal(size=(40, 25)), 0) + 0.5 * rng.normal(size=(600, 25))
  expected = _repsim_angle(x, y, estimator == "unbiased")
  assert bj.angular_cka(x, y, batch_size=64, estimator=estimator) == pytest.approx(expected, abs=1e-9)
  assert bj.angular_cka(x, x, estimator=estimator) == pytest.approx(0.0, abs=1e-6)


def test_unbiased_cka_of_unrelated_wide_features_is_near_a_right_angle():
  rng = np.random.default_rng(5)
  x, y = rng.normal(size=(100, 500)), rng.normal(size=(100, 500))
  assert bj.angular_cka(x, y) == pytest.approx(np.pi / 2, abs=0.1)        # no shared structure: about 90 degrees
  assert bj.angular_cka(x, y, estimator="biased") < 1.0                    # the biased estimate is pulled towards 0
  with pytest.raises(ValueError, match="eval.cka_estimator: unknown estimator"):
    bj.angular_cka(x, y, estimator="debiased")
