"""σ*(t) of an instability map at thresholds that mean something, as Markdown: the 2% error criterion of linear mode
connectivity (the headline), each t's own plateau, and fractions of each network's full-permutation barrier.

    python -m reproduction.thresholds --map=reproduction/map/mlp_report/table.parquet \\
        --scale=reproduction/map/mlp_scale > reproduction/map/mlp_thresholds.md

(from the repository root; ``--scale``: the runs holding ``proxy.json``, as for ``reproduction.claims map``). The
thresholds, σ*(t) with its bracket and censoring, the plateaus and the counts are
:mod:`butterfly_jax.report.instability`'s functions (:func:`~butterfly_jax.report.instability.sigma_star` with a
number, a per-t value or a :class:`~butterfly_jax.report.instability.NetworkScale`); this module picks the
thresholds and says why one leads.
"""

import argparse

import numpy as np
import pandas as pd

from butterfly_jax.report.instability import (CRITERION, NetworkScale, fmt_ratio, fmt_value, plateau,
                                              plateau_threshold, reaching, read_pairs, read_scale, sigma_star,
                                              star_ratio, threshold_table, time_label)
from reproduction.scale import md_table
from reproduction.stats import sigma_text

# each t's plateau: σ* where the barrier reaches PLATEAU_FACTOR × its level at the grid's smallest σ, or
# PLATEAU_FLOOR of the full-permutation barrier where that is larger
PLATEAU_FACTOR = 2.0
PLATEAU_FLOOR = 0.01
# fractions of each network's full-permutation train-loss barrier
SCALE_FRACTIONS = (0.1, 0.01)
# "small" perturbations of the whole network, as in the claims files' relations
SMALL = 1e-2

WHY_HEADLINE = (
    "**The headline is the 2% test-error criterion.** It is the field's definition of linear mode connectivity "
    "(Frankle et al., 2020), and the paper's introduction takes it (networks whose barrier stays below a noise "
    "threshold, 2% error in Frankle et al., exhibit linear mode connectivity): a barrier above it is what "
    "\"different basins\" means in the claims under test. It was fixed before this map was measured, so it "
    "cannot be placed against the map's plateaus (the objection to the train-loss thresholds 0.005 and 0.01, "
    "which were), and it is in units that compare across networks (points of accuracy lost on the path). The "
    "other thresholds answer other questions: σ* relative to a t's own plateau is where the barrier stops being "
    "the same for every small σ and starts to grow with σ (it says nothing of whether the plateau is a barrier); a "
    "fraction of the full-permutation barrier says how far the twins are from being as far apart as two copies of "
    "one network with every unit permuted (the fraction is a choice: two are given). The train-error criterion is "
    "shown beside the test-error one; where a train-error plateau sits near 2%, its σ* moves between seeds.")


def _scale_text(values: dict) -> str:
  v = np.asarray(list(values.values()), float)
  return f"{v.mean():.4g} [{v.min():.4g}, {v.max():.4g}]" if len(v) > 1 else f"{v[0]:.4g}"


def thresholds(t, scale) -> list:
  """``(label, heading, metric, threshold)`` of every threshold, the headline first (``scale``:
  :func:`read_scale`)."""
  metric_c, level = CRITERION
  pct = f"{100 * level:g}%"
  loss_scale = scale["train.loss"]
  floor = PLATEAU_FLOOR * float(np.mean(list(loss_scale.values())))
  out = [(f"{pct} test error (headline)",
          f"### Headline: σ* at a seed-mean test-error barrier of {pct} (the LMC criterion)", metric_c, level),
         (f"{pct} train error", f"### σ* at a seed-mean train-error barrier of {pct}", "train.error", level),
         (f"{PLATEAU_FACTOR:g}× plateau",
          f"### σ* relative to each t's plateau: the train-loss barrier reaches {PLATEAU_FACTOR:g}× its level at the "
          f"grid's smallest σ, or {100 * PLATEAU_FLOOR:g}% of the mean full-permutation train-loss barrier "
          f"({floor:.4g}) where that is larger", "train.loss",
          plateau_threshold(t, "train.loss", PLATEAU_FACTOR, floor))]
  for f in SCALE_FRACTIONS:
    out.append((f"{100 * f:g}% of full permutation",
                f"### σ* at {100 * f:g}% of each network's own full-permutation train-loss barrier (the threshold "
                f"column: {100 * f:g}% of the networks' mean)", "train.loss", NetworkScale(loss_scale, f)))
  return out


def _cell(row) -> str:
  if row["status"] == "bracketed":
    return f"{fmt_value(row['sigma_star'])} [{row['bracket_lo']:g}, {row['bracket_hi']:g}]"
  return f"< {row['lo']:g} (below the grid)" if row["status"] == "above" else f"> {row['hi']:g} (above the grid)"


def plateau_table(t, scale) -> str:
  """Per (kind, t): the plateau (the grid's smallest σ) in train loss, as a share of the full-permutation barrier,
  in test error, and the pairs whose test-error barrier reaches the criterion."""
  metric_c, level = CRITERION
  loss, err = plateau(t, "train.loss"), plateau(t, metric_c).set_index(["kind", "t"])
  perm = float(np.mean(list(scale["train.loss"].values())))
  whole, single = t[t["kind"] != "single"], t[t["kind"] == "single"]
  counts = [reaching(whole, metric_c, level, max_sigma=SMALL)] + ([reaching(single, metric_c, level)]
                                                                   if len(single) else [])
  counts = pd.concat(counts).set_index(["kind", "t"])
  rows = []
  for _, r in loss.sort_values(["kind", "t"]).iterrows():
    key = (r["kind"], int(r["t"]))
    e, c = err.loc[key], counts.loc[key]
    rows.append([r["kind"], time_label(key[1], int(r["steps_per_epoch"])), sigma_text(r["sigma"]),
                 f"{fmt_value(r['mean'])} [{fmt_value(r['min'])}, {fmt_value(r['max'])}]",
                 f"{100 * r['mean'] / perm:.2g}%",
                 f"{fmt_value(e['mean'])} [{fmt_value(e['min'])}, {fmt_value(e['max'])}]",
                 f"{int(c['reached'])} of {int(c['n'])}"
                 + (f" ({int(c['diverged'])} diverged)" if c["diverged"] else "")])
  return md_table(["kind", "t", "smallest σ", "train-loss plateau, seed mean [min, max]",
                   "share of the full-permutation train-loss barrier", "test-error plateau, seed mean [min, max]",
                   f"pairs at ≥ {100 * level:g}% test error (σ ≤ {SMALL:g}; one weight: every σ)"], rows)


def early_counts(t) -> str:
  """The pairs before 1 epoch with 0 < σ ≤ SMALL (whole network) that reach the criterion, in one sentence."""
  metric_c, level = CRITERION
  d = t[(t["kind"] != "single") & (t["t"] < t["steps_per_epoch"])]
  c = reaching(d, metric_c, level, max_sigma=SMALL)
  if c.empty:
    return ""
  per_kind = ", ".join(f"{k} {int(g['reached'].sum())} of {int(g['n'].sum())}" for k, g in c.groupby("kind"))
  times = ", ".join(time_label(int(v), int(s)) for v, s in sorted(set(zip(c["t"], c["steps_per_epoch"]))))
  return (f"Before 1 epoch (t = {times}), {int(c['reached'].sum())} of {int(c['n'].sum())} pairs with "
          f"0 < σ ≤ {SMALL:g} reach a {100 * level:g}% test-error barrier ({per_kind}); their test-error barriers "
          f"span {fmt_value(c['min'].min())} to {fmt_value(c['max'].max())}.")


def glance_table(stars) -> str:
  """σ* of the seed means per (kind, t), one column per threshold (:func:`_cell`: the estimate [bracket], or the
  censoring)."""
  keys = stars[0][3][["kind", "t", "steps_per_epoch"]].sort_values(["kind", "t"]).itertuples(index=False)
  by = [star.set_index(["kind", "t"]) for _, _, _, star in stars]
  rows = [[kind, time_label(int(step), int(spe))] + [_cell(b.loc[(kind, step)]) for b in by]
          for kind, step, spe in keys]
  return md_table(["kind", "t"] + [label for label, _, _, _ in stars], rows)


def change_table(stars) -> str:
  """Per threshold and kind: σ* at the first and the last t, and how much it changes between them as the interval
  the brackets allow (:func:`star_ratio`; censoring leaves an end open)."""
  rows = []
  for key, heading, _, star in stars:
    for kind, g in star.groupby("kind"):
      g = g.sort_values("t")
      first, last = g.iloc[0], g.iloc[-1]
      spe = int(first["steps_per_epoch"])
      t0, t1 = int(first["t"]), int(last["t"])
      rows.append([key, kind, f"{time_label(t0, spe)}: {_cell(first)}", f"{time_label(t1, spe)}: {_cell(last)}",
                   fmt_ratio(*star_ratio(star, kind, t0, t1)),
                   fmt_ratio(*star_ratio(star, kind, t0, t1, estimate=True))])
  return md_table(["threshold", "kind", "σ* at the first t", "σ* at the last t",
                   "σ*(last) / σ*(first), from the brackets", "from the interpolated σ*"], rows)


def report(t, scale, source: str) -> str:
  metric_c, level = CRITERION
  sigmas = sorted(t.loc[t["kind"] != "single", "sigma"].unique())
  out = [f"# σ*(t) at thresholds that mean something: `{source}`", "",
         f"From {t['run'].nunique()} finished runs, {int((t['sigma'] > 0).sum())} child pairs with σ > 0 (seeds "
         f"{sorted(t['seed'].astype(int).unique().tolist())}; directions {sorted(t['kind'].unique())}; "
         f"{t['t'].nunique()} perturbation times; whole-network σ > 0: "
         f"{', '.join(sigma_text(s) for s in sigmas if s > 0)}).", "",
         "## The thresholds", "",
         f"- **the {100 * level:g}% error criterion** (headline): σ* where the seed-mean test-error barrier reaches "
         f"{level:g}; also on the train error;",
         f"- **relative to each t's plateau**: σ* where the seed-mean train-loss barrier reaches {PLATEAU_FACTOR:g}× "
         f"the seed mean at the grid's smallest σ at that t and kind (the plateau), or {100 * PLATEAU_FLOOR:g}% of "
         f"the mean full-permutation train-loss barrier where that is larger (a barrier that doubles from ~0 is "
         f"still ~0);",
         "- **a fraction of the full-permutation barrier**: each pair's train-loss barrier divided by its own "
         "network's (seed's) full-permutation barrier, the seed mean of that reaching "
         + " or ".join(f"{100 * f:g}%" for f in SCALE_FRACTIONS) + ".", "",
         WHY_HEADLINE, "",
         "σ* is where the seed-mean barrier first reaches the threshold along the grid, interpolated log-linearly "
         "between the two measured σ around the crossing (the bracket, in brackets: what was measured). "
         "'< s (below the grid)': the grid's smallest σ already reaches the threshold, so σ* is below s, a bound and "
         "not a value; '> s (above the grid)': no σ of the grid reaches it. A diverged pair counts as above every "
         "threshold. The per-seed columns give each seed's own σ* on its own barriers against its own threshold.", "",
         "## The yardsticks", "",
         "The full-permutation barrier of each trained network (the random-permutation proxy at fraction 0, mean "
         "over its permutations):", ""]
  seeds = sorted(scale["train.loss"])
  out.append(md_table(["network (seed)", "train loss", "train error", "test loss", "test error"],
                      [[s] + [f"{scale[m][s]:.4f}" for m in ("train.loss", "train.error", "test.loss", "test.error")]
                       for s in seeds]))
  out += ["", f"Mean over networks: train loss {_scale_text(scale['train.loss'])}, test error "
          f"{_scale_text(scale['test.error'])} (mean [min, max]).", "",
          "Each t's plateau, the barrier the grid's smallest σ leaves, against the yardsticks:", "",
          plateau_table(t, scale), ""]
  early = early_counts(t)
  if early:
    out += [early, ""]
  stars = [(key, heading, metric, sigma_star(t, metric, thr)) for key, heading, metric, thr in thresholds(t, scale)]
  out += ["## σ*(t) at each threshold", "",
          "At a glance (σ* of the seed means [bracket]; the tables below give each threshold's value and each "
          "seed's own σ*):", "", glance_table(stars), ""]
  for key, heading, metric, star in stars:
    out += threshold_table(star, heading + f" (`{metric}`)") + [""]
  out += ["## How much σ* changes from the first t to the last", "",
          "The interval of σ*(last t) / σ*(first t) that the measured σ allow (the brackets; an end censored below "
          "or above the grid leaves that side open), and the same from the interpolated σ* where they exist (an "
          "estimate, not a measurement).", "",
          change_table(stars), ""]
  return "\n".join(out)


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m reproduction.thresholds",
                              description="σ*(t) of an instability map at the 2% error criterion, each t's plateau "
                              "and fractions of the full-permutation barrier, as Markdown")
  p.add_argument("--map", required=True, help="the report's table.parquet of the map sweep")
  p.add_argument("--scale", required=True, help="a run directory holding proxy.json, or a folder of them "
                 "(configs/reproduce_map.py:*_scale)")
  args = p.parse_args(argv)
  t = read_pairs(args.map)
  if t.empty:
    raise SystemExit(f"--map: {args.map} has no finished perturbed pairs")
  print(report(t, read_scale(args.scale), args.map), end="")


if __name__ == "__main__":
  main()
