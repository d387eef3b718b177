"""Does fine-tuning get more stable with more pre-training? The numbers of ``configs/reproduce_pretrain.py``.

Each seed is one replicate: its own pre-training run, and fine-tuning families from that run's kept steps
with the same seed. The comparison is paired within a seed. The barrier after fine-tuning from the last kept
step is set against the barrier from step 0 (the from-scratch control: the pre-training run's random init
with a fresh head). Per cell (t, σ), the direction is "lower" when every seed's barrier fell, "higher" when
every seed's rose, and "mixed" otherwise.

The verdict is over the cells with σ ≤ 1e-2. It is "holds" when every such cell is lower, "contradicted" when
every one is higher, and "inconclusive" otherwise. The plateau is read the same way, from the second-to-last
kept step to the last. With three seeds, "lower in 3 of 3" has a sign-test p of 1/8 (one-sided). The text
says so and claims no significance.

    python -m reproduction.claims pretrain --mlp=reproduction/pretrain/mlp_report/table.parquet \\
        --cnn=reproduction/pretrain/cnn_report/table.parquet --mlp-scale=reproduction/pretrain/scale/mlp \\
        --cnn-scale=reproduction/pretrain/scale/cnn > reproduction/pretrain/claims.md
"""

import json
from pathlib import Path

import numpy as np

from reproduction.stats import fmt, mean_range, sigma_text


B = "vs_child0.barrier.{}.{}"
MAX_SIGMA = 1e-2  # larger σ throws a network out of its basin whatever its pre-training (first edition)


def _pretrain_step(value):
  from butterfly_jax.config import parse_init_checkpoint
  step = parse_init_checkpoint(value)[1]
  return float("nan") if step is None else float(step)


def frame(t):
  """The finished pairs with ``pretrain`` (the kept step started from), ``sigma``, ``barrier`` (train loss) and
  ``error_barrier`` (train error) columns."""
  t = t[t["status"] == "finished"].copy()
  return t.assign(pretrain=t["init.checkpoint"].map(_pretrain_step), sigma=t["perturb.scale"].astype(float),
                  barrier=t[B.format("train", "loss")].astype(float),
                  error_barrier=t[B.format("train", "error")].astype(float))


def scale_section(t, scale=None) -> str:
  """The yardsticks beside the barrier tables: per kept step started from, child 0's test-error gap (from the
  fine-tuning table) and, from ``scale`` (``configs/reproduce_pretrain.py:*_scale`` runs with ``proxy.json``),
  the barrier between the fine-tuned network and a fully permuted copy of itself (the proxy at fraction 0)."""
  out = ["### The scale a barrier is read against\n"]
  c0 = t.drop_duplicates(["seed", "pretrain"])
  gap = (1 - c0["child0.test.accuracy"].astype(float)) - (1 - c0["child0.train.accuracy"].astype(float))
  c0 = c0.assign(gap=gap)
  full = {}
  for path in sorted(Path(scale).glob("*/proxy.json")) if scale else []:
    config = json.loads((path.parent / "config.json").read_text())
    rows = [r for r in json.loads(path.read_text())["rows"] if r["target_fraction"] == 0.0]
    if rows:
      step = _pretrain_step(config["init"]["checkpoint"])
      matched = [r["weight_matching"]["recovered_fraction"] for r in rows if "weight_matching" in r]
      results = path.parent / "results.json"
      sha = json.loads(results.read_text()).get("init", {}).get("weights_sha256") if results.exists() else None
      study = (t[(t["seed"] == config.get("seed")) & (t["pretrain"] == step)]["init_weights_sha256"]
               if "init_weights_sha256" in t else [])
      full.setdefault(step, []).append(
          {**{f"{sp}.{m}": float(np.mean([r["barrier"][sp][m] for r in rows]))
              for sp in ("train", "test") for m in ("loss", "error")}, "n": len(rows), "recovered": matched,
           "same_start": bool(sha) and sha in set(study)})
  lines = ["| fine-tuned from step | child 0's test-error gap (test − train) | full-permutation barrier: train loss "
           "| train error | test loss | test error | seeds × permutations |",
           "| ---: | --- | --- | --- | --- | --- | --- |"]
  for step in sorted(set(c0["pretrain"].dropna()) | set(full)):
    g = c0[c0["pretrain"] == step]["gap"]
    f = full.get(step, [])
    cells = ([mean_range(x[k] for x in f) for k in ("train.loss", "train.error", "test.loss", "test.error")]
             + [f"{len(f)} × {sorted({x['n'] for x in f})[0]}"]) if f else ["", "", "", "", ""]
    lines.append(f"| {int(step)} | {mean_range(g)} | " + " | ".join(cells) + " |")
  out.append("\n".join(lines))
  rec = [x for v in full.values() for f in v for x in f["recovered"]]
  if rec:
    out.append(f"\nWeight matching each permuted copy back (`proxy --align`, the positive control): "
               f"{sum(x == 1.0 for x in rec)} of {len(rec)} permutations undone exactly.")
  if not full:
    out.append("\nNo scale runs given: the full-permutation barrier is not stated.")
  else:
    same = {int(step): sum(f["same_start"] for f in v) for step, v in sorted(full.items())}
    out.append("\nThe full-permutation barrier is measured on networks fine-tuned the same way from pre-training "
               "rebuilt for it (`reproduction/pretrain/scale`): the same recipe, not necessarily the same bits. "
               "Scale runs that started from the study's own weights (`init.weights_sha256` equal), per kept step: "
               + ", ".join(f"step {k}: {n} of {len(full[float(k)])}" for k, n in same.items()) + ".")
  return "\n".join(out) + "\n"


def paired(t, value="barrier", start=None, end=None):
  """Per (t_epochs, sigma) with σ > 0: ``{seed: (value at start, value at end)}`` between two kept steps (default:
  the first and the last), for the seeds that have both."""
  steps = sorted(t["pretrain"].dropna().unique())
  start = steps[0] if start is None else start
  end = steps[-1] if end is None else end
  out = {}
  for (te, sigma), g in t[t["sigma"] > 0].groupby(["t_epochs", "sigma"]):
    a = g[g["pretrain"] == start].groupby("seed")[value].mean()
    b = g[g["pretrain"] == end].groupby("seed")[value].mean()
    out[(float(te), float(sigma))] = {int(s): (float(a[s]), float(b[s])) for s in a.index if s in b.index}
  return out


def direction(pairs: dict) -> str:
  """"lower" / "higher" when every seed's value fell / rose from start to end, else "mixed" ("n/a" if none)."""
  if not pairs:
    return "n/a"
  if all(b < a for a, b in pairs.values()):
    return "lower"
  if all(b > a for a, b in pairs.values()):
    return "higher"
  return "mixed"


def verdict(cells: dict, max_sigma=MAX_SIGMA) -> str:
  """Over the cells with σ ≤ max_sigma: "holds" (all lower), "contradicted" (all higher), else "inconclusive"."""
  dirs = [direction(p) for (te, s), p in cells.items() if s <= max_sigma and p]
  if not dirs:
    return "untested: no cells"
  counts = ", ".join(f"{dirs.count(d)} {d}" for d in ("lower", "higher", "mixed") if dirs.count(d))
  if all(d == "lower" for d in dirs):
    return f"holds ({counts} of {len(dirs)} cells)"
  if all(d == "higher" for d in dirs):
    return f"contradicted ({counts} of {len(dirs)} cells)"
  return f"inconclusive ({counts} of {len(dirs)} cells)"


def _table(t, value, digits=4, scale=1.0):
  """Rows: kept step; columns: (t, σ); cells: mean [min, max] over seeds, n."""
  cols = sorted({(float(a), float(b)) for a, b in t[["t_epochs", "sigma"]].itertuples(index=False)})
  head = "| pre-training step | " + " | ".join(f"t = {te:g} ep, σ = {sigma_text(s)}" for te, s in cols) + " |"
  lines = [head, "| ---: |" + " ---: |" * len(cols)]
  for step, g in t.groupby("pretrain"):
    cells = []
    for te, s in cols:
      v = g[(g["t_epochs"] == te) & (g["sigma"] == s)].groupby("seed")[value].mean() * scale
      cells.append(f"{fmt(v.mean(), digits)} [{fmt(v.min(), digits)}, {fmt(v.max(), digits)}] n={len(v)}"
                   if len(v) else "")
    lines.append(f"| {int(step)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def pretraining_runs(t):
  """``{seed: test accuracy}`` of the pre-training runs the fine-tuning runs started from (their results.json),
  and the kept steps' count; empty where those run directories are absent."""
  from butterfly_jax.config import parse_init_checkpoint
  out = {}
  for seed, value in t.groupby("seed")["init.checkpoint"].first().items():
    path = Path(parse_init_checkpoint(value)[0]) / "results.json"
    if path.exists():
      res = json.loads(path.read_text())
      out[int(seed)] = (res["children"][0]["test"]["accuracy"], res["steps"]["T"])
  return out


def _ratios(pairs):
  r = sorted(b / a for a, b in pairs.values() if a > 0)
  return "n/a" if not r else (f"{r[0]:.2f}" if len(r) == 1 else f"{r[0]:.2f}-{r[-1]:.2f}")


def report(t, label, scale=None) -> str:
  """Markdown: the tables and the verdict for one network's fine-tuning sweep (a report table); ``scale``: the
  network's ``*_scale`` runs directory (:func:`scale_section`)."""
  t = frame(t)
  steps = sorted(t["pretrain"].dropna().unique())
  seeds = sorted(int(s) for s in t["seed"].unique())
  out = [f"## {label}: {t['run'].nunique()} fine-tuning runs, {len(t)} child pairs, seeds {seeds}, "
         f"kept steps {[int(s) for s in steps]}\n"]
  pre = pretraining_runs(t)
  if pre:
    acc = [a for a, _ in pre.values()]
    out.append(f"Pre-training runs (classes 0-4, {sorted({n for _, n in pre.values()})} steps): test accuracy "
               f"{fmt(np.mean(acc))} [{fmt(min(acc))}, {fmt(max(acc))}] over {len(acc)} seeds.\n")
  if "init_weights_sha256" in t:
    shas = t.groupby("init.checkpoint")["init_weights_sha256"].nunique(dropna=False)
    out.append(f"Pre-trained weights read (`init_weights_sha256`): {len(shas)} kept steps started from, "
               f"{t['init_weights_sha256'].nunique()} distinct fingerprints; every kept step's runs share one: "
               f"{'yes' if (shas == 1).all() else 'no, ' + ', '.join(shas[shas != 1].index)}.\n")
  zero = t[t["sigma"] == 0]
  cols = [B.format(s, m) for s in ("train", "test") for m in ("loss", "error")] + ["vs_child0.l2"]
  worst = float(np.nanmax(np.abs(zero[cols].astype(float).to_numpy()))) if len(zero) else float("nan")
  out.append(f"σ = 0 twins: {len(zero)} pairs; the largest |barrier| or L2 among them: {worst!r}.\n")
  out.append(scale_section(t, scale))
  perturbed = t[t["sigma"] > 0]
  out.append("### Train-loss barrier (mean [min, max] over seeds)\n")
  out.append(_table(perturbed, "barrier"))
  out.append("\n### Train-error barrier, percentage points (mean [min, max] over seeds)\n")
  out.append(_table(perturbed, "error_barrier", digits=2, scale=100))
  out.append("\n### L2 distance between the twins after fine-tuning\n")
  out.append(_table(perturbed.assign(l2=perturbed["vs_child0.l2"].astype(float)), "l2", digits=3))
  out.append("\n### Child 0's test accuracy on the fine-tuning classes (5-9)\n")
  c0 = perturbed[perturbed["sigma"] == perturbed["sigma"].min()]
  out.append(_table(c0.assign(acc=c0["child0.test.accuracy"].astype(float)), "acc"))
  out.append(f"\n### Paired within each seed: from step {int(steps[0])} (no pre-training) to step {int(steps[-1])}\n")
  rows = ["| t | σ | train-loss barrier | ratio last/none, per seed | train-error barrier |",
          "| ---: | ---: | --- | --- | --- |"]
  full = paired(t)
  err = paired(t, "error_barrier")
  for (te, s), p in sorted(full.items()):
    rows.append(f"| {te:g} ep | {sigma_text(s)} | {direction(p)} (n = {len(p)}) | {_ratios(p)} | "
                f"{direction(err[(te, s)])} |")
  out.append("\n".join(rows))
  plateau = paired(t, start=steps[-2], end=steps[-1]) if len(steps) > 2 else {}
  out.append(f"\n**Verdict** (σ ≤ {MAX_SIGMA:g}, train-loss barrier): more pre-training, lower barrier: "
             f"{verdict(full)}; train-error barrier: {verdict(err)}.")
  if plateau:
    out.append(f"Plateau check, does the barrier still fall from step {int(steps[-2])} to {int(steps[-1])}? "
               f"{verdict(plateau)}.")
  out.append(f"With {len(seeds)} seeds a cell is \"lower\" only if all {len(seeds)} fell; no significance is "
             f"claimed (sign test, one-sided: p = {0.5 ** len(seeds):g} for one cell).\n")
  return "\n".join(out)
