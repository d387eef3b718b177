"""Scatter figures of the report, one point per child pair: barrier against L2 distance, the aligning
permutation's fixed points, CKA and ensembles against barriers, aligned against unaligned barriers.

The relation figures put the train-loss barrier (``vs_child0.barrier.train.loss``) against the related quantity,
the pairing their rank correlations are computed on; barriers are on symlog axes (linear below
:data:`plotting.BARRIER_LINTHRESH`). Each title says how many pairs it shows.
"""

from matplotlib.ticker import MaxNLocator

from butterfly_jax.report import context as C
from butterfly_jax.report import plotting as P

RELATION_BARRIER = C.barrier_col("train", "loss")  # the barrier of the relation figures
_TRAIN_LOSS = "train " + P.LOSS_LABEL
_COLOUR_MARKER = "colour: perturbation time t; marker: perturbation"


def _scatter(ctx, ax, df, x, y, symlog=()):
  """One point per row; ``symlog``: the axes ("x", "y") that hold barriers, drawn symlog."""
  for (pert, t), g in df.groupby(["perturbation", "t"]):
    ax.scatter(g[x].astype(float), g[y].astype(float), color=ctx.tpal(t), marker=ctx.markers[pert], s=30,
               edgecolors="k", linewidths=0.3, zorder=3, gid=f"pairs:{pert}:{t}")
  ax.grid(alpha=0.3)
  for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
    if which in symlog:
      P.symlog(ax, which)
    else:  # fractions and radians: few ticks
      axis.set_major_locator(MaxNLocator(5))


def _scatter_legend(ctx, fig, df):
  entries = ctx.time_legend(df, marker=False) + ctx.marker_legend(df["perturbation"])
  C.legend(fig, entries, title=_COLOUR_MARKER)


def _pairs_caption(df) -> str:
  return f" One point per pair (no averaging; {C.scatter_n_text(df)}), {_COLOUR_MARKER}."


_MATCHING = {"weights": ("weight-matches", "weight matching", "weight-matching"),
             "activations": ("activation-matches", "activation matching", "activation-matching")}


def _matching(df) -> tuple[str, str, str]:
  """How the runs in ``df`` aligned their children (``eval.align_method``; a table without the column, from before
  the choice, weight-matched): the verb, the noun and the adjective their captions use."""
  methods = set(df["eval.align_method"].dropna()) if "eval.align_method" in df else set()
  methods = methods or {"weights"}
  if len(methods) == 1 and next(iter(methods)) in _MATCHING:
    return _MATCHING[next(iter(methods))]
  return "aligns", "alignment (weight or activation matching: eval.align_method)", "aligning"


def barrier_vs_l2(ctx):
  name = ctx.name("barrier_vs_l2")
  y = RELATION_BARRIER
  if not C.has(ctx.df, "vs_child0.l2", y):
    return ctx.out.skip(name, "no L2 distances or barriers")
  df = C.finite(ctx.df, "vs_child0.l2", y)
  df = df[df["vs_child0.l2"].astype(float) > 0]
  if df.empty:
    return ctx.out.skip(name, "no pair with L2 > 0")
  fig, axes = P.new_figure(1, 1, width=5.5, height=5.0)
  ax = axes[0][0]
  _scatter(ctx, ax, df, "vs_child0.l2", y, symlog=("y",))
  P.log_axis(ax, "x")
  ax.set_xlabel("L2 distance between child 0 and child k after training\n(weight space, log axis)")
  ax.set_ylabel(f"{_TRAIN_LOSS}\n{P.symlog_note()}")
  _scatter_legend(ctx, fig, df)
  C.title(fig, "Train loss barrier vs L2 distance between the twins", ctx.df, ctx.extra, n=C.n_text(df))
  ctx.out.emit(name, fig, "Train loss barrier (symlog axis, linear below "
               f"{P.BARRIER_LINTHRESH:g}) vs L2 distance (log axis) between child 0 and child k after training."
               + _pairs_caption(df) + " Pairs with L2 = 0 (σ = 0 twins) cannot be placed on the log axis and are "
               "left out." + C.div_phrase(ctx.df) + ctx.setting)


def fixed_points(ctx):
  name = ctx.name("fixed_points")
  x = "vs_child0.aligned.fixed_point_fraction"
  if not C.has(ctx.df, x):
    return ctx.out.skip(name, "no aligned metrics (vs_child0.aligned.fixed_point_fraction; run with eval.align)")
  fig, axes = P.new_figure(1, 2, width=5.0, height=4.8)
  shown = C.finite(ctx.df, x)
  verb, _, adjective = _matching(shown)
  l2 = C.finite(shown, "vs_child0.l2")["vs_child0.l2"].astype(float)
  l2_thresh = P.auto_linthresh(l2)
  panels = (("vs_child0.l2", f"L2 distance (weight space)\n{P.symlog_note(l2_thresh)}", l2_thresh),
            (RELATION_BARRIER, f"{_TRAIN_LOSS}\n{P.symlog_note()}", P.BARRIER_LINTHRESH))
  for ax, (col, label, linthresh) in zip(axes[0], panels):
    df = C.finite(shown, col)
    _scatter(ctx, ax, df, x, col)
    P.symlog(ax, "y", linthresh)
    ax.set_xlabel(f"fixed-point fraction of the {adjective} permutation")
    ax.set_xlim(-0.03, 1.03)  # a fraction: the whole range, so that figures compare
    ax.set_ylabel(label)
  axes[0][0].set_title("L2 distance before alignment")
  axes[0][1].set_title("train loss barrier before alignment")
  _scatter_legend(ctx, fig, shown)
  runs = C.runs_with(ctx.df, x)
  C.title(fig, "Fixed points of the aligning permutation vs distance and barrier", runs, ctx.extra,
          n=C.n_text(shown))
  ctx.out.emit(name, fig, f"Fraction of units left in place by the permutation that {verb} child k to child 0, "
               "against the unaligned L2 distance (left) and train loss barrier (right), both on symlog axes."
               + _pairs_caption(shown) + C.div_phrase(runs) + ctx.setting)


def cka_vs_barrier(ctx):
  name = ctx.name("cka_vs_barrier")
  x, y = RELATION_BARRIER, "vs_child0.cka"
  if not C.has(ctx.df, x, y):
    return ctx.out.skip(name, "no CKA values (eval.cka_examples = 0?) or barriers")
  df = C.finite(ctx.df, x, y)
  fig, axes = P.new_figure(1, 1, width=5.5, height=5.0)
  ax = axes[0][0]
  _scatter(ctx, ax, df, x, y, symlog=("x",))
  ax.set_xlabel(f"{_TRAIN_LOSS}\n{P.symlog_note()}")
  ax.set_ylabel("angular CKA distance (radians)")
  _scatter_legend(ctx, fig, df)
  C.title(fig, "Representation dissimilarity vs train loss barrier", ctx.df, ctx.extra, n=C.n_text(df))
  ctx.out.emit(name, fig, "Angular CKA distance (radians, 0 = same representation up to rotation and scale) between "
               "child 0 and child k on test examples vs their train loss barrier (symlog axis, linear below "
               f"{P.BARRIER_LINTHRESH:g})." + _pairs_caption(df) + C.div_phrase(ctx.df) + ctx.setting)


def ensemble_vs_barrier(ctx):
  name = ctx.name("ensemble_vs_barrier")
  x = RELATION_BARRIER
  if not C.has(ctx.df, x, "vs_child0.ensemble.accuracy", "vs_child0.disagreement"):
    return ctx.out.skip(name, "no ensemble metrics or barriers")
  fig, axes = P.new_figure(1, 2, width=5.0, height=4.8)
  shown = C.finite(ctx.df, x)
  for ax, (col, label) in zip(axes[0], (("vs_child0.ensemble.accuracy", "ensemble test accuracy (fraction)"),
                                        ("vs_child0.disagreement", "disagreement (fraction of test set)"))):
    df = C.finite(shown, col)
    _scatter(ctx, ax, df, x, col, symlog=("x",))
    ax.set_xlabel(f"{_TRAIN_LOSS}\n{P.symlog_note()}")
    ax.set_ylabel(label)
  if C.has(ctx.df, "child0.test.accuracy"):
    acc0 = ctx.df["child0.test.accuracy"].astype(float).mean()
    axes[0][0].axhline(acc0, color="0.4", linestyle="--", linewidth=1, label="child 0 alone (mean)")
    axes[0][0].legend(loc="best", fontsize=8)
  axes[0][0].set_title("ensemble of child 0 and child k")
  axes[0][1].set_title("prediction disagreement")
  _scatter_legend(ctx, fig, shown)
  C.title(fig, "Ensembles of the twins vs train loss barrier", ctx.df, ctx.extra, n=C.n_text(shown))
  ctx.out.emit(name, fig, "Test accuracy of the logit-averaged ensemble of child 0 and child k (left; dashed: "
               "child 0's own test accuracy, mean over runs) and the fraction of test examples on which they predict "
               "different classes (right), vs the train loss barrier (symlog axis, linear below "
               f"{P.BARRIER_LINTHRESH:g})." + _pairs_caption(shown) + C.div_phrase(ctx.df) + ctx.setting)


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
      _scatter(ctx, ax, df, x, y, symlog=("x", "y"))
      (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
      lo, hi = min(x0, y0), max(x1, y1)
      ax.plot([lo, hi], [lo, hi], color="0.5", linestyle="--", linewidth=1, zorder=1)  # the same scale on x and y:
      ax.set_xlim(lo, hi)                                                             # y = x is straight
      ax.set_ylim(lo, hi)
      ax.set_xlabel(f"{split} {metric} barrier before alignment")
      ax.set_ylabel(f"{split} {metric} barrier after alignment")
      ax.set_title(f"{split} {metric} barrier ({'nats' if metric == 'loss' else 'fraction'})")
  shown = C.finite(ctx.df, C.barrier_col("train", "loss", aligned=True))
  _scatter_legend(ctx, fig, shown)
  runs = C.runs_with(ctx.df, C.barrier_col("train", "loss", True))
  C.title(fig, f"Barriers after {_matching(shown)[1]} vs before (symlog axes, linear below "
          f"{P.BARRIER_LINTHRESH:g})", runs, ctx.extra, n=C.n_text(shown))
  ctx.out.emit(name, fig, "Barrier between child 0 and child k after permuting child k to match child 0 (y) against "
               "the barrier without alignment (x), rows loss/error, columns train/test, on symlog axes (linear below "
               f"{P.BARRIER_LINTHRESH:g}); dashed: y = x (points below it: alignment removes part of the barrier)."
               + _pairs_caption(shown) + C.div_phrase(runs) + ctx.setting)
