"""The numbers behind REPRODUCTION.md's verdicts, computed from the report table (nothing typed by hand).

    python reproduction/claims.py reproduction/fashion_mnist/report/table.parquet > reproduction/fashion_mnist/claims.md

Prints Markdown: one section per claim of the paper, each with the table or statistic it rests on. Barriers are
the Eq. 1 train/test loss and error barriers between child 0 and child k after training; means and min-max are
over seeds; Spearman correlations are over every non-diverged pair with σ > 0.
"""

import sys

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

B = "vs_child0.barrier.{}.{}"


def _fmt(x, digits=4):
  return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _sigma(s):
  return "0" if s == 0 else f"{s:g}"


def load(path):
  t = pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)
  t = t[t["status"] == "finished"].copy()
  t["sigma"] = t["perturb.scale"].astype(float)
  t["barrier"] = t[B.format("train", "loss")].astype(float)
  return t


def table_by(t, rows, cols, value, agg="mean"):
  g = t.groupby([rows, cols])[value].agg(["mean", "min", "max", "count"]).reset_index()
  out = []
  cs = sorted(g[cols].unique())
  out.append("| " + rows + " \\ " + cols + " | " + " | ".join(_sigma(c) if cols == "sigma" else str(c) for c in cs)
             + " |")
  out.append("| --- |" + " ---: |" * len(cs))
  for r in sorted(g[rows].unique(), key=lambda v: (float(v) if isinstance(v, (int, float)) else v)):
    cells = []
    for c in cs:
      row = g[(g[rows] == r) & (g[cols] == c)]
      cells.append("" if row.empty else f"{_fmt(row['mean'].iloc[0])} [{_fmt(row['min'].iloc[0])}, "
                   f"{_fmt(row['max'].iloc[0])}] n={int(row['count'].iloc[0])}")
    out.append(f"| {r} | " + " | ".join(cells) + " |")
  return "\n".join(out)


def spearman(t, x, y):
  d = t[(t["sigma"] > 0) & ~t["pair_diverged"].astype(bool)][[x, y]].astype(float).dropna()
  if len(d) < 3:
    return "too few pairs", len(d)
  if d[x].nunique() == 1 or d[y].nunique() == 1:
    const = x if d[x].nunique() == 1 else y
    return f"undefined: {const} is constant ({d[const].iloc[0]:g})", len(d)
  return float(spearmanr(d[x], d[y]).statistic), len(d)


def pretraining_step(init_checkpoint):
  """The kept step a fine-tuning run started from ("RUN_DIR:STEP"), NaN for a fresh init or a weights file."""
  from butterfly_jax.config import parse_init_checkpoint
  step = parse_init_checkpoint(init_checkpoint)[1]
  return float("nan") if step is None else float(step)


def pretraining(t):
  """Fine-tuning families: the train-loss barrier by pre-training step (rows) and perturbation time, per σ."""
  t = t.assign(pretrain=t["init.checkpoint"].map(pretraining_step))
  print(f"From {t['run'].nunique()} finished fine-tuning runs, {len(t)} child pairs "
        f"(seeds {sorted(t['seed'].dropna().astype(int).unique().tolist())}).")
  for sigma in sorted(s for s in t["sigma"].unique() if s > 0):
    print(f"\n## Train-loss barrier, σ = {_sigma(sigma)}: pre-training steps (rows) x perturbation time (epochs)\n")
    print(table_by(t[t["sigma"] == sigma], "pretrain", "t_epochs", "barrier"))
  print("\n## L2 distance between the twins, σ = 1e-4\n")
  print(table_by(t[t["sigma"] == 1e-4].assign(v=t["vs_child0.l2"].astype(float)), "pretrain", "t_epochs", "v"))
  print("\n## Child 0's test accuracy on the fine-tuning classes\n")
  print(table_by(t[t["sigma"] == 1e-4].assign(v=t["child0.test.accuracy"].astype(float)), "pretrain", "t_epochs", "v"))


def main(path):
  t = load(path)
  if "init.checkpoint" in t and t["init.checkpoint"].map(pretraining_step).notna().any():
    return pretraining(t)
  full = t[t["perturbation"].isin(["batch", "gaussian"])]
  single = t[t["perturbation"].str.contains("single")]
  print(f"From {t['run'].nunique()} finished runs, {len(t)} child pairs "
        f"(seeds {sorted(t['seed'].dropna().astype(int).unique().tolist())}).\n")

  print("## Train-loss barrier by perturbation time (epochs) and σ, batch direction\n")
  print(table_by(full[full["perturbation"] == "batch"], "t_epochs", "sigma", "barrier"))
  print("\n## Train-loss barrier by perturbation time (epochs) and σ, Gaussian direction\n")
  print(table_by(full[full["perturbation"] == "gaussian"], "t_epochs", "sigma", "barrier"))
  if len(single):
    print("\n## One random weight (σ relative to that weight's init RMS): train-loss barrier\n")
    print(table_by(single, "t_epochs", "sigma", "barrier"))
  for split, metric in (("train", "error"), ("test", "loss"), ("test", "error")):
    print(f"\n## {split} {metric} barrier, batch direction\n")
    print(table_by(full[full["perturbation"] == "batch"].assign(v=full[B.format(split, metric)].astype(float)),
                   "t_epochs", "sigma", "v"))
  print("\n## L2 distance between the twins after training, batch direction\n")
  print(table_by(full[full["perturbation"] == "batch"].assign(v=full["vs_child0.l2"].astype(float)),
                 "t_epochs", "sigma", "v"))

  zero = t[t["sigma"] == 0]
  cols = [B.format(s, m) for s in ("train", "test") for m in ("loss", "error")] + ["vs_child0.l2"]
  worst = float(np.nanmax(np.abs(zero[cols].astype(float).to_numpy()))) if len(zero) else float("nan")
  print(f"\n## σ = 0 twins\n\n{len(zero)} pairs; the largest |barrier| or L2 among them: {worst!r}.")

  print("\n## Correlations (Spearman, pairs with σ > 0, not diverged)\n")
  print("| x | y | ρ | pairs |\n| --- | --- | ---: | ---: |")
  for x, y in (("vs_child0.l2", B.format("train", "loss")), ("vs_child0.l2", B.format("test", "error")),
               ("vs_child0.aligned.fixed_point_fraction", B.format("train", "loss")),
               ("vs_child0.aligned.fixed_point_fraction", "vs_child0.l2"),
               ("vs_child0.cka", B.format("train", "loss")), ("vs_child0.ensemble.accuracy", B.format("train", "loss")),
               ("vs_child0.disagreement", B.format("train", "loss"))):
    if x in t and y in t:
      rho, n = spearman(t, x, y)
      print(f"| {x} | {y} | {rho if isinstance(rho, str) else _fmt(rho, 3)} | {n} |")

  if "vs_child0.aligned.fixed_point_fraction" in t:
    fp = t[t["sigma"] > 0]["vs_child0.aligned.fixed_point_fraction"].astype(float)
    al = t[t["sigma"] > 0][["barrier", "vs_child0.aligned.barrier.train.loss"]].astype(float).dropna()
    print(f"\n## Alignment\n\nFixed-point fraction over pairs with σ > 0: min {_fmt(fp.min())}, "
          f"mean {_fmt(fp.mean())}, max {_fmt(fp.max())}. Aligned minus plain train-loss barrier: "
          f"max |difference| {_fmt(float(np.abs(al.iloc[:, 1] - al.iloc[:, 0]).max()))} over {len(al)} pairs.")
  if "vs_child0.cka" in t:
    print("\n## Angular CKA (radians) by time and σ, batch direction\n")
    print(table_by(full[full["perturbation"] == "batch"].assign(v=full["vs_child0.cka"].astype(float)),
                   "t_epochs", "sigma", "v"))


if __name__ == "__main__":
  main(sys.argv[1])
