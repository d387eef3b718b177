"""Perturbations: masks, normalisation to sigma * E_init, one-weight masks, the init statistics."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from butterfly_jax.config import default_config
from butterfly_jax.core import perturb, tree_math
from butterfly_jax.models import make_model


@pytest.fixture(scope="module")
def model():
  apply_fn, init_fn = make_model("cnn", (8, 8, 1), 10, channels=(4,), dense=8, norm="layernorm")
  return apply_fn, init_fn, init_fn(jax.random.key(0))


def _mask_cfg(**kw):
  return ml_collections.ConfigDict(dict(dict(include=".*", exclude="", fraction=1.0, single=""), **kw))


def test_init_stats_match_he_normal_and_constants(model):
  _, init_fn, _ = model
  stats = perturb.init_stats(init_fn, jax.random.key(1), 16)
  # dense kernel: fan_in = 4*4*4 = 64 -> E[theta^2] = Var = 2/64
  assert stats.mean_square["dense"]["kernel"] == pytest.approx(2 / 64, rel=0.05)
  assert stats.variance["dense"]["kernel"] == pytest.approx(2 / 64, rel=0.05)
  assert stats.mean_square["norm0"]["scale"] == pytest.approx(1.0)   # LayerNorm scale starts at 1
  assert stats.variance["norm0"]["scale"] == 0.0                     # ... deterministically
  assert stats.variance["dense"]["bias"] == 0.0


@pytest.mark.parametrize("kind", ["gaussian", "batch"])
def test_realised_noise_norm_is_sigma_times_expected_init_norm(model, kind):
  apply_fn, init_fn, params = model
  stats = perturb.init_stats(init_fn, jax.random.key(1), 4)
  mask = perturb.build_mask(params, _mask_cfg(), jax.random.key(2))
  e_init = perturb.expected_init_l2(stats, mask)
  if kind == "gaussian":
    direction = perturb.gaussian_direction(jax.random.key(3), params, stats)
  else:
    from butterfly_jax.core.members import cross_entropy
    x = jax.random.normal(jax.random.key(4), (16, 8, 8, 1))
    y = jnp.arange(16) % 10
    direction = perturb.batch_direction(cross_entropy(apply_fn), params, (x, y))
  eps, _ = perturb.normalised(direction, mask, jnp.float32(e_init))
  assert float(tree_math.tree_norm(eps)) == pytest.approx(e_init, rel=1e-5)
  for sigma in (1e-1, 1e-2):
    child = perturb.apply(params, eps, jnp.float32(sigma))
    assert tree_math.l2_distance(child, params) == pytest.approx(sigma * e_init, rel=1e-3)
  same = perturb.apply(params, eps, jnp.float32(0.0))
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(params)))


def test_bfloat16_parameters_are_perturbed_by_one_rounding(model):
  """bf16 parameters (train.param_dtype): theta + sigma * eps computed in float32, rounded to bf16 once."""
  _, init_fn, params = model
  stats = perturb.init_stats(init_fn, jax.random.key(1), 4)
  mask = perturb.build_mask(params, _mask_cfg(), jax.random.key(2))
  held = jax.tree_util.tree_map(lambda p: p.astype(jnp.bfloat16), params)
  direction = perturb.gaussian_direction(jax.random.key(3), held, stats)
  eps, _ = perturb.normalised(direction, mask, jnp.float32(perturb.expected_init_l2(stats, mask)))
  assert {e.dtype for e in jax.tree_util.tree_leaves(eps)} == {jnp.dtype(jnp.float32)}
  for sigma in (1e-3, 1e-1):
    child = perturb.apply(held, eps, jnp.float32(sigma))
    for p, e, out in zip(jax.tree_util.tree_leaves(held), jax.tree_util.tree_leaves(eps),
                         jax.tree_util.tree_leaves(child)):
      assert out.dtype == jnp.bfloat16
      want = (np.asarray(p, np.float32) + np.float32(sigma) * np.asarray(e, np.float32)).astype(jnp.bfloat16)
      np.testing.assert_array_equal(np.asarray(out).view(np.uint16), want.view(np.uint16))
  changed = [np.mean(np.asarray(a) != np.asarray(b)) for a, b in zip(
      jax.tree_util.tree_leaves(perturb.apply(held, eps, jnp.float32(1e-3))), jax.tree_util.tree_leaves(held))]
  assert max(changed) < 0.5  # at sigma = 1e-3 most weights keep their bf16 value
  same = perturb.apply(held, eps, jnp.float32(0.0))
  assert all(np.array_equal(np.asarray(a).view(np.uint16), np.asarray(b).view(np.uint16))
             for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(held)))


def test_regex_mask_excludes_norms_and_biases(model):
  _, _, params = model
  mask = perturb.build_mask(params, _mask_cfg(exclude=".*norm.*|.*bias.*"), jax.random.key(0))
  for path, m in zip(tree_math.flat_paths(mask), jax.tree_util.tree_leaves(mask)):
    expected = 0.0 if ("norm" in path or "bias" in path) else 1.0
    assert np.all(np.asarray(m) == expected), path


def test_finetuning_mask_also_excludes_norms_and_biases_by_default(model):
  _, _, params = model
  cfg = default_config().perturb.mask
  cfg.exclude = ".*conv0.*"
  paths = tree_math.flat_paths(params)
  scratch = dict(zip(paths, jax.tree_util.tree_leaves(perturb.build_mask(params, cfg, jax.random.key(0)))))
  fine = dict(zip(paths, jax.tree_util.tree_leaves(perturb.build_mask(params, cfg, jax.random.key(0), True))))
  assert any("norm" in p for p in paths) and any("bias" in p for p in paths)
  for path in paths:
    assert float(np.max(scratch[path])) == (0.0 if "conv0" in path else 1.0), path
    assert float(np.max(fine[path])) == (0.0 if ("conv0" in path or "norm" in path or "bias" in path) else 1.0), path
  cfg.exclude_finetune = ""
  assert perturb.effective_exclude(cfg, True) == ".*conv0.*"


def test_fraction_mask_selects_that_fraction(model):
  _, _, params = model
  n = sum(x.size for x in jax.tree_util.tree_leaves(params))
  mask = perturb.build_mask(params, _mask_cfg(fraction=0.25), jax.random.key(0))
  assert sum(float(jnp.sum(m)) for m in jax.tree_util.tree_leaves(mask)) == round(0.25 * n)


@pytest.mark.parametrize("single", ["random", "conv0/kernel[1,2,0,3]"])
def test_one_weight_mask_changes_exactly_one_weight(model, single):
  _, init_fn, params = model
  stats = perturb.init_stats(init_fn, jax.random.key(1), 4)
  mask = perturb.build_mask(params, _mask_cfg(single=single), jax.random.key(5))
  direction = perturb.gaussian_direction(jax.random.key(3), params, stats)
  e_init = perturb.expected_init_l2(stats, mask)
  eps, _ = perturb.normalised(direction, mask, jnp.float32(e_init))
  child = perturb.apply(params, eps, jnp.float32(0.5))
  changed = sum(int(np.sum(np.asarray(a) != np.asarray(b)))
                for a, b in zip(jax.tree_util.tree_leaves(child), jax.tree_util.tree_leaves(params)))
  assert changed == 1
  name = perturb.single_weight_name(mask)  # the weight drawn, named so that perturb.mask.single repeats it
  again = perturb.build_mask(params, _mask_cfg(single=name), jax.random.key(6))
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(mask)))
  assert perturb.single_weight_name(perturb.build_mask(params, _mask_cfg(), jax.random.key(0))) is None
  if single != "random":
    assert name == single
    assert float(child["conv0"]["kernel"][1, 2, 0, 3]) != float(params["conv0"]["kernel"][1, 2, 0, 3])
    # E_init of one weight is its init RMS: sqrt(2 / fan_in) with fan_in = 3*3*1
    assert e_init == pytest.approx((2 / 9) ** 0.5, rel=0.3)


def test_bad_masks_raise_errors_naming_the_field(model):
  """The core raises PerturbationError (a run resolves it into a ConfigError before its directory exists)."""
  _, _, params = model
  with pytest.raises(perturb.PerturbationError, match="perturb.mask.*selects no parameter"):
    perturb.build_mask(params, _mask_cfg(include="nothing.*"), jax.random.key(0))
  with pytest.raises(perturb.PerturbationError, match="perturb.mask.single: no parameter"):
    perturb.build_mask(params, _mask_cfg(single="conv9/kernel[0,0,0,0]"), jax.random.key(0))
  with pytest.raises(perturb.PerturbationError, match="not inside conv0/kernel"):
    perturb.build_mask(params, _mask_cfg(single="conv0/kernel[5,0,0,0]"), jax.random.key(0))


def test_ulp_steps_move_each_masked_weight_by_whole_units_in_the_last_place(model):
  """perturb.kind="ulp": n nextafter steps toward +inf on the masked weights, nothing elsewhere; 0 is the identity."""
  _, _, params = model
  mask = perturb.build_mask(params, _mask_cfg(exclude=".*bias"), jax.random.key(0))
  for n in (1, 3):
    moved = perturb.ulp_steps(params, mask, n)
    for p, q, m in zip(*(jax.tree_util.tree_leaves(x) for x in (params, moved, mask))):
      p, q, m = np.asarray(p), np.asarray(q), np.asarray(m) > 0
      expected = p.copy()
      for _ in range(n):
        expected = np.where(m, np.nextafter(expected, np.float32(np.inf)), expected)
      assert q.dtype == p.dtype and np.array_equal(q, expected)
      assert np.all(q[m] > p[m]) and np.array_equal(q[~m], p[~m])
  assert perturb.num_changed(perturb.ulp_steps(params, mask, 1), params) == int(
      sum(float(jnp.sum(m)) for m in jax.tree_util.tree_leaves(mask)))
  same = perturb.ulp_steps(params, mask, 0)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(params)))
  one = perturb.build_mask(params, _mask_cfg(single="conv0/kernel[1,2,0,3]"), jax.random.key(0))
  child = perturb.ulp_steps(params, one, 1)
  w, w1 = np.float32(params["conv0"]["kernel"][1, 2, 0, 3]), np.float32(child["conv0"]["kernel"][1, 2, 0, 3])
  assert w1 == np.nextafter(w, np.float32(np.inf)) and perturb.num_changed(child, params) == 1


def test_num_changed_counts_the_weights_a_small_sigma_moves(model):
  """Below half a weight's spacing a perturbation rounds away: num_changed counts what survives (all at a normal σ,
  none far below float32's resolution)."""
  _, init_fn, params = model
  stats = perturb.init_stats(init_fn, jax.random.key(1), 4)
  mask = perturb.build_mask(params, _mask_cfg(exclude=".*bias"), jax.random.key(5))
  direction = perturb.gaussian_direction(jax.random.key(3), params, stats)
  eps, _ = perturb.normalised(direction, mask, jnp.float32(perturb.expected_init_l2(stats, mask)))
  n = int(sum(int(jnp.sum(e != 0)) for e in jax.tree_util.tree_leaves(eps)))  # the norm's scales get no noise
  counts = {s: perturb.num_changed(perturb.apply(params, eps, jnp.float32(s)), params) for s in (1e-2, 1e-7, 1e-12)}
  assert counts[1e-2] == n and counts[1e-12] == 0 and 0 < counts[1e-7] < n
