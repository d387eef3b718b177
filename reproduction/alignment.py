"""The second alignment: do the twins' units correspond, and does activation matching remove the barrier?

Reads the finished runs of ``configs/reproduce_map.py:mlp_act`` or ``:cnn_act`` (the map's batch direction, each child
aligned to child 0 by activation matching) and prints, as Markdown, per (t, seed) each child's L2 distance to
child 0 at T and its train-loss and test-error barriers before and after alignment, the fraction of units the
matching left in place, and how well the units correspond (``unit_correlation``: the mean correlation of child 0's
units with child k's, unit i with unit i and with the unit matched to it); then per t the ranges over seeds for
σ ≤ 1e-2 (the plateau) and σ = 0.1; and, where a run holds ``proxy.json`` from ``python -m butterfly_jax.proxy
--fractions=0 --align``, activation matching's positive control (a known permutation of child 0, undone or not);
with ``--map``, weight matching's result on the same pairs where the map's run trained the same child 0.

    python -m reproduction.alignment reproduction/map/mlp_act --map=reproduction/map/mlp > reproduction/map/mlp_act.md

(from the repository root).
"""

import argparse
import json
import sys
from pathlib import Path

from butterfly_jax.io import results as results_lib
from reproduction.stats import time_order

PLATEAU = 1e-2  # the map's σ up to which the MLP's and the CNN's barriers are flat in σ (REPRODUCTION.md, section 1)


def _rows(runs: Path):
  """``(t, seed, child)`` for every child k >= 1 of every finished activation-matched run under ``runs``, and the
  positive controls: ``(t, seed, proxy rows)`` of the runs that hold a proxy.json."""
  rows, controls = [], []
  for path in sorted(runs.glob("*/results.json")):
    res = results_lib.load(path)
    cfg = json.loads((path.parent / "config.json").read_text())
    if cfg["eval"].get("align_method") != "activations":
      raise SystemExit(f"{path.parent}: aligned by {cfg['eval'].get('align_method', 'weights')}, not by activations")
    seed, t = int(cfg["seed"]), str(cfg["perturb"]["time"])
    c0 = res["children"][0]
    rows += [(t, seed, child, (c0["train"]["loss"], c0["test"]["loss"])) for child in res["children"][1:]]
    proxy = path.parent / "proxy.json"
    if proxy.exists():  # child 0 by its final losses: the runs of one seed share it
      controls.append((t, seed, json.loads(proxy.read_text())["rows"], (c0["train"]["loss"], c0["test"]["loss"])))
  key = lambda r: (time_order(r[0]), r[1])
  return sorted(rows, key=lambda r: (*key(r), r[2]["perturb"]["scale"])), sorted(controls, key=key)


def _fmt(x, digits=4) -> str:
  return "–" if x is None else f"{x:.{digits}g}"


def _span(values, digits=4) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return "–"
  lo, hi = min(values), max(values)
  return _fmt(lo, digits) if lo == hi else f"{_fmt(lo, digits)} to {_fmt(hi, digits)}"


def _cols(child):
  v, a = child["vs_child0"], child["vs_child0"]["aligned"]
  corr = a.get("unit_correlation") or {}
  return (v["l2"], v["barrier"]["train"]["loss"], v["barrier"]["test"]["error"], a["l2"], a["barrier"]["train"]["loss"],
          a["barrier"]["test"]["error"], a["fixed_point_fraction"], corr.get("identity"), corr.get("matched"))


HEAD = ("| σ | L2 at T | train-loss barrier | test-error barrier | aligned L2 | aligned train-loss barrier | "
        "aligned test-error barrier | units left in place | unit correlation, as they are | as matched |")


def _weight_matched(map_runs: Path) -> dict:
  """``{(t, seed, σ, child 0's final losses): (weight-matched train-loss barrier, units left in place)}`` of the
  batch-direction children of the map's runs under ``map_runs`` (the single-weight runs left out)."""
  out = {}
  for path in sorted(map_runs.glob("*/results.json")):
    cfg = json.loads((path.parent / "config.json").read_text())
    if cfg["perturb"]["kind"] != "batch" or cfg["perturb"]["mask"].get("single"):
      continue
    res = results_lib.load(path)
    c0 = res["children"][0]
    for child in res["children"][1:]:
      a = child["vs_child0"].get("aligned")
      if a:
        out[(str(cfg["perturb"]["time"]), int(cfg["seed"]), child["perturb"]["scale"],
             (c0["train"]["loss"], c0["test"]["loss"]))] = (a["barrier"]["train"]["loss"], a["fixed_point_fraction"])
  return out


def report(runs: Path, map_runs: Path | None = None) -> str:
  rows, controls = _rows(runs)
  if not rows:
    raise SystemExit(f"no finished runs under {runs}")
  times = list(dict.fromkeys(r[0] for r in rows))
  seeds = sorted({r[1] for r in rows})
  lines = [f"# Activation matching: `{runs}`", "",
           f"Seeds {seeds}; t = {', '.join(times)}; from `python -m reproduction.alignment {runs}"
           + (f" --map={map_runs}" if map_runs else "") + "`.", "",
           "Each child k ≥ 1 against child 0 at T, before and after aligning its units to child 0's by activation "
           "matching (`eval.align_method=\"activations\"`); the units' correlation is the mean over every hidden "
           "unit of child 0's activation with child k's, unit i with unit i (as they are) and with the unit the "
           "matching chose (a unit constant on the examples counts 0).", ""]
  for t in times:
    for seed in seeds:
      mine = [r[2] for r in rows if r[0] == t and r[1] == seed]
      if not mine:
        continue
      lines += [f"## t = {t}, seed {seed}", "", HEAD, "| " + " | ".join(["---:"] * 10) + " |"]
      for child in mine:
        lines.append(f"| {child['perturb']['scale']:g} | " + " | ".join(_fmt(x) for x in _cols(child)) + " |")
      lines.append("")
  lines += ["## Over seeds", "",
            "Per t, the ranges over seeds of the pairs with 0 < σ ≤ 1e-2 (the plateau) and with σ = 0.1.", "",
            "| t | σ | n | L2 at T | aligned L2 | train-loss barrier | aligned | test-error barrier | aligned | "
            "units left in place | unit correlation, as they are | as matched |",
            "| --- | --- | ---: | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for t in times:
    for label, keep in (("≤ 1e-2", lambda s: 0 < s <= PLATEAU), ("0.1", lambda s: s == 0.1)):
      cols = list(zip(*[_cols(r[2]) for r in rows if r[0] == t and keep(r[2]["perturb"]["scale"])]))
      if not cols:
        continue
      lines.append(f"| {t} | {label} | {len(cols[0])} | {_span(cols[0])} | {_span(cols[3])} | {_span(cols[1])} | "
                   f"{_span(cols[4])} | {_span(cols[2])} | {_span(cols[5])} | {_span(cols[6])} | {_span(cols[7])} | "
                   f"{_span(cols[8])} |")
  twins = [r[2] for r in rows if r[2]["perturb"]["scale"] == 0.0]
  plateau = [r[2] for r in rows if 0 < r[2]["perturb"]["scale"] <= PLATEAU]
  worse = sum(_cols(c)[4] >= _cols(c)[1] for c in plateau)
  lines += ["", f"- σ = 0 twins: {len(twins)}; every one matched by the identity: "
            f"{sum(c['vs_child0']['aligned']['fixed_point_fraction'] == 1.0 for c in twins)} of {len(twins)}.",
            f"- Pairs with 0 < σ ≤ 1e-2 whose aligned train-loss barrier is at least the unaligned one: {worse} of "
            f"{len(plateau)}."]
  if map_runs is not None:
    weights = _weight_matched(map_runs)
    same = [(r, weights[(r[0], r[1], r[2]["perturb"]["scale"], r[3])]) for r in rows
            if r[2]["perturb"]["scale"] > 0 and not r[2].get("diverged")
            and weights.get((r[0], r[1], r[2]["perturb"]["scale"], r[3]), (None,))[0] is not None]
    lines += ["", f"## Weight matching on the same pairs (`{map_runs}`)", "",
              "The map's runs of the same seed, t and σ whose child 0 is the same network (its final losses equal, "
              "bit for bit; a map run from another machine trained another one and is left out): the train-loss "
              "barrier after weight matching beside the one after activation matching.", "",
              "| t | seed | σ | barrier | weight-matched | units left in place | activation-matched "
              "| units left in place |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r, (wb, wf) in same:
      c = _cols(r[2])
      lines.append(f"| {r[0]} | {r[1]} | {r[2]['perturb']['scale']:g} | {_fmt(c[1])} | {_fmt(wb)} | {_fmt(wf)} | "
                   f"{_fmt(c[4])} | {_fmt(c[6])} |")
    lines += ["", f"- {len(same)} pairs that did not diverge; weight matching left every unit in place in "
              f"{sum(wf == 1.0 for _, (_, wf) in same)} of them, activation matching in "
              f"{sum(_cols(r[2])[6] == 1.0 for r, _ in same)}."]
  if controls:
    found = [r["activation_matching"] for _, _, rs, _ in controls for r in rs if "activation_matching" in r]
    networks = len({c[3] for c in controls})
    lines += [f"- Positive control (`python -m butterfly_jax.proxy --run=DIR --fractions=0 --seeds=3 --align` on "
              f"{len(controls)} runs' child 0, {networks} distinct network{'s' * (networks != 1)}): "
              f"{sum(f['recovered_fraction'] == 1.0 for f in found)} of {len(found)} "
              f"known permutations undone exactly (recovered fraction at least "
              f"{_fmt(min(f['recovered_fraction'] for f in found))}, L2 left at most "
              f"{_fmt(max(f['l2'] for f in found))})."]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m reproduction.alignment", description=__doc__.splitlines()[0])
  parser.add_argument("runs", type=Path, help="the folder of a :mlp_act or :cnn_act sweep")
  parser.add_argument("--map", type=Path, default=None, help="the map's sweep (weight matching on the same pairs)")
  args = parser.parse_args(argv)
  sys.stdout.write(report(args.runs, args.map))
  return 0


if __name__ == "__main__":
  sys.exit(main())
