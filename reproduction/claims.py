"""The numbers behind REPRODUCTION.md's verdicts, computed from the report table (nothing typed by hand).

    python -m reproduction.claims reproduction/fashion_mnist/report/table.parquet > reproduction/fashion_mnist/claims.md
    python -m reproduction.claims map --map=reproduction/map/mlp_report/table.parquet \
        [--extra=reproduction/map/mlp_extra_report/table.parquet] [--scale=reproduction/map/mlp_scale] \
        > reproduction/map/mlp_claims.md
    python -m reproduction.claims studies --table=reproduction/studies/mlp_report/table.parquet \
        [--map=reproduction/map/mlp_report/table.parquet] > reproduction/studies/mlp_claims.md
    python -m reproduction.claims pretrain --mlp=reproduction/pretrain/mlp_report/table.parquet \
        --cnn=reproduction/pretrain/cnn_report/table.parquet > reproduction/pretrain/claims.md

(from the repository root).

Prints Markdown: one section per claim of the paper, each with the table or statistic it rests on. Barriers are
the Eq. 1 train/test loss and error barriers between child 0 and child k after training; means and min-max are
over seeds; Spearman correlations are over every non-diverged pair with σ > 0.

The ``map`` form reads an instability map (``configs/reproduce_map.py``): the barrier over (t, σ) per
direction, σ*(t) at several thresholds, the scale a barrier is read against (the random-permutation proxy
at fraction 0 from ``--scale``'s runs, and child 0's test-error gap: :mod:`reproduction.scale`), the relations
within each t and pooled with bootstrap intervals over seeds
(:func:`butterfly_jax.report.instability.spearman_by_seed`), and, with ``--extra``, the same map with every child
training T steps after t. The map's tables and σ*(t) are :mod:`butterfly_jax.report.instability`'s.
"""

import argparse
import sys

import numpy as np
from scipy.stats import spearmanr

from butterfly_jax.report.instability import (cells, markdown, read_pairs, read_table, sigma_star, star_table,
                                              time_label)
from reproduction.pretraining import report as pretraining_report
from reproduction.studies import report as studies_report
from reproduction.scale import md_table, scale_markdown, scale_of_barriers
from reproduction.stats import UNTRAINED_ERROR, fmt, fmt_rho, mean_range, sigma_text, spearman_by_seed

B = "vs_child0.barrier.{}.{}"


def load(path):
  """The finished rows of a report table, with ``sigma`` and ``barrier`` (the train-loss barrier)."""
  t = read_table(path)
  t = t[t["status"] == "finished"].copy()
  t["sigma"] = t["perturb.scale"].astype(float)
  t["barrier"] = t[B.format("train", "loss")].astype(float)
  return t


def table_by(t, rows, cols, value, agg="mean"):
  g = t.groupby([rows, cols])[value].agg(["mean", "min", "max", "count"]).reset_index()
  out = []
  cs = sorted(g[cols].unique())
  out.append("| " + rows + " \\ " + cols + " | " + " | ".join(sigma_text(c) if cols == "sigma" else str(c) for c in cs)
             + " |")
  out.append("| --- |" + " ---: |" * len(cs))
  for r in sorted(g[rows].unique(), key=lambda v: (float(v) if isinstance(v, (int, float)) else v)):
    cells = []
    for c in cs:
      row = g[(g[rows] == r) & (g[cols] == c)]
      cells.append("" if row.empty else f"{fmt(row['mean'].iloc[0])} [{fmt(row['min'].iloc[0])}, "
                   f"{fmt(row['max'].iloc[0])}] n={int(row['count'].iloc[0])}")
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
    print(f"\n## Train-loss barrier, σ = {sigma_text(sigma)}: pre-training steps (rows) x perturbation time (epochs)\n")
    print(table_by(t[t["sigma"] == sigma], "pretrain", "t_epochs", "barrier"))
  print("\n## L2 distance between the twins, σ = 1e-4\n")
  print(table_by(t[t["sigma"] == 1e-4].assign(v=t["vs_child0.l2"].astype(float)), "pretrain", "t_epochs", "v"))
  print("\n## Child 0's test accuracy on the fine-tuning classes\n")
  print(table_by(t[t["sigma"] == 1e-4].assign(v=t["child0.test.accuracy"].astype(float)), "pretrain", "t_epochs", "v"))


def table_claims(path):
  """The first edition's claims (and a fine-tuning sweep's) from one report table: barrier tables by t and σ per
  direction, the σ = 0 twins, pooled correlations, alignment and CKA."""
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
      print(f"| {x} | {y} | {rho if isinstance(rho, str) else fmt(rho, 3)} | {n} |")

  if "vs_child0.aligned.fixed_point_fraction" in t:
    fp = t[t["sigma"] > 0]["vs_child0.aligned.fixed_point_fraction"].astype(float)
    al = t[t["sigma"] > 0][["barrier", "vs_child0.aligned.barrier.train.loss"]].astype(float).dropna()
    print(f"\n## Alignment\n\nFixed-point fraction over pairs with σ > 0: min {fmt(fp.min())}, "
          f"mean {fmt(fp.mean())}, max {fmt(fp.max())}. Aligned minus plain train-loss barrier: "
          f"max |difference| {fmt(float(np.abs(al.iloc[:, 1] - al.iloc[:, 0]).max()))} over {len(al)} pairs.")
  if "vs_child0.cka" in t:
    print("\n## Angular CKA (radians) by time and σ, batch direction\n")
    print(table_by(full[full["perturbation"] == "batch"].assign(v=full["vs_child0.cka"].astype(float)),
                   "t_epochs", "sigma", "v"))


RELATIONS = (("vs_child0.l2", "L2 distance"), ("vs_child0.cka", "angular CKA"),
             ("vs_child0.ensemble.accuracy", "ensemble accuracy"),
             ("vs_child0.aligned.fixed_point_fraction", "fixed-point fraction"))


def print_scale(per_seed, errors):
  print(scale_markdown(per_seed, errors))


def print_programs(t):
  """Which program each run executed (host CPU, XLA flags, from each run's ``provenance``), when runs differ:
  the same config and seed give other last bits, and a chaotic network another child 0, under another one."""
  if not {"host_cpu", "xla_flags"} <= set(t.columns):
    return
  runs = t.drop_duplicates("run")
  programs = runs.fillna({"host_cpu": "not recorded", "xla_flags": "not recorded"}).groupby(
      ["host_cpu", "xla_flags"], dropna=False)
  if programs.ngroups < 2:
    return
  print(f"## Programs\n\nThe runs ran {programs.ngroups} programs (host CPU, `XLA_FLAGS`; each run's `provenance`); "
        f"the pairs of one run share its program:\n")
  rows = []
  for (cpu, flags), g in programs:
    times = ", ".join(time_label(int(s), int(e)) for s, e in sorted(set(zip(g["t"], g["steps_per_epoch"]))))
    shown = "(empty)" if not flags else flags if flags == "not recorded" else f"`{flags}`"
    acc = ", ".join(fmt(float(a)) for a in sorted(set(g["child0.train.accuracy"].astype(float)))) \
        if "child0.train.accuracy" in g else "n/a"
    rows.append([cpu, shown, len(g), times, acc])
  print(md_table(["host CPU", "XLA_FLAGS", "runs", "t", "child 0 train accuracy"], rows) + "\n")


def print_untrained(t):
  """The networks that ended at chance: child 0 of a run, or a perturbed child (train error above
  ``UNTRAINED_ERROR``), per (direction, t, σ). A barrier against or between networks that never trained is a
  number about failed training, not about two trained networks' basins."""
  if not {"train.accuracy", "child0.train.accuracy"} <= set(t.columns):
    return
  d = t.assign(dead=1 - t["train.accuracy"].astype(float) > UNTRAINED_ERROR,
               dead0=1 - t["child0.train.accuracy"].astype(float) > UNTRAINED_ERROR)
  hit = d[(d["sigma"] > 0) & (d["dead"] | d["dead0"])]
  print(f"## Networks that did not learn (train error > {UNTRAINED_ERROR:g})\n")
  if hit.empty:
    print("None: child 0 and every perturbed child learned in every run.\n")
    return
  rows = []
  for (kind, t_, sigma), g in hit.groupby(["kind", "t", "sigma"]):
    spe = int(g["steps_per_epoch"].iloc[0])
    n = int(((d["kind"] == kind) & (d["t"] == t_) & (d["sigma"] == sigma)).sum())
    rows.append([kind, time_label(int(t_), spe), sigma_text(sigma), n, int(g["dead0"].sum()),
                 int(g["dead"].sum()), mean_range(1 - g["train.accuracy"].astype(float))])
  print(md_table(["kind", "t", "σ", "pairs", "child 0 did not learn", "perturbed child did not learn",
                  "perturbed child's train error"], rows) + "\n")


def relations(t, kind, max_sigma=None):
  """Spearman ρ of each relation with the train-loss barrier: within each t and pooled, seed-bootstrap CIs;
  with ``max_sigma``, over the pairs with σ ≤ it only."""
  d = t[(t["kind"] == kind) & (t["sigma"] > 0) & ~t["pair_diverged"].astype(bool)]
  if max_sigma is not None:
    d = d[d["sigma"] <= max_sigma]
  cols = [(x, name) for x, name in RELATIONS if x in d]
  rows = []
  for step, g in list(d.groupby("t")) + [("pooled", d)]:
    label = step if step == "pooled" else time_label(int(step), int(g["steps_per_epoch"].iloc[0]))
    row = [label]
    for x, _ in cols:
      moved = int((g[x].astype(float) < 1).sum())
      if x.endswith("fixed_point_fraction") and moved < 3 <= len(g):  # ρ would rest on one or two permuted pairs
        row.append(f"untestable: {moved} of {len(g)} pairs not the identity")
      elif x.endswith("fixed_point_fraction"):
        row.append(fmt_rho(spearman_by_seed(g[x].astype(float), g["barrier"], g["seed"]))
                   + f"; {moved} pairs not the identity")
      else:
        row.append(fmt_rho(spearman_by_seed(g[x].astype(float), g["barrier"], g["seed"])))
    rows.append(row)
  return md_table(["t"] + [f"ρ({name}, barrier)" for _, name in cols], rows)


def map_claims(argv):
  p = argparse.ArgumentParser(prog="python -m reproduction.claims map",
                              description="the instability map's numbers, as Markdown")
  p.add_argument("--map", required=True, help="the report's table.parquet of the map sweep")
  p.add_argument("--extra", help="the report table of the same map with perturb.extra_steps")
  p.add_argument("--scale", help="runs directory whose runs hold proxy.json (configs/reproduce_map.py:*_scale)")
  args = p.parse_args(argv)
  t = read_pairs(args.map)
  t["barrier"] = t[B.format("train", "loss")].astype(float)
  if t.empty:
    raise SystemExit(f"--map: {args.map} has no finished perturbed pairs")
  print(f"From {t['run'].nunique()} finished runs, {int((t['sigma'] > 0).sum())} child pairs with σ > 0 (seeds "
        f"{sorted(t['seed'].astype(int).unique().tolist())}; directions {sorted(t['kind'].unique())}; "
        f"{t['t'].nunique()} perturbation times; T = {int(t['T'].max())} steps).\n")
  per_seed, errors = scale_of_barriers(args.scale, t)
  print_scale(per_seed, errors)
  print_programs(t)
  print_untrained(t)
  for metric in ("train.loss", "train.error", "test.error"):
    print(f"## The map: `{metric}` barrier over (t, σ)\n")
    print(markdown(cells(t, metric), {}, metric))
  print("## σ*(t)\n")
  print("The σ at which the seed-mean barrier reaches a threshold (log interpolation between grid points, "
        "`butterfly_jax.threshold.crossing`); '< s': the grid's smallest σ already reaches it; '> s': no σ does.\n")
  for metric, levels in (("train.loss", (0.005, 0.01, 0.02)), ("train.error", (0.01, 0.02))):
    for level in levels:
      print("\n".join(star_table(sigma_star(t, metric, level), metric, level)) + "\n")
  print("## Relations with the train-loss barrier, within each t and pooled\n")
  print("Spearman ρ over the pairs with σ > 0 that did not diverge; [95% interval] from resampling seeds "
        "(`reproduction/stats.py`).\n")
  for kind in sorted(t["kind"].unique()):
    print(f"### {kind}\n\n{relations(t, kind)}\n")
  print("### Small perturbations only (σ ≤ 1e-2): does the barrier track L2 where it barely depends on σ?\n")
  for kind in sorted(set(t["kind"].unique()) - {"single"}):  # one weight's σ is in units of its init std
    print(f"#### {kind}, σ ≤ 1e-2\n\n{relations(t, kind, max_sigma=1e-2)}\n")
  if "vs_child0.aligned.fixed_point_fraction" in t:
    fp = t[t["sigma"] > 0]["vs_child0.aligned.fixed_point_fraction"].astype(float)
    control = [x for v in per_seed.values() for x in v.get("recovered", [])]
    print(f"## Weight matching\n\n{int((fp < 1).sum())} of {int(fp.notna().sum())} pairs with σ > 0 got a "
          f"permutation other than the identity (fixed-point fraction: min {fmt(fp.min())}).\n")
    moved = t[(t["sigma"] > 0) & (t["vs_child0.aligned.fixed_point_fraction"].astype(float) < 1)]
    if len(moved):
      print("Those pairs:\n")
      aligned = B.format("train", "loss").replace("vs_child0.", "vs_child0.aligned.")
      print(md_table(["kind", "t", "seed", "σ", "fixed-point fraction", "train-loss barrier", "after alignment"],
                     [[r["kind"], time_label(int(r["t"]), int(r["steps_per_epoch"])), int(r["seed"]),
                       sigma_text(r["sigma"]), fmt(float(r["vs_child0.aligned.fixed_point_fraction"])),
                       fmt(r["barrier"]), fmt(float(r[aligned])) if aligned in r else "n/a"]
                      for _, r in moved.sort_values(["kind", "t", "sigma", "seed"]).iterrows()]) + "\n")
    if control:
      print(f"The same weight matching undid {sum(x == 1.0 for x in control)} of {len(control)} known random "
            "permutations of the trained network exactly (the positive control above), so an identity here "
            "means the twins' units correspond as they are, not that the matching finds nothing.\n")
  if args.extra:
    x = read_pairs(args.extra)
    print("## Extra steps: every child trains T steps after t\n")
    print(f"From {x['run'].nunique()} finished runs, {len(x)} pairs. Train-loss barrier, seed mean "
          "[min, max], beside the same cell of the map (children end at T):\n")
    a, b = cells(t, "train.loss"), cells(x, "train.loss")
    both = b.merge(a, on=["kind", "t", "sigma"], suffixes=("_extra", "_map"))
    for kind, g in both.groupby("kind"):
      sigmas = sorted(g["sigma"].unique())
      rows = []
      for step, gs in g.groupby("t"):
        gs = gs.set_index("sigma")
        rows.append([time_label(int(step), int(gs["steps_per_epoch_extra"].iloc[0]))]
                    + [f"{fmt(gs.loc[s, 'mean_extra'])} vs {fmt(gs.loc[s, 'mean_map'])}" if s in gs.index else ""
                       for s in sigmas])
      print(f"### {kind} (extra steps vs map)\n\n" + md_table(["t \\ σ"] + [sigma_text(s) for s in sigmas], rows)
            + "\n")
  zero = load_map_zero(args.map)
  cols = [B.format(s, m) for s in ("train", "test") for m in ("loss", "error")] + ["vs_child0.l2"]
  worst = float(np.nanmax(np.abs(zero[cols].astype(float).to_numpy()))) if len(zero) else float("nan")
  print(f"## σ = 0 twins\n\n{len(zero)} pairs; the largest |barrier| or L2 among them: {worst!r}.")


def load_map_zero(path):
  """The σ = 0 twins (finished pairs) of a map's table."""
  t = read_table(path)
  return t[(t["status"] == "finished") & (t["child"] > 0) & (t["perturb.scale"].astype(float) == 0)]


def studies_claims(argv):
  p = argparse.ArgumentParser(prog="python -m reproduction.claims studies",
                              description="the hyperparameter studies' numbers, as Markdown")
  p.add_argument("--table", required=True, help="the report's table.parquet of a configs/reproduce_studies.py sweep")
  p.add_argument("--map", help="the map's report table: the base's pairs are checked against the same networks there")
  p.add_argument("--scale", help="the map's scale runs (configs/reproduce_map.py:*_scale, with proxy.json): the base "
                 "setting is the map's recipe, so their full-permutation barrier is the base's")
  args = p.parse_args(argv)
  t = read_table(args.table)
  phase = "cnn" if (t["model.name"] == "cnn").any() else "mlp"
  print(studies_report(t, phase, read_table(args.map) if args.map else None, scale=args.scale))


def pretrain_claims(argv):
  p = argparse.ArgumentParser(prog="python -m reproduction.claims pretrain",
                              description="the pre-training study's numbers (configs/reproduce_pretrain.py), as "
                              "Markdown")
  p.add_argument("--mlp", help="the report's table.parquet of the MLP fine-tuning sweep")
  p.add_argument("--cnn", help="the report's table.parquet of the CNN fine-tuning sweep")
  p.add_argument("--mlp-scale", help="runs of configs/reproduce_pretrain.py:mlp_scale with proxy.json")
  p.add_argument("--cnn-scale", help="runs of configs/reproduce_pretrain.py:cnn_scale with proxy.json")
  args = p.parse_args(argv)
  if not (args.mlp or args.cnn):
    p.error("give --mlp, --cnn or both")
  for label, path, scale in (("MLP 512-512", args.mlp, args.mlp_scale),
                             ("CNN (16, 32 channels; dense 128)", args.cnn, args.cnn_scale)):
    if path:
      print(pretraining_report(read_table(path), label, scale))


def main(argv=None):
  """``map``, ``studies`` or ``pretrain`` and their flags, or one report table's path (:func:`table_claims`)."""
  argv = sys.argv[1:] if argv is None else argv
  forms = {"map": map_claims, "studies": studies_claims, "pretrain": pretrain_claims}
  if argv[:1] and argv[0] in forms:
    return forms[argv[0]](argv[1:])
  if len(argv) != 1:
    raise SystemExit("usage: python -m reproduction.claims TABLE | map ... | studies ... | pretrain ... (see --help "
                     "of each form)")
  return table_claims(argv[0])


if __name__ == "__main__":
  main()
