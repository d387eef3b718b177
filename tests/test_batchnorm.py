"""BatchNorm: statistics re-estimated for every evaluated network, never training state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from butterfly_jax.core import evaluate, permutations, tree_math
from butterfly_jax.core.batches import normalize
from butterfly_jax.models import make_model, make_moments
from butterfly_jax.run.configs_embedded import smoke
from butterfly_jax.run.experiment import run

SHAPE = (8, 8, 3)
KW = {"depth": 8, "width": 1, "norm": "batchnorm"}


@pytest.fixture(scope="module")
def model():
  apply_fn, init_fn = make_model("resnet", SHAPE, 10, **KW)
  moments_fn = make_moments("resnet", SHAPE, 10, **KW)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (64, *SHAPE), dtype=np.uint8))
  return apply_fn, moments_fn, init_fn(jax.random.key(0)), images


def _mean_std():
  return jnp.full((3,), 0.5, jnp.float32), jnp.full((3,), 0.25, jnp.float32)


def _estimate(moments_fn, params, images, batch=16):
  mean, std = _mean_std()
  estimator = evaluate.make_stats_estimator(moments_fn, 1)
  table = evaluate.network_table(1, evaluate.alpha_grid(3))
  stats = evaluate.estimate_norm_stats(estimator, tree_math.stack([params]), table, images,
                                       np.arange(len(images)), batch, mean, std)
  return jax.tree_util.tree_map(lambda x: x[0], stats)


def test_models_without_batchnorm_have_no_moments():
  assert make_moments("resnet", SHAPE, 10, depth=8, norm="layernorm") is None
  assert make_moments("mlp", (8, 8, 1), 10) is None
  assert make_moments("resnet50", SHAPE, 10, width=0.125, norm="batchnorm") is not None


def test_reestimation_changes_only_the_statistics(model):
  apply_fn, moments_fn, params, images = model
  before = jax.tree_util.tree_map(np.array, params)
  stats = _estimate(moments_fn, params, images)
  # the parameters are untouched, and the statistics are not in them
  for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(params)):
    np.testing.assert_array_equal(a, np.asarray(b))
  assert "batch_stats" not in params and set(stats["norm_in"]) == {"mean", "var"}
  # the first norm's statistics are the exact moments of its input over all 64 examples (4 batches)
  mean, std = _mean_std()
  x = normalize(images, mean, std)
  conv = jax.lax.conv_general_dilated(x, params["conv_in"]["kernel"], (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  h = np.asarray(conv, np.float64).reshape(-1, conv.shape[-1])
  np.testing.assert_allclose(stats["norm_in"]["mean"], h.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["norm_in"]["var"], h.var(0), rtol=1e-4, atol=1e-6)
  # deeper layers: the pooled moments of the four batches
  per_batch = [moments_fn(params, x[i:i + 16]) for i in range(0, 64, 16)]
  deep = lambda tree: tree["stage3_block0"]["norm2"]
  m = np.stack([deep(p)["mean"] for p in per_batch])
  v = np.stack([deep(p)["var"] for p in per_batch])
  np.testing.assert_allclose(deep(stats)["mean"], m.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(deep(stats)["var"], v.mean(0) + m.var(0), rtol=1e-4, atol=1e-6)
  # with statistics, an example's logits do not depend on its batch; with batch moments they do
  with_stats = apply_fn(params, x[:16], stats)[0]
  np.testing.assert_allclose(apply_fn(params, x[:4], stats)[0], with_stats[:4], rtol=1e-5, atol=1e-5)
  batch_moments = apply_fn(params, x[:16])[0]
  assert np.max(np.abs(np.asarray(apply_fn(params, x[:4])[0]) - np.asarray(batch_moments[:4]))) > 1e-3


def test_permuted_batchnorm_network_with_its_own_statistics_computes_the_same_logits(model):
  apply_fn, moments_fn, params, images = model
  spec = permutations.spec_for("resnet", params, **KW)
  perm = permutations.random_permutation(jax.random.key(3), spec)
  permuted = permutations.apply_permutation(spec, perm, params)
  mean, std = _mean_std()
  x = normalize(images[:16], mean, std)
  a = apply_fn(params, x, _estimate(moments_fn, params, images))[0]
  b = apply_fn(permuted, x, _estimate(moments_fn, permuted, images))[0]
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_batchnorm_run_reestimates_and_keeps_sigma_zero_twins_at_zero(tmp_path, smoke_run):
  c = smoke()
  c.model.name = "resnet"
  c.model.kwargs = {"depth": 8, "width": 1, "norm": "batchnorm"}
  c.train.steps = "20"
  c.perturb.scales = (0.0, 1e-2)
  c.eval.num_examples = 100
  c.eval.norm_stats_examples = 40  # -> 32: two batches of 16
  c.eval.cka_examples = 100
  res = run(c, tmp_path / "bn")
  assert res["norm_statistics"]["re_estimated"] is True
  assert res["norm_statistics"]["examples"] == 32 and res["norm_statistics"]["batch_size"] == 16
  twin, perturbed = res["children"][1], res["children"][2]
  for split in ("train", "test"):
    assert twin["vs_child0"]["barrier"][split]["loss"] == 0.0
    assert twin["vs_child0"]["aligned"]["barrier"][split]["loss"] == 0.0
  assert twin["vs_child0"]["disagreement"] == 0.0 and twin["vs_child0"]["cka"] == pytest.approx(0.0, abs=1e-3)
  assert perturbed["vs_child0"]["l2"] > 0
  assert all(0 <= ch["test"]["accuracy"] <= 1 for ch in res["children"])
  assert smoke_run[2]["norm_statistics"] is None   # a model without BatchNorm re-estimates nothing
