"""A saved run as one object (``butterfly_jax.load_run``): its parts agree with what the run wrote and recorded,
and what a run lacks is named."""

import json
import shutil

import jax
import numpy as np
import optax
import pytest

import butterfly_jax as bj
from butterfly_jax.io.rundir import RunDirError, restore_checkpoint


@pytest.fixture(scope="module")
def run(smoke_run):
  return bj.load_run(smoke_run[1])


def _equal(a, b) -> bool:
  pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
  return all(np.array_equal(x, y) for x, y in pairs)


def _loss_and_accuracy(run, params, split: str):
  """Mean cross-entropy and accuracy of ``params`` on the run's final evaluation examples of ``split``, from the
  run's model and data as the object gives them."""
  indices = run.evaluation_examples()[split]
  data = run.dataset
  inputs, labels = (data.train_inputs, data.train_labels) if split == "train" else (data.test_inputs,
                                                                                      data.test_labels)
  logits, _ = run.apply_fn(params, run.model_input(inputs[indices]))
  loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(np.float32), labels[indices])
  return float(np.mean(np.asarray(loss, np.float64))), float(np.mean(np.argmax(logits, -1) == labels[indices]))


def test_config_and_results_are_the_runs(run, smoke_run, tmp_path):
  c, workdir, results = smoke_run
  assert run.dir == workdir.resolve() and run.finished
  assert run.results == results
  assert tuple(run.config.perturb.scales) == tuple(c.perturb.scales) and run.config.train.steps == c.train.steps
  # a config written before fields were added reads as today's schema, with the values that run used
  old = json.loads((workdir / "config.json").read_text())
  del old["eval"]["dtype"], old["eval"]["cka_estimator"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  upgraded = bj.load_run(tmp_path).config
  assert upgraded.eval.dtype == "float32" and upgraded.eval.cka_estimator == "biased" != c.eval.cka_estimator
  assert run.scales == (0.0, 0.0, 1e-2, 1.0) and run.num_children == len(results["children"]) == 4
  assert "finished, 4 children" in repr(run)


def test_params_are_the_checkpoints_children(run, smoke_run):
  _, workdir, results = smoke_run
  stacked = restore_checkpoint(workdir / "checkpoints" / "children")["params"]
  for k in range(4):
    assert _equal(run.params(k), jax.tree_util.tree_map(lambda x: np.asarray(x[k]), stacked))
  assert _equal(run.params(1), run.params(0))  # the σ = 0 twin is child 0, bitwise
  for k in (2, 3):
    assert bj.l2_distance(run.params(0), run.params(k)) == pytest.approx(results["children"][k]["vs_child0"]["l2"],
                                                                           rel=1e-5)
  assert _equal(run.interpolate(3, 0.0), run.params(0)) and _equal(run.interpolate(3, 1.0), run.params(3))


def test_the_model_and_data_give_the_recorded_losses(run, smoke_run):
  """``apply_fn(params(k), model_input(x))`` on the run's evaluation examples: child k's recorded loss and
  accuracy; along the path, the recorded α-curve."""
  _, _, results = smoke_run
  assert {split: len(v) for split, v in run.evaluation_examples().items()} == {"train": 200, "test": 200}
  for k in (0, 3):
    for split in ("train", "test"):
      loss, accuracy = _loss_and_accuracy(run, run.params(k), split)
      assert loss == pytest.approx(results["children"][k][split]["loss"], rel=1e-5)
      assert accuracy == pytest.approx(results["children"][k][split]["accuracy"], abs=1e-6)
  assert results["children"][3]["test"]["loss"] != pytest.approx(results["children"][0]["test"]["loss"], rel=1e-3)
  curve = run.curves.query("child == 3 and not aligned and split == 'train' and metric == 'loss'")
  assert list(curve["alpha"]) == results["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
  mid = _loss_and_accuracy(run, run.interpolate(3, 0.5), "train")[0]
  assert mid == pytest.approx(curve["value"].iloc[2], rel=1e-5)


def test_tables_are_the_reports_for_this_run(run, smoke_run):
  _, _, results = smoke_run
  table = run.table
  assert list(table["child"]) == [1, 2, 3] and (table["run"] == ".").all() and (table["status"] == "finished").all()
  assert list(table["perturb.scale"]) == [0.0, 1e-2, 1.0]
  assert list(table["vs_child0.l2"]) == [results["children"][k]["vs_child0"]["l2"] for k in (1, 2, 3)]
  curves = run.curves
  blocks = sum(1 + ("aligned" in child["vs_child0"]) for child in results["children"][1:])
  assert len(curves) == blocks * 2 * 2 * len(results["alphas"])  # × splits × (loss, error) × α
  twin = curves.query("child == 1 and not aligned and split == 'test' and metric == 'loss'")["value"]
  assert list(twin) == [results["children"][0]["test"]["loss"]] * len(results["alphas"])  # the path of twins: flat
  children = run.trajectories.query("phase == 'children'")
  assert sorted(children["member"].unique()) == [0, 1, 2, 3] and children["step"].max() == 40
  assert list(children.query("member == 3")["perturb.scale"].unique()) == [1.0]


def test_missing_parts_are_named(run, smoke_run, tmp_path):
  _, workdir, _ = smoke_run
  with pytest.raises(RunDirError, match="config.json does not exist"):
    bj.load_run(tmp_path)
  for k in (4, -1, 1.0):
    with pytest.raises(RunDirError, match=r"params\(.*\): the run has children 0\.\.3 \(σ 0.0, 0.0, 0.01, 1.0\)"):
      run.params(k)

  bare = tmp_path / "bare"  # a finished run that kept no checkpoint
  shutil.copytree(workdir, bare)
  shutil.rmtree(bare / "checkpoints")
  with pytest.raises(RunDirError, match=r"children 0\.\.3, but their parameters cannot be read: .*checkpoints/"
                     r"children does not exist .*checkpoint\.children=True"):
    bj.load_run(bare).params(0)

  unfinished = tmp_path / "unfinished"  # trained, killed before its results: partial access
  shutil.copytree(workdir, unfinished)
  (unfinished / "results.json").unlink()
  part = bj.load_run(unfinished)
  assert not part.finished and "unfinished" in repr(part)
  for what in ("results", "curves"):
    with pytest.raises(RunDirError, match=rf"{what}: .*results.json does not exist, the run has not finished "
                       r"\(its metrics.jsonl ends at step \d+ of the \w+ phase\)"):
      getattr(part, what)
  assert list(part.table["status"]) == ["incomplete"]
  assert part.trajectories["step"].max() == 40
  assert _equal(part.params(2), run.params(2))  # the children's checkpoint is written before the evaluation
