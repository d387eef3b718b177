"""End to end on the smoke config: the run directory, sigma = 0 twins, determinism, members strategies."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from butterfly_jax.io import rundir as rundir_lib
from butterfly_jax.run.experiment import run


def test_smoke_run_writes_every_documented_field(smoke_run):
  c, workdir, res = smoke_run
  for name in ("config.json", "metrics.jsonl", "results.json"):
    assert (workdir / name).exists(), name
  assert (workdir / "checkpoints" / "trunk").is_dir() and (workdir / "checkpoints" / "children").is_dir()
  assert json.loads((workdir / "config.json").read_text())["perturb"]["scales"] == [0.0, 0.01, 1.0]
  assert len(res["children"]) == 4
  for j, ch in enumerate(res["children"]):
    assert ch["index"] == j
    assert set(ch["perturb"]) >= {"kind", "scale", "noise_l2", "expected_init_l2", "num_perturbed", "num_changed",
                                  "mask"}
    # σ = 0 (child 0 and the twin) moves nothing; σ > 0 moves the weights whose gradient is not 0 (a pixel that is 0
    # in every digit gives its first-layer weights none)
    changed = ch["perturb"]["num_changed"]
    assert changed == 0 if ch["perturb"]["scale"] == 0 else 0.5 * ch["perturb"]["num_perturbed"] < changed <= ch[
        "perturb"]["num_perturbed"]
    for split in ("train", "test"):
      assert 0.0 <= ch[split]["accuracy"] <= 1.0 and ch[split]["loss"] > 0
    assert ch["diverged"] is False
    assert ch["l2_from_init"] > 0
    if j == 0:
      assert "vs_child0" not in ch
      continue
    v = ch["vs_child0"]
    assert v["l2"] >= 0
    for split in ("train", "test"):
      for metric in ("loss", "error"):
        assert v["barrier"][split][metric] >= 0
        curve = v["curves"][split][metric]
        assert len(curve) == c.eval.num_alphas
    # end points of each curve are the two children's own evaluations
    assert v["curves"]["train"]["loss"][0] == pytest.approx(res["children"][0]["train"]["loss"])
    assert v["curves"]["test"]["error"][-1] == pytest.approx(1 - ch["test"]["accuracy"])
  assert res["alphas"][0] == 0.0 and res["alphas"][-1] == 1.0
  prov = res["provenance"]
  assert prov["package_version"] and prov["backend"] == jax.default_backend()
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert {l["phase"] for l in lines} == {"trunk", "children"}
  assert lines[-1]["step"] == res["steps"]["T"]
  assert len(lines[-1]["l2_from_init"]) == 4


def test_sigma_zero_child_is_bitwise_child0(smoke_run):
  _, workdir, res = smoke_run
  twin = res["children"][1]
  assert twin["perturb"]["scale"] == 0.0 and twin["perturb"]["noise_l2"] == 0.0
  assert twin["vs_child0"]["l2"] == 0.0
  for split in ("train", "test"):
    for metric in ("loss", "error"):
      assert twin["vs_child0"]["barrier"][split][metric] == 0.0
  params = rundir_lib.restore_checkpoint(workdir / "checkpoints" / "children")["params"]
  for leaf in jax.tree_util.tree_leaves(params):
    np.testing.assert_array_equal(np.asarray(leaf[0]), np.asarray(leaf[1]))
  # and every logged step along the way
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    rec = json.loads(line)
    if rec["phase"] == "children":
      assert rec["l2_to_child0"][1] == 0.0


def test_perturbed_child_moves_by_sigma_times_init_norm(smoke_run):
  _, _, res = smoke_run
  for ch in res["children"][2:]:
    p = ch["perturb"]
    assert p["noise_l2"] == pytest.approx(p["scale"] * p["expected_init_l2"], rel=1e-3)
    assert ch["vs_child0"]["l2"] > 0


def test_one_weight_moved_one_ulp_is_a_child_and_the_twin_stays_exact(smoke_config, tmp_path):
  """perturb.kind="ulp" with one weight: the smallest perturbation there is, one nextafter; recorded as such."""
  c = smoke_config.copy_and_resolve_references()
  c.perturb.kind, c.perturb.scales = "ulp", (0.0, 1.0, 3.0)
  c.perturb.mask.single, c.perturb.mask.exclude = "random", ".*bias"
  res = run(c, tmp_path)
  twin, one, three = res["children"][1:]
  assert twin["vs_child0"]["l2"] == 0.0 and twin["perturb"]["num_changed"] == 0
  assert one["perturb"]["kind"] == "ulp" and "expected_init_l2" not in one["perturb"]
  assert one["perturb"]["num_perturbed"] == 1 and one["perturb"]["num_changed"] == 1
  assert three["perturb"]["weight"] == one["perturb"]["weight"] and three["perturb"]["num_changed"] == 1
  path, index = one["perturb"]["weight"].rstrip("]").split("[")
  trunk = rundir_lib.restore_checkpoint(tmp_path / "checkpoints" / "trunk")["params"]
  for key in path.split("/"):
    trunk = trunk[key]
  w = np.float32(np.asarray(trunk)[tuple(int(i) for i in index.split(","))])
  up = np.nextafter(w, np.float32(np.inf))
  assert one["perturb"]["noise_l2"] == pytest.approx(float(up - w), rel=1e-6)
  assert three["perturb"]["noise_l2"] == pytest.approx(float(np.nextafter(np.nextafter(up, np.inf), np.inf) - w),
                                                        rel=1e-6)


def test_same_config_and_seed_give_identical_results(smoke_config, tmp_path):
  a = run(smoke_config, tmp_path / "a")
  b = run(smoke_config, tmp_path / "b")
  strip = lambda r: {k: v for k, v in r.items() if k not in ("timing", "provenance")}
  assert strip(a) == strip(b)


def test_finished_run_is_not_redone_or_overwritten(smoke_config, tmp_path):
  first = run(smoke_config, tmp_path)
  stamp = (tmp_path / "results.json").stat().st_mtime_ns
  assert run(smoke_config, tmp_path) == first
  assert (tmp_path / "results.json").stat().st_mtime_ns == stamp
  other = smoke_config.copy_and_resolve_references()
  other.seed = 1
  with pytest.raises(rundir_lib.RunDirError, match="different config"):
    run(other, tmp_path)


@pytest.mark.parametrize("strategy", ["sequential", "map"])
def test_child_trajectory_does_not_depend_on_siblings(smoke_config, tmp_path, strategy):
  c2 = smoke_config.copy_and_resolve_references()
  c2.members.strategy = strategy
  c2.perturb.scales = (1e-2,)
  c3 = c2.copy_and_resolve_references()
  c3.perturb.scales = (0.5, 1e-2)
  r2, r3 = run(c2, tmp_path / "two"), run(c3, tmp_path / "three")
  assert r2["members_strategy"] == strategy
  assert r2["children"][0]["train"] == r3["children"][0]["train"]
  assert r2["children"][1]["vs_child0"] == r3["children"][2]["vs_child0"]


def test_vmap_strategy_keeps_sigma_zero_twins_equal_and_matches_sequential(smoke_config, tmp_path):
  c = smoke_config.copy_and_resolve_references()
  c.perturb.scales = (0.0, 1e-2)
  c.members.strategy = "vmap"
  rv = run(c, tmp_path / "vmap")
  assert rv["members_strategy"] == "vmap"
  assert rv["children"][1]["vs_child0"]["l2"] == 0.0
  assert rv["children"][1]["vs_child0"]["barrier"]["train"]["loss"] == 0.0
  c.members.strategy = "sequential"
  rs = run(c, tmp_path / "seq")
  np.testing.assert_allclose(rv["children"][2]["vs_child0"]["l2"], rs["children"][2]["vs_child0"]["l2"], rtol=1e-3)


def test_rewind_and_extra_steps(smoke_config, tmp_path):
  c = smoke_config.copy_and_resolve_references()
  c.perturb.extra_steps = True
  c.perturb.rewind_lr = True
  c.perturb.scales = (1e-2,)
  res = run(c, tmp_path)
  t, total = res["steps"]["t"], res["steps"]["T"]
  assert res["children"][0]["end_step"] == total
  assert res["children"][1]["end_step"] == t + total
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert lines[-1]["step"] == t + total
  assert lines[-1]["active"] == [False, True]
  first_child = next(l for l in lines if l["phase"] == "children")
  trunk_line = next(l for l in lines if l["phase"] == "trunk" and l["step"] == first_child["step"] - t)
  # the rewound child's schedule restarted at t: its lr is the trunk's lr t steps earlier
  assert first_child["lr"][1] == pytest.approx(trunk_line["lr"][0])
  assert first_child["lr"][0] != pytest.approx(first_child["lr"][1])


def test_diverging_child_is_recorded_and_others_finish(smoke_config, tmp_path):
  c = smoke_config.copy_and_resolve_references()
  c.perturb.scales = (1e-2, 1e30)
  c.perturb.kind = "gaussian"
  c.eval.every_steps = 20
  c.eval.during_num_examples = 50
  res = run(c, tmp_path)
  during = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  during = [l for l in during if "barrier" in l]
  assert during and all(l["barrier"][1]["train"]["error"] is None and l["eval_test_error"][2] is None
                        and l["barrier"][0]["train"]["error"] is not None for l in during)
  assert res["children"][2]["diverged"] is True
  assert res["children"][1]["diverged"] is False and res["children"][0]["diverged"] is False
  assert res["children"][1]["vs_child0"]["barrier"]["train"]["loss"] is not None
  bad = res["children"][2]
  assert bad["vs_child0"]["barrier"]["train"]["loss"] is None
  assert bad["vs_child0"]["barrier"]["test"]["error"] is None  # not the error of NaN logits
  assert bad["test"]["accuracy"] is None and bad["vs_child0"]["l2"] is None
  assert bad["perturb"]["scale"] == 1e30


def test_barriers_during_training_are_logged(smoke_config, tmp_path):
  c = smoke_config.copy_and_resolve_references()
  c.eval.every_steps = 10
  c.eval.during_num_examples = 100
  c.checkpoint.trunk = c.checkpoint.children = False
  c.checkpoint.every_steps = "0"
  run(c, tmp_path)
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  during = [l for l in lines if "barrier" in l]
  assert [l["step"] for l in during] == [20, 30, 40]
  for l in during:
    assert len(l["barrier"]) == 2                 # pairs (0,1) and (0,2)
    assert l["barrier"][0]["train"]["loss"] == 0.0  # the sigma = 0 twin
    assert len(l["eval_test_error"]) == 3
  assert not (tmp_path / "checkpoints").exists()


def test_cka_and_ensembles_are_reported(smoke_run):
  _, _, res = smoke_run
  child0 = res["children"][0]
  twin, small, big = res["children"][1:]
  tv = twin["vs_child0"]
  assert tv["cka"] == pytest.approx(0.0, abs=1e-3)
  assert tv["disagreement"] == 0.0
  assert tv["ensemble"]["accuracy"] == pytest.approx(child0["test"]["accuracy"])
  assert tv["ensemble"]["loss"] == pytest.approx(child0["test"]["loss"], rel=1e-5)
  for ch in (small, big):
    v = ch["vs_child0"]
    assert 0.0 <= v["cka"] <= np.pi / 2 and 0.0 <= v["disagreement"] <= 1.0
    assert 0.0 <= v["ensemble"]["accuracy"] <= 1.0
  assert big["vs_child0"]["l2"] > small["vs_child0"]["l2"]
  assert big["vs_child0"]["cka"] > tv["cka"]


def test_alignment_results_sigma_zero_twin_and_no_worse_distance(smoke_run):
  c, _, res = smoke_run
  assert c.eval.align
  twin = res["children"][1]["vs_child0"]["aligned"]
  assert twin["fixed_point_fraction"] == 1.0 and twin["l2"] == 0.0
  assert set(twin["fixed_point_fractions"].values()) == {1.0}
  for split in ("train", "test"):
    for metric in ("loss", "error"):
      assert twin["barrier"][split][metric] == 0.0
  for ch in res["children"][1:]:
    v = ch["vs_child0"]
    a = v["aligned"]
    assert "method" not in a and "examples" not in a  # weight matching (the default) writes what it always did
    assert 0.0 <= a["fixed_point_fraction"] <= 1.0
    assert a["l2"] <= v["l2"] * (1 + 1e-6)  # weight matching starts from the identity and only improves
    for split in ("train", "test"):
      for metric in ("loss", "error"):
        assert a["barrier"][split][metric] >= 0.0
        assert len(a["curves"][split][metric]) == c.eval.num_alphas
        # a permuted network computes the same function: the aligned curve ends where the plain one does
        assert a["curves"][split][metric][-1] == pytest.approx(v["curves"][split][metric][-1], abs=1e-5)
        assert a["curves"][split][metric][0] == v["curves"][split][metric][0]


def test_activation_matching_run_aligns_and_changes_nothing_else(smoke_run, tmp_path):
  """``eval.align_method="activations"`` on the smoke run's config: the same training, plain comparisons and
  evaluation bit for bit (only ``vs_child0.aligned`` differs), the method and its examples recorded, the sigma = 0
  twin matched by the identity, every permuted child computing the function it computed.

  Barriers: for the sigma = 1 child, activation matching lowers the loss barrier on train and test (measured
  0.645 -> 0.571 and 0.517 -> 0.465; weight matching: 0.518 and 0.417), asserted here. It does not minimise the
  L2 distance (that child's aligned L2 rose, 13.73 -> 14.43, and is not asserted), and with sigma = 3 (not run
  here) the loss barriers fell (1.22 -> 1.02) but the train error barrier rose (0.271 -> 0.291): only the loss
  barriers of the sigma = 1 child are asserted to fall."""
  from butterfly_jax.report.table import load_table
  c, _, plain = smoke_run
  c = ml_collections.ConfigDict(c.to_dict())
  c.eval.align_method = "activations"
  c.checkpoint.trunk = c.checkpoint.children = False
  res = run(c, tmp_path / "act")
  strip = lambda r: {k: v for k, v in r.items() if k not in ("timing", "provenance", "children")}
  assert strip(res) == strip(plain)
  examples = min(c.eval.align_examples, res["data"]["num_train"])
  for ch, ref in zip(res["children"], plain["children"]):
    a = (ch.get("vs_child0") or {}).pop("aligned", None)
    ref = {**ref, "vs_child0": {k: v for k, v in ref["vs_child0"].items() if k != "aligned"}} if a else ref
    assert ch == ref  # everything but the alignment
    if a is None:
      continue
    assert a["method"] == "activations" and a["examples"] == examples
    assert set(a["fixed_point_fractions"]) == {"P_dense0"} and 0.0 <= a["fixed_point_fraction"] <= 1.0
    v = ch["vs_child0"]
    for split in ("train", "test"):
      for metric in ("loss", "error"):
        assert a["barrier"][split][metric] >= 0.0
        assert a["curves"][split][metric][0] == v["curves"][split][metric][0]
        assert a["curves"][split][metric][-1] == pytest.approx(v["curves"][split][metric][-1], abs=1e-5)
    corr = a["unit_correlation"]  # the identity is one assignment: the one matching picks scores at least as high
    assert -1.0 <= corr["identity"] <= corr["matched"] + 1e-9 <= 1.0 + 1e-9
    if ch["perturb"]["scale"] == 0.0:
      assert a["fixed_point_fraction"] == 1.0 and a["l2"] == 0.0
      assert all(a["barrier"][s][m] == 0.0 for s in ("train", "test") for m in ("loss", "error"))
      assert corr["identity"] == corr["matched"] > 0.9  # < 1 only by units constant on the examples (they count 0)
    if ch["perturb"]["scale"] == 1.0:
      assert a["fixed_point_fraction"] < 1.0 and corr["matched"] > corr["identity"]
      for split in ("train", "test"):
        assert a["barrier"][split]["loss"] < v["barrier"][split]["loss"]
  table = load_table(tmp_path)  # the report carries the method: the config's column and the pairs' own
  assert set(table["eval.align_method"]) == {"activations"} and set(table["vs_child0.aligned.method"]) == {
      "activations"}
  assert set(table["definitions"]) == {"v3-custom"}  # its aligned barriers are not weight matching's


def test_align_off_leaves_no_aligned_results(tmp_path, smoke_config):
  smoke_config.eval.align = False
  smoke_config.eval.cka_examples = 0
  smoke_config.checkpoint.trunk = smoke_config.checkpoint.children = False
  res = run(smoke_config, tmp_path)
  assert "aligned" not in res["children"][1]["vs_child0"]


def test_bfloat16_mixed_precision_trains_float32_parameters(smoke_config, tmp_path):
  c = smoke_config
  c.train.compute_dtype = "bfloat16"
  c.eval.cka_examples = 0
  res = run(c, tmp_path / "bf16")
  params = rundir_lib.restore_checkpoint(tmp_path / "bf16" / "checkpoints" / "children")["params"]
  assert {np.asarray(x).dtype for x in jax.tree_util.tree_leaves(params)} == {np.dtype("float32")}
  twin = res["children"][1]
  assert twin["vs_child0"]["l2"] == 0.0 and twin["vs_child0"]["barrier"]["train"]["loss"] == 0.0
  assert res["children"][0]["train"]["loss"] < 1.5  # it learns (chance is ln 10 = 2.3)
  c.train.compute_dtype = "float32"
  ref = run(c, tmp_path / "f32")
  assert ref["children"][0]["train"]["loss"] != res["children"][0]["train"]["loss"]  # bf16 was used
  assert abs(ref["children"][0]["train"]["loss"] - res["children"][0]["train"]["loss"]) < 0.1
  c.train.compute_dtype = "float16"
  with pytest.raises(ValueError, match="train.compute_dtype"):
    run(c, tmp_path / "bad")


def test_bfloat16_parameters_stay_bfloat16_and_the_sigma_zero_twin_stays_exact(smoke_config, tmp_path):
  c = smoke_config
  c.train.param_dtype = "bfloat16"
  c.optim.name = "adamw"  # the authors' OLMo optimizer: its moments follow the parameters' dtype
  c.optim.lr = 3e-3
  c.perturb.scales = (0.0, 1e-2)
  c.eval.cka_examples = 0
  res = run(c, tmp_path)
  saved = rundir_lib.restore_checkpoint(tmp_path / "checkpoints" / "children")
  dtypes = {np.asarray(x).dtype for x in jax.tree_util.tree_leaves(saved["params"])}
  assert dtypes == {np.dtype(jnp.bfloat16)}
  floats = [x for x in jax.tree_util.tree_leaves(saved["opt_state"]) if not np.issubdtype(np.asarray(x).dtype, np.integer)]
  assert floats and {np.asarray(x).dtype for x in floats} == {np.dtype(jnp.bfloat16)}
  assert res["model"]["param_dtype"] == "bfloat16"
  for leaf in jax.tree_util.tree_leaves(saved["params"]):  # the sigma = 0 twin: bitwise child 0
    np.testing.assert_array_equal(np.asarray(leaf[0]), np.asarray(leaf[1]))
  twin, child = res["children"][1], res["children"][2]
  assert twin["vs_child0"]["l2"] == 0.0
  assert all(twin["vs_child0"]["barrier"][s][m] == 0.0 for s in ("train", "test") for m in ("loss", "error"))
  assert child["perturb"]["noise_l2"] > 0 and child["vs_child0"]["l2"] > 0
  assert res["children"][0]["train"]["loss"] < 2.0  # it learns (chance is ln 10 = 2.3)


def test_a_diverged_trunk_fails_again_when_the_command_is_repeated(smoke_config, tmp_path):
  c = smoke_config.copy_and_resolve_references()
  c.optim.lr = 1e30          # finite, so accepted, but the trunk diverges before the perturbation
  for _ in range(2):         # "a killed sweep is finished by running the same command again": not a failed one
    with pytest.raises(FloatingPointError, match="the trunk diverged"):
      run(c, tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_a_trunk_state_checkpoint_remembers_its_divergence(smoke_config, tmp_path):
  from butterfly_jax.io import rundir as rundir_lib
  c = smoke_config.copy_and_resolve_references()
  c.optim.lr = 1e30
  c.checkpoint.every_steps = "5"
  with pytest.raises(FloatingPointError):
    run(c, tmp_path)
  meta, _ = rundir_lib.RunDir(tmp_path).latest_state()
  assert meta["phase"] == "trunk" and meta["diverged"] == [True]


def test_barriers_of_a_path_that_is_not_finite_are_null_and_flagged():
  from butterfly_jax.core.evaluate import barrier_from_curve
  from butterfly_jax.core.evaluate import pair_barriers as _pair_barriers
  alphas = np.linspace(0, 1, 5)
  ok = {"loss": np.array([0.5, 0.7, 0.9, 0.6, 0.5]), "error": np.array([0.1, 0.2, 0.3, 0.2, 0.1])}
  blown = {"loss": np.array([0.5, 0.8, np.nan, 0.7, 0.6]), "error": np.array([0.1, 0.2, 0.9, 0.2, 0.1])}
  curves = {"train": {"curves": [ok, ok]}, "test": {"curves": [ok, blown]}}  # pairs (0, 1) and (0, 2)
  barriers, finite = _pair_barriers(curves, alphas, 3)
  assert finite == [{"train": True, "test": True}, {"train": True, "test": False}]
  assert barriers[0]["test"]["loss"] == barrier_from_curve(alphas, ok["loss"]) == pytest.approx(0.4)
  assert barriers[1]["train"]["error"] == pytest.approx(0.2)
  # the end points are finite, a network inside the path is not: no barrier, the error of NaN logits included
  assert np.isnan(barriers[1]["test"]["loss"]) and np.isnan(barriers[1]["test"]["error"])


def test_a_pair_whose_path_blows_up_is_flagged_in_results_summary_and_report(smoke_config, tmp_path, monkeypatch):
  """A non-finite network inside the path between two finite children is made by hand here (a NaN written into
  the evaluated curve of the last pair at an interior alpha): the run's results, its summary line and the report
  tell it from a diverged pair."""
  from butterfly_jax import main, report
  from butterfly_jax.core import evaluate
  original = evaluate.family_curves

  def blown_up(loss, err, num_children, alphas):
    out = original(loss, err, num_children, alphas)
    out["curves"][-1]["loss"][2] = np.nan
    return out

  monkeypatch.setattr(evaluate, "family_curves", blown_up)
  c = smoke_config.copy_and_resolve_references()
  c.perturb.scales = (0.0, 1e-2)
  c.eval.align = False
  c.checkpoint.trunk = c.checkpoint.children = False
  res = run(c, tmp_path / "run")
  twin, pair = res["children"][1], res["children"][2]
  assert not pair["diverged"] and pair["test"]["loss"] is not None  # both children are finite
  assert pair["vs_child0"]["barrier_path_finite"] == {"train": False, "test": False}
  assert pair["vs_child0"]["barrier"]["train"] == {"loss": None, "error": None}
  assert twin["vs_child0"]["barrier_path_finite"] == {"train": True, "test": True}
  (line,) = [l for l in main.summary(res).splitlines() if l.startswith("child 2 ")]
  assert "PATH NOT FINITE (train/test: no barrier)" in line
  assert "The smallest perturbation" not in main.summary(res)  # no reading without a barrier
  table = report.load_table(tmp_path)
  assert list(table.sort_values("child")["barrier_status"]) == ["ok", "path_not_finite"]
  assert not table["pair_diverged"].any()
  assert "pairs with a non-finite path (no barrier): 1" in report.summary(table)


def test_a_parted_twin_is_named_and_warned_about(smoke_run):
  """The σ = 0 twin with child 0's schedule must end at L2 0; where it does not, the run says so (a twin of the
  extra-steps or rewinding kind trains differently by design and is not the control)."""
  import types
  from butterfly_jax.run.experiment import parted_twins
  _, _, res = smoke_run
  plan = types.SimpleNamespace(scales=(0.0, 1e-2, 1.0), lr_offsets=(0, 0, 0, 0), end_steps=(40, 40, 40, 40))
  assert parted_twins(plan, res) == []
  parted = json.loads(json.dumps(res))
  parted["children"][1]["vs_child0"]["l2"] = 5e-7
  assert parted_twins(plan, parted) == [1]
  extra = types.SimpleNamespace(scales=plan.scales, lr_offsets=plan.lr_offsets, end_steps=(40, 70, 70, 70))
  assert parted_twins(extra, parted) == []
