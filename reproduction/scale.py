"""The scale a barrier is read against, shared by the map's and the studies' claims: the barrier between a trained
network and a fully permuted copy of itself (the random-permutation proxy at fraction 0, ``proxy.json`` of the scale
runs), and child 0's errors and test-error gap.
"""

import json
from pathlib import Path

import numpy as np

from reproduction.stats import fmt, mean_range


def md_table(header, rows) -> str:
  """A Markdown table of ``header`` and ``rows`` (each cell written with ``str``)."""
  return "\n".join(["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
                   + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def scale_of_barriers(scale_dir, t):
  """The yardsticks: the proxy at fraction 0 (per seed: the mean over its permutations) and child 0's errors."""
  per_seed = {}
  for path in sorted(Path(scale_dir).glob("*/proxy.json")) if scale_dir else []:
    seed = json.loads((path.parent / "config.json").read_text())["seed"]
    rows = [r for r in json.loads(path.read_text())["rows"] if r["target_fraction"] == 0.0]
    if rows:
      per_seed[seed] = {f"{split}.{m}": float(np.mean([r["barrier"][split][m] for r in rows]))
                        for split in ("train", "test") for m in ("loss", "error")}
      per_seed[seed]["permutations"] = len(rows)
      matched = [r["weight_matching"] for r in rows if "weight_matching" in r]  # proxy --align
      if matched:
        per_seed[seed]["recovered"] = [m["recovered_fraction"] for m in matched]
        per_seed[seed]["aligned_l2"] = [m["l2"] for m in matched]
        per_seed[seed]["l2"] = [r["l2"] for r in rows if "weight_matching" in r]
  c0 = t[t["child"] == 1].groupby("seed")[["child0.train.accuracy", "child0.test.accuracy"]].agg(["min", "max"])
  errors = {}
  for seed, r in c0.iterrows():
    tr, te = 1 - r[("child0.train.accuracy", "max")], 1 - r[("child0.test.accuracy", "max")]
    spread = max(r[("child0.train.accuracy", "max")] - r[("child0.train.accuracy", "min")],
                 r[("child0.test.accuracy", "max")] - r[("child0.test.accuracy", "min")])
    errors[int(seed)] = {"train": tr, "test": te, "gap": te - tr, "spread": spread}
  return per_seed, errors


def scale_markdown(per_seed, errors, heading="## The scale a barrier is read against", child0="Child 0") -> str:
  """The yardsticks as Markdown: the proxy at fraction 0 (``per_seed``, :func:`scale_of_barriers`) and child 0's
  errors; ``heading`` and ``child0`` name whose they are."""
  out = [f"{heading}\n"]
  if per_seed:
    n = sorted({v["permutations"] for v in per_seed.values()})
    out.append(f"A fully permuted copy of the trained network (the random-permutation proxy at fraction 0: the "
               f"same function, every hidden unit moved; {', '.join(map(str, n))} permutations per seed, "
               f"{len(per_seed)} seeds; mean [min, max] over seeds):\n")
    out.append(md_table(["barrier", "train", "test"],
                        [[m, mean_range(v[f"train.{m}"] for v in per_seed.values()),
                          mean_range(v[f"test.{m}"] for v in per_seed.values())] for m in ("loss", "error")]))
    matched = [v for v in per_seed.values() if "recovered" in v]
    if matched:
      rec = [x for v in matched for x in v["recovered"]]
      left = [x for v in matched for x in v["aligned_l2"]]
      moved = [x for v in matched for x in v["l2"]]
      out.append(f"\nWeight matching each permuted copy back to the network (`proxy --align`, the run's "
                 f"`eval.align_max_iter`; the positive control for alignment): {sum(x == 1.0 for x in rec)} of "
                 f"{len(rec)} permutations undone exactly (recovered fraction of units: min {fmt(min(rec))}); L2 "
                 f"left after alignment at most {fmt(max(left))}, from {mean_range(moved)} before.")
  else:
    out.append("No proxy runs given (`--scale`): the full-permutation barrier is not stated.")
  spread = max([e["spread"] for e in errors.values()] or [float("nan")])
  same = ("Child 0 is the same network in every run of a seed (the trunk and child 0 share every batch): its "
          "accuracies are equal across those runs." if spread == 0 else
          f"Child 0 would be the same network in every run of a seed (the trunk and child 0 share every batch) if "
          f"every run ran the same program on the same CPU; its accuracies differ across those runs by at most "
          f"{spread:g} (another CPU or other XLA flags: each run's `provenance`); the errors above are the best "
          f"across those runs.")
  out.append(f"\n{child0} (the unperturbed network at T; {len(errors)} seeds): train error "
             f"{mean_range(e['train'] for e in errors.values())}, "
             f"test error {mean_range(e['test'] for e in errors.values())}, "
             f"test-error gap (test − train) {mean_range(e['gap'] for e in errors.values())}. {same}\n")
  return "\n".join(out)
