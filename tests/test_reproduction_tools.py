"""The reproduction's own modules (the ``reproduction`` package, run as ``python -m reproduction.MODULE`` from the
repository root): a package of plain modules, the claims files' map, cost, the studies' and the pre-training
study's verdicts, on small made-up tables. The instability map itself is the report's: tests/test_instability.py."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from reproduction import claims, cost, pretraining, stats, studies  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_reproduction_is_a_package_of_plain_modules_without_cycles():
  """Importing the modules leaves sys.path as it was; they import each other as ``reproduction.X`` (never by a bare
  name found on sys.path), and no module imports one that imports it back."""
  modules = sorted(p.stem for p in (ROOT / "reproduction").glob("*.py") if p.stem != "__init__")
  assert {"claims", "scale", "stats", "studies"} <= set(modules) and "instability_map" not in modules
  light = [m for m in modules if m != "single_weight"]  # single_weight starts JAX; its imports are read below
  code = ("import sys; before = list(sys.path); import " + ", ".join(f"reproduction.{m}" for m in light)
          + "; assert sys.path == before, sys.path")
  subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=600)
  graph, bare = {}, []
  for name in modules:
    deps = set()
    for node in ast.walk(ast.parse((ROOT / "reproduction" / f"{name}.py").read_text())):
      found = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module] + [f"{node.module}.{a.name}" for a in node.names]
               if isinstance(node, ast.ImportFrom) and node.module else [])
      bare += [f"{name}: {f}" for f in found if f.split(".")[0] in modules or f == "sys.path"]
      deps |= {f.split(".")[1] for f in found if f.startswith("reproduction.") and f.split(".")[1] in modules}
    graph[name] = deps - {name}
  assert not bare, f"modules imported by a bare name (from sys.path): {bare}"
  assert "sys.path" not in "".join((ROOT / "reproduction" / f"{m}.py").read_text() for m in modules)

  def reaches(start, goal, seen=()):
    return any(d == goal or (d not in seen and reaches(d, goal, seen + (d,))) for d in graph[start])

  assert [m for m in modules if reaches(m, m)] == []
  assert "scale" in graph["claims"] and "scale" in graph["studies"] and "claims" not in graph["studies"]
  from butterfly_jax.report import instability
  assert stats.spearman_by_seed is instability.spearman_by_seed and stats.fmt_rho is instability.fmt_rho


def test_claims_map_prints_the_maps_tables_from_the_report_package(tmp_path, capsys):
  """``python -m reproduction.claims map`` on a made-up map: the cell tables, σ*(t) at the five thresholds and the
  relations, from :mod:`butterfly_jax.report.instability`."""
  rows = []
  for t in (0, 100):
    for seed in (0, 1):
      for child, sigma in enumerate((0.0, 1e-4, 1e-2, 1.0), start=1):
        b = 0.0 if sigma == 0 else (0.05 + sigma if t == 0 else sigma / 10) * (1 + seed / 10)
        rows.append({"run": f"{t},{seed}", "status": "finished", "child": child, "seed": seed, "t": t, "T": 400,
                     "steps_per_epoch": 100, "perturb.scale": sigma, "perturb.kind": "batch", "perturb.mask.single": "",
                     "pair_diverged": False, "child0.train.accuracy": 0.9, "child0.test.accuracy": 0.85,
                     "train.accuracy": 0.9, "vs_child0.l2": 10 * b, "vs_child0.cka": b,
                     **{f"vs_child0.barrier.{s}.{m}": b for s in ("train", "test") for m in ("loss", "error")}})
  table = tmp_path / "table.csv"
  pd.DataFrame(rows).to_csv(table, index=False)
  claims.main(["map", f"--map={table}"])
  out = capsys.readouterr().out
  assert out.startswith("From 4 finished runs, 12 child pairs with σ > 0 (seeds [0, 1]; directions ['batch']; 2 "
                        "perturbation times; T = 400 steps).")
  assert "## The map: `train.error` barrier over (t, σ)" in out and "| 1 ep | 0 [0, 0] n=2 |" in out
  assert "| batch | 0 | < 0.0001 | 0: < 0.0001, 1: < 0.0001 |" in out  # σ*(t) at 0.01: below the grid at t = 0
  assert out.count("### σ*(t): the σ at which the seed-mean") == 3 + 2  # train loss at 3 thresholds, train error 2
  assert "| pooled | " in out and "σ = 0 twins\n\n4 pairs" in out


def test_cost_prices_the_authors_jobs_and_merges_overlapping_runs(tmp_path):
  bench = tmp_path / "bench.json"
  bench.write_text(json.dumps({"training": [
      {"model": "mlp", "framework": "torch", "k": 1, "conv": "1t", "s_per_step": 0.02},
      {"model": "mlp", "framework": "torch", "k": 1, "conv": "2t", "s_per_step": 0.01},
      {"model": "mlp", "framework": "jax", "k": 1, "conv": "auto", "s_per_step": 0.001}]}))
  assert cost.torch_step_seconds(bench, "mlp") == (0.01, "2t")
  for name, (start, end), t in (("a", ("10:00:00", "10:10:00"), 0), ("b", ("10:05:00", "10:20:00"), 50)):
    d = tmp_path / "runs" / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model": {"name": "mlp"}}))
    (d / "results.json").write_text(json.dumps({
        "timing": {"trunk_s": 1.0, "children_s": 9.0, "eval_s": 5.0, "align_s": 0.0, "total_s": 15.0},
        "steps": {"t": t, "T": 100}, "children": [{}, {}, {}]}))
    (d / "log.txt").write_text(f"==== 2026-12-01 {start} launch: run 0 x (pid 1) ====\n"
                               f"==== 2026-12-01 {end} launch: finished after 1.0 s ====\n")
  assert cost.launcher_span(tmp_path / "runs" / "a" / "log.txt")[1].minute == 10
  out = []
  import contextlib
  import io
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    assert cost.main([f"--runs={tmp_path / 'runs'}", f"--bench={bench}"]) == 0
  out = buf.getvalue()
  assert "0.33 h." in out  # 10:00-10:20 merged, not 25 minutes summed
  # t = 0: 2 compared children x (0 + 2 x 100) steps x 0.01 s = 4 s of training, + 5 s evaluation = 9 s
  assert "| a | 0 | 3 | 10 | 15 | 4 | 9 | 0.60 |" in out
  assert "Ran on another CPU" not in out  # the bench names no CPU
  # the bench's CPU is named, and runs that ran on another CPU are listed (their ratio spans two machines)
  bench.write_text(json.dumps({**json.loads(bench.read_text()), "meta": {"cpu": "Intel Xeon"}}))
  results = tmp_path / "runs" / "b" / "results.json"
  results.write_text(json.dumps({**json.loads(results.read_text()),
                                 "provenance": {"host_cpu": "AMD EPYC (flags 0123)"}}))
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    assert cost.main([f"--runs={tmp_path / 'runs'}", f"--bench={bench}"]) == 0
  out = buf.getvalue()
  assert "PyTorch reference, one network, on Intel Xeon: 10.00 ms" in out
  assert "compares two machines: b." in out and "1 of 2 priced runs do not record their CPU" in out
  # a study's other width, batch or optimizer is another step: left out and counted; the defaults spelled out are not
  (tmp_path / "runs" / "a" / "config.json").write_text(json.dumps(
      {"model": {"name": "mlp", "kwargs": {"hidden": [512, 512]}}, "train": {"batch_size": 128}}))
  for change, why in (({"model": {"name": "mlp", "kwargs": {"hidden": [1024, 1024]}}}, "network"),
                      ({"model": {"name": "mlp"}, "train": {"batch_size": 512}}, "batch"),
                      ({"model": {"name": "mlp"}, "optim": {"name": "adam"}}, "optimizer")):
    (tmp_path / "runs" / "b" / "config.json").write_text(json.dumps(change))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
      assert cost.main([f"--runs={tmp_path / 'runs'}", f"--bench={bench}"]) == 0
    out = buf.getvalue()
    assert f"Not priced: 1 of 2 runs, whose {why} differs" in out and "| a | 0 |" in out and "| b |" not in out
  # another network is not priced with the MLP's step: an explicit mismatch is refused, and without --model
  # only the sweep's cost is printed
  for d in ("a", "b"):
    (tmp_path / "runs" / d / "config.json").write_text(json.dumps({"model": {"name": "resnet20"}}))
  with contextlib.redirect_stdout(io.StringIO()):
    assert cost.main([f"--runs={tmp_path / 'runs'}", f"--bench={bench}", "--model=mlp"]) == 2
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    assert cost.main([f"--runs={tmp_path / 'runs'}", f"--bench={bench}"]) == 0
  assert "0.33 h." in buf.getvalue() and "No σ-column comparison" in buf.getvalue() and "| a |" not in buf.getvalue()


def _study_rows(settings_module, phase):
  """A made-up studies table: per setting, seeds 0-1, t 0 and 1 epoch, σ 0 and 1e-4, with the config columns the
  report writes (lists for tuple fields, as parquet returns them)."""
  base = settings_module.get_config(phase)
  rows = []
  for name, fields in settings_module.settings(phase).items():
    for seed in (0, 1):
      for te in (0.0, 1.0):
        for child, sigma in ((1, 0.0), (2, 1e-4)):
          row = {"run": f"{name},{seed},{te}", "status": "finished", "child": child, "seed": seed, "t_epochs": te,
                 "t": int(te * 468), "perturb.scale": sigma, "pair_diverged": False,
                 "perturb.kind": "batch", "perturb.mask.single": "", "steps_per_epoch": 468,
                 "optim.name": base.optim.name, "optim.lr": base.optim.lr, "optim.weight_decay": 0.0,
                 "schedule.warmup": base.schedule.warmup, "train.batch_size": base.train.batch_size,
                 "model.kwargs.hidden": list(base.model.kwargs.hidden)}
          row.update({k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()})
          level = {"base": 0.05, "warmup2ep": 0.01, "adam": 0.2}.get(name, 0.05 + 0.001 * seed * (1 - 2 * (seed % 2)))
          barrier = 0.0 if sigma == 0 else level + 0.001 * seed
          for split in ("train", "test"):
            for m in ("loss", "error"):
              row[f"vs_child0.barrier.{split}.{m}"] = barrier
          rows.append(row)
  return pd.DataFrame(rows)


def test_studies_tell_settings_apart_from_config_columns_and_judge_claims_by_separated_seeds():
  module = studies.studies_module()
  t = _study_rows(module, "mlp")
  names = studies.setting_column(t, "mlp", module)
  assert (names == t["run"].str.split(",").str[0]).all()  # every setting recognised, "combined" not "batch512"
  t = t.assign(setting=names, sigma=t["perturb.scale"].astype(float))
  v = studies.verdicts(studies.cells(t))
  assert studies.claim_verdict(v, "warmup2ep", "lower").startswith("holds (2 of 2")
  assert studies.claim_verdict(v, "adam", "higher").startswith("holds")
  assert studies.claim_verdict(v, "adam", "lower").startswith("contradicted")
  assert studies.claim_verdict(v, "wd5e-3", "higher").startswith("not resolved")  # seed ranges overlap the base
  assert studies.claim_verdict(v, "nonexistent", "lower").startswith("untested")
  assert studies.compare([1, 2], [2.5, 3]) == "lower" and studies.compare([1, 3], [2, 4]) == "overlap"
  odd = t.copy()
  odd.loc[0, "optim.lr"] = 0.05  # a run that is no setting of the study
  with pytest.raises(ValueError, match="matches no setting"):
    studies.setting_column(odd, "mlp", module)
  text = studies.report(t.drop(columns=["setting", "sigma"]).assign(**{
      "child0.train.accuracy": 0.9, "child0.test.accuracy": 0.88, "child0.train.loss": 0.3, "vs_child0.l2": 0.0}),
      "mlp")
  assert "| warmup2ep | a longer warm-up" in text and "0 pairs" not in text.split("σ = 0 twins")[1][:30]
  # a setting whose child 0 never learned (train error above UNTRAINED_ERROR) is not judged, cell by cell
  t = t.assign(**{"child0.train.accuracy": np.where(t["setting"] == "adam", 0.1, 0.9), "train.accuracy": 0.9})
  v = studies.verdicts(studies.cells(t))
  assert set(v[v["setting"] == "adam"]["comparison"]) == {studies.NOT_JUDGED}
  verdict = studies.claim_verdict(v, "adam", "higher")
  assert verdict.startswith("not judged (child 0 did not learn")
  assert "yet 4 of 4 perturbed children whose child 0 did not learn did" in verdict  # 2 seeds x 2 times, σ = 1e-4
  listed = studies.perturbation_decides(t.assign(**{"train.loss": 0.4}))
  assert listed.count("| adam |") == 8 and "| warmup2ep |" not in listed  # 2 seeds x 2 times x (twin, σ = 1e-4)
  assert "| adam | 0 | 0 | 0.0001 | 0.9 | 0.1 | 0.4 | yes |" in listed
  dead = studies.claim_verdict(studies.verdicts(studies.cells(t.assign(**{"train.accuracy": 0.1}))), "adam", "higher")
  assert dead.startswith("not judged") and "yet" not in dead
  partly = t.assign(**{"child0.train.accuracy": np.where((t["setting"] == "adam") & (t["t_epochs"] == 0), 0.1, 0.9)})
  verdict = studies.claim_verdict(studies.verdicts(studies.cells(partly)), "adam", "higher")
  assert verdict == ("holds (1 of 1 cells higher, 0 lower; 1 cells not judged: child 0 did not learn; 2 of 2 "
                     "perturbed children whose child 0 did not learn did: the perturbation decided whether training "
                     "worked)")
  # one seed's child 0 at chance: the cell is judged on the other seed, and says so
  one_dead = t.assign(**{"child0.train.accuracy": np.where((t["setting"] == "adam") & (t["seed"] == 0), 0.1, 0.9)})
  v = studies.verdicts(studies.cells(one_dead))
  assert set(v[v["setting"] == "adam"]["comparison"]) == {"higher (seed 1 only)"}
  assert (v[v["setting"] == "adam"]["n"] == 1).all() and (v[v["setting"] == "warmup2ep"]["n"] == 2).all()
  verdict = studies.claim_verdict(v, "adam", "higher")
  assert verdict.startswith("holds (2 of 2 cells higher, 0 lower; 2 cells judged only on the seeds whose child 0")
  base_dead = t.assign(**{"child0.train.accuracy": np.where(t["setting"] == "base", 0.1, 0.9)})
  assert set(studies.verdicts(studies.cells(base_dead))["comparison"]) == {studies.NOT_JUDGED}


def _pretrain_rows(barrier):
  """A made-up fine-tuning table: seeds 0-2, kept steps 0, 100, 200, t = 0, σ in (0, 1e-4, 1e-2); ``barrier(seed,
  step, sigma)`` gives the train-loss barrier (the error barrier is half of it)."""
  rows = []
  for seed in (0, 1, 2):
    for step in (0, 100, 200):
      for sigma in (0.0, 1e-4, 1e-2):
        b = 0.0 if sigma == 0 else barrier(seed, step, sigma)
        rows.append({"status": "finished", "run": f"s{seed}p{step}", "seed": seed, "t_epochs": 0.0,
                     "perturb.scale": sigma, "init.checkpoint": f"reproduction/pretrain/none/seed={seed}:{step}",
                     "vs_child0.barrier.train.loss": b, "vs_child0.barrier.train.error": b / 2,
                     "vs_child0.barrier.test.loss": b, "vs_child0.barrier.test.error": b / 2,
                     "vs_child0.l2": 10 * b, "child0.test.accuracy": 0.9, "child0.train.accuracy": 0.95 - step / 1e4,
                     "init_weights_sha256": f"{seed}:{step}"})
  return pd.DataFrame(rows)


def test_pretraining_pairs_each_seed_with_its_own_control_and_says_inconclusive_when_seeds_disagree(tmp_path):
  falling = _pretrain_rows(lambda seed, step, sigma: sigma * (3 - step / 100) + seed * 1e-3)
  for seed in (0, 1, 2):  # the pre-training runs' results.json, as a run writes them
    (tmp_path / f"seed={seed}").mkdir()
    (tmp_path / f"seed={seed}" / "results.json").write_text(json.dumps(
        {"children": [{"test": {"accuracy": 0.9 + seed / 100}}], "steps": {"t": 0, "T": 2340}}))
  falling["init.checkpoint"] = falling["init.checkpoint"].str.replace("reproduction/pretrain/none", str(tmp_path))
  t = pretraining.frame(falling)
  cells = pretraining.paired(t)
  assert cells[(0.0, 1e-4)][2] == pytest.approx((3e-4 + 2e-3, 1e-4 + 2e-3))  # seed 2: step 0 against step 200
  assert pretraining.verdict(cells).startswith("holds (2 lower of 2 cells)")
  text = pretraining.report(falling, "made-up")
  assert "σ = 0 twins: 9 pairs; the largest |barrier| or L2 among them: 0.0" in text
  assert "seeds [0, 1, 2], kept steps [0, 100, 200]" in text
  assert "9 kept steps started from, 9 distinct fingerprints; every kept step's runs share one: yes" in text
  assert "share one: no, " in pretraining.report(falling.assign(init_weights_sha256=falling.index.astype(str)), "x")
  assert "Pre-training runs (classes 0-4, [2340] steps): test accuracy 0.9100 [0.9000, 0.9200] over 3 seeds" in text
  assert "| 0 ep | 0.0001 | lower (n = 3) | 0.33-0.91 | lower |" in text  # (1e-4 + k) / (3e-4 + k), k = 0, 2e-3
  # the scale: child 0's test-error gap per kept step, and the full-permutation barrier from the scale runs
  assert "| 200 | 0.0300 [0.0300, 0.0300] |  |" in text and "the full-permutation barrier is not stated" in text
  scale = tmp_path / "scale"
  for seed in (0, 1):
    for step in (0, 200):
      d = scale / f"s{seed}p{step}"
      d.mkdir(parents=True)
      (d / "config.json").write_text(json.dumps({"init": {"checkpoint": f"x/seed={seed}:{step}"}, "seed": seed}))
      rows = [{"target_fraction": f, "weight_matching": {"recovered_fraction": 1.0},
               "barrier": {sp: {"loss": 1.0 + seed + step / 100 + f, "error": 0.5} for sp in ("train", "test")}}
              for f in (0.0, 0.5)]
      (d / "proxy.json").write_text(json.dumps({"rows": rows}))
  text = pretraining.report(falling, "made-up", scale=scale)
  assert "| 0 | 0.0500 [0.0500, 0.0500] | 1.5000 [1.0000, 2.0000] | 0.5000 [0.5000, 0.5000] |" in text
  assert "| 200 | 0.0300 [0.0300, 0.0300] | 3.5000 [3.0000, 4.0000] |" in text and "| 2 × 1 |" in text
  assert "4 of 4 permutations undone exactly" in text and "| 100 | 0.0400 [0.0400, 0.0400] |  |" in text
  assert "per kept step: step 0: 0 of 2, step 200: 0 of 2." in text  # no results.json: no fingerprint to match
  (scale / "s1p200" / "results.json").write_text(json.dumps({"init": {"weights_sha256": "1:200"}}))
  assert "step 200: 1 of 2." in pretraining.report(falling, "made-up", scale=scale)
  # one seed whose barrier rises at σ = 1e-2 makes that cell mixed: the verdict is not "holds"
  mixed = _pretrain_rows(lambda seed, step, sigma: sigma * ((1 + step / 100) if seed == 1 and sigma == 1e-2
                                                            else (3 - step / 100)))
  cells = pretraining.paired(pretraining.frame(mixed))
  assert pretraining.direction(cells[(0.0, 1e-2)]) == "mixed"
  assert pretraining.verdict(cells) == "inconclusive (1 lower, 1 mixed of 2 cells)"
  rising = _pretrain_rows(lambda seed, step, sigma: sigma * (1 + step / 100))
  assert pretraining.verdict(pretraining.paired(pretraining.frame(rising))).startswith("contradicted")
  # the plateau reads the last two kept steps the same way
  plateau = pretraining.paired(t, start=100.0, end=200.0)
  assert pretraining.verdict(plateau).startswith("holds")


def test_reproductions_numbers_are_those_the_claims_files_print():
  """REPRODUCTION.md's second edition types its numbers from the claims files (``reproduction.claims`` over the
  committed runs): every number written there with three or more decimals is, at the decimals written, a number
  one of the Markdown files under reproduction/ prints (0.045 for a printed 0.0453), so a number left over from
  an earlier version of a claims file fails."""
  root = ROOT
  text = (root / "REPRODUCTION.md").read_text().split("\n# First edition")[0]
  prose = re.sub(r"```.*?```", "", text, flags=re.S)  # commands are not results
  number = re.compile(r"(?<![\w.])\d+\.\d+(?!\w|\.\d)")
  printed = {float(x) for x in number.findall("\n".join(p.read_text() for p in (root / "reproduction").rglob("*.md")))}
  numbers = [n for n in number.findall(prose) if len(n.split(".")[1]) >= 3]
  assert len(numbers) > 100  # the check reads the numbers, not an empty section
  at_precision = lambda n: {f"{x:.{len(n.split('.')[1])}f}" for x in printed}
  assert [n for n in numbers if n not in at_precision(n)] == []


def test_single_weight_reach_counts_the_examples_that_move_a_weight_and_the_first_step_that_has_one():
  """``reproduction.single_weight``: a head bias gets a gradient from every example from step 0; the outgoing
  weight of a hidden unit that no example activates gets none, so perturbing it early changes nothing."""
  import jax
  from butterfly_jax.run.configs_embedded import smoke
  from butterfly_jax.run.setup import Setup
  from reproduction import single_weight
  setup = Setup(smoke())
  params = setup.init_fn(setup.keys["init"])
  examples, first, total = single_weight.gradient_reach(setup, params, "head/bias[3]")
  assert (examples, first, total) == (total, 0, setup.batcher.steps_per_epoch * setup.c.train.batch_size)
  dead = jax.tree_util.tree_map(lambda a: a, params)
  dead["dense0"]["bias"] = dead["dense0"]["bias"].at[5].set(-1e6)  # unit 5: ReLU(-1e6 + ...) = 0 for every input
  assert single_weight.gradient_reach(setup, dead, "head/kernel[5,3]") == (0, None, total)
  assert single_weight.gradient_reach(setup, dead, "head/kernel[6,3]")[0] > 0
  name = single_weight.drawn_weight(setup, params)  # the smoke config perturbs every weight: no single one
  assert name is None


def test_single_weight_same_end_compares_every_childs_numbers_exactly(tmp_path):
  from reproduction import single_weight
  child = {"index": 1, "perturb": {"scale": 0.1}, "train": {"loss": 0.25}, "vs_child0": {"l2": 1.5}}
  for name, loss in (("a", 0.25), ("b", 0.25), ("c", 0.25 + 1e-12)):
    (tmp_path / name).mkdir()
    (tmp_path / name / "results.json").write_text(json.dumps({"children": [dict(child, train={"loss": loss})]}))
  assert single_weight.same_end(tmp_path / "a", tmp_path / "b")
  assert not single_weight.same_end(tmp_path / "a", tmp_path / "c")


def test_claims_says_whether_child0_is_the_same_network_across_runs(capsys):
  """Child 0 is one network in every run of a seed only when every run ran the same program on the same CPU:
  the scale paragraph says which holds, with the spread when they differ."""
  same = {0: {"train": 0.155, "test": 0.181, "gap": 0.026, "spread": 0.0}}
  claims.print_scale({}, same)
  out = capsys.readouterr().out
  assert "accuracies are equal across those runs" in out and "provenance" not in out
  differ = {0: dict(same[0], spread=0.111)}
  claims.print_scale({}, differ)
  out = capsys.readouterr().out
  assert "differ across those runs by at most 0.111 (another CPU or other XLA flags" in out
  assert "accuracies are equal" not in out


def test_claims_lists_the_programs_runs_ran_only_when_they_differ(capsys):
  """Runs of one map under other CPUs or XLA flags are named with their perturbation times; one program (or a
  table from before the report had the columns) prints nothing."""
  rows = [("a", 0, "AMD EPYC (flags 1)", None), ("a", 0, "AMD EPYC (flags 1)", None),
          ("b", 250, "AMD EPYC (flags 1)", "--ynn="), ("c", 468, "Intel Xeon (flags 2)", "--ynn=conv"),
          ("d", 936, "Intel Xeon (flags 2)", "--ynn=conv")]
  t = pd.DataFrame(rows, columns=["run", "t", "host_cpu", "xla_flags"]).assign(
      steps_per_epoch=468, **{"child0.train.accuracy": [0.7, 0.7, 0.7, 0.9, 0.8]})
  claims.print_programs(t)
  out = capsys.readouterr().out
  assert "3 programs" in out
  assert "| Intel Xeon (flags 2) | `--ynn=conv` | 2 | 1 ep, 2 ep | 0.8000, 0.9000 |" in out
  assert "| AMD EPYC (flags 1) | not recorded | 1 | 0 | 0.7000 |" in out
  assert "| AMD EPYC (flags 1) | `--ynn=` | 1 | 250 steps | 0.7000 |" in out
  claims.print_programs(t[t["run"] == "c"])
  claims.print_programs(t.drop(columns=["xla_flags"]))
  assert capsys.readouterr().out == ""


def test_claims_lists_the_networks_that_ended_at_chance_per_cell(capsys):
  """A perturbed child or a child 0 at chance (train error above UNTRAINED_ERROR) is counted in its (kind, t, σ)
  cell, beside the cell's number of pairs; σ = 0 twins are not cells; a map where all learned says so."""
  rows = [("batch", 50, 1e-2, 0, 0.105, 0.9), ("batch", 50, 1e-2, 1, 0.95, 0.9), ("batch", 50, 1e-4, 0, 0.9, 0.9),
          ("gaussian", 0, 1e-2, 0, 0.2, 0.3), ("batch", 50, 0.0, 0, 0.1, 0.1)]
  t = pd.DataFrame(rows, columns=["kind", "t", "sigma", "seed", "train.accuracy", "child0.train.accuracy"]).assign(
      steps_per_epoch=468)
  claims.print_untrained(t)
  out = capsys.readouterr().out
  assert "| batch | 50 steps | 0.01 | 2 | 0 | 1 | 0.8950 [0.8950, 0.8950] |" in out
  assert "| gaussian | 0 | 0.01 | 1 | 1 | 1 | 0.8000 [0.8000, 0.8000] |" in out
  assert "0.0001" not in out and "| batch | 50 steps | 0 |" not in out
  claims.print_untrained(t.assign(**{"train.accuracy": 0.9, "child0.train.accuracy": 0.9}))
  assert "None: child 0 and every perturbed child learned" in capsys.readouterr().out


def test_thresholds_lead_with_the_2pct_criterion_and_say_where_sigma_star_is_censored(tmp_path, capsys):
  """``python -m reproduction.thresholds`` on a made-up map: at t = 0 every σ leaves a 3% test-error barrier (σ*
  below the grid, said in words), at 1 epoch only σ = 1 does; the headline table comes first, each t's plateau is
  read against the full-permutation barrier, and the pairs at the criterion are counted."""
  rows = []
  for t in (0, 100):
    for seed in (0, 1):
      for child, sigma in enumerate((0.0, 1e-4, 1e-2, 1.0), start=1):
        err = 0.0 if sigma == 0 else (0.03 if t == 0 else (0.05 if sigma == 1.0 else 0.001))
        rows.append({"run": f"{t},{seed}", "status": "finished", "child": child, "seed": seed, "t": t,
                     "steps_per_epoch": 100, "perturb.scale": sigma, "perturb.kind": "batch", "perturb.mask.single": "",
                     "pair_diverged": False, "vs_child0.barrier.test.error": err,
                     "vs_child0.barrier.train.error": err, "vs_child0.barrier.train.loss": 4 * err})
  table = tmp_path / "table.csv"
  pd.DataFrame(rows).to_csv(table, index=False)
  for seed, loss in ((0, 1.0), (1, 3.0)):
    run = tmp_path / "scale" / f"seed={seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"seed": seed}))
    (run / "proxy.json").write_text(json.dumps({"rows": [{"target_fraction": 0.0, "barrier": {
        "train": {"loss": loss, "error": 0.5}, "test": {"loss": loss, "error": 0.4}}}]}))
  from reproduction import thresholds
  thresholds.main([f"--map={table}", f"--scale={tmp_path / 'scale'}"])
  out = capsys.readouterr().out
  assert out.startswith("# σ*(t) at thresholds that mean something")
  assert out.index("### Headline: σ* at a seed-mean test-error barrier of 2%") < out.index("### σ* at a seed-mean "
                                                                                           "train-error barrier")
  assert "| batch | 0 | 0.02 | < 0.0001 (below the grid) | 0: < 0.0001, 1: < 0.0001 |" in out
  assert "| batch | 1 ep | 0.02 | 0." in out and "[0.01, 1] | " in out  # crossed between the two largest σ
  assert "| batch | 0 | 0.0001 | 0.12 [0.12, 0.12] | 6% | 0.03 [0.03, 0.03] | 4 of 4 |" in out  # 0.12 / 2.0
  assert "Before 1 epoch (t = 0), 4 of 4 pairs with 0 < σ ≤ 0.01 reach a 2% test-error barrier" in out
  assert "| 2% test error (headline) | batch | 0: < 0.0001 (below the grid) | 1 ep: " in out
  assert "at least ×100" in out  # from below 1e-4 to a bracket [1e-2, 1]


def test_floor_regenerates_its_committed_file_and_leaves_out_other_machines_networks(monkeypatch):
  """reproduction/map/mlp_floor.md is what ``reproduction.floor`` prints over the committed runs (the command in its
  docstring, from the repository root); it counts the σ = 0 twins, the weights each σ changed, and compares with
  the map only where child 0 is the same network."""
  from pathlib import Path
  from reproduction import floor
  monkeypatch.chdir(ROOT)
  text = floor.report(Path("reproduction/map/mlp_floor"), Path("reproduction/map/mlp"))
  assert text == (ROOT / "reproduction" / "map" / "mlp_floor.md").read_text()
  assert "- σ = 0 twins: 36, at L2 0 from child 0 and train-loss barrier 0." in text
  assert "- t = 0, seed 0: σ = 1e-05" in text
  assert "- t = 0, seed 1; t = 0, seed 2; t = 1ep, seed 1;" in text and "the map's run trained another child 0" in text
  assert "| 0 | 1 ulp, one weight | 3 | 1 |" in text


@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_trajectories_regenerate_their_committed_files_from_the_maps_runs(monkeypatch, net):
  """reproduction/map/<net>_trajectories.md is what ``reproduction.trajectories`` prints over the committed map (the
  command in its docstring): the timescale against the t = 0 barrier, the twins' separation and distance from init,
  the ensembles; the single-weight runs are left out (their σ is another unit)."""
  from pathlib import Path
  from reproduction import trajectories
  monkeypatch.chdir(ROOT)
  text = trajectories.report(Path(f"reproduction/map/{net}"))
  assert text == (ROOT / "reproduction" / "map" / f"{net}_trajectories.md").read_text()
  assert "| 0 | 0.0% | " in text and "the barrier first falls below 0.5 of its t = 0 level at t = 1 ep" in text
  pairs = trajectories.load(Path(f"reproduction/map/{net}"))
  assert pairs and {p["kind"] for p in pairs} == {"batch", "gaussian"} and all(p["sigma"] > 0 for p in pairs)
  # the first L2 read is at least GAP steps after t: no ratio over a handful of steps
  assert all(p["first_step"] - p["t"] >= trajectories.GAP for p in pairs if p["first_step"] is not None)


def test_alignment_report_reads_activation_matched_runs_and_counts_what_matching_did(tmp_path, monkeypatch):
  """``reproduction.alignment`` on SYNTHETIC run directories (results.json read as plain JSON): per pair the barrier
  before and after activation matching and the units' correlation; over seeds the plateau's and σ = 0.1's ranges;
  the count of plateau pairs that alignment did not help; the positive control from proxy.json; a weight-matched
  run is refused."""
  from reproduction import alignment

  def child(scale, barrier, aligned, fixed, corr):
    side = lambda b: {"l2": 10 * b, "barrier": {"train": {"loss": b}, "test": {"error": b / 10}}}
    return {"perturb": {"scale": scale}, "vs_child0": {**side(barrier), "aligned": {
        **side(aligned), "fixed_point_fraction": fixed, "unit_correlation": {"identity": corr[0], "matched": corr[1]}}}}

  def run(name, seed, t, children, method="activations", proxy=None):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"seed": seed, "perturb": {"time": t}, "eval": {"align_method": method}}))
    c0 = {"train": {"loss": 0.1 + seed}, "test": {"loss": 0.2 + seed}}
    (d / "results.json").write_text(json.dumps({"children": [c0] + children}))
    if proxy is not None:
      (d / "proxy.json").write_text(json.dumps({"rows": proxy}))

  monkeypatch.setattr(alignment.results_lib, "load", lambda p: json.loads(Path(p).read_text()))
  twin = child(0.0, 0.0, 0.0, 1.0, (1.0, 1.0))
  run("a", 0, "0", [twin, child(1e-5, 0.06, 0.07, 0.45, (0.5, 0.6)), child(0.1, 0.9, 0.1, 0.05, (0.1, 0.5))],
      proxy=[{"activation_matching": {"recovered_fraction": 1.0, "l2": 0.0}}])
  run("b", 1, "0", [twin, child(1e-5, 0.05, 0.04, 0.5, (0.55, 0.62)), child(0.1, 0.6, 0.12, 0.07, (0.15, 0.5))])
  run("c", 0, "1ep", [twin, child(1e-2, 0.02, 0.02, 0.8, (0.7, 0.72))])
  text = alignment.report(tmp_path)
  assert text.index("## t = 0, seed 0") < text.index("## t = 0, seed 1") < text.index("## t = 1ep, seed 0")
  assert "| 1e-05 | 0.6 | 0.06 | 0.006 | 0.7 | 0.07 | 0.007 | 0.45 | 0.5 | 0.6 |" in text
  assert "| 0 | ≤ 1e-2 | 2 | 0.5 to 0.6 | 0.4 to 0.7 | 0.05 to 0.06 | 0.04 to 0.07 |" in text
  assert "| 0 | 0.1 | 2 | 6 to 9 | 1 to 1.2 | 0.6 to 0.9 | 0.1 to 0.12 |" in text
  assert "- σ = 0 twins: 3; every one matched by the identity: 3 of 3." in text
  assert "whose aligned train-loss barrier is at least the unaligned one: 2 of 3." in text  # 0.07 ≥ 0.06, 0.02 ≥ 0.02
  assert "on 1 runs' child 0, 1 distinct network): 1 of 1 known permutations undone exactly" in text
  run("d", 2, "0", [twin], method="weights")
  with pytest.raises(SystemExit, match="aligned by weights, not by activations"):
    alignment.report(tmp_path)


def test_alignment_regenerates_its_committed_file_from_the_mlp_act_runs(monkeypatch):
  """reproduction/map/mlp_act.md is what ``reproduction.alignment`` prints over the committed ``:mlp_act`` runs (the
  command in its docstring)."""
  from reproduction import alignment
  monkeypatch.chdir(ROOT)
  text = alignment.report(Path("reproduction/map/mlp_act"), Path("reproduction/map/mlp"))
  assert text == (ROOT / "reproduction" / "map" / "mlp_act.md").read_text()
  assert "- 22 pairs that did not diverge; weight matching left every unit in place in 19 of them" in text
  assert "- σ = 0 twins: 12; every one matched by the identity: 12 of 12." in text


def test_search_regenerates_its_committed_file_from_the_mlp_search(monkeypatch):
  """reproduction/map/mlp_search_batch.md is what ``reproduction.search`` prints over the committed search (its
  threshold.json and runs): every (t, seed) bracketed within the search's factor of 2."""
  from reproduction import search
  monkeypatch.chdir(ROOT)
  text = search.report(Path("reproduction/map/mlp_search_batch"))
  assert text == (ROOT / "reproduction" / "map" / "mlp_search_batch.md").read_text()
  widths = [float(line.split(" | ")[4]) for line in text.splitlines() if "| bracketed |" in line]
  assert len(widths) == 24 and max(widths) <= 2.0
