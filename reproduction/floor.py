"""Below the map's plateau: the barrier left by perturbations down to one unit in the last place of one weight.

Reads the finished runs of ``configs/reproduce_map.py:mlp_floor`` (per t: the batch direction at σ down to 1e-10,
one weight moved 1, 16 and 256 units in the last place, every kernel weight moved one) and prints, as Markdown,
per seed, each child's perturbation as realised (the weights it changed, its L2 norm) and where it ended (L2 to
child 0 at T, the train-loss and test-error barriers, the train-loss barrier after weight matching), then the
ranges over seeds beside the map's own smallest σ at each t (``--map``: runs of the same seed whose child 0 is the
same network, bit for bit; a map run from another machine trained another one and is left out, said so).

    python -m reproduction.floor reproduction/map/mlp_floor --map=reproduction/map/mlp \\
        > reproduction/map/mlp_floor.md

(from the repository root).
"""

import argparse
import json
import sys
from pathlib import Path

from butterfly_jax.io import results as results_lib
from reproduction.stats import time_order


def _label(child) -> str:
  p = child["perturb"]
  if p["kind"] == "ulp":
    where = f"weight {p['weight']}" if p.get("weight") else f"every kernel weight ({p['num_perturbed']:,})"
    return f"{p['scale']:g} ulp, {where}"
  return f"{p['kind']} σ = {p['scale']:g}"


def _rows(runs: Path):
  """``(t, seed, label, child, child 0's losses)`` for every child k >= 1 of every finished run under ``runs``."""
  out = []
  for path in sorted(runs.glob("*/results.json")):
    res = results_lib.load(path)
    cfg = json.loads((path.parent / "config.json").read_text())
    seed, t = int(cfg["seed"]), str(cfg["perturb"]["time"])
    c0 = res["children"][0]
    for child in res["children"][1:]:
      out.append((t, seed, _label(child), child, (c0["train"]["loss"], c0["test"]["loss"])))
  return sorted(out, key=lambda r: (time_order(r[0]), r[1]))


def _unmoved(child) -> bool:
  v = child.get("vs_child0", {})
  return v.get("aligned", {}).get("barrier", {}).get("train", {}).get("loss") == v.get("barrier", {}).get(
      "train", {}).get("loss")


def _identity(child) -> bool:
  return child.get("vs_child0", {}).get("aligned", {}).get("fixed_point_fraction") == 1.0


def _fmt(x, digits=3) -> str:
  return "–" if x is None else f"{x:.{digits}g}"


def report(runs: Path, map_runs: Path | None = None) -> str:
  rows = _rows(runs)
  if not rows:
    raise SystemExit(f"no finished runs under {runs}")
  times = list(dict.fromkeys(r[0] for r in rows))
  seeds = sorted({r[1] for r in rows})
  lines = [f"# Below the plateau: `{runs}`", "",
           f"{len({r[4] for r in rows})} child-0 networks (seeds {seeds}; t = {', '.join(times)}), from "
           f"`python -m reproduction.floor {runs}" + (f" --map={map_runs}" if map_runs else "") + "`.", "",
           "Columns: the weights whose value the perturbation changed (`num_changed`, of those in the mask), its L2 "
           "norm as realised in float32, then at T: the L2 distance to child 0, the train-loss and test-error "
           "barriers, and the train-loss barrier after weight matching.", ""]
  for t in times:
    for seed in seeds:
      mine = [r for r in rows if r[0] == t and r[1] == seed]
      if not mine:
        continue
      lines += [f"## t = {t}, seed {seed}", "", "| perturbation | weights changed | ‖θ′ − θ‖ | L2 at T | "
                "train-loss barrier | test-error barrier | aligned train-loss barrier |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
      for _, _, label, child, _ in mine:
        p, v = child["perturb"], child.get("vs_child0", {})
        b = v.get("barrier", {})
        aligned = v.get("aligned", {}).get("barrier", {}).get("train", {}).get("loss")
        lines.append(f"| {label} | {p.get('num_changed', '–'):,} of {p['num_perturbed']:,} | {_fmt(p['noise_l2'])} | "
                     f"{_fmt(v.get('l2'), 4)} | {_fmt(b.get('train', {}).get('loss'), 4)} | "
                     f"{_fmt(b.get('test', {}).get('error'), 3)} | {_fmt(aligned, 4)} |")
      lines.append("")
  perturbed = [r for r in rows if r[3]["perturb"]["scale"] > 0]
  twins = [r for r in rows if r[3]["perturb"]["scale"] == 0]

  def span(values):
    values = [v for v in values if v is not None]
    if not values:
      return "–"
    if all(isinstance(v, int) for v in values):
      return f"{min(values):,}" if min(values) == max(values) else f"{min(values):,} to {max(values):,}"
    return f"{min(values):.4g}" if min(values) == max(values) else f"{min(values):.4g} to {max(values):.4g}"

  lines += ["## Over seeds", "",
            f"- σ = 0 twins: {len(twins)}, at L2 {span([r[3]['vs_child0']['l2'] for r in twins])} from "
            f"child 0 and train-loss barrier {span([r[3]['vs_child0']['barrier']['train']['loss'] for r in twins])}.",
            f"- weight matching: {sum(_unmoved(r[3]) for r in perturbed)} of {len(perturbed)} perturbed pairs have "
            "the same train-loss barrier after alignment as before (every one of their permutations the identity: "
            f"{sum(_identity(r[3]) for r in perturbed)} of {len(perturbed)}).",
            "", "| t | perturbation | n | weights changed | L2 at T | train-loss barrier | test-error barrier |",
            "| --- | --- | ---: | --- | --- | --- | --- |"]
  groups = {}
  for r in perturbed:
    key = r[2] if r[3]["perturb"]["kind"] != "ulp" or not r[3]["perturb"].get("weight") else (
        f"{r[3]['perturb']['scale']:g} ulp, one weight")
    groups.setdefault((r[0], key), []).append(r[3])
  for (t, key), children in groups.items():
    changed = [c["perturb"].get("num_changed") for c in children]
    lines.append(f"| {t} | {key} | {len(children)} | {span(changed)} | "
                 f"{span([c['vs_child0']['l2'] for c in children])} | "
                 f"{span([c['vs_child0']['barrier']['train']['loss'] for c in children])} | "
                 f"{span([c['vs_child0']['barrier']['test']['error'] for c in children])} |")
  if map_runs is not None:
    nets = {(r[0], r[1]): r[4] for r in rows}
    same, other = [], []
    for path in sorted(Path(map_runs).glob("*/results.json")):
      cfg = json.loads((path.parent / "config.json").read_text())
      t, seed = str(cfg["perturb"]["time"]), int(cfg["seed"])
      if (t, seed) not in nets or cfg["perturb"]["kind"] != "batch" or cfg["perturb"]["mask"].get("single"):
        continue
      res = results_lib.load(path)
      c0 = res["children"][0]
      smallest = min((c for c in res["children"][1:] if c["perturb"]["scale"] > 0),
                     key=lambda c: c["perturb"]["scale"])
      if nets[(t, seed)] == (c0["train"]["loss"], c0["test"]["loss"]):
        same.append((t, seed, smallest))
      else:
        other.append((t, seed))
    lines += ["", "The map's smallest σ (batch direction) on the same networks:", ""]
    for t, seed, c in sorted(same, key=lambda x: (time_order(x[0]), x[1])):
      v = c["vs_child0"]
      lines.append(f"- t = {t}, seed {seed}: σ = {c['perturb']['scale']:g}, L2 at T {v['l2']:.4g}, train-loss "
                   f"barrier {v['barrier']['train']['loss']:.4g}, test-error barrier "
                   f"{v['barrier']['test']['error']:.3g}.")
    if other:
      where = "; ".join(f"t = {t}, seed {s}" for t, s in sorted(other, key=lambda x: (time_order(x[0]), x[1])))
      lines.append(f"- {where}: the map's run trained another child 0 (it ran on another machine: BUILD_NOTES.md, "
                   "\"Machine variance\"), so its barriers are against another network; left out.")
  return "\n".join(lines) + "\n"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("runs", type=Path)
  ap.add_argument("--map", type=Path, default=None)
  a = ap.parse_args(argv)
  sys.stdout.write(report(a.runs, a.map))


if __name__ == "__main__":
  main()
