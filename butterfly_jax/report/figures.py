"""The report's figures, from the pair table (:func:`butterfly_jax.report.load_table`) and, for the curves over
training, the trajectories (:func:`butterfly_jax.report.load_trajectories`).

:func:`make_figures` writes every figure the table supports as PNG and PDF, and ``figures.md`` with a one-line
caption per figure; a figure whose columns are missing (no aligned metrics, one perturbation time, ...) is
skipped with a printed note, listed in ``figures.md``. Only finished runs are plotted. Lines are means over seeds
with a min–max band; pairs without a barrier (a diverged pair, or a non-finite interpolation path) are left out of
the means, drawn as ✕ at the top of the panel at their σ (or t, or pre-training) and listed in the caption; the
scatter figures leave them out and count them in the title and caption. Each title and caption says how many
pairs (or runs) and seeds the figure shows. Barriers are drawn on symlog axes shared along a row of panels, σ in
one fixed colour and marker per decade, t in categorical colours and markers (:mod:`plotting`); the relation
figures (L2, CKA, ensembles, fixed points) put the train-loss barrier against the related quantity.

When the table holds several settings (config fields other than seed, t, σ and the perturbation that
differ between runs, e.g. ``optim.name``), every figure is made once per setting, named ``NAME__field-value``.
"""

from pathlib import Path

import numpy as np

from butterfly_jax.report import context as C
from butterfly_jax.report import plotting as P
from butterfly_jax.report.finetune import barrier_vs_pretraining
from butterfly_jax.report.page import figure_line
from butterfly_jax.report.pairs import (aligned_barrier, barrier_vs_l2, cka_vs_barrier, ensemble_vs_barrier,
                                        fixed_points)
from butterfly_jax.report.training import barrier_over_training, l2_from_init

_CONFIG_SECTIONS = ("model.", "data.", "train.", "optim.", "schedule.", "perturb.")
# Config fields that are the figures' axes, averaged over, or not part of the experiment (paths; the tokenizer
# goes with the checkpoint, like init.checkpoint).
# The mask's fields are part of the `perturbation` label (e.g. batch/single-weight, gaussian/masked).
_NOT_SETTINGS = ("perturb.seed", "perturb.time", "perturb.kind", "perturb.scales", "perturb.scale",
                 "perturb.mask.", "perturb.init_draws", "data.dir", "data.tfds_dir", "data.tokenizer", "train.loss",
                 "train.accuracy", "train.metric")


def _barrier_cols(metrics) -> tuple:
  return tuple(C.barrier_col(split, metric) for metric in metrics for split in C.SPLITS)


def _rows_text(df, metrics) -> str:
  """``loss, error`` (and a text task's metric) for a caption's "rows: ..."."""
  return ", ".join(C.metric_name(df, m) + (" (on 1 − metric)" if m == "metric" else "") for m in metrics)


def settings(df) -> list:
  """(label, rows) per setting: the combinations of config fields that vary between runs, other than seed,
  t, σ, the perturbation (kind and mask variant) and paths. One ("", df) when nothing else varies."""
  cols = [c for c in df.columns if c.startswith(_CONFIG_SECTIONS) and not c.startswith(_NOT_SETTINGS)
          and df[c].astype(str).nunique() > 1]
  if not cols:
    return [("", df)]
  keys = df[cols].astype(str)
  out = []
  for key, rows in df.groupby([keys[c] for c in cols], sort=True):
    key = key if isinstance(key, tuple) else (key,)
    out.append((", ".join(f"{c}={v}" for c, v in zip(cols, key)), rows))
  return out


def _finished(table):
  df = table[table["status"] == "finished"].copy()
  if df.empty:
    return df
  df["sigma"] = df["perturb.scale"].astype(float)
  df["kind"] = df["perturbation"].map(P.base_kind)
  df["t"] = df["t"].astype(int)
  df["t_epochs"] = df["t_epochs"].astype(float)
  return df


# ---------------------------------------------------------------------------------------------------------
# Barriers against σ and t (the paper's Figs. 1, 2, 5, 9-12).


def _barrier_axes(ax, metric, first_col):
  """A barrier panel's y: symlog (barriers span 1e-5 to nats), labelled in the first column of a shared row."""
  P.symlog(ax)
  if first_col:
    ax.set_ylabel(P.barrier_label(metric))
  ax.grid(alpha=0.3)


def _variant_caption(df) -> str:
  perts = sorted(df["perturbation"].unique())
  if len(perts) < 2:
    return ""
  return " Line style: perturbation (" + ", ".join(f"{p}: {P.variant_line_name(p)}" for p in perts) + ")."


_SYMLOG_CAPTION = (f" The y axes are symlog (linear below {P.BARRIER_LINTHRESH:g}, logarithmic above: barriers span "
                   "several orders of magnitude) and shared along each row.")


def barrier_vs_sigma(ctx):
  for kind in sorted(ctx.df["kind"].unique()):
    name = ctx.name(f"barrier_vs_sigma_{kind}")
    df = ctx.df[ctx.df["kind"] == kind]
    if not C.has(df, C.barrier_col("train", "loss")):
      ctx.out.skip(name, "no barrier values")
      continue
    finite = df[np.isfinite(df[C.barrier_col("train", "loss")].astype(float))]
    if not (finite["sigma"] > 0).any():
      ctx.out.skip(name, "no pair with σ > 0 and finite barriers")
      continue
    axis = P.SigmaAxis(df["sigma"])  # every σ, those whose pairs have no barrier included (drawn as ✕)
    lines = C.line_styles(df["perturbation"])
    metrics = C.barrier_metrics(df)
    fig, axes = P.new_figure(len(metrics), 2, sharey="row")
    counts, excluded = [], [0] * len(metrics)
    for r, metric in enumerate(metrics):
      for c, split in enumerate(C.SPLITS):
        ax = axes[r][c]
        col = C.barrier_col(split, metric)
        agg = P.aggregate(df, ["perturbation", "t", "sigma"], col)
        counts += list(agg["n"])
        series = list(agg.groupby(["perturbation", "t"]))
        for i, ((pert, t), g) in enumerate(series):
          color, marker, ls = ctx.tpal(t), ctx.tpal.marker(t), lines[pert]
          pos, zero = g[g["sigma"] > 0], g[g["sigma"] == 0]
          if len(pos):
            P.band(ax, pos["sigma"], pos["mean"], pos["min"], pos["max"], color, marker=marker, linestyle=ls)
          if len(zero):
            P.points(ax, [axis.zero_slot(i, len(series))] * len(zero), zero["mean"], zero["min"], zero["max"],
                     color, marker)
        excluded[r] = max(excluded[r], C.draw_excluded(ax, df, col, ["perturbation", "t"], "sigma",
                                                       lambda key: ctx.tpal(key[1]), axis.x))
        axis.style(ax)
        if r == len(metrics) - 1:
          ax.set_xlabel(P.SIGMA_LABEL)
        ax.set_title(f"{split} {C.metric_name(df, metric)} barrier")
        _barrier_axes(ax, metric, c == 0)
      P.pad_top(axes[r][0], excluded[r])
    entries = ctx.time_legend(df)
    what = "colour and marker: perturbation time t"
    if df["perturbation"].nunique() > 1:
      entries += ctx.variant_legend(df["perturbation"])
      what += "; line style: perturbation"
    if any(excluded):
      entries.append((P.EXCLUDED_LABEL, "k", P.EXCLUDED_MARKER, "none"))
    C.legend(fig, entries, title=what)
    C.title(fig, f"Barrier after training vs perturbation scale σ: {kind} perturbations", df, ctx.extra, shown=True,
            n=C.n_text(df))
    single = any(P.variant(p) == "single-weight" for p in df["perturbation"].unique())
    caption = (f"Barrier between child 0 and child k after training (rows: {_rows_text(df, metrics)}; columns: "
               f"train, test) vs σ (log axis) for {kind} perturbations, one line per perturbation time t (colour and marker); mean "
               f"over seeds, shaded band (error bars for lone points): {P.SPREAD} ({C.n_text(df)}; "
               f"{P.per_point(counts)}). σ = 0, the unperturbed twin, "
               "is drawn as hollow markers in the slot left of the dotted line (spread sideways so that none hides "
               "another), which is a label, not a position on the log axis." + _SYMLOG_CAPTION + _variant_caption(df))
    if single:
      caption += (" Single-weight runs: their σ is relative to that one weight's expected magnitude at init, not the "
                  "whole network's.")
    ctx.out.emit(name, fig,
                 caption + C.excluded_phrase(df, _barrier_cols(metrics), "sigma", P.sigma_text) + ctx.setting)


def barrier_vs_time(ctx):
  for kind in sorted(ctx.df["kind"].unique()):
    name = ctx.name(f"barrier_vs_time_{kind}")
    df = ctx.df[ctx.df["kind"] == kind]
    if not C.has(df, C.barrier_col("train", "loss")):
      ctx.out.skip(name, "no barrier values")
      continue
    if df["t"].nunique() < 2:
      ctx.out.skip(name, f"one perturbation time only (t = {df['t'].iloc[0]} steps)")
      continue
    x_max = df["t_epochs"].max()
    x_min_pos = df.loc[df["t_epochs"] > 0, "t_epochs"].min()
    symlog = bool(x_min_pos) and x_max / x_min_pos > 100
    lines = C.line_styles(df["perturbation"])
    metrics = C.barrier_metrics(df)
    fig, axes = P.new_figure(len(metrics), 2, sharey="row")
    counts, excluded = [], [0] * len(metrics)
    for r, metric in enumerate(metrics):
      for c, split in enumerate(C.SPLITS):
        ax = axes[r][c]
        col = C.barrier_col(split, metric)
        agg = P.aggregate(df, ["perturbation", "sigma", "t_epochs"], col)
        counts += list(agg["n"])
        for (pert, sigma), g in C.zero_last(agg.groupby(["perturbation", "sigma"])):
          P.band(ax, g["t_epochs"], g["mean"], g["min"], g["max"], ctx.spal(sigma), marker=ctx.spal.marker(sigma),
                 linestyle=lines[pert])
        excluded[r] = max(excluded[r], C.draw_excluded(ax, df, col, ["perturbation", "sigma"], "t_epochs",
                                                       lambda key: ctx.spal(key[1])))
        if symlog:
          P.symlog(ax, "x", linthresh=x_min_pos)
        ax.set_xlabel("perturbation time t (epochs)" + (", symlog axis" if symlog else ""))
        ax.set_title(f"{split} {C.metric_name(df, metric)} barrier")
        _barrier_axes(ax, metric, c == 0)
      P.pad_top(axes[r][0], excluded[r])
    entries = ctx.sigma_legend(df["sigma"])  # σ whose pairs all lost their barrier too: their ✕ take its colour
    what = "colour and marker: σ (perturbation norm / network norm at init)"
    if df["perturbation"].nunique() > 1:
      entries += ctx.variant_legend(df["perturbation"])
      what += "; line style: perturbation"
    if any(excluded):
      entries.append((P.EXCLUDED_LABEL, "k", P.EXCLUDED_MARKER, "none"))
    C.legend(fig, entries, title=what)
    C.title(fig, f"Barrier after training vs perturbation time: {kind} perturbations", df, ctx.extra, shown=True,
            n=C.n_text(df))
    caption = (f"Barrier after training (rows: {_rows_text(df, metrics)}; columns: train, test) vs perturbation "
               f"time t in epochs "
               f"for {kind} perturbations, one line per σ (colour and marker; σ = 0 in grey); mean over seeds, "
               f"shaded band: {P.SPREAD} ({C.n_text(df)}; {P.per_point(counts)})."
               + _SYMLOG_CAPTION + _variant_caption(df))
    ctx.out.emit(name, fig,
                 caption + C.excluded_phrase(df, _barrier_cols(metrics), "sigma", P.sigma_text) + ctx.setting)



FIGURES = (barrier_vs_sigma, barrier_vs_time, barrier_vs_l2, l2_from_init, barrier_over_training, fixed_points,
           cka_vs_barrier, ensemble_vs_barrier, aligned_barrier, barrier_vs_pretraining)


def make_figures(table, out_dir, trajectories=None, only=None) -> list[Path]:
  """Writes every figure the table supports (PNG and PDF) and ``figures.md`` into ``out_dir``; returns the paths.

  ``table``: :func:`butterfly_jax.report.load_table`; ``trajectories``: :func:`butterfly_jax.report.load_trajectories`
  (without it the curves over training are skipped); ``only``: names of figure functions in ``FIGURES`` to make
  (default all), e.g. ``("barrier_vs_sigma", "fixed_points")``.
  """
  known = {f.__name__: f for f in FIGURES}
  unknown = set(only or ()) - set(known)
  if unknown:
    raise ValueError(f"make_figures: unknown figures {sorted(unknown)}; known: {', '.join(known)}")
  chosen = [known[n] for n in only] if only else FIGURES
  out = C.Out(out_dir)
  df = _finished(table)
  if df.empty:
    out.skip("all figures", "no finished runs")
  else:
    for label, rows in settings(df):
      traj = None if trajectories is None else trajectories[trajectories["run"].isin(rows["run"])]
      ctx = C.Context(rows, traj, label, out)
      for figure in chosen:
        figure(ctx)
  return out.paths + [_write_captions(out, df)]


def _write_captions(out, df) -> Path:
  runs = df["run"].nunique() if not df.empty else 0
  lines = ["# Figures", "",
           f"From {runs} finished run{'s' if runs != 1 else ''} ({len(df)} child pairs). Each figure is a PNG and a "
           "PDF; lines are means over seeds, shaded bands and error bars the min–max over seeds. σ has the same "
           "colour and marker in every figure (σ = 0 grey); barrier axes are symlog, linear below "
           f"{P.BARRIER_LINTHRESH:g}.", ""]
  for name, caption in out.made:
    lines.append(figure_line(name, caption))
  if out.skipped:
    lines += ["", "Skipped:", ""] + [f"- {name}: {reason}" for name, reason in out.skipped]
  path = out.out_dir / "figures.md"
  out.out_dir.mkdir(parents=True, exist_ok=True)
  path.write_text("\n".join(lines) + "\n")
  return path
