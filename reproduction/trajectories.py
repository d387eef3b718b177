"""The map's rows the claims table lacked: when the instability ends, how the twins separate, how far each is from
init, and what their ensemble gains, as Markdown.

Reads the finished runs of an instability map (``configs/reproduce_map.py:mlp`` or ``:cnn``; the single-weight runs
are left out) and prints, for the batch and Gaussian directions:

* **timescale**: the seed-mean train-loss barrier at the grid's smallest σ per t, as a fraction of its level at
  t = 0, and t as a fraction of training (the paper: the instability ends within about the first 2% of it);
* **separation over training**: the L2 distance of each twin to child 0 at the first logged step at least
  :data:`GAP` steps after t and at T (``metrics.jsonl``; the map logs every ``log.every_steps``), and their ratio;
* **distance from init**: each twin's ``l2_from_init`` at T against child 0's (equally far from init, yet apart?);
* **L2 over training**: perturbed at t = 0, the twin's L2 to child 0 at each epoch (exponential growth?);
* **ensembles**: each pair's ensemble test accuracy against the mean of its two members', and their disagreement.

    python -m reproduction.trajectories reproduction/map/mlp > reproduction/map/mlp_trajectories.md

(from the repository root). Every range is over seeds and the pairs named in its row.
"""

import json
import sys
from pathlib import Path

import numpy as np

from butterfly_jax.io import results as results_lib
from reproduction.stats import folder_main, sigma_text

SMALL = 1e-2  # the plateau's σ (REPRODUCTION.md, section 1)
GAP = 100  # steps after t before the first L2 read: the first log after t can fall a few steps after it
KINDS = ("batch", "gaussian")


def load(runs: Path) -> list[dict]:
  """One dict per perturbed pair (σ > 0) of every finished whole-network run under ``runs``: kind, seed, t (steps),
  T, steps per epoch, σ, the train-loss barrier, L2 to child 0 at the first log after t and at T, both networks'
  L2 from init at T, the ensemble's and the members' test accuracies, the disagreement."""
  out = []
  for path in sorted(runs.glob("*/results.json")):
    cfg = json.loads((path.parent / "config.json").read_text())
    if cfg["perturb"]["mask"].get("single"):
      continue
    res = results_lib.load(path)
    spe, T, t = res["steps"]["steps_per_epoch"], res["steps"]["T"], res["steps"]["t"]
    logs = [json.loads(line) for line in (path.parent / "metrics.jsonl").read_text().splitlines() if line.strip()]
    first = next((r for r in logs if r.get("phase") == "children" and r["step"] >= t + GAP), None)
    c0 = res["children"][0]
    for k, child in enumerate(res["children"][1:], start=1):
      sigma = child["perturb"]["scale"]
      if sigma == 0 or child["diverged"]:
        continue
      v = child["vs_child0"]
      out.append({"kind": cfg["perturb"]["kind"], "seed": int(cfg["seed"]), "t": t, "T": T, "spe": spe,
                  "sigma": sigma, "barrier": v["barrier"]["train"]["loss"], "l2_T": v["l2"],
                  "l2_first": None if first is None else first["l2_to_child0"][k],
                  "first_step": None if first is None else first["step"],
                  "init_k": child["l2_from_init"], "init_0": c0["l2_from_init"],
                  "ens": v["ensemble"]["accuracy"],
                  "members": (c0["test"]["accuracy"] + child["test"]["accuracy"]) / 2,
                  "disagreement": v["disagreement"],
                  # L2 to child 0 at every logged step after t, and at T
                  "curve": {t: child["perturb"].get("noise_l2"),  # the perturbation's own norm, at t
                            **{r["step"]: r["l2_to_child0"][k] for r in logs
                               if r.get("phase") == "children" and r["step"] > t}, T: v["l2"]}})
  return out


def _span(values, digits: int = 3) -> str:
  v = [x for x in values if x is not None and np.isfinite(x)]
  if not v:
    return "–"
  lo, hi = min(v), max(v)
  return f"{lo:.{digits}g}" if f"{lo:.{digits}g}" == f"{hi:.{digits}g}" else f"{lo:.{digits}g} to {hi:.{digits}g}"


def _t_label(t: int, spe: int) -> str:
  return f"{t // spe} ep" if t and t % spe == 0 else str(t)


def report(runs: Path) -> str:
  pairs = load(runs)
  if not pairs:
    raise SystemExit(f"no finished whole-network runs under {runs}")
  spe, T = pairs[0]["spe"], pairs[0]["T"]
  times = sorted({p["t"] for p in pairs})
  seeds = sorted({p["seed"] for p in pairs})
  lines = [f"# Timescale, separation, distance from init and ensembles: `{runs}`", "",
           f"{len(pairs)} perturbed pairs that did not diverge (seeds {seeds}; T = {T} steps, {spe} a epoch), from "
           f"`python -m reproduction.trajectories {runs}`. Ranges are over seeds and the pairs of each row.", ""]
  # the timescale
  lines += ["## When the instability ends", "",
            "Seed-mean train-loss barrier at the grid's smallest σ, per t, and as a fraction of its t = 0 level; t "
            "as a fraction of training (T). The paper: instability ends within about the first 2% of training.", "",
            "| t | t / T | " + " | ".join(f"{k}: barrier | {k}: / t = 0" for k in KINDS) + " |",
            "| --- | ---: | " + " | ".join("---: | ---:" for _ in KINDS) + " |"]
  smallest = {k: min((p["sigma"] for p in pairs if p["kind"] == k), default=None) for k in KINDS}
  level = {}
  for t in times:
    cells = []
    for k in KINDS:
      v = [p["barrier"] for p in pairs if p["kind"] == k and p["t"] == t and p["sigma"] == smallest[k]]
      mean = float(np.mean(v)) if v else None
      level.setdefault(k, {})[t] = mean
      base = level[k].get(times[0])
      cells += ["–" if mean is None else f"{mean:.4g}",
                "–" if mean is None or not base else f"{mean / base:.3g}"]
    lines.append(f"| {_t_label(t, spe)} | {t / T:.1%} | " + " | ".join(cells) + " |")
  for k in KINDS:
    base = level[k].get(times[0])
    if not base:
      continue
    for frac in (0.5, 0.1):
      below = [t for t in times if level[k][t] is not None and level[k][t] < frac * base]
      lines.append(f"- {k}, σ = {sigma_text(smallest[k])}: the barrier first falls below {frac:g} of its t = 0 level "
                   + (f"at t = {_t_label(below[0], spe)} ({below[0] / T:.1%} of training; the last t above it: "
                      f"{_t_label(max(t for t in times if t < below[0]), spe)})" if below else "at no t measured")
                   + ".")
  # separation and distance from init
  lines += ["", "## How the twins separate, and how far each is from init", "",
            f"Per t, pairs with 0 < σ ≤ 1e-2: L2 to child 0 at the first logged step at least {GAP} steps after t "
            "and at T, and their ratio (growth); "
            "each twin's L2 from init at T over child 0's, and the twins' L2 at T over child 0's L2 from init.", "",
            "| kind | t | n | first log (step) | L2 there | L2 at T | growth | L2 from init, twin / child 0 | "
            "L2 at T / child 0's from init |",
            "| --- | --- | ---: | --- | --- | --- | --- | --- | --- |"]
  for k in KINDS:
    for t in times:
      g = [p for p in pairs if p["kind"] == k and p["t"] == t and p["sigma"] <= SMALL]
      if not g:
        continue
      steps = sorted({p["first_step"] for p in g if p["first_step"] is not None})
      lines.append(f"| {k} | {_t_label(t, spe)} | {len(g)} | {_span(steps, 6)} | {_span([p['l2_first'] for p in g])} "
                   f"| {_span([p['l2_T'] for p in g])} | "
                   f"{_span([p['l2_T'] / p['l2_first'] for p in g if p['l2_first']])} | "
                   f"{_span([p['init_k'] / p['init_0'] for p in g], 4)} | "
                   f"{_span([p['l2_T'] / p['init_0'] for p in g])} |")
  # L2 over training, perturbed at t = 0
  lines += ["", "## L2 over training, perturbed at t = 0", "",
            "Seed-mean L2 of the twin at the grid's smallest σ to child 0: at step 0 (the perturbation's own norm, "
            "σ times the init scale), at the first log and at each logged epoch boundary, and its growth since the "
            "previous row. Exponential growth would keep the factor per step constant.", "",
            "| kind | step | L2 | growth since the previous row |", "| --- | ---: | ---: | ---: |"]
  for k in KINDS:
    curves = [p["curve"] for p in pairs if p["kind"] == k and p["t"] == 0 and p["sigma"] == smallest[k]]
    if not curves:
      continue
    steps = sorted(set.intersection(*[set(c) for c in curves]))
    shown = [s for s in steps if s in steps[:2] or s % spe == 0]
    prev = None
    for step in shown:
      mean = float(np.mean([c[step] for c in curves]))
      lines.append(f"| {k} | {step} | {mean:.4g} | {'–' if prev is None else f'{mean / prev:.3g}'} |")
      prev = mean
  # ensembles
  lines += ["", "## Ensembles", "",
            "Per t, the ensemble of child 0 and its twin (averaged probabilities): its test accuracy minus the mean "
            "of the two members' (gain), and the fraction of test examples on which the two disagree.", "",
            "| kind | t | σ | n | ensemble gain | disagreement |", "| --- | --- | --- | ---: | --- | --- |"]
  for k in KINDS:
    for t in times:
      for label, keep in (("≤ 1e-2", lambda s: s <= SMALL), ("0.1", lambda s: s == 0.1)):
        g = [p for p in pairs if p["kind"] == k and p["t"] == t and keep(p["sigma"])]
        if g:
          lines.append(f"| {k} | {_t_label(t, spe)} | {label} | {len(g)} | "
                       f"{_span([p['ens'] - p['members'] for p in g])} | {_span([p['disagreement'] for p in g])} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  return folder_main(argv, "reproduction.trajectories", __doc__, report,
                     "the folder of a map's sweep (reproduction/map/mlp, .../cnn)")


if __name__ == "__main__":
  sys.exit(main())
