"""The instability map: the barrier over (perturbation time t, σ), and the threshold curve σ*(t).

    python reproduction/instability_map.py reproduction/map/mlp_report/table.parquet --out=reproduction/map/mlp_figures \
        [--metric=train.loss] [--thresholds=0.005,0.01,0.02]

Reads the report table (``python -m butterfly_jax.report``) of a map sweep (``configs/reproduce_map.py``) and
writes, for each perturbation kind (batch, Gaussian, one weight):

* ``map_<kind>.png``: a heatmap of the seed-mean barrier, t down, σ across (both on their own log-spaced
  grids), each cell labelled with the mean and n; pairs that diverged are counted in their cell, never dropped;
* ``threshold.png``: σ*(t), the σ at which the barrier reaches each of ``--thresholds`` (one panel per
  threshold, shared axes, so the choice's effect is in view), on a log axis: the seed-mean
  curve (:func:`butterfly_jax.threshold.crossing` on the seed means, a diverged pair counting as above any
  threshold) and each seed's own estimate; a t where even the smallest σ reaches the threshold is drawn at
  that σ with a downward triangle (σ* is below it), one where no σ does at the largest σ with an upward one;
* ``relations_<kind>.png``: L2 distance, angular CKA and ensemble accuracy against the barrier, one panel
  per t, titled with the Spearman ρ and seed-bootstrap interval that ``claims.py map`` reports for it;
* ``map.md``: the same numbers as tables.
"""

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from butterfly_jax.threshold import crossing

KIND_LABEL = {"batch": "batch direction (+∇ℓ)", "gaussian": "Gaussian direction", "single": "one random weight"}
EXTRA_NOTE = ("\nextra steps: every perturbed child (and the σ = 0 twin) trains T steps after t; child 0, the reference, "
              "ends at T")


def load(path) -> pd.DataFrame:
  return load_frame(pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path))


def load_frame(t: pd.DataFrame) -> pd.DataFrame:
  """The finished pairs (child k > 0 against child 0), with ``sigma`` and ``kind`` (batch, gaussian, single)."""
  t = t[(t["status"] == "finished") & (t["child"] > 0)].copy()
  t["sigma"] = t["perturb.scale"].astype(float)
  t["kind"] = np.where(t["perturb.mask.single"].fillna("").astype(str) != "", "single", t["perturb.kind"])
  return t


def _time_label(steps: int, steps_per_epoch: int) -> str:
  if steps and steps % steps_per_epoch == 0:
    return f"{steps // steps_per_epoch} ep"
  return f"{steps} steps" if steps else "0"


def barrier_values(t: pd.DataFrame, metric: str) -> pd.Series:
  """The pair's barrier; ``inf`` where the pair diverged (above any threshold)."""
  v = t[f"vs_child0.barrier.{metric}"].astype(float)
  return v.where(~t["pair_diverged"].astype(bool), math.inf)


def cells(t: pd.DataFrame, metric: str) -> pd.DataFrame:
  """One row per (kind, t, σ): mean over the finite seeds, min, max, n, and the number of diverged pairs."""
  t = t.assign(value=barrier_values(t, metric))
  rows = []
  for (kind, step, sigma), g in t.groupby(["kind", "t", "sigma"]):
    finite = g["value"][np.isfinite(g["value"])]
    rows.append({"kind": kind, "t": int(step), "sigma": sigma, "n": len(g), "diverged": int((~np.isfinite(g["value"])).sum()),
                 "mean": finite.mean() if len(finite) else math.nan, "min": finite.min() if len(finite) else math.nan,
                 "max": finite.max() if len(finite) else math.nan,
                 "steps_per_epoch": int(g["steps_per_epoch"].iloc[0])})
  return pd.DataFrame(rows)


def thresholds(t: pd.DataFrame, metric: str, threshold: float) -> pd.DataFrame:
  """σ*(t) per kind: from the seed means (a diverged pair counts as infinite) and per seed."""
  t = t[t["sigma"] > 0].assign(value=barrier_values(t[t["sigma"] > 0], metric))
  rows = []
  for (kind, step), g in t.groupby(["kind", "t"]):
    means = g.groupby("sigma")["value"].mean()  # inf if any seed diverged: above the threshold
    status, bracket, est = crossing(list(means.index), list(means.values), threshold)
    per_seed = {}
    for seed, gs in g.groupby("seed"):
      gs = gs.sort_values("sigma")
      per_seed[int(seed)] = crossing(list(gs["sigma"]), list(gs["value"]), threshold)
    rows.append({"kind": kind, "t": int(step), "status": status.split(":")[0], "sigma_star": est,
                 "bracket": bracket, "lo": float(means.index.min()), "hi": float(means.index.max()),
                 "per_seed": per_seed, "steps_per_epoch": int(g["steps_per_epoch"].iloc[0])})
  return pd.DataFrame(rows)


def _fmt(x):
  return "–" if x is None or not np.isfinite(x) else f"{x:.3g}"


def markdown(cell_table: pd.DataFrame, stars: dict, metric: str) -> str:
  out = [f"Barrier: `{metric}`, seed mean [min, max] over the pairs that did not diverge; n pairs, d diverged.", ""]
  for kind, g in cell_table.groupby("kind"):
    sigmas = sorted(g["sigma"].unique())
    out += [f"### {KIND_LABEL.get(kind, kind)}", "", "| t \\ σ | " + " | ".join(f"{s:g}" for s in sigmas) + " |",
            "| --- |" + " ---: |" * len(sigmas)]
    for step in sorted(g["t"].unique()):
      row = g[g["t"] == step].set_index("sigma")
      spe = int(row["steps_per_epoch"].iloc[0])
      vals = []
      for s in sigmas:
        if s not in row.index:
          vals.append("")
          continue
        r = row.loc[s]
        vals.append(f"{_fmt(r['mean'])} [{_fmt(r['min'])}, {_fmt(r['max'])}] n={r['n']}"
                    + (f" d={r['diverged']}" if r["diverged"] else ""))
      out.append(f"| {_time_label(step, spe)} | " + " | ".join(vals) + " |")
    out.append("")
  for threshold, star in stars.items():
    out += star_table(star, metric, threshold) + [""]
  return "\n".join(out)


def _star_cell(status: str, est: float, lo: float, hi: float) -> str:
  if status == "bracketed":
    return _fmt(est)
  return f"< {lo:g}" if status == "above" else f"> {hi:g}"


def star_table(star: pd.DataFrame, metric: str, threshold: float) -> list:
  """Markdown lines: σ*(t) per kind from the seed means, and each seed's own σ*."""
  out = [f"### σ*(t): the σ at which the seed-mean `{metric}` barrier reaches {threshold:g}", "",
         "| kind | t | σ* (seed mean) | per seed |", "| --- | --- | ---: | --- |"]
  for _, r in star.sort_values(["kind", "t"]).iterrows():
    seeds = ", ".join(f"{k}: {_star_cell(v[0].split(':')[0], v[2], r['lo'], r['hi'])}"
                      for k, v in sorted(r["per_seed"].items()))
    out.append(f"| {r['kind']} | {_time_label(r['t'], r['steps_per_epoch'])} | "
               f"{_star_cell(r['status'], r['sigma_star'], r['lo'], r['hi'])} | {seeds} |")
  return out


def heatmap(ax, g: pd.DataFrame, metric: str, extra: bool = False):
  from matplotlib.colors import LogNorm
  sigmas, steps = sorted(g["sigma"].unique()), sorted(g["t"].unique())
  grid = np.full((len(steps), len(sigmas)), np.nan)
  for _, r in g.iterrows():
    grid[steps.index(r["t"]), sigmas.index(r["sigma"])] = r["mean"]
  floor = 1e-4
  image = ax.imshow(np.clip(grid, floor, None), cmap="viridis", norm=LogNorm(vmin=floor, vmax=max(np.nanmax(grid), 1e-3)),
                    aspect="auto")
  for _, r in g.iterrows():
    i, j = steps.index(r["t"]), sigmas.index(r["sigma"])
    text = _fmt(r["mean"]) + (f"\n{r['diverged']}/{r['n']} div" if r["diverged"] else "")
    light = np.isfinite(r["mean"]) and r["mean"] < 10 ** ((math.log10(floor) + math.log10(max(np.nanmax(grid), 1e-3))) / 2)
    ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if light else "black")
  spe = int(g["steps_per_epoch"].iloc[0])
  twin = "0 (twin,\nto t + T)" if extra else "0 (twin)"  # with extra steps the twin trains past child 0's end
  ax.set_xticks(range(len(sigmas)), [f"{s:g}" if s else twin for s in sigmas], rotation=45)
  ax.set_yticks(range(len(steps)), [_time_label(s, spe) for s in steps])
  ax.set_xlabel("σ (fraction of the init norm)")
  ax.set_ylabel("perturbation time t")
  return image


def threshold_figure(ax, star: pd.DataFrame, threshold: float, metric: str, unit: str, legend: bool = True):
  colors = {"batch": "#0072B2", "gaussian": "#D55E00", "single": "#009E73"}  # Okabe-Ito: colour-blind safe
  kinds = sorted(star["kind"].unique())
  for i, (kind, g) in enumerate(star.groupby("kind")):
    g = g.sort_values("t")
    color = colors.get(kind)
    # kinds side by side at each t (a small shift on the symlog axis), so censored markers do not hide each other
    shift = (i - (len(kinds) - 1) / 2) * 0.05

    def x(step):
      return step * 10 ** shift if step >= 10 else step + 10 * shift

    ok = g[g["status"] == "bracketed"]
    ax.plot([x(v) for v in ok["t"]], np.array(ok["sigma_star"], float), "o-", color=color, ms=4,
            label=f"{KIND_LABEL.get(kind, kind)}")
    for _, r in g.iterrows():
      if r["status"] != "bracketed":  # censored: σ* is below the grid's smallest σ, or above its largest
        ax.plot(x(r["t"]), r["lo"] if r["status"] == "above" else r["hi"], "v" if r["status"] == "above" else "^",
                color=color, ms=9, mfc="none")
      for status, _, est in r["per_seed"].values():
        if status == "bracketed":
          ax.plot(x(r["t"]), est, ".", color=color, alpha=0.45)
  ax.set_xscale("symlog", linthresh=10)
  ax.set_yscale("log")
  ax.set_ylim(float(star["lo"].min()) / 3, float(star["hi"].max()) * 3)
  steps = sorted(star["t"].unique())
  spe = int(star["steps_per_epoch"].iloc[0])
  ax.set_xticks(steps, [_time_label(v, spe).replace(" steps", "") for v in steps], rotation=60, fontsize=7)
  ax.minorticks_off()
  ax.set_xlabel("perturbation time t (steps, or epochs 'ep'; symlog axis)")
  ax.set_ylabel(f"σ* ({unit})")
  ax.grid(True, which="major", alpha=0.3)
  if legend:
    ax.legend(fontsize=7, title="lines: σ* of the seed mean; dots: each seed's\n△ no σ of the grid reaches it (σ* above the grid)\n"
              "▽ the smallest σ already does (σ* below the grid)", title_fontsize=7)


RELATIONS = (("vs_child0.l2", "L2 distance to child 0", "log"), ("vs_child0.cka", "angular CKA (radians)", "linear"),
             ("vs_child0.ensemble.accuracy", "ensemble accuracy", "linear"))


def relations_figure(plt, t: pd.DataFrame, kind: str, metric: str):
  """Each relation against the barrier, one panel per t: the pairs and the statistic claims.py reports."""
  from stats import fmt_rho, spearman_by_seed
  d = t[(t["kind"] == kind) & (t["sigma"] > 0) & ~t["pair_diverged"].astype(bool)]
  d = d.assign(value=d[f"vs_child0.barrier.{metric}"].astype(float))
  rels = [r for r in RELATIONS if r[0] in d]
  steps = sorted(d["t"].unique())
  spe = int(d["steps_per_epoch"].iloc[0])
  fig, axes = plt.subplots(len(rels), len(steps), figsize=(2.3 * len(steps), 2.3 * len(rels)), squeeze=False,
                           sharey=True)
  seeds = sorted(d["seed"].unique())
  markers = "osD^v<>"
  for row, (x, name, xscale) in enumerate(rels):
    for col, step in enumerate(steps):
      ax, g = axes[row][col], d[d["t"] == step]
      for i, seed in enumerate(seeds):
        gs = g[g["seed"] == seed]
        ax.scatter(gs[x].astype(float), gs["value"], s=14, marker=markers[i % len(markers)],
                   color=f"C{i}", label=f"seed {int(seed)}")
      r = spearman_by_seed(g[x].astype(float), g["value"], g["seed"])
      ax.set_title(f"t = {_time_label(int(step), spe)}\nρ = {fmt_rho(r)}", fontsize=6)
      ax.set_xscale(xscale)
      if xscale == "log":  # label the decades only: minor labels collide on a narrow range
        from matplotlib.ticker import LogLocator, NullFormatter
        ax.xaxis.set_major_locator(LogLocator(numticks=4))
        ax.xaxis.set_minor_formatter(NullFormatter())
      ax.set_yscale("symlog", linthresh=1e-3)
      ax.tick_params(labelsize=6)
      if col == 0:
        ax.set_ylabel(f"{metric} barrier (symlog)", fontsize=7)
      ax.set_xlabel(name, fontsize=7)
  axes[0][0].legend(fontsize=6)
  fig.suptitle(f"{KIND_LABEL.get(kind, kind)}: relations with the {metric} barrier within each t (pairs with σ > 0 "
               f"that did not diverge; ρ: Spearman [95% seed-bootstrap interval])", fontsize=9)
  fig.tight_layout()
  return fig


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("table", help="the report's table.parquet (or .csv)")
  p.add_argument("--out", required=True, help="folder for map_<kind>.png, threshold.png and map.md")
  p.add_argument("--metric", default="train.loss", choices=["train.loss", "train.error", "test.loss", "test.error"])
  p.add_argument("--thresholds", default="0.005,0.01,0.02",
                 help="comma-separated barrier values; σ*(t) is found for each (one panel each)")
  args = p.parse_args(argv)
  try:
    levels = [float(v) for v in args.thresholds.split(",")]
  except ValueError:
    p.error(f"--thresholds: expected comma-separated numbers, got {args.thresholds!r}")
  if not levels or any(not (v > 0 and math.isfinite(v)) for v in levels):
    p.error(f"--thresholds: every threshold must be a positive finite number, got {args.thresholds!r}")
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  t = load(args.table)
  if t.empty:
    print(f"error: {args.table}: no finished perturbed pairs", file=sys.stderr)
    return 2
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  extra = "perturb.extra_steps" in t.columns and bool(t["perturb.extra_steps"].fillna(False).any())
  cell_table = cells(t, args.metric)
  stars = {v: thresholds(t, args.metric, v) for v in levels}
  (out / "map.md").write_text(markdown(cell_table, stars, args.metric))
  for kind, g in cell_table.groupby("kind"):
    fig, ax = plt.subplots(figsize=(1.1 * g["sigma"].nunique() + 2.5, 0.5 * g["t"].nunique() + 2))
    image = heatmap(ax, g, args.metric, extra)
    fig.colorbar(image, ax=ax, label=f"{args.metric} barrier (log scale)")
    n = g["n"].max()
    unit = "× the weight's init RMS" if kind == "single" else "fraction of the init norm"
    ax.set_xlabel(f"σ ({unit})")
    ax.set_title(f"{KIND_LABEL.get(kind, kind)}: seed-mean barrier after training (n ≤ {n} seeds; "
                 "colours below 1e-4 shown as 1e-4)" + EXTRA_NOTE * extra, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"map_{kind}.png", dpi=130)
    plt.close(fig)
  groups = [(lambda s: s[s["kind"] != "single"], "fraction of the init norm"),
            (lambda s: s[s["kind"] == "single"], "× that weight's init RMS")]
  groups = [(pick, unit) for pick, unit in groups if not pick(stars[levels[0]]).empty]
  fig, axes = plt.subplots(len(groups), len(levels), figsize=(4.6 * len(levels), 3.9 * len(groups)),
                           squeeze=False, sharex=True, sharey="row")
  for row, (pick, unit) in enumerate(groups):
    for col, level in enumerate(levels):
      ax = axes[row][col]
      threshold_figure(ax, pick(stars[level]), level, args.metric, unit, legend=col == 0)
      ax.set_title(f"{args.metric} barrier reaches {level:g}", fontsize=9)
      if col:
        ax.set_ylabel("")
  n = int(t.groupby(["kind", "t", "sigma"])["seed"].nunique().max())
  fig.suptitle(f"σ*(t): the smallest σ whose seed-mean barrier reaches the threshold (≤ {n} seeds per point)",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(out / "threshold.png", dpi=130)
  plt.close(fig)
  for kind in sorted(t["kind"].unique()):
    fig = relations_figure(plt, t, kind, args.metric)
    fig.savefig(out / f"relations_{kind}.png", dpi=110)
    plt.close(fig)
  print(f"wrote {out}/map.md, threshold.png, {cell_table['kind'].nunique()} heatmaps and relations_<kind>.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
