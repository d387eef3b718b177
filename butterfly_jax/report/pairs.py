"""Scatter figures of the report, one point per child pair: barrier against L2 distance, the aligning
permutation's fixed points, CKA and ensembles against barriers, aligned against unaligned barriers."""

from matplotlib.ticker import MaxNLocator

from butterfly_jax.report import context as C
from butterfly_jax.report import plotting as P


def _scatter(ctx, ax, df, x, y):
  for (pert, t), g in df.groupby(["perturbation", "t"]):
    ax.scatter(g[x].astype(float), g[y].astype(float), color=ctx.tpal(t), marker=ctx.markers[pert], s=30,
               edgecolors="k", linewidths=0.3, zorder=3)
  ax.grid(alpha=0.3)
  for axis in (ax.xaxis, ax.yaxis):  # barriers are often ~1e-5: scientific offsets, few ticks
    axis.set_major_locator(MaxNLocator(5))
  ax.ticklabel_format(style="sci", scilimits=(-3, 4), useMathText=True)


def _scatter_legend(ctx, fig, df):
  entries = ctx.time_legend(df, line=False) + ctx.marker_legend(df["perturbation"])
  C.legend(fig, entries)


def barrier_vs_l2(ctx):
  name = ctx.name("barrier_vs_l2")
  y = C.barrier_col("train", "loss")
  if not C.has(ctx.df, "vs_child0.l2", y):
    return ctx.out.skip(name, "no L2 distances or barriers")
  df = C.finite(ctx.df, "vs_child0.l2", y)
  df = df[df["vs_child0.l2"].astype(float) > 0]
  if df.empty:
    return ctx.out.skip(name, "no pair with L2 > 0")
  fig, axes = P.new_figure(1, 1, width=5.5, height=4.2)
  ax = axes[0][0]
  _scatter(ctx, ax, df, "vs_child0.l2", y)
  ax.set_xscale("log")
  ax.set_xlabel("L2 distance between child 0 and child k after training (weight space)")
  ax.set_ylabel("train " + P.LOSS_LABEL)
  _scatter_legend(ctx, fig, df)
  C.title(fig, "Train loss barrier vs L2 distance between the twins", ctx.df, ctx.extra)
  ctx.out.emit(name, fig, "Train loss barrier vs L2 distance (log axis) between child 0 and child k after training; "
               "one point per pair (no averaging), colour: perturbation time t, marker: perturbation. Pairs with "
               "L2 = 0 (σ = 0 twins) cannot be placed on the log axis and are left out." + C.div_phrase(ctx.df)
               + ctx.setting)


def fixed_points(ctx):
  name = ctx.name("fixed_points")
  x = "vs_child0.aligned.fixed_point_fraction"
  if not C.has(ctx.df, x):
    return ctx.out.skip(name, "no aligned metrics (vs_child0.aligned.fixed_point_fraction; run with eval.align)")
  fig, axes = P.new_figure(1, 2, width=5.0, height=4.4)
  panels = (("vs_child0.l2", "L2 distance before alignment"),
            (C.barrier_col("train", "loss"), "train loss barrier before alignment (nats)"))
  for ax, (col, label) in zip(axes[0], panels):
    df = C.finite(ctx.df, x, col)
    _scatter(ctx, ax, df, x, col)
    ax.set_xlabel("fixed-point fraction of the weight-matching permutation")
    ax.set_xlim(-0.03, 1.03)  # a fraction: the whole range, so that figures compare
    ax.set_ylabel(label)
  axes[0][0].set_title("L2 distance")
  axes[0][1].set_title("train loss barrier")
  _scatter_legend(ctx, fig, C.finite(ctx.df, x))
  C.title(fig, "Fixed points of the aligning permutation vs distance and barrier", C.runs_with(ctx.df, x), ctx.extra)
  ctx.out.emit(name, fig, "Fraction of units left in place by the permutation that weight-matches child k to child 0, "
               "against the unaligned L2 distance (left) and train loss barrier (right); one point per pair (no "
               "averaging), colour: t, marker: perturbation." + C.div_phrase(C.runs_with(ctx.df, x)) + ctx.setting)


def cka_vs_barrier(ctx):
  name = ctx.name("cka_vs_barrier")
  x, y = C.barrier_col("test", "loss"), "vs_child0.cka"
  if not C.has(ctx.df, x, y):
    return ctx.out.skip(name, "no CKA values (eval.cka_examples = 0?) or barriers")
  df = C.finite(ctx.df, x, y)
  fig, axes = P.new_figure(1, 1, width=5.5, height=4.2)
  ax = axes[0][0]
  _scatter(ctx, ax, df, x, y)
  ax.set_xlabel("test " + P.LOSS_LABEL)
  ax.set_ylabel("angular CKA distance (radians)")
  _scatter_legend(ctx, fig, df)
  C.title(fig, "Representation dissimilarity vs barrier", ctx.df, ctx.extra)
  ctx.out.emit(name, fig, "Angular CKA distance (radians, 0 = same representation up to rotation and scale) between "
               "child 0 and child k on test examples vs their test loss barrier; one point per pair (no averaging), "
               "colour: t, marker: perturbation." + C.div_phrase(ctx.df) + ctx.setting)


def ensemble_vs_barrier(ctx):
  name = ctx.name("ensemble_vs_barrier")
  x = C.barrier_col("test", "loss")
  if not C.has(ctx.df, x, "vs_child0.ensemble.accuracy", "vs_child0.disagreement"):
    return ctx.out.skip(name, "no ensemble metrics or barriers")
  fig, axes = P.new_figure(1, 2, width=5.0, height=4.4)
  for ax, (col, label) in zip(axes[0], (("vs_child0.ensemble.accuracy", "ensemble test accuracy (fraction)"),
                                        ("vs_child0.disagreement", "disagreement (fraction of test set)"))):
    df = C.finite(ctx.df, x, col)
    _scatter(ctx, ax, df, x, col)
    ax.set_xlabel("test " + P.LOSS_LABEL)
    ax.set_ylabel(label)
  if C.has(ctx.df, "child0.test.accuracy"):
    acc0 = ctx.df["child0.test.accuracy"].astype(float).mean()
    axes[0][0].axhline(acc0, color="0.4", linestyle="--", linewidth=1, label="child 0 alone (mean)")
    axes[0][0].legend(loc="lower right", fontsize=8)
  axes[0][0].set_title("ensemble of child 0 and child k")
  axes[0][1].set_title("prediction disagreement")
  _scatter_legend(ctx, fig, C.finite(ctx.df, x))
  C.title(fig, "Ensembles of the twins vs barrier", ctx.df, ctx.extra)
  ctx.out.emit(name, fig, "Test accuracy of the logit-averaged ensemble of child 0 and child k (left; dashed: "
               "child 0's own test accuracy, mean over runs) and the fraction of test examples on which they predict "
               "different classes (right), vs the test loss barrier; one point per pair (no averaging), colour: t, "
               "marker: perturbation." + C.div_phrase(ctx.df) + ctx.setting)


def aligned_barrier(ctx):
  name = ctx.name("aligned_barrier")
  if not C.has(ctx.df, C.barrier_col("train", "loss", aligned=True)):
    return ctx.out.skip(name, "no aligned barriers (vs_child0.aligned.barrier.*; run with eval.align)")
  fig, axes = P.new_figure(2, 2)
  for r, metric in enumerate(C.METRICS):
    for c, split in enumerate(C.SPLITS):
      ax = axes[r][c]
      x, y = C.barrier_col(split, metric), C.barrier_col(split, metric, aligned=True)
      if not C.has(ctx.df, x, y):
        ax.set_axis_off()
        continue
      df = C.finite(ctx.df, x, y)
      _scatter(ctx, ax, df, x, y)
      (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
      lo, hi = min(x0, y0), max(x1, y1)
      ax.plot([lo, hi], [lo, hi], color="0.5", linestyle="--", linewidth=1, zorder=1)
      ax.set_xlim(lo, hi)
      ax.set_ylim(lo, hi)
      ax.set_xlabel(f"{split} {metric} barrier before alignment")
      ax.set_ylabel(f"{split} {metric} barrier after alignment")
      ax.set_title(f"{split} {metric} barrier ({'nats' if metric == 'loss' else 'fraction'})")
  _scatter_legend(ctx, fig, C.finite(ctx.df, C.barrier_col("train", "loss", aligned=True)))
  C.title(fig, "Barriers after weight matching vs before", C.runs_with(ctx.df, C.barrier_col("train", "loss", True)),
         ctx.extra)
  ctx.out.emit(name, fig, "Barrier between child 0 and child k after permuting child k to match child 0 (y) against "
               "the barrier without alignment (x), rows loss/error, columns train/test; dashed: y = x (points below "
               "it: alignment removes part of the barrier); one point per pair (no averaging), colour: t, marker: "
               "perturbation." + C.div_phrase(C.runs_with(ctx.df, C.barrier_col("train", "loss", True))) + ctx.setting)
