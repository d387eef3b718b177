"""The pre-training figure (the paper's Figure 5): fine-tuning barriers against the amount of pre-training."""

import re
from pathlib import PurePath

import numpy as np

from butterfly_jax.config import parse_init_checkpoint
from butterfly_jax.report import context as C
from butterfly_jax.report import plotting as P

# A pre-training step in a checkpoint folder's name: the MultiBERTs' "multiberts-seed_0-step_20k" (20,000 steps),
# OLMo's revisions "step20000-tokens84B"; the last such step in the name counts.
_STEP_IN_NAME = re.compile(r"step[_-]?(\d+)(k?)(?![0-9a-zA-Z])", re.IGNORECASE)


def pretraining_steps(init_checkpoint) -> float:
  """The step of ``init.checkpoint``: ``"RUN_DIR:STEP"`` (:func:`butterfly_jax.config.parse_init_checkpoint`), or a
  Hugging Face checkpoint folder (or a file in it) whose name says its step (:data:`_STEP_IN_NAME`); NaN for runs
  that start from a fresh init or weights without a step."""
  weights, step = parse_init_checkpoint(init_checkpoint)
  if step is not None:
    return float(step)
  path = PurePath(weights) if weights else None
  if path is None:
    return float("nan")
  name = path.parent.name if path.suffix and not _STEP_IN_NAME.search(path.name) else path.name
  found = list(_STEP_IN_NAME.finditer(name))
  if not found:
    return float("nan")
  digits, thousands = found[-1].groups()
  return float(int(digits) * (1000 if thousands else 1))


def barrier_vs_pretraining(ctx):
  """Train-loss barrier vs pre-training steps, one panel per σ > 0, one line per perturbation time."""
  name = ctx.name("barrier_vs_pretraining")
  if "init.checkpoint" not in ctx.df:
    ctx.out.skip(name, "no fine-tuning runs (init.checkpoint)")
    return
  df = ctx.df.assign(pretrain=ctx.df["init.checkpoint"].map(pretraining_steps))
  df = df[np.isfinite(df["pretrain"]) & (df["sigma"] > 0)]
  if df["pretrain"].nunique() < 2:
    ctx.out.skip(name, "fewer than two amounts of pre-training")
    return
  col = C.barrier_col("train", "loss")
  sigmas = sorted(df["sigma"].unique())  # a σ whose pairs all diverged too: a panel of ✕
  fig, axes = P.new_figure(1, len(sigmas), height=3.8, sharey=True)  # the panels compare: one y axis, from 0
  counts = []
  positive = df.loc[df["pretrain"] > 0, "pretrain"]
  excluded = 0
  for ax, sigma in zip(axes[0], sigmas):
    agg = P.aggregate(df[df["sigma"] == sigma], ["t", "pretrain"], col)
    counts += list(agg["n"])
    for t, g in agg.groupby("t"):
      P.band(ax, g["pretrain"], g["mean"], g["min"], g["max"], ctx.tpal(t), marker=ctx.tpal.marker(t))
    excluded = max(excluded, C.draw_excluded(ax, df[df["sigma"] == sigma], col, ["t"], "pretrain",
                                             lambda key: ctx.tpal(key[0])))
    if len(positive):
      P.symlog(ax, "x", linthresh=float(positive.min()))
    ax.set_xlabel("pre-training (steps, symlog axis)")
    ax.set_title(f"train loss barrier, {P.sigma_text(sigma)}")
    ax.grid(alpha=0.3)
  P.symlog(axes[0][0])
  axes[0][0].set_ylim(bottom=0)
  axes[0][0].set_ylabel(P.barrier_label("loss", "train"))
  P.pad_top(axes[0][0], excluded)
  entries = ctx.time_legend(df)
  if excluded:
    entries.append((P.EXCLUDED_LABEL, "k", P.EXCLUDED_MARKER, "none"))
  C.legend(fig, entries, title="colour and marker: perturbation time t of the fine-tuning run")
  C.title(fig, "Fine-tuning barrier vs amount of pre-training", df, ctx.extra, shown=True, n=C.n_text(df))
  caption = ("Train-loss barrier between fine-tuned twins vs the pre-training step their common start was taken "
             "from (init.checkpoint: a kept step, or the step a checkpoint folder is named after; symlog axis, 0 = no "
             "pre-training), one panel per σ, one line per "
             f"perturbation time t of the fine-tuning run (colour and marker); the panels share one symlog y axis "
             f"from 0 (linear below {P.BARRIER_LINTHRESH:g}); mean over seeds, shaded band: {P.SPREAD} "
             f"({C.n_text(df)}; {P.per_point(counts)}).")
  ctx.out.emit(name, fig, caption + C.excluded_phrase(df, (col,), "sigma", P.sigma_text) + ctx.setting)
