"""results.json's types (butterfly_jax/io/results.py): what a run writes is what they describe, strictly; a reader
takes an older run's missing keys and refuses a wrong value, naming where it is."""

import copy
import json
from pathlib import Path

import pytest

from butterfly_jax.io import results
from butterfly_jax.io.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]


def test_a_finished_run_is_what_the_types_describe(smoke_run):
  _, workdir, res = smoke_run
  stored = json.loads((Path(workdir) / "results.json").read_text())
  results.check(stored, strict=True)
  assert results.load(workdir) == stored == res
  child = stored["children"][1]
  assert set(child) <= set(results.Child.__annotations__)
  assert set(child["vs_child0"]) <= set(results.VsChild0.__annotations__) | set(results.Comparison.__annotations__)


def test_a_key_the_types_do_not_name_is_refused_when_writing_not_when_reading(smoke_run, tmp_path):
  _, _, res = smoke_run
  extra = copy.deepcopy(res)
  extra["children"][1]["vs_child0"]["barrier"]["train"]["surprise"] = 1.0
  with pytest.raises(results.ResultsError, match=r"children\[1\]\.vs_child0\.barrier\.train: surprise not in Barrier"):
    results.check(extra, strict=True)
  results.check(extra, strict=False)
  run = RunDir(tmp_path / "run")
  run.root.mkdir()
  with pytest.raises(results.ResultsError, match="surprise"):
    run.finish(extra)  # the writer checks before it writes: no results.json of another shape
  assert not run.results.exists()


def test_wrong_values_and_missing_keys_are_named(smoke_run):
  _, _, res = smoke_run
  bad = copy.deepcopy(res)
  bad["children"][0]["train"]["loss"] = "low"
  with pytest.raises(results.ResultsError, match=r"children\[0\]\.train\.loss: expected"):
    results.check(bad, strict=False)
  bad = copy.deepcopy(res)
  del bad["children"][2]["perturb"]
  with pytest.raises(results.ResultsError, match=r"children\[2\]: missing perturb"):
    results.check(bad, strict=True)
  results.check(bad, strict=False)  # a reader takes what is there: older versions wrote fewer keys


def test_a_diverged_childs_nulls_are_allowed(smoke_run):
  _, _, res = smoke_run
  nulled = copy.deepcopy(res)
  vs = nulled["children"][2]["vs_child0"]
  vs["l2"], vs["barrier"]["train"]["loss"], vs["barrier_path_finite"]["train"] = None, None, None
  results.check(nulled, strict=True)


def test_every_committed_run_reads():
  paths = sorted(ROOT.glob("reproduction/**/results.json"))
  assert len(paths) > 100
  for path in paths:
    results.load(path)
