"""Threshold search: bracketing in log sigma, only the runs it needs, nothing rerun."""

import json
import math

import pytest

from butterfly_jax import threshold
from butterfly_jax.run.configs_embedded import smoke


def _fake_run(truth, calls, diverge_above=math.inf, machine=None):
  """A stand-in for experiment.run: barrier = a smooth step in log sigma centred on truth[t] (plus a seed offset).
  ``machine``: child 0's final losses say which machine trained the network (runs on one machine agree)."""
  def run(c, workdir):
    calls.append((c.perturb.time, c.seed, tuple(c.perturb.scales), str(workdir)))
    children = [{"diverged": False, "perturb": {"scale": 0.0}}]
    if machine is not None:
      children[0].update(train={"loss": machine + c.seed}, test={"loss": machine})
    for s in c.perturb.scales:
      b = 0.2 / (1 + math.exp(-4 * (math.log10(s) - math.log10(truth[c.perturb.time])))) + 0.001 * c.seed
      children.append({"diverged": s > diverge_above, "perturb": {"scale": s},
                       "vs_child0": {"barrier": {"train": {"loss": b, "error": b}, "test": {"loss": b, "error": b}}}})
    return {"children": children}
  return run


def test_bracketing_finds_the_crossing_with_only_the_runs_it_needs(tmp_path):
  calls = []
  truth = {"0": 1e-4, "5": 1e-2}
  out = threshold.search(smoke(), tmp_path, ["0", "5"], [0, 1], threshold=0.1, lo=1e-6, hi=1.0, rounds=3, points=4,
                         run_fn=_fake_run(truth, calls))
  assert len(calls) == 2 * 3 * 2  # times x rounds x seeds, one family each
  assert len({c[3] for c in calls}) == len(calls)  # every run its own directory
  for t, r in out["times"].items():
    assert r["status"] == "bracketed"
    lo, hi = r["bracket"]
    assert lo < r["sigma_estimate"] < hi
    assert hi / lo < 10 ** (6 / 3 / 5 / 5) * 1.01  # three rounds of 4 points shrink 6 decades to ~0.16 decade
    # the mean crosses 0.1 at truth (plus the seed offset's 0.0005 shift: a few percent in sigma)
    assert r["sigma_estimate"] == pytest.approx(truth[t], rel=0.1)
  assert json.loads((tmp_path / "threshold.json").read_text()) == out


def test_out_of_range_and_diverged_children(tmp_path):
  calls = []
  out = threshold.search(smoke(), tmp_path / "a", ["0"], [0], lo=1e-3, hi=1e-2, rounds=3, points=3,
                         run_fn=_fake_run({"0": 1.0}, calls))
  assert out["times"]["0"]["status"].startswith("below") and out["times"]["0"]["sigma_estimate"] is None
  assert len(calls) == 1  # nothing to bracket: no further rounds
  out = threshold.search(smoke(), tmp_path / "b", ["0"], [0], lo=1e-3, hi=1e-2, rounds=3, points=3,
                         run_fn=_fake_run({"0": 1e-6}, calls))
  assert out["times"]["0"]["status"].startswith("above")
  # a diverged child counts as above the threshold
  out = threshold.search(smoke(), tmp_path / "c", ["0"], [0], lo=1e-6, hi=1.0, rounds=1, points=4,
                         run_fn=_fake_run({"0": 1e3}, calls, diverge_above=1e-3))
  r = out["times"]["0"]
  assert r["status"] == "bracketed" and r["bracket"] == [1e-4, pytest.approx(1e-2)]
  assert r["sigma_estimate"] == pytest.approx(1e-2)  # the upper end carries an infinite barrier


def test_bad_arguments_name_the_flag(tmp_path):
  with pytest.raises(threshold.ThresholdError, match="--metric"):
    threshold.search(smoke(), tmp_path, ["0"], [0], metric="train.accuracy")
  with pytest.raises(threshold.ThresholdError, match="--lo"):
    threshold.search(smoke(), tmp_path, ["0"], [0], lo=1.0, hi=0.1)


def test_real_runs_are_not_rerun(tmp_path):
  c = smoke()
  c.eval.cka_examples = 0
  c.checkpoint.trunk = c.checkpoint.children = False
  first = threshold.search(c, tmp_path, ["0"], [0, 1], threshold=1e-3, lo=1e-3, hi=10.0, rounds=2, points=3)
  dirs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
  assert 2 <= len(dirs) <= 4 and all((d / "results.json").exists() for d in dirs)
  stamps = {d: (d / "results.json").stat().st_mtime_ns for d in dirs}
  second = threshold.search(c, tmp_path, ["0"], [0, 1], threshold=1e-3, lo=1e-3, hi=10.0, rounds=2, points=3)
  assert second == first
  assert sorted(p for p in tmp_path.iterdir() if p.is_dir()) == dirs
  assert all((d / "results.json").stat().st_mtime_ns == stamps[d] for d in dirs)


def _write_prior_run(folder, config, t, seed, scales, truth):
  """A finished run directory as a map's sweep leaves it (config.json, results.json) of the fake barrier."""
  c = config.copy_and_resolve_references()
  c.perturb.time, c.seed, c.perturb.scales = t, seed, tuple(scales)
  folder.mkdir(parents=True)
  (folder / "config.json").write_text(json.dumps(c.to_dict()))
  (folder / "results.json").write_text(json.dumps(_fake_run(truth, [])(c, folder)))


def test_per_seed_search_refines_a_prior_maps_brackets_to_a_factor(tmp_path):
  """--per_seed --prior=MAP --factor=2: each seed's bracket from the map's decades, refined inside it by its own
  families until hi/lo <= 2; runs of another config in the prior folder are not taken as points."""
  truth = {"0": 3e-3}
  grid = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
  for seed in (0, 1):
    _write_prior_run(tmp_path / "map" / f"seed={seed}", smoke(), "0", seed, grid, truth)
  other = smoke()
  other.optim.lr = 0.5  # another config: its (wrong) barriers must not count
  _write_prior_run(tmp_path / "map" / "other", other, "0", 0, [2e-3, 2.5e-3], {"0": 1e-6})
  calls = []
  out = threshold.search(smoke(), tmp_path / "search", ["0"], [0, 1], threshold=0.1, lo=1e-5, hi=1.0, rounds=3,
                         points=3, per_seed=True, prior=tmp_path / "map", factor=2.0,
                         run_fn=_fake_run(truth, calls))
  assert len(calls) == 2  # one round: 3 points inside a decade leave brackets of 10^(1/4) < 2
  r = out["times"]["0"]
  for seed, call in zip(("0", "1"), calls):
    g = r["per_seed"][seed]
    assert g["status"] == "bracketed" and g["bracket"][1] / g["bracket"][0] <= 2
    # the family refined the map's bracket [1e-3, 1e-2] and measured its ends again: the same network repeated them
    assert len(call[2]) == 5 and call[2][0] == 1e-3 and call[2][-1] == 1e-2 and 1e-3 < call[2][1] < call[2][3] < 1e-2
    assert g["reproduced"][seed] == {"0.001": True, "0.01": True} and g["other_networks"][seed] == []
    assert g["sigma_estimate"] == pytest.approx(truth["0"], rel=0.1)
    assert len(g["points"]) == len(grid) + 3 and all(set(p["per_seed"]) == {seed} for p in g["points"])
  lo, hi = r["spread"]
  assert lo <= hi and lo == min(g["sigma_estimate"] for g in r["per_seed"].values())


def test_a_prior_from_another_network_only_says_where_to_look(tmp_path):
  """A map run on another machine trained another child 0 (its barriers are against another network): its points are
  left out and reported, its bracket is where the first family looks, and a crossing outside it is found a decade
  further out, then refined."""
  grid = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
  c = smoke()
  c.perturb.time, c.seed, c.perturb.scales = "0", 0, tuple(grid)
  (tmp_path / "map" / "other").mkdir(parents=True)
  (tmp_path / "map" / "other" / "config.json").write_text(json.dumps(c.to_dict()))
  (tmp_path / "map" / "other" / "results.json").write_text(json.dumps(_fake_run({"0": 3e-2}, [], machine=7.0)(
      c, None)))
  calls = []
  out = threshold.search(smoke(), tmp_path / "search", ["0"], [0], threshold=0.1, lo=1e-5, hi=1.0, rounds=4,
                         points=3, per_seed=True, prior=tmp_path / "map", factor=2.0,
                         run_fn=_fake_run({"0": 3e-3}, calls, machine=1.0))
  g = out["times"]["0"]["per_seed"]["0"]
  assert calls[0][2][0] == 1e-2 and calls[0][2][-1] == 1e-1  # the other network's bracket, ends included
  assert max(calls[1][2]) < 1e-2 and min(calls[1][2]) >= 1e-3  # everything there was above: a decade below
  assert g["status"] == "bracketed" and g["bracket"][1] / g["bracket"][0] <= 2
  assert g["sigma_estimate"] == pytest.approx(3e-3, rel=0.1)
  assert g["network"]["0"] == [1.0, 1.0] and all(p["sigma"] not in (1e-5, 1e-4) for p in g["points"])
  (other,) = g["other_networks"]["0"]
  assert other["network"] == [7.0, 7.0] and len(other["points"]) == len(grid)


def test_bad_search_arguments_name_the_flag(tmp_path):
  with pytest.raises(threshold.ThresholdError, match="--factor"):
    threshold.search(smoke(), tmp_path, ["0"], [0], factor=0.5)
  with pytest.raises(threshold.ThresholdError, match="--prior"):
    threshold.search(smoke(), tmp_path, ["0"], [0], prior=tmp_path / "missing")
