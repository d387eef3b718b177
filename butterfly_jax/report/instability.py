"""The instability map: the barrier over (perturbation time t, σ), the threshold σ*(t) with the measured σ that
bracket it, the seeds' spread, and the relations with the barrier within each t, from the report's pair table.

Command line (docs/reports.md, "The instability map")::

  python -m butterfly_jax.report --runs=DIR --map                    # the report, and the map beside it
  python -m butterfly_jax.report --table=DIR/report/table.parquet --map --out=FIGURES   # a written table's map

From a notebook::

  from butterfly_jax.report import instability, load_table
  pairs = instability.pairs(load_table("runs/"))            # finished pairs, with `sigma` and `kind`
  star = instability.sigma_star(pairs, "train.loss", 0.01)  # σ*(t) per kind: status, estimate, bracket, per seed
  spread = instability.seed_spread(star)                    # each seed's σ* and how far the seeds spread
  paths = instability.make_map(load_table("runs/"), "out/")  # map.md and the figures

A pair is one perturbed child k > 0 against child 0; its ``kind`` is ``single`` where one weight is perturbed,
else the perturbation's kind (``batch``, ``gaussian``) with its mask variant, if any. A pair that diverged counts
as above every threshold, and is counted in its cell, never dropped. σ*(t) is the σ at which the seed-mean barrier
reaches a threshold: :func:`butterfly_jax.threshold.crossing` on the grid of σ the sweep measured, a log-linear
interpolation between the two measured σ around the crossing (the bracket). A t where the smallest σ of the grid
already reaches the threshold is censored (σ* is below the grid), as is one where no σ does (σ* above the grid).

A threshold is a number, a per-t value or a per-network scale (:func:`pair_thresholds`). Three that mean something
beyond the map: the 2% error criterion of linear mode connectivity (:data:`CRITERION`), each t's own plateau
(:func:`plateau_threshold`: where the barrier starts to grow with σ) and a fraction of each network's
full-permutation barrier (:class:`NetworkScale` of :func:`read_scale`). :func:`figure1` draws the paper's Figure 1
(barrier against t, one line per σ, with the criterion, the full-permutation barrier and σ*(t) at the criterion)
at a column's width::

  scale = instability.read_scale("runs_scale/")                # {metric: {seed: full-permutation barrier}}
  star = instability.sigma_star(pairs, "test.error", 0.02)     # the 2% criterion
  star = instability.sigma_star(pairs, "train.loss", instability.NetworkScale(scale["train.loss"], 0.1))
  star = instability.sigma_star(pairs, "train.loss", instability.plateau_threshold(pairs, "train.loss", 2, 0.01))
  fig = instability.figure1(pairs, "batch", scale=scale)

Loading and the numbers need pandas, numpy and scipy only; matplotlib is imported by the figures.
"""

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from butterfly_jax.config import to_steps
from butterfly_jax.report import plotting as P
from butterfly_jax.report.context import n_text, slug
from butterfly_jax.report.figures import settings
from butterfly_jax.report.page import figure_line
from butterfly_jax.report.table import ReportError
from butterfly_jax.threshold import crossing

KIND_LABEL = {"batch": "batch direction (+∇ℓ)", "gaussian": "Gaussian direction", "single": "one random weight",
              "ulp": "every weight, in units in the last place", "single_ulp": "one weight, in units in the last place"}
KIND_COLORS = {"batch": "#0072B2", "gaussian": "#D55E00", "single": "#009E73",  # Okabe-Ito: colour-blind safe
               "ulp": "#CC79A7", "single_ulp": "#E69F00"}
EXTRA_NOTE = ("\nextra steps: every perturbed child (and the σ = 0 twin) trains T steps after t; child 0, the "
              "reference, ends at T")
DEFAULT_THRESHOLDS = (0.005, 0.01, 0.02)
# (column, axis label, x scale) of the relation figures, drawn where the table has the column
RELATIONS = (("vs_child0.l2", "L2 distance to child 0", "log"), ("vs_child0.cka", "angular CKA (radians)", "linear"),
             ("vs_child0.ensemble.accuracy", "ensemble accuracy", "linear"))
# the seed-bootstrap interval of spearman_by_seed: its level and number of resamples
LEVEL = 0.95
N_BOOT = 2000
# the heatmap's colour floor: barriers below it share its colour
FLOOR = 1e-4
# the headline threshold: the 2% error criterion of linear mode connectivity (Frankle et al., 2020; the paper takes
# it), on the test error: σ*(t) at it is drawn in figure1_<kind>.png
CRITERION = ("test.error", 0.02)
FIGURE1_WIDTH = 3.3  # inches: one column of a two-column paper
STAR_COLOR = "0.1"  # σ* in figure1: black, apart from the σ lines' colours


# ---------------------------------------------------------------------------------------------------------
# The pairs, the cells and σ*(t).


def pairs(table: pd.DataFrame) -> pd.DataFrame:
  """The finished pairs of a report table (child k > 0 against child 0), with ``sigma`` (float σ) and ``kind``.

  ``kind`` is ``single`` where one weight is perturbed (``perturb.mask.single``; ``single_ulp`` in units in the
  last place), else ``perturb.kind`` (``batch``, ``gaussian``, ``ulp``), followed by the mask variant of the
  report's ``perturbation`` label where there is one other than a single weight (``batch_masked``,
  ``gaussian_fraction-0.1``): a masked sweep is not pooled with an unmasked one.
  Returns a copy; every other function of this module takes this frame.
  """
  t = table[(table["status"] == "finished") & (table["child"] > 0)].copy()
  t["sigma"] = t["perturb.scale"].astype(float)
  mask = t["perturb.mask.single"] if "perturb.mask.single" in t else pd.Series(None, index=t.index, dtype=object)
  single = mask.notna() & (mask.astype(str) != "")
  kind = t["perturb.kind"]
  if "perturbation" in t:
    variant = t["perturbation"].astype(str).str.partition("/")[2]
    other = (variant != "") & (variant != "single-weight")
    kind = kind.where(~other, kind.astype(str) + "_" + variant.str.replace("=", "-").str.replace("/", "_"))
  t["kind"] = np.where(single, np.where(t["perturb.kind"] == "ulp", "single_ulp", "single"), kind)
  return t


def read_table(path) -> pd.DataFrame:
  """A table the report wrote: ``table.parquet`` (pyarrow) or ``table.csv``."""
  return pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)


def read_pairs(path) -> pd.DataFrame:
  """:func:`pairs` of a table file the report wrote (:func:`read_table`)."""
  return pairs(read_table(path))


def time_label(steps: int, steps_per_epoch: int) -> str:
  """A perturbation time as the map prints it: ``2 ep`` for whole epochs, ``250 steps`` otherwise, ``0``."""
  if steps and steps % steps_per_epoch == 0:
    return f"{steps // steps_per_epoch} ep"
  return f"{steps} steps" if steps else "0"


def fmt_value(x) -> str:
  """A barrier or σ as the map prints it: three significant digits, ``–`` for None or a non-finite value."""
  return "–" if x is None or not np.isfinite(x) else f"{x:.3g}"


def barrier_values(t: pd.DataFrame, metric: str) -> pd.Series:
  """The pairs' ``metric`` barrier (``train.loss``, ``test.error``, ...); ``inf`` where the pair diverged, so that it
  counts as above any threshold and never as a small barrier."""
  v = t[f"vs_child0.barrier.{metric}"].astype(float)
  return v.where(~t["pair_diverged"].astype(bool), math.inf)


def cells(t: pd.DataFrame, metric: str) -> pd.DataFrame:
  """The heatmap's cells: one row per (kind, t, σ) with the ``mean``, ``min`` and ``max`` over the seeds whose pair
  did not diverge, ``n`` (pairs) and ``diverged`` (how many of them diverged: counted, not dropped)."""
  t = t.assign(value=barrier_values(t, metric))
  rows = []
  for (kind, step, sigma), g in t.groupby(["kind", "t", "sigma"]):
    finite = g["value"][np.isfinite(g["value"])]
    rows.append({"kind": kind, "t": int(step), "sigma": sigma, "n": len(g),
                 "diverged": int((~np.isfinite(g["value"])).sum()),
                 "mean": finite.mean() if len(finite) else math.nan, "min": finite.min() if len(finite) else math.nan,
                 "max": finite.max() if len(finite) else math.nan,
                 "steps_per_epoch": int(g["steps_per_epoch"].iloc[0])})
  return pd.DataFrame(rows)


def _status(text: str) -> str:
  """``bracketed``, ``above`` or ``below``: the word that leads :func:`butterfly_jax.threshold.crossing`'s status."""
  return text.split(":")[0]


def sigma_star(t: pd.DataFrame, metric: str, threshold) -> pd.DataFrame:
  """σ*(t) per (kind, t), from the seed-mean barrier over the σ > 0 of the grid (a diverged pair counts as infinite).

  ``threshold``: a number (every t), a per-t value (a mapping from t, or from (kind, t), to a number: e.g.
  :func:`plateau_threshold`) or a per-network scale (:class:`NetworkScale`: the pairs of seed s are held against
  ``fraction × values[s]``; the seed mean is then taken of each pair's barrier divided by its network's scale, and
  reaches ``fraction``). :func:`pair_thresholds` says what each pair is held against.

  Columns: ``status`` (``bracketed``; ``above``: the grid's smallest σ already reaches the threshold, σ* is below
  ``lo``; ``below``: no σ does, σ* is above ``hi``), ``sigma_star`` (the log-linear interpolation, NaN unless
  bracketed: an estimate between two measured σ, not a measured σ), ``bracket`` (the pair, None unless bracketed),
  ``bracket_lo`` and ``bracket_hi`` (the two
  measured σ around the crossing, NaN unless bracketed), ``lo`` and ``hi`` (the grid's smallest and largest σ),
  ``per_seed`` (``{seed: crossing(...)}``, each seed's own (status, bracket, estimate) on its own barriers against
  its own threshold), ``threshold`` (the barrier value of the row's threshold; for a :class:`NetworkScale`,
  ``fraction`` × the mean scale of the row's seeds, a summary: each network is held against its own) and
  ``steps_per_epoch``.
  """
  t = t[t["sigma"] > 0]
  t = t.assign(value=barrier_values(t, metric), threshold=pair_thresholds(t, threshold))
  per_network = isinstance(threshold, NetworkScale)
  rows = []
  for (kind, step), g in t.groupby(["kind", "t"]):
    if per_network:  # each pair as a fraction of its own network's scale; the seed mean of that reaches `fraction`
      scaled = g["value"] / g["threshold"] * threshold.fraction
      means = scaled.groupby(g["sigma"]).mean()
      level, shown = threshold.fraction, float(g.groupby("seed")["threshold"].first().mean())
    else:
      means = g.groupby("sigma")["value"].mean()  # inf if any seed diverged: above the threshold
      level = shown = float(g["threshold"].iloc[0]) if not isinstance(threshold, (int, float)) else threshold
    status, bracket, est = crossing(list(means.index), list(means.values), level)
    per_seed = {}
    for seed, gs in g.groupby("seed"):
      gs = gs.sort_values("sigma")
      per_seed[int(seed)] = crossing(list(gs["sigma"]), list(gs["value"]),
                                     float(gs["threshold"].iloc[0]) if per_network else level)
    rows.append({"kind": kind, "t": int(step), "status": _status(status), "sigma_star": est,
                 "bracket": bracket, "bracket_lo": bracket[0] if bracket else math.nan,
                 "bracket_hi": bracket[1] if bracket else math.nan, "lo": float(means.index.min()),
                 "hi": float(means.index.max()), "per_seed": per_seed, "threshold": float(shown),
                 "steps_per_epoch": int(g["steps_per_epoch"].iloc[0])})
  return pd.DataFrame(rows)


def seed_spread(star: pd.DataFrame) -> pd.DataFrame:
  """How far the seeds' own σ* spread, per row of :func:`sigma_star`: ``seeds``, ``bracketed`` (seeds whose σ* lies
  inside the grid), ``below_grid`` and ``above_grid`` (seeds censored below the smallest σ or above the largest),
  ``min`` and ``max`` of the bracketed seeds' σ* and ``ratio`` (max / min, NaN with fewer than two bracketed seeds).
  A censored seed is counted, not given a value: a ratio over the bracketed seeds says nothing about it."""
  rows = []
  for _, r in star.iterrows():
    statuses = [_status(v[0]) for v in r["per_seed"].values()]
    est = [v[2] for v in r["per_seed"].values() if _status(v[0]) == "bracketed"]
    rows.append({"kind": r["kind"], "t": int(r["t"]), "seeds": len(statuses), "bracketed": len(est),
                 "below_grid": statuses.count("above"), "above_grid": statuses.count("below"),
                 "min": min(est) if est else math.nan, "max": max(est) if est else math.nan,
                 "ratio": max(est) / min(est) if len(est) > 1 else math.nan})
  return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# Thresholds that mean something: the 2% error criterion, a t's own plateau, a fraction of a network's scale.


@dataclass(frozen=True)
class NetworkScale:
  """A per-network threshold for :func:`sigma_star`: the pairs of seed ``s`` (one trunk, one child 0: one network)
  are held against ``fraction × values[s]``, that network's own yardstick (e.g. the barrier between it and a fully
  permuted copy of itself, :func:`read_scale`). ``name`` says what the scale is, for tables and figures."""
  values: Mapping
  fraction: float = 1.0
  name: str = "full-permutation barrier"


def _check_levels(levels, what: str) -> np.ndarray:
  levels = np.asarray(levels, float)
  bad = ~(np.isfinite(levels) & (levels > 0))
  if bad.any():
    raise ValueError(f"threshold: {what} must be positive finite numbers, got {sorted(set(levels[bad].tolist()))}")
  return levels


def pair_thresholds(t: pd.DataFrame, threshold) -> pd.Series:
  """The barrier value each pair of ``t`` (:func:`pairs`) is held against: ``threshold`` a number, a per-t value (a
  mapping from (kind, t) or from t to a number; (kind, t) wins where both are given) or a :class:`NetworkScale`
  (``fraction × values[seed]``). Raises ValueError where a t or a seed has no threshold, or a threshold is not a
  positive finite number."""
  if isinstance(threshold, NetworkScale):
    seeds = t["seed"].astype(int)
    missing = sorted(set(seeds) - {int(k) for k in threshold.values})
    if missing:
      raise ValueError(f"threshold: the {threshold.name} has no value for seed(s) {missing}")
    scale = {int(k): float(v) for k, v in threshold.values.items()}
    _check_levels(list(scale.values()), f"the {threshold.name}'s values")
    levels = [threshold.fraction * scale[s] for s in seeds]
  elif isinstance(threshold, (Mapping, pd.Series)):
    mapping = dict(threshold)
    levels = []
    for kind, step in zip(t["kind"], t["t"].astype(int)):
      level = mapping.get((kind, step), mapping.get(step))
      if level is None:
        raise ValueError(f"threshold: no value for t = {step} ({kind})")
      levels.append(level)
  else:
    levels = [threshold] * len(t)
  return pd.Series(_check_levels(levels, "thresholds"), index=t.index, dtype=float)


def plateau(t: pd.DataFrame, metric: str) -> pd.DataFrame:
  """Each t's own plateau: per (kind, t), the :func:`cells` row of the grid's smallest σ > 0 (``sigma``, the seed
  ``mean``, ``min``, ``max``, ``n``, ``diverged``): the barrier the smallest perturbation measured leaves. Where the
  barrier does not depend on σ at small σ (the early map), every small σ leaves about this."""
  c = cells(t[t["sigma"] > 0], metric)
  return c.loc[c.groupby(["kind", "t"])["sigma"].idxmin()].reset_index(drop=True)


def plateau_threshold(t: pd.DataFrame, metric: str, factor: float = 2.0, floor: float = 0.0) -> dict:
  """A per-t threshold relative to each t's own :func:`plateau`: ``{(kind, t): max(factor × plateau, floor)}``.
  σ* at it is where the barrier stops being the plateau and starts to grow with σ (it says nothing about whether the
  plateau itself is a barrier). ``floor``, in barrier units, keeps a plateau of ~0 (late t) from putting the
  threshold on noise: a barrier that doubles from nothing is still nothing. Raises ValueError where a threshold
  would be 0 (a plateau of 0 with no floor) or not finite."""
  if not factor > 1:
    raise ValueError(f"plateau_threshold: factor must be > 1 (the plateau itself would reach it), got {factor}")
  out = {}
  for _, r in plateau(t, metric).iterrows():
    level = max(factor * r["mean"], floor) if np.isfinite(r["mean"]) else floor
    if not (level > 0 and math.isfinite(level)):
      raise ValueError(f"plateau_threshold: the plateau at t = {int(r['t'])} ({r['kind']}) is {r['mean']!r}: give a "
                       f"floor > 0")
    out[(r["kind"], int(r["t"]))] = float(level)
  return out


def read_scale(path) -> dict:
  """The full-permutation barrier of each network: ``{metric: {seed: value}}`` for ``train.loss``, ``train.error``,
  ``test.loss`` and ``test.error``, each the mean over the random permutations at fraction 0 of a ``proxy.json``
  (``python -m butterfly_jax.proxy --fractions=0``: the barrier between a trained network and a fully permuted copy
  of itself, the same function with every hidden unit moved). ``path``: a run directory holding ``proxy.json``, or
  a folder of them (``*/proxy.json``); the seed is each run's ``config.json``'s. Raises ValueError where no
  proxy.json has rows at fraction 0, or two hold the same seed."""
  path = Path(path)
  files = [path / "proxy.json"] if (path / "proxy.json").exists() else sorted(path.glob("*/proxy.json"))
  out = {f"{split}.{m}": {} for split in ("train", "test") for m in ("loss", "error")}
  for f in files:
    seed = int(json.loads((f.parent / "config.json").read_text())["seed"])
    rows = [r for r in json.loads(f.read_text())["rows"] if float(r["target_fraction"]) == 0.0]
    if not rows:
      continue
    if seed in out["train.loss"]:
      raise ValueError(f"read_scale: two proxy.json files under {path} hold seed {seed}")
    for metric in out:
      split, m = metric.split(".")
      out[metric][seed] = float(np.mean([r["barrier"][split][m] for r in rows]))
  if not out["train.loss"]:
    raise ValueError(f"read_scale: no proxy.json with rows at fraction 0 under {path}")
  return out


def read_search(path) -> dict:
  """A threshold search's ``threshold.json`` (``python -m butterfly_jax.threshold --per_seed``; ``path``: the file
  or its folder), with ``kind``: the perturbation kind it searched (its own field, or, for a file written before it
  had one, its run directories' ``config.json``). Raises ValueError for a search that is not per seed (σ* of the
  seed mean has no per-seed brackets to draw) or whose kind cannot be told."""
  path = Path(path)
  file = path / "threshold.json" if path.is_dir() else path
  out = json.loads(file.read_text())
  if not out.get("per_seed"):
    raise ValueError(f"read_search: {file} is a search of the seed mean; the figure draws a --per_seed search's")
  if "kind" not in out:
    kinds = {json.loads(c.read_text())["perturb"]["kind"] for c in file.parent.glob("*/config.json")}
    if len(kinds) != 1:
      raise ValueError(f"read_search: {file} names no perturbation kind and its runs hold {sorted(kinds) or 'none'}")
    out["kind"] = kinds.pop()
  return out


def search_sigma_star(search: dict, steps_per_epoch: int) -> pd.DataFrame:
  """σ*(t) from a per-seed threshold search (:func:`read_search`), in :func:`sigma_star`'s columns: per t, each
  seed's own (status, bracket, estimate) in ``per_seed``; ``sigma_star`` the geometric mean of the seeds' estimates;
  the bracket spans every seed's bracket (``bracket_lo``: the lowest seed's lower end, ``bracket_hi``: the highest's
  upper end), reaching the searched range's end (``lo``, ``hi``) for a seed censored there. A t where every seed is
  censored the same way is ``above`` (σ* below ``lo``) or ``below`` (above ``hi``)."""
  rows = []
  for t, v in search["times"].items():
    per_seed = {int(s): (g["status"], g["bracket"], g["sigma_estimate"]) for s, g in v["per_seed"].items()}
    statuses = [_status(x[0]) for x in per_seed.values()]
    est = [x[2] for x in per_seed.values() if _status(x[0]) == "bracketed" and x[2] is not None]
    lows = [x[1][0] for x in per_seed.values() if x[1]] + [search["lo"]] * statuses.count("above")
    highs = [x[1][1] for x in per_seed.values() if x[1]] + [search["hi"]] * statuses.count("below")
    # bracketed where a seed is; censored where every seed is censored alike; a t whose seeds are censored on both
    # sides (none bracketed) has no estimate and no bar
    status = statuses[0] if not est and len(set(statuses)) == 1 else "bracketed"
    rows.append({"kind": search["kind"], "t": to_steps(str(t), steps_per_epoch, "perturb.time"), "status": status,
                 "sigma_star": float(np.exp(np.mean(np.log(est)))) if est else math.nan,
                 "bracket_lo": min(lows) if est else math.nan, "bracket_hi": max(highs) if est else math.nan,
                 "lo": float(search["lo"]), "hi": float(search["hi"]), "per_seed": per_seed,
                 "threshold": float(search["threshold"]), "steps_per_epoch": steps_per_epoch})
  return pd.DataFrame(rows).sort_values("t", ignore_index=True)


def reaching(t: pd.DataFrame, metric: str, threshold, max_sigma: float | None = None) -> pd.DataFrame:
  """How many pairs reach ``threshold`` (anything :func:`pair_thresholds` takes), per (kind, t): ``n`` (pairs with
  0 < σ ≤ ``max_sigma``), ``reached`` (a diverged pair counts as reaching it), ``diverged``, and the pairs' barrier
  ``min``/``max`` (the pairs that did not diverge). The size of an effect in pairs, beside the seed means."""
  d = t[t["sigma"] > 0]
  if max_sigma is not None:
    d = d[d["sigma"] <= max_sigma]
  d = d.assign(value=barrier_values(d, metric), level=pair_thresholds(d, threshold))
  rows = []
  for (kind, step), g in d.groupby(["kind", "t"]):
    finite = g["value"][np.isfinite(g["value"])]
    rows.append({"kind": kind, "t": int(step), "n": len(g), "reached": int((g["value"] >= g["level"]).sum()),
                 "diverged": int((~np.isfinite(g["value"])).sum()),
                 "min": finite.min() if len(finite) else math.nan, "max": finite.max() if len(finite) else math.nan,
                 "steps_per_epoch": int(g["steps_per_epoch"].iloc[0])})
  return pd.DataFrame(rows)


def star_interval(row, estimate: bool = False) -> tuple:
  """Where a row of :func:`sigma_star` puts σ*, as measured σ: the bracket when bracketed (with ``estimate``, the
  interpolated σ* itself, twice), ``(0, lo]`` when σ* is below the grid (censored: a bound, not a value),
  ``[hi, inf)`` when above it."""
  if row["status"] == "bracketed":
    if estimate:
      return float(row["sigma_star"]), float(row["sigma_star"])
    return float(row["bracket_lo"]), float(row["bracket_hi"])
  return (0.0, float(row["lo"])) if row["status"] == "above" else (float(row["hi"]), math.inf)


def star_ratio(star: pd.DataFrame, kind: str, t0: int, t1: int, estimate: bool = False) -> tuple:
  """How much σ* changes from t0 to t1 for ``kind``, as the interval of σ*(t1) / σ*(t0) that the two
  :func:`star_interval` allow: ``(lo, hi)``, 0 or inf where a censored end leaves it open. By default from the
  brackets (what was measured); with ``estimate``, from the interpolated σ* where there is one (an estimate)."""
  r = star.set_index(["kind", "t"])
  (a_lo, a_hi), (b_lo, b_hi) = (star_interval(r.loc[(kind, v)], estimate) for v in (t0, t1))
  lo = b_lo / a_hi if a_hi > 0 and math.isfinite(a_hi) else 0.0
  hi = b_hi / a_lo if a_lo > 0 else math.inf
  return lo, hi


def _times(x: float) -> str:
  return f"×{x:,.0f}" if x >= 10 else f"×{x:.3g}"


def fmt_ratio(lo: float, hi: float) -> str:
  """:func:`star_ratio`'s interval as text: ``between ×0.1 and ×10``, ``at least ×1,000``, ``at most ×0.001``, or
  ``not bounded`` (both ends censored on the same side of the grid)."""
  if lo > 0 and math.isfinite(hi):
    return f"between {_times(lo)} and {_times(hi)}" if lo != hi else _times(lo)
  if lo > 0:
    return f"at least {_times(lo)}"
  return f"at most {_times(hi)}" if math.isfinite(hi) else "not bounded (both ends censored on the same side)"


def _censored_cell(status: str, est: float, bracket, lo: float, hi: float) -> str:
  if status == "bracketed":
    return f"{fmt_value(est)} [{bracket[0]:g}, {bracket[1]:g}]"
  return f"< {lo:g} (below the grid)" if status == "above" else f"> {hi:g} (above the grid)"


def _seed_cells(r) -> str:
  """Each seed's own σ* of a :func:`sigma_star` row, as ``seed: cell`` (:func:`_star_cell`)."""
  return ", ".join(f"{k}: {_star_cell(_status(v[0]), v[2], r['lo'], r['hi'])}"
                   for k, v in sorted(r["per_seed"].items()))


def threshold_table(star: pd.DataFrame, heading: str, level_digits: int = 3) -> list:
  """Markdown lines: ``heading`` then, per (kind, t) of :func:`sigma_star`, the barrier value it is held against,
  σ* of the seed means with its bracket (the two measured σ around the crossing; σ* itself is interpolated between
  them), censoring said in words (``< 1e-05 (below the grid)``: a bound, not a value), and each seed's own σ* (``<``
  and ``>`` as in :func:`star_table`). ``level_digits``: significant digits of the threshold column."""
  out = [heading, "", "| kind | t | threshold | σ* [bracket] (seed mean) | per seed |",
         "| --- | --- | ---: | ---: | --- |"]
  for _, r in star.sort_values(["kind", "t"]).iterrows():
    seeds = _seed_cells(r)
    out.append(f"| {r['kind']} | {time_label(r['t'], r['steps_per_epoch'])} | {r['threshold']:.{level_digits}g} | "
               f"{_censored_cell(r['status'], r['sigma_star'], r['bracket'], r['lo'], r['hi'])} | {seeds} |")
  return out


# ---------------------------------------------------------------------------------------------------------
# Spearman's ρ with a bootstrap over seeds.


def _rho(x, y):
  if len(x) < 3 or np.unique(x).size < 2 or np.unique(y).size < 2:
    return np.nan
  return float(spearmanr(x, y).statistic)


def spearman_by_seed(x, y, seeds, n_boot: int = N_BOOT, level: float = LEVEL, rng_seed: int = 0) -> dict:
  """ρ(x, y) over every pair, and a percentile interval from resampling whole seeds with replacement.

  Pairs of one seed share a trunk and a child 0, so they are not independent: the interval resamples seeds (a
  cluster bootstrap) and recomputes ρ over the pairs of the resampled seeds. With 3 seeds there are only 10
  distinct resamples, so the interval says how much ρ moves when the seeds change, not more. A pair with a
  non-finite x or y is left out. Returns ``rho``, ``n`` (pairs), ``seeds`` (distinct seeds), ``lo``/``hi`` (NaN
  with fewer than 2 seeds), ``undefined`` (the fraction of resamples where ρ is undefined: a constant x or y) and
  ``note`` (why ρ itself is undefined, else "").
  """
  x, y, seeds = (np.asarray(v) for v in (x, y, seeds))
  keep = np.isfinite(x.astype(float)) & np.isfinite(y.astype(float))
  x, y, seeds = x[keep].astype(float), y[keep].astype(float), seeds[keep]
  out = {"rho": _rho(x, y), "n": int(len(x)), "seeds": int(np.unique(seeds).size), "lo": np.nan, "hi": np.nan,
         "undefined": np.nan, "note": ""}
  if len(x) < 3:
    out["note"] = "too few pairs"
  elif np.unique(x).size < 2 or np.unique(y).size < 2:
    out["note"] = "a variable is constant"
  groups = [np.flatnonzero(seeds == s) for s in np.unique(seeds)]
  if len(groups) < 2 or not np.isfinite(out["rho"]):
    return out
  rng = np.random.default_rng(rng_seed)
  draws = []
  for _ in range(n_boot):
    idx = np.concatenate([groups[i] for i in rng.integers(len(groups), size=len(groups))])
    draws.append(_rho(x[idx], y[idx]))
  draws = np.asarray(draws)
  ok = draws[np.isfinite(draws)]
  out["undefined"] = float(1 - len(ok) / len(draws))
  if len(ok):
    out["lo"], out["hi"] = (float(q) for q in np.quantile(ok, [(1 - level) / 2, (1 + level) / 2]))
  return out


def fmt_rho(r: dict) -> str:
  """:func:`spearman_by_seed`'s result as text: ``0.85 [0.71, 0.93] n=42, 3 seeds``, or why ρ is undefined."""
  if not np.isfinite(r["rho"]):
    return f"undefined ({r['note']}) n={r['n']}"
  ci = (f" [{r['lo']:.2f}, {r['hi']:.2f}]" if np.isfinite(r["lo"]) else " [no interval: 1 seed]")
  return f"{r['rho']:.2f}{ci} n={r['n']}, {r['seeds']} seed{'s' if r['seeds'] != 1 else ''}"


# ---------------------------------------------------------------------------------------------------------
# Markdown.


def markdown(cell_table: pd.DataFrame, stars: dict, metric: str) -> str:
  """The map as Markdown: per kind, a (t, σ) table of :func:`cells` (seed mean [min, max], n pairs, d diverged),
  then :func:`star_table` for each ``{threshold: sigma_star(...)}`` of ``stars``."""
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
        vals.append(f"{fmt_value(r['mean'])} [{fmt_value(r['min'])}, {fmt_value(r['max'])}] n={r['n']}"
                    + (f" d={r['diverged']}" if r["diverged"] else ""))
      out.append(f"| {time_label(step, spe)} | " + " | ".join(vals) + " |")
    out.append("")
  for threshold, star in stars.items():
    out += star_table(star, metric, threshold) + [""]
  return "\n".join(out)


def _star_cell(status: str, est: float, lo: float, hi: float) -> str:
  if status == "bracketed":
    return fmt_value(est)
  return f"< {lo:g}" if status == "above" else f"> {hi:g}"


def star_table(star: pd.DataFrame, metric: str, threshold: float) -> list:
  """Markdown lines: σ*(t) per kind from the seed means, and each seed's own σ* (``< s``: below the grid's
  smallest σ; ``> s``: above its largest)."""
  out = [f"### σ*(t): the σ at which the seed-mean `{metric}` barrier reaches {threshold:g}", "",
         "| kind | t | σ* (seed mean) | per seed |", "| --- | --- | ---: | --- |"]
  for _, r in star.sort_values(["kind", "t"]).iterrows():
    seeds = _seed_cells(r)
    out.append(f"| {r['kind']} | {time_label(r['t'], r['steps_per_epoch'])} | "
               f"{_star_cell(r['status'], r['sigma_star'], r['lo'], r['hi'])} | {seeds} |")
  return out


# ---------------------------------------------------------------------------------------------------------
# Figures (matplotlib's Figure directly: no pyplot, no global backend state).


def _unit(kind: str) -> str:
  if kind.endswith("ulp"):
    return "units in the last place"
  return "× the weight's init RMS" if kind == "single" else "fraction of the init norm"


def heatmap(ax, g: pd.DataFrame, metric: str, extra: bool = False):
  """One kind's :func:`cells` on ``ax``: the seed-mean barrier, t down and σ across (each on its own grid), each
  cell labelled with its mean and the diverged pairs; colours on a log scale floored at :data:`FLOOR`. ``extra``:
  the children trained T steps after t, so the σ = 0 twin ends past child 0. Returns the image (for a colour bar)."""
  from matplotlib.colors import LogNorm
  sigmas, steps = sorted(g["sigma"].unique()), sorted(g["t"].unique())
  grid = np.full((len(steps), len(sigmas)), np.nan)
  for _, r in g.iterrows():
    grid[steps.index(r["t"]), sigmas.index(r["sigma"])] = r["mean"]
  top = max(np.nanmax(grid), 1e-3)
  image = ax.imshow(np.clip(grid, FLOOR, None), cmap="viridis", norm=LogNorm(vmin=FLOOR, vmax=top), aspect="auto")
  for _, r in g.iterrows():
    i, j = steps.index(r["t"]), sigmas.index(r["sigma"])
    text = fmt_value(r["mean"]) + (f"\n{r['diverged']}/{r['n']} div" if r["diverged"] else "")
    light = np.isfinite(r["mean"]) and r["mean"] < 10 ** ((math.log10(FLOOR) + math.log10(top)) / 2)
    ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if light else "black")
  spe = int(g["steps_per_epoch"].iloc[0])
  twin = "0 (twin,\nto t + T)" if extra else "0 (twin)"  # with extra steps the twin trains past child 0's end
  ax.set_xticks(range(len(sigmas)), [f"{s:g}" if s else twin for s in sigmas], rotation=45)
  ax.set_yticks(range(len(steps)), [time_label(s, spe) for s in steps])
  ax.set_xlabel("σ (fraction of the init norm)")
  ax.set_ylabel("perturbation time t")
  return image


def map_figure(g: pd.DataFrame, kind: str, metric: str, extra: bool = False):
  """The heatmap figure of one kind's :func:`cells` ``g``, with its colour bar and a title saying what it shows."""
  from matplotlib.figure import Figure
  fig = Figure(figsize=(1.1 * g["sigma"].nunique() + 2.5, 0.5 * g["t"].nunique() + 2))
  ax = fig.subplots()
  image = heatmap(ax, g, metric, extra)
  fig.colorbar(image, ax=ax, label=f"{metric} barrier (log scale)")
  ax.set_xlabel(f"σ ({_unit(kind)})")
  ax.set_title(f"{KIND_LABEL.get(kind, kind)}: seed-mean barrier after training (n ≤ {g['n'].max()} seeds; "
               "colours below 1e-4 shown as 1e-4)" + EXTRA_NOTE * extra, fontsize=8)
  fig.tight_layout()
  return fig


def draw_sigma_star(ax, star: pd.DataFrame, ms: float = 5, censored_ms: float = 9, colors=None) -> None:
  """The markers of :func:`threshold_panel` for ``star`` (:func:`sigma_star`) on ``ax`` in steps, no axis styling:
  per kind (its colour, kinds shifted side by side), the seed-mean σ* hollow on a line inside its bracket's bar, a
  censored t as a hollow triangle at the grid's edge (▽ at the smallest σ, △ at the largest) and each seed's own
  bracketed σ* as a small hollow circle. ``ms``, ``censored_ms``: marker sizes; ``colors``: ``{kind: colour}``
  in place of :data:`KIND_COLORS`."""
  kinds = sorted(star["kind"].unique())
  for i, (kind, g) in enumerate(star.groupby("kind")):
    g = g.sort_values("t")
    color = (colors or KIND_COLORS).get(kind, f"C{i}")
    shift = (i - (len(kinds) - 1) / 2) * 0.05  # a small shift on the symlog axis per kind

    def x(step):
      return step * 10 ** shift if step >= 10 else step + 10 * shift

    ok = g[g["status"] == "bracketed"]
    xs, est = [x(v) for v in ok["t"]], np.array(ok["sigma_star"], float)
    ax.errorbar(xs, est, yerr=[est - np.array(ok["bracket_lo"], float), np.array(ok["bracket_hi"], float) - est],
                fmt="none", ecolor=color, elinewidth=1.2, capsize=3, alpha=0.8)
    ax.plot(xs, est, "o-", color=color, ms=ms, mfc="white", mew=1.3, lw=1.2, label=KIND_LABEL.get(kind, kind))
    for _, r in g.iterrows():
      if r["status"] != "bracketed":  # censored: σ* is below the grid's smallest σ, or above its largest
        ax.plot(x(r["t"]), r["lo"] if r["status"] == "above" else r["hi"], "v" if r["status"] == "above" else "^",
                color=color, ms=censored_ms, mfc="none")
      for status, _, seed_est in r["per_seed"].values():
        if _status(status) == "bracketed":
          ax.plot(x(r["t"]), seed_est, "o", color=color, ms=3, mfc="none", alpha=0.6)


def threshold_panel(ax, star: pd.DataFrame, unit: str) -> None:
  """σ*(t) of one threshold on ``ax``, one colour per kind (kinds side by side at each t, so that none hides
  another): the seed-mean estimate as a hollow circle joined by a line, inside a bar from the bracket's lower to
  its upper measured σ (the estimate is interpolated between them, not measured); a censored t as a hollow
  triangle at the grid's edge (▽ at the smallest σ: σ* is below it; △ at the largest: σ* is above it); each
  seed's own bracketed σ* as a small hollow circle. The x axis is symlog in steps, labelled at every t."""
  draw_sigma_star(ax, star)
  ax.set_xscale("symlog", linthresh=10)
  ax.set_yscale("log")
  ax.set_ylim(float(star["lo"].min()) / 3, float(star["hi"].max()) * 3)
  steps = sorted(star["t"].unique())
  spe = int(star["steps_per_epoch"].iloc[0])
  ax.set_xticks(steps, [time_label(v, spe).replace(" steps", "") for v in steps], rotation=60, fontsize=7)
  ax.minorticks_off()
  ax.tick_params(labelbottom=True, labelleft=True)  # every panel labelled, shared axes or not
  ax.set_xlabel("perturbation time t (steps, or epochs 'ep'; symlog axis)", fontsize=8)
  ax.set_ylabel(f"σ* ({unit})")
  ax.grid(True, which="major", alpha=0.3)


def _threshold_legend():
  """What the σ*(t) figure's markers stand for (the kinds' colours are in each panel's own legend)."""
  from matplotlib.lines import Line2D
  grey = "0.25"
  return [Line2D([], [], color=grey, marker="o", mfc="white", mew=1.3, ms=6, linestyle="-",
                 label="σ* of the seed-mean barrier: interpolated (log-linear) between two measured σ, not measured"),
          Line2D([], [], color=grey, marker="|", ms=12, mew=1.2, linestyle="none",
                 label="bar: the bracket, the two measured σ around the crossing"),
          Line2D([], [], color=grey, marker="o", mfc="none", ms=3, linestyle="none", alpha=0.6,
                 label="small circle: one seed's own σ* (interpolated likewise)"),
          Line2D([], [], color=grey, marker="v", mfc="none", ms=8, linestyle="none",
                 label="▽ at the smallest σ: that σ already reaches the threshold (σ* below the grid)"),
          Line2D([], [], color=grey, marker="^", mfc="none", ms=8, linestyle="none",
                 label="△ at the largest σ: no σ of the grid reaches it (σ* above the grid)")]


def threshold_figure(stars: dict, metric: str, n_seeds: int | None = None):
  """σ*(t), one panel per threshold of ``stars`` (``{threshold: sigma_star(...)}``; columns) and a row for the
  whole-network kinds and one for a single weight (whose σ has another unit), with :func:`threshold_panel` in each.
  Panels of a row share the σ axis, and every panel spans the same t range with its own t labelled; one legend
  below says what the markers stand for. ``n_seeds``: the most seeds behind a point, for the title."""
  from matplotlib.figure import Figure
  levels = list(stars)
  groups = [(lambda s: s[s["kind"] != "single"], _unit("batch")), (lambda s: s[s["kind"] == "single"], _unit("single"))]
  groups = [(pick, unit) for pick, unit in groups if not pick(stars[levels[0]]).empty]
  fig = Figure(figsize=(4.6 * len(levels), 3.9 * len(groups) + 1.4), layout="constrained")
  axes = fig.subplots(len(groups), len(levels), squeeze=False, sharey="row")
  for row, (pick, unit) in enumerate(groups):
    for col, level in enumerate(levels):
      ax = axes[row][col]
      threshold_panel(ax, pick(stars[level]), unit)
      ax.set_title(f"{metric} barrier reaches {level:g}", fontsize=9)
      if col:
        ax.set_ylabel("")
      else:
        ax.legend(fontsize=7)
  lo = min(ax.get_xlim()[0] for ax in axes.flat)  # one t range in every panel: rows compare at a glance
  hi = max(ax.get_xlim()[1] for ax in axes.flat)
  for ax in axes.flat:
    ax.set_xlim(lo, hi)
  fig.legend(handles=_threshold_legend(), loc="outside lower center", ncols=2, fontsize=7)
  seeds = f" (≤ {n_seeds} seed{'s' if n_seeds != 1 else ''} per point)" if n_seeds else ""
  fig.suptitle(f"σ*(t): the σ at which the seed-mean barrier reaches the threshold{seeds}", fontsize=10)
  return fig


def relations_rho(t: pd.DataFrame, kind: str, metric: str) -> pd.DataFrame:
  """Spearman's ρ of each relation of :data:`RELATIONS` with the ``metric`` barrier within each t, for one kind
  (pairs with σ > 0 that did not diverge): rows ``t``, ``n``, and per relation its ``(ρ, lo, hi)``
  (:func:`spearman_by_seed`)."""
  d = t[(t["kind"] == kind) & (t["sigma"] > 0) & ~t["pair_diverged"].astype(bool)]
  d = d.assign(value=d[f"vs_child0.barrier.{metric}"].astype(float))
  rows = []
  for step, g in d.groupby("t"):
    rows.append({"t": int(step), "n": len(g), "steps_per_epoch": int(g["steps_per_epoch"].iloc[0]),
                 **{x: spearman_by_seed(g[x].astype(float), g["value"], g["seed"]) for x, _, _ in RELATIONS
                    if x in g}})
  return pd.DataFrame(rows)


def relations_table(t: pd.DataFrame, kind: str, metric: str) -> list:
  """Markdown lines: :func:`relations_rho` of one kind, a row per t (the numbers behind
  ``relations_<kind>.png``)."""
  rho = relations_rho(t, kind, metric)
  rels = [(x, name) for x, name, _ in RELATIONS if x in rho]
  out = [f"### Relations with the `{metric}` barrier within each t, {KIND_LABEL.get(kind, kind)}", "",
         f"Spearman's ρ [{LEVEL:.0%} interval from {N_BOOT} resamples of whole seeds] over the pairs with σ > 0 that "
         "did not diverge (n: the pairs with both numbers).", "",
         "| t | " + " | ".join(name for _, name in rels) + " |", "| --- |" + " --- |" * len(rels)]
  for _, r in rho.iterrows():
    out.append(f"| {time_label(r['t'], r['steps_per_epoch'])} | "
               + " | ".join(fmt_rho(r[x]) for x, _ in rels) + " |")
  return out


def relations_figure(t: pd.DataFrame, kind: str, metric: str, width: float = FIGURE1_WIDTH):
  """Each relation of :data:`RELATIONS` against the ``metric`` barrier for one kind at a column's width (``width``
  inches): a panel per relation, the pairs with σ > 0 that did not diverge coloured by their perturbation time t
  (light to dark, a legend entry per t), so that the relation within each t reads along one colour; ρ within each t
  is :func:`relations_table`'s, in map.md."""
  from matplotlib import colormaps
  from matplotlib.figure import Figure
  from matplotlib.ticker import LogLocator, NullFormatter
  d = t[(t["kind"] == kind) & (t["sigma"] > 0) & ~t["pair_diverged"].astype(bool)]
  d = d.assign(value=d[f"vs_child0.barrier.{metric}"].astype(float))
  rels = [r for r in RELATIONS if r[0] in d]
  steps = sorted(d["t"].unique())
  spe = int(d["steps_per_epoch"].iloc[0])
  fs = 8.0
  fig = Figure(figsize=(width, 1.9 * len(rels) + 1.0), layout="constrained")
  axes = fig.subplots(len(rels), 1, squeeze=False)[:, 0]
  cmap = colormaps["viridis_r"]
  colors = {step: cmap(0.1 + 0.85 * i / max(len(steps) - 1, 1)) for i, step in enumerate(steps)}
  top = max(float(np.nanmax(d["value"])) if len(d) else 0.0, P.BARRIER_LINTHRESH)
  for ax, (x, name, xscale) in zip(axes, rels):
    for step in steps:
      g = d[d["t"] == step]
      ax.scatter(g[x].astype(float), g["value"], s=11, color=colors[step], edgecolors="none", alpha=0.85,
                 label=time_label(int(step), spe))
    ax.set_xscale(xscale)
    if xscale == "log":  # label the decades only: minor labels collide on a narrow range
      ax.xaxis.set_major_locator(LogLocator(numticks=5))
      ax.xaxis.set_minor_formatter(NullFormatter())
    P.symlog(ax, "y")
    ax.set_ylim(-0.1 * P.BARRIER_LINTHRESH, 3 * top)  # barriers are ≥ 0
    ax.tick_params(labelsize=fs - 0.5)
    ax.set_ylabel(f"{metric.replace('.', ' ')} barrier", fontsize=fs)
    ax.set_xlabel(name, fontsize=fs)
    ax.grid(True, alpha=0.3)
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=fs - 1, handletextpad=0.2,
             columnspacing=0.8, frameon=False, markerscale=1.3, title="perturbation time t",
             title_fontsize=fs - 1)
  fig.suptitle(f"{KIND_LABEL.get(kind, kind)}: relations with the barrier", fontsize=fs)
  return fig


def figure1_sigmas(sigmas, ratio: float = 100.0, most: int = 4) -> list:
  """The σ :func:`figure1` draws by default: the grid's smallest σ > 0, then each next σ at least ``ratio`` times
  the last drawn (every other decade on a grid of decades), at most ``most``: few lines, each telling its own story
  (σ on the plateau draw on top of each other)."""
  out = []
  for s in sorted({float(v) for v in sigmas if float(v) > 0}):
    if len(out) < most and (not out or s >= ratio * out[-1] * (1 - 1e-9)):
      out.append(s)
  return out


def _barrier_panel(ax, c: pd.DataFrame, sigmas, styles, fs: float) -> tuple:
  """Figure 1's lines on ``ax``: per σ of ``sigmas``, the seed-mean barrier of :func:`cells` ``c`` against t with a
  min-max band; a t where pairs diverged gets ✕ at the top (their number beside it), the mean over the others.
  Returns how many rows of ✕ it drew and the largest barrier drawn (0 if none)."""
  rows, top = 0, 0.0
  for s in sigmas:
    g = c[c["sigma"] == s].sort_values("t")
    color, marker = styles.style(s)
    ax.plot(g["t"], g["mean"], marker=marker, color=color, ms=4.5, lw=1.4, label=f"σ = {s:g}", mfc="white")
    if len(g) > 1:
      ax.fill_between(g["t"], g["min"], g["max"], color=color, alpha=0.15, linewidth=0)
    top = max([top] + [v for v in g["max"] if np.isfinite(v)])
    hit = g[g["diverged"] > 0]
    if len(hit):
      P.excluded(ax, hit["t"], hit["diverged"], color, row=rows)
      rows += 1
  ax.tick_params(labelsize=fs - 0.5)
  return rows, top


def _scale_band(ax, values: dict, fs: float) -> None:
  """The full-permutation barrier as a grey line at its mean over networks and a band from its min to max."""
  v = np.asarray(list(values.values()), float)
  ax.axhspan(v.min(), v.max(), color="0.55", alpha=0.25, linewidth=0)
  ax.axhline(v.mean(), color="0.35", lw=1.3, ls="-", label=f"full permutation ({len(v)} network{'s' * (len(v) > 1)})")


def figure1(t: pd.DataFrame, kind: str = "batch", metric: str = "train.loss", criterion=None, scale=None,
            sigmas=None, width: float = FIGURE1_WIDTH, extra: bool = False, search=None):
  """The paper's Figure 1 for one kind of a map, at a column's width (``width`` inches): the barrier after training
  against the perturbation time t, one line per σ (seed mean, band: min-max over seeds), with

  - (a) the ``metric`` barrier (the paper's: train loss), and the full-permutation barrier as a grey line (mean
    over networks) in a band (min-max) where ``scale`` (:func:`read_scale`'s ``{metric: {seed: value}}``) has it;
  - (b) the ``criterion`` metric's barrier (default :data:`CRITERION`: the test error) with the criterion drawn as a
    dashed line, and its full-permutation barrier likewise;
  - (c) σ*(t) at the criterion (:func:`sigma_star` on the seed means: hollow circle inside the bracket's bar,
    censored t as ▽ at the grid's smallest σ or △ at its largest, small circles each seed's own σ*); with
    ``search`` (:func:`read_search`: a per-seed threshold search of this kind at the criterion), σ* by that search
    instead (:func:`search_sigma_star`: the seeds' geometric mean inside a bar spanning their brackets).

  A panel whose barrier the table lacks is left out. t is on a symlog axis in steps (t = 0 at its left end, linear
  up to 10 steps, labelled at 0 and the decades), the whole epochs marked by dotted lines; barriers are symlog,
  linear below 1e-3. ``sigmas``: the σ drawn (default :func:`figure1_sigmas`); ``extra``: the children trained T
  steps after t (said in the title). ``t``: :func:`pairs`."""
  from matplotlib.figure import Figure
  from matplotlib.lines import Line2D
  metric_c, level = criterion or CRITERION
  d = t[(t["kind"] == kind) & (t["sigma"] > 0)]
  if d.empty:
    raise ValueError(f"figure1: no pairs of kind {kind!r}")
  sigmas = figure1_sigmas(d["sigma"]) if sigmas is None else sorted(float(v) for v in sigmas)
  metrics = [m for m in dict.fromkeys((metric, metric_c)) if f"vs_child0.barrier.{m}" in d]
  star = sigma_star(d, metric_c, level) if f"vs_child0.barrier.{metric_c}" in d else None
  if search is not None:
    if search["kind"] != kind or (search["metric"], float(search["threshold"])) != (metric_c, float(level)):
      raise ValueError(f"figure1: the search is of {search['kind']} at a {search['metric']} barrier of "
                       f"{search['threshold']:g}; panel (c) draws {kind} at {metric_c} {level:g}")
    star = search_sigma_star(search, int(d["steps_per_epoch"].iloc[0]))
  n = len(metrics) + (star is not None)
  if not n:
    raise ValueError(f"figure1: the table has neither a {metric} nor a {metric_c} barrier")
  fs = 8.0
  fig = Figure(figsize=(width, 1.75 * n + 1.25), layout="constrained")
  axes = list(fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0])
  styles = P.SigmaStyles(d["sigma"])
  spe = int(d["steps_per_epoch"].iloc[0])
  steps = sorted(d["t"].unique())
  letters = iter("abcd")
  handles = []
  for ax, m in zip(axes, metrics):
    rows, top = _barrier_panel(ax, cells(d, m), sigmas, styles, fs)
    if not handles:
      handles += ax.get_legend_handles_labels()[0]
    if scale and scale.get(m):
      _scale_band(ax, scale[m], fs)
    if m == metric_c:
      text = f"{100 * level:g}% {m.split('.')[1]}" if m.endswith(".error") else f"{level:g}"
      ax.axhline(level, color="k", ls="--", lw=1.2,
                 label=text + (" (LMC criterion)" if (metric_c, level) == CRITERION else " (criterion)"))
    P.symlog(ax, "y")
    shown = [top, *(scale or {}).get(m, {}).values(), level if m == metric_c else 0, P.BARRIER_LINTHRESH]
    ax.set_ylim(-0.1 * P.BARRIER_LINTHRESH, 3 * max(shown))  # barriers are ≥ 0: nothing below 0 to show
    P.pad_top(ax, rows)
    split, name = m.split(".")
    ax.set_ylabel(f"{split} {name} barrier", fontsize=fs)
    ax.set_title(f"({next(letters)}) {split}-{name} barrier", fontsize=fs, loc="left")
  for h in (ax.get_legend_handles_labels() for ax in axes):
    handles += [x for x, lab in zip(*h) if not lab.startswith("σ =") and lab not in [y.get_label() for y in handles]]
  if star is not None:
    ax = axes[-1]
    draw_sigma_star(ax, star, ms=5.5, censored_ms=9, colors={kind: STAR_COLOR})
    ax.set_yscale("log")
    if search is None or (star["status"] != "bracketed").any() or star["bracket_lo"].isna().all():
      ax.set_ylim(float(star["lo"].min()) / 4, float(star["hi"].max()) * 4)
    else:  # the searched range is far wider than where σ* was found: zoom to the brackets
      ax.set_ylim(float(star["bracket_lo"].min()) / 4, float(star["bracket_hi"].max()) * 4)
    ax.set_ylabel("σ*", fontsize=fs)
    ax.tick_params(labelsize=fs - 0.5)
    split, name = metric_c.split(".")
    text = f"{100 * level:g}% {split}-{name}" if name == "error" else f"{split}-{name} {level:g}"
    ax.set_title(f"({next(letters)}) σ* at {text}, searched per seed" if search else
                 f"({next(letters)}) σ* for a seed-mean barrier of {text}", fontsize=fs, loc="left")
    grey = STAR_COLOR
    bar = "σ*, bar: seeds' brackets" if search else "σ*, bar: its bracket"
    handles += [Line2D([], [], color=grey, marker="o", mfc="white", ms=5, label=bar),
                Line2D([], [], color=grey, marker="v", mfc="none", ms=7, ls="none", label="σ* below the grid"),
                Line2D([], [], color=grey, marker="^", mfc="none", ms=7, ls="none", label="σ* above the grid")]
  epochs = [v for v in steps if v and v % spe == 0]
  for ax in axes:
    P.symlog(ax, "x", linthresh=10)
    ax.set_xlim(-3, max(steps) * 1.3)  # t = 0 at the left end, on the axis's linear part
    ax.grid(True, which="major", alpha=0.3)
    for step in epochs:
      ax.axvline(step, color="0.7", ls=":", lw=0.8)
  for i, step in enumerate(epochs):  # the whole epochs, above the top panel: "epoch 1  2  4"
    axes[0].annotate(f"{step // spe}", (step, 1.0), xycoords=axes[0].get_xaxis_transform(), xytext=(0, 2),
                     textcoords="offset points", ha="center", va="bottom", fontsize=fs - 1, color="0.35")
    if not i:
      axes[0].annotate("epoch", (step, 1.0), xycoords=axes[0].get_xaxis_transform(), xytext=(-5, 2),
                       textcoords="offset points", ha="right", va="bottom", fontsize=fs - 1, color="0.35")
  axes[-1].set_xlabel("perturbation time t (steps)", fontsize=fs)
  fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=fs - 1, handlelength=1.6,
             columnspacing=0.8, frameon=False)
  n_seeds = int(d.groupby(["t", "sigma"])["seed"].nunique().max())
  seeds = f"{n_seeds} seeds: mean, band min-max" if n_seeds > 1 else "1 seed"
  fig.suptitle(f"{KIND_LABEL.get(kind, kind)}; {seeds}" + ("\nextra steps: every child trains T steps after t"
                                                          if extra else ""), fontsize=fs)
  return fig


# ---------------------------------------------------------------------------------------------------------
# The figures' captions (in map.md, and on the report page).


def map_caption(t: pd.DataFrame, kind: str, metric: str, extra: bool = False) -> str:
  """The caption of :func:`map_figure` for the pairs ``t`` (:func:`pairs`) of one kind."""
  return (f"Heatmap of the seed-mean {metric} barrier after training, {KIND_LABEL.get(kind, kind)}: perturbation "
          f"time t down, σ ({_unit(kind)}) across, each on its own grid. A cell is labelled with its mean over the "
          "pairs that did not diverge and, where some did, how many of its pairs diverged (counted, not dropped); "
          f"colours on a log scale, barriers below {FLOOR:g} in its colour ({n_text(t)}). map.md lists each cell's "
          "mean [min, max], n and d." + (" Every perturbed child (and the σ = 0 twin) trains T steps after t; "
                                          "child 0, the reference, ends at T." if extra else ""))


def threshold_caption(t: pd.DataFrame, metric: str, thresholds) -> str:
  """The caption of :func:`threshold_figure` for the pairs ``t`` (:func:`pairs`) and ``thresholds``."""
  rows = (["whole-network kinds"] if (t["kind"] != "single").any() else []) + (
      ["a single weight (σ in units of its init RMS)"] if (t["kind"] == "single").any() else [])
  levels = ", ".join(f"{v:g}" for v in thresholds)
  return (f"σ*(t), the σ at which the seed-mean {metric} barrier reaches each threshold ({levels}; a panel each), "
          f"one row of panels for {' and one for '.join(rows)}: the seed-mean σ* as a hollow circle, interpolated "
          "log-linearly between the two measured σ around the crossing, inside a bar spanning them (the bracket); "
          "small circles: each seed's own σ*; ▽ at the grid's smallest σ: that σ already reaches the threshold (σ* "
          "below the grid); △ at its largest: no σ of the grid reaches it (σ* above the grid). A diverged pair counts "
          f"as above every threshold ({n_text(t)}).")


def relations_caption(t: pd.DataFrame, kind: str, metric: str) -> str:
  """The caption of :func:`relations_figure` for the pairs ``t`` (:func:`pairs`) of one kind."""
  d = t[(t["kind"] == kind) & (t["sigma"] > 0) & ~t["pair_diverged"].astype(bool)]
  names = [name for col, name, _ in RELATIONS if col in d]
  listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)
  return (f"{listed[:1].upper() + listed[1:]} against the {metric} barrier, {KIND_LABEL.get(kind, kind)}, a panel "
          "each (pairs with σ > 0 that did not diverge), coloured by the perturbation time t: the relation within a t "
          f"reads along one colour. Spearman's ρ within each t, with its {LEVEL:.0%} interval from {N_BOOT} resamples "
          "of whole seeds (the pairs of one seed share a trunk and child 0, so they are not independent), is in the "
          f"table above ({n_text(d)}).")


def figure1_caption(t: pd.DataFrame, kind: str, metric: str, scaled: bool, search=None) -> str:
  """The caption of :func:`figure1` for the pairs ``t`` (:func:`pairs`) of one kind."""
  d = t[(t["kind"] == kind) & (t["sigma"] > 0)]
  return (f"The paper's Figure 1 here, {KIND_LABEL.get(kind, kind)}: (a) the seed-mean {metric} barrier and (b) the "
          "test-error barrier against the perturbation time t, one line per σ"
          + (", the full-permutation barrier (a network against fully permuted copies of itself) as a grey line in "
             "its min-max band" if scaled else "")
          + "; the dashed line is the 2% error criterion of linear mode connectivity; (c) σ*(t) at that criterion, "
          + (f"from a threshold search per seed (bisection in log σ, {search['rounds']} rounds of "
             f"{search['points']} σ, stopped at brackets within ×{search['factor']:g}): the geometric mean of the "
             "seeds' σ* inside a bar spanning their brackets, small circles each seed's own"
             if search else "inside the bracket of the two measured σ around the crossing")
          + f" ({n_text(d)}).")


# ---------------------------------------------------------------------------------------------------------
# Everything, into a folder.


def why_no_map(t: pd.DataFrame) -> str:
  """Why ``t`` (:func:`pairs`) has no map ("" if it has one): a map needs pairs at two perturbation times or more
  and two σ > 0 or more."""
  if t.empty:
    return "no finished perturbed pairs"
  if t["t"].nunique() < 2 or t.loc[t["sigma"] > 0, "sigma"].nunique() < 2:
    return (f"the pairs do not vary both perturb.time and σ ({t['t'].nunique()} perturbation times, "
            f"{t.loc[t['sigma'] > 0, 'sigma'].nunique()} σ > 0)")
  return ""


def _write(fig, path: Path, dpi: int) -> Path:
  fig.savefig(path, dpi=dpi)
  return path


def write_map(t: pd.DataFrame, out_dir, metric: str = "train.loss", thresholds=DEFAULT_THRESHOLDS,
              suffix: str = "", figures: bool = True, scale=None, searches=None) -> list[Path]:
  """One setting's map into ``out_dir``: ``map.md`` (:func:`markdown`) and, when ``figures``, ``map_<kind>.png``,
  ``threshold.png``, ``relations_<kind>.png`` and, per kind other than a single weight, ``figure1_<kind>.png``
  (:func:`figure1`, with ``scale``'s full-permutation barrier where given, and σ* by the search of its kind in
  ``searches``, ``{kind:`` :func:`read_search` ``}``, where given), with their captions at the end of
  ``map.md`` (as ``figures.md`` lists the report's), each name ending in ``suffix`` (``__<setting>`` where a table
  holds several). ``t``: :func:`pairs`. Returns the paths written."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  extra = "perturb.extra_steps" in t.columns and bool(t["perturb.extra_steps"].fillna(False).any())
  cell_table = cells(t, metric)
  stars = {v: sigma_star(t, metric, v) for v in thresholds}
  paths, made = [out / f"map{suffix}.md"], []
  if figures:
    for kind, g in cell_table.groupby("kind"):
      made.append((f"map_{kind}{suffix}", map_caption(t[t["kind"] == kind], kind, metric, extra)))
      paths.append(_write(map_figure(g, kind, metric, extra), out / f"{made[-1][0]}.png", 130))
    n = int(t.groupby(["kind", "t", "sigma"])["seed"].nunique().max())
    made.append((f"threshold{suffix}", threshold_caption(t, metric, thresholds)))
    paths.append(_write(threshold_figure(stars, metric, n), out / f"{made[-1][0]}.png", 130))
    for kind in sorted(t["kind"].unique()):
      made.append((f"relations_{kind}{suffix}", relations_caption(t, kind, metric)))
      paths.append(_write(relations_figure(t, kind, metric), out / f"{made[-1][0]}.png", 200))
    for kind in sorted(set(t["kind"].unique()) - {"single"}):  # one weight's σ has another unit
      search = (searches or {}).get(kind)
      made.append((f"figure1_{kind}{suffix}", figure1_caption(t, kind, metric, scale is not None, search)))
      paths.append(_write(figure1(t, kind, metric, scale=scale, extra=extra, search=search),
                          out / f"{made[-1][0]}.png", 200))
  text = markdown(cell_table, stars, metric)
  for kind in sorted(t["kind"].unique()):  # ρ within each t: the numbers behind relations_<kind>.png
    text += "\n" + "\n".join(relations_table(t, kind, metric)) + "\n"
  if made:  # the figures' captions: their one home, which the report page shows too
    text += "\n".join(["", "### Figures", ""] + [figure_line(name, caption, ("png",)) for name, caption in made]) + "\n"
  paths[0].write_text(text)
  return paths


def make_map(table: pd.DataFrame, out_dir, metric: str = "train.loss", thresholds=DEFAULT_THRESHOLDS,
             figures: bool = True, scale=None, searches=()) -> list[Path]:
  """The instability map of a report table (:func:`butterfly_jax.report.load_table`, or :func:`read_table`) into
  ``out_dir``: per setting (config fields other than seed, t, σ and the perturbation that differ between runs,
  as the report's figures split them), :func:`write_map` with the setting in the file names where there are
  several. A setting whose pairs do not vary both t and σ is skipped with a printed note. ``thresholds``: the
  barrier values σ*(t) is found for (one panel each). ``scale``: the full-permutation barrier that
  ``figure1_<kind>.png`` draws (:func:`read_scale`: ``{metric: {seed: value}}``), or a path :func:`read_scale`
  reads. ``searches``: per-seed threshold searches (:func:`read_search`'s paths), at most one per kind, whose σ*
  ``figure1_<kind>.png`` draws in place of the grid's. Returns the paths written; raises ReportError where no
  setting has a map."""
  thresholds = tuple(float(v) for v in thresholds)
  if not thresholds or any(not (v > 0 and math.isfinite(v)) for v in thresholds):
    raise ValueError(f"thresholds: every threshold must be a positive finite number, got {thresholds}")
  column = f"vs_child0.barrier.{metric}"
  if column not in table:
    raise ReportError(f"the table has no {column} column: no {metric} barrier to map")
  if scale is not None and not isinstance(scale, Mapping):
    scale = read_scale(scale)
  by_kind = {}
  for path in searches or ():
    search = read_search(path)
    if search["kind"] in by_kind:
      raise ValueError(f"searches: two searches of the {search['kind']} direction ({path})")
    by_kind[search["kind"]] = search
  t = pairs(table)
  groups = settings(t) if not t.empty else [("", t)]
  paths, skipped = [], []
  for label, rows in groups:
    why = why_no_map(rows)
    if why:
      skipped.append(f"{label or 'the table'}: {why}")
      continue
    paths += write_map(rows, out_dir, metric, thresholds, f"__{slug(label)}" if label else "", figures, scale,
                       by_kind)
  if not paths:
    raise ReportError(f"no instability map: {'; '.join(skipped)}")
  for note in skipped:
    print(f"note: skipped the instability map of {note}")
  return paths
