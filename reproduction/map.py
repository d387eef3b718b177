"""The instability map: the barrier over (perturbation time t, σ), and the threshold curve σ*(t).

    python reproduction/map.py reproduction/map/mlp_report/table.parquet --out=reproduction/map/mlp_figures \
        [--metric=train.loss] [--threshold=0.1]

Reads the report table (``python -m butterfly_jax.report``) of a map sweep (``configs/reproduce_map.py``) and
writes, for each perturbation kind (batch, Gaussian, one weight):

* ``map_<kind>.png``: a heatmap of the seed-mean barrier, t down, σ across (both on their own log-spaced
  grids), each cell labelled with the mean and n; pairs that diverged are counted in their cell, never dropped;
* ``threshold.png``: σ*(t), the σ at which the barrier reaches ``--threshold``, on a log axis: the seed-mean
  curve (:func:`butterfly_jax.threshold.crossing` on the seed means, a diverged pair counting as above any
  threshold) and each seed's own estimate; a t where even the smallest σ reaches the threshold is drawn at
  that σ with a downward triangle (σ* is below it), one where no σ does at the largest σ with an upward one;
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


def load(path) -> pd.DataFrame:
  t = pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)
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


def markdown(cell_table: pd.DataFrame, star: pd.DataFrame, metric: str, threshold: float) -> str:
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
  out += [f"### σ*(t): the σ at which the seed-mean `{metric}` barrier reaches {threshold:g}", "",
          "| kind | t | σ* (seed mean) | status | per seed |", "| --- | --- | ---: | --- | --- |"]
  for _, r in star.sort_values(["kind", "t"]).iterrows():
    seeds = ", ".join(f"{k}: {_fmt(v[2]) if v[0] == 'bracketed' else v[0].split(':')[0]}"
                      for k, v in sorted(r["per_seed"].items()))
    out.append(f"| {r['kind']} | {_time_label(r['t'], r['steps_per_epoch'])} | {_fmt(r['sigma_star'])} | "
               f"{r['status']} | {seeds} |")
  return "\n".join(out) + "\n"


def heatmap(ax, g: pd.DataFrame, metric: str):
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
  ax.set_xticks(range(len(sigmas)), [f"{s:g}" if s else "0 (twin)" for s in sigmas], rotation=45)
  ax.set_yticks(range(len(steps)), [_time_label(s, spe) for s in steps])
  ax.set_xlabel("σ (fraction of the init norm)")
  ax.set_ylabel("perturbation time t")
  return image


def threshold_figure(ax, star: pd.DataFrame, threshold: float, metric: str, unit: str):
  colors = {"batch": "#0072B2", "gaussian": "#D55E00", "single": "#009E73"}  # Okabe-Ito: colour-blind safe
  for kind, g in star.groupby("kind"):
    g = g.sort_values("t")
    color = colors.get(kind)
    ok = g[g["status"] == "bracketed"]
    ax.plot(np.array(ok["t"], float), np.array(ok["sigma_star"], float), "o-", color=color, ms=4,
            label=f"{KIND_LABEL.get(kind, kind)}")
    for _, r in g.iterrows():
      if r["status"] != "bracketed":  # censored: σ* is below the grid's smallest σ, or above its largest
        ax.plot(r["t"], r["lo"] if r["status"] == "above" else r["hi"], "v" if r["status"] == "above" else "^",
                color=color, ms=9, mfc="none")
      for status, _, est in r["per_seed"].values():
        if status == "bracketed":
          ax.plot(r["t"], est, ".", color=color, alpha=0.45)
  ax.set_xscale("symlog", linthresh=10)
  ax.set_yscale("log")
  ax.set_xlabel("perturbation time t (steps; symlog axis)")
  ax.set_ylabel(f"σ* ({unit})")
  ax.grid(True, which="major", alpha=0.3)
  ax.legend(fontsize=7, title="lines: σ* of the seed mean; dots: each seed's\n△ no σ of the grid reaches it (above)\n"
            "▽ the smallest σ already does (below)", title_fontsize=7)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("table", help="the report's table.parquet (or .csv)")
  p.add_argument("--out", required=True, help="folder for map_<kind>.png, threshold.png and map.md")
  p.add_argument("--metric", default="train.loss", choices=["train.loss", "train.error", "test.loss", "test.error"])
  p.add_argument("--threshold", type=float, default=0.1)
  args = p.parse_args(argv)
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  t = load(args.table)
  if t.empty:
    print(f"error: {args.table}: no finished perturbed pairs", file=sys.stderr)
    return 2
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  cell_table, star = cells(t, args.metric), thresholds(t, args.metric, args.threshold)
  (out / "map.md").write_text(markdown(cell_table, star, args.metric, args.threshold))
  for kind, g in cell_table.groupby("kind"):
    fig, ax = plt.subplots(figsize=(1.1 * g["sigma"].nunique() + 2.5, 0.5 * g["t"].nunique() + 2))
    image = heatmap(ax, g, args.metric)
    fig.colorbar(image, ax=ax, label=f"{args.metric} barrier (log scale)")
    n = g["n"].max()
    unit = "× the weight's init RMS" if kind == "single" else "fraction of the init norm"
    ax.set_xlabel(f"σ ({unit})")
    ax.set_title(f"{KIND_LABEL.get(kind, kind)}: seed-mean barrier after training (n ≤ {n} seeds; "
                 "colours below 1e-4 shown as 1e-4)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"map_{kind}.png", dpi=130)
    plt.close(fig)
  norm_kinds = star[star["kind"] != "single"]
  panels = [(norm_kinds, "fraction of the init norm")] if not norm_kinds.empty else []
  if (star["kind"] == "single").any():
    panels.append((star[star["kind"] == "single"], "× that weight's init RMS"))
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
  for ax, (part, unit) in zip(axes[0], panels):
    threshold_figure(ax, part, args.threshold, args.metric, unit)
  fig.suptitle(f"σ*(t): the σ at which the {args.metric} barrier reaches {args.threshold:g}", fontsize=10)
  fig.tight_layout()
  fig.savefig(out / "threshold.png", dpi=130)
  plt.close(fig)
  print(f"wrote {out}/map.md, threshold.png and {cell_table['kind'].nunique()} heatmaps")
  return 0


if __name__ == "__main__":
  sys.exit(main())
