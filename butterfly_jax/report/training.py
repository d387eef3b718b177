"""Figures of the report over training time, from metrics.jsonl (:func:`butterfly_jax.report.load_trajectories`):
distances from init and between the twins, and barriers during training (the paper's Figs. 3 and 6)."""

import numpy as np
import pandas as pd

from butterfly_jax.report import context as C
from butterfly_jax.report import plotting as P

MAX_TIME_PANELS = 6  # columns (perturbation times) at most; more are thinned evenly


def _time_panels(ts):
  ts = sorted(ts)
  if len(ts) <= MAX_TIME_PANELS:
    return ts
  return [ts[i] for i in np.unique(np.linspace(0, len(ts) - 1, MAX_TIME_PANELS).round().astype(int))]


def _trajectories(ctx, kind):
  """The trajectories of this setting's runs of ``kind`` with t, σ and the time in epochs."""
  if ctx.traj is None or ctx.traj.empty:
    return None
  info = ctx.df[ctx.df["kind"] == kind].drop_duplicates("run")[["run", "perturbation", "t", "t_epochs",
                                                                  "steps_per_epoch"]]
  tr = ctx.traj.merge(info, on="run")
  if tr.empty:
    return None
  tr = tr.assign(epoch=tr["step"].astype(float) / tr["steps_per_epoch"].astype(float),
                 sigma=tr["perturb.scale"].astype(float))
  return tr


def _same_time_axis(axes, tr):
  """Every panel from epoch 0 to the last logged step, so that the columns (perturbation times) compare."""
  hi = float(np.nanmax(tr["epoch"].astype(float)))
  for ax in np.ravel(axes):
    ax.set_xlim(-0.02 * hi, 1.02 * hi)


def _perturbation_points(pairs):
  """Each perturbed child's distance to child 0 right after the perturbation (step t: noise_l2)."""
  return pd.DataFrame({"perturbation": pairs["perturbation"], "sigma": pairs["sigma"], "step": pairs["t"],
                       "epoch": pairs["t_epochs"], "l2_to_child0": pairs["noise_l2"].astype(float)})


LOG_FROM_INIT = 10  # the top row of l2_from_init is log where a child ends this many times farther than child 0


def _share_rows(axes):
  """Every panel of a row on the first one's y axis: the columns (perturbation times) compare."""
  for row in axes:
    for ax in row[1:]:
      ax.sharey(row[0])


def l2_from_init(ctx):
  for kind in sorted(ctx.df["kind"].unique()):
    name = ctx.name(f"l2_from_init_{kind}")
    tr = _trajectories(ctx, kind)
    if tr is None or not C.has(tr, "l2_from_init"):
      ctx.out.skip(name, "no metrics.jsonl trajectories")
      continue
    ts = _time_panels(tr["t"].unique())
    lines = C.line_styles(tr["perturbation"])
    fig, axes = P.new_figure(2, len(ts), width=4.0)
    _share_rows(axes)
    counts, sigmas, tops = [], set(), {"child0": [], "kids": []}
    for c, t in enumerate(ts):
      sub = tr[tr["t"] == t]
      child0 = P.aggregate(sub[sub["member"] == 0], ["step", "epoch"], "l2_from_init")
      counts += list(child0["n"])
      tops["child0"] += list(child0["max"])
      P.band(axes[0][c], child0["epoch"], child0["mean"], child0["min"], child0["max"], P.ZERO_COLOR, marker="",
             linestyle="-")
      kids = sub[(sub["phase"] == "children") & (sub["member"] >= 1) & (sub["sigma"] > 0)]
      start = _perturbation_points(ctx.df[(ctx.df["kind"] == kind) & (ctx.df["t"] == t) & (ctx.df["sigma"] > 0)])
      for r, col in enumerate(("l2_from_init", "l2_to_child0")):
        agg = P.aggregate(kids if r == 0 else pd.concat([start, kids]), ["perturbation", "sigma", "step", "epoch"], col)
        counts += list(agg["n"])
        for (pert, sigma), g in agg.groupby(["perturbation", "sigma"]):
          sigmas.add(sigma)
          if r == 0:
            tops["kids"] += list(g["mean"])
          P.band(axes[r][c], g["epoch"], g["mean"], g["min"], g["max"], ctx.spal(sigma), marker=ctx.spal.marker(sigma),
                 linestyle=lines[pert], markevery=P.every_nth(len(g), offset=ctx.spal.rank(sigma)))
      t_ep = float(sub["t_epochs"].iloc[0])
      for r in range(2):
        ax = axes[r][c]
        ax.axvline(t_ep, color="0.5", linestyle=":", linewidth=1)
        ax.set_xlabel("training time (epochs)")
        ax.grid(alpha=0.3)
      axes[0][c].set_title(P.time_text(t, t_ep))
    log_top = bool(tops["kids"]) and np.nanmax(tops["kids"]) > LOG_FROM_INIT * np.nanmax(tops["child0"] or [np.nan])
    if log_top:
      P.log_axis(axes[0][0], "y")
    P.log_axis(axes[1][0], "y")
    _same_time_axis(axes, tr)
    axes[0][0].set_ylabel("L2 distance from init\n(weights at step 0" + ("; log axis)" if log_top else ")"))
    axes[1][0].set_ylabel("L2 distance to child 0 (log axis)")
    entries = [("child 0", P.ZERO_COLOR, "", "-")] + ctx.sigma_legend(sigmas)
    what = "colour and marker: σ (perturbation norm / network norm at init)"
    perts = tr["perturbation"].unique()
    if len(perts) > 1:
      entries += ctx.variant_legend(perts)
      what += "; line style: perturbation"
    C.legend(fig, entries, title=what, ncols=5)
    runs = ctx.df[ctx.df["run"].isin(tr["run"].unique())]
    C.title(fig, f"Distances over training: {kind} perturbations (dotted vertical line: t)", runs, ctx.extra,
            n=C.runs_text(runs))
    ctx.out.emit(name, fig, f"Over training, from metrics.jsonl, for {kind} perturbations, one column per perturbation "
                 "time t (dotted line), the y axis shared along each row: top, the L2 distance from the initial "
                 "weights of child 0 (grey; the trunk before t) and of the perturbed children (colour and marker: σ)"
                 + ("; log axis, a perturbed child ending more than ten times farther from init than child 0"
                    if log_top else "") + "; bottom, the perturbed children's L2 "
                 "distance to child 0 (log axis; σ = 0 twins are exactly 0 and not drawn), starting at t from the "
                 f"perturbation's norm (noise_l2 in results.json). Mean over seeds, shaded "
                 f"band: {P.SPREAD} ({C.runs_text(runs)}; "
                 f"{P.per_point(counts, 'run')})." + ctx.setting)


def barrier_over_training(ctx):
  for kind in sorted(ctx.df["kind"].unique()):
    name = ctx.name(f"barrier_over_training_{kind}")
    tr = _trajectories(ctx, kind)
    if tr is None or not C.has(tr, "barrier.train.loss"):
      ctx.out.skip(name, "no barriers during training in metrics.jsonl (eval.every_steps = 0)")
      continue
    kids = tr[(tr["phase"] == "children") & (tr["member"] >= 1)]
    ts = _time_panels(kids["t"].unique())
    fig, axes = P.new_figure(2, len(ts), width=4.0)
    _share_rows(axes)
    perts = sorted(kids["perturbation"].unique())
    hollow = {p: "none" if len(perts) > 1 and P.variant(p) else "full" for p in perts}
    counts, sigmas = [], set()
    for c, t in enumerate(ts):
      sub = kids[kids["t"] == t]
      for r, metric in enumerate(C.METRICS):
        ax = axes[r][c]
        for split, ls in (("train", "-"), ("test", "--")):
          agg = P.aggregate(sub, ["perturbation", "sigma", "step", "epoch"], f"barrier.{split}.{metric}")
          counts += list(agg["n"])
          for (pert, sigma), g in C.zero_last(agg.groupby(["perturbation", "sigma"])):
            sigmas.add(sigma)
            P.band(ax, g["epoch"], g["mean"], g["min"], g["max"], ctx.spal(sigma), linestyle=ls,
                   marker=ctx.spal.marker(sigma), fillstyle=hollow[pert])
        ax.set_xlabel("training time (epochs)")
        ax.grid(alpha=0.3)
      axes[0][c].set_title(P.time_text(t, float(sub["t_epochs"].iloc[0])))
    for r, metric in enumerate(C.METRICS):
      P.symlog(axes[r][0])
      axes[r][0].set_ylabel(P.barrier_label(metric))
    _same_time_axis(axes, kids)
    entries = ctx.sigma_legend(sigmas) + [("train", "k", "", "-"), ("test", "k", "", "--")]
    what = "colour and marker: σ; line style: split"
    if len(perts) > 1:
      entries += [(p, "k", "o", "none", hollow[p]) for p in perts]
      what += "; filled or hollow marker: perturbation"
    C.legend(fig, entries, title=what, ncols=5)
    runs = ctx.df[ctx.df["run"].isin(kids["run"].unique())]
    C.title(fig, f"Barriers during training: {kind} perturbations", runs, ctx.extra,
            n=C.runs_text(runs))
    ctx.out.emit(name, fig, f"Loss (top) and error (bottom) barriers between child 0 and child k during training, from "
                 f"metrics.jsonl (eval.during_num_examples examples per split; solid: train, dashed: test), for {kind} "
                 f"perturbations, one column per perturbation time t, colour and marker: σ; symlog y axes (linear "
                 f"below {P.BARRIER_LINTHRESH:g}) shared along each row; mean over seeds, shaded band: "
                 f"{P.SPREAD} ({C.runs_text(runs)}; "
                 f"{P.per_point(counts, 'run')})."
                 + (" Perturbations: " + ", ".join(f"{p} {'hollow' if hollow[p] == 'none' else 'filled'} markers"
                                                   for p in perts) + "." if len(perts) > 1 else "")
                 + " Diverged members are left out." + ctx.setting)
