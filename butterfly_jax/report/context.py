"""What the report's figure functions share: column names, one setting's rows and colours (:class:`Context`),
the collector of written figures and captions (:class:`Out`), titles, legends and row filters."""

import re
from pathlib import Path

import numpy as np

from butterfly_jax.report import plotting as P

SPLITS = ("train", "test")
METRICS = ("loss", "error")
MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*", "h", "<", ">")  # one per perturbation label in scatter plots


def barrier_col(split: str, metric: str, aligned: bool = False) -> str:
  return f"vs_child0.{'aligned.' if aligned else ''}barrier.{split}.{metric}"


def barrier_metrics(df) -> tuple:
  """The barriers a figure of ``df`` draws, one row of panels each: loss and error, and a text task's metric
  (``metric``: the barrier on 1 − metric) where the table has it and it is not the accuracy (whose barrier is the
  error's)."""
  names = set(df["metric"].dropna()) if "metric" in df else set()
  text_metric = has(df, barrier_col("train", "metric")) and names != {"accuracy"}
  return METRICS + (("metric",) if text_metric else ())


def metric_name(df, metric: str) -> str:
  """How a barrier is named in titles: ``loss``, ``error``, or the task's metric (``f1``, ``matthews``, ...)."""
  if metric != "metric" or "metric" not in df:
    return metric
  names = sorted(str(m) for m in df["metric"].dropna().unique())
  return "/".join(names) if names else "task metric"


def slug(label: str) -> str:
  """A setting label as part of a file name: ``optim.name=adam`` -> ``optim.name-adam``."""
  return re.sub(r"[^A-Za-z0-9._-]+", "_", label.replace("=", "-")).strip("_")


def finite(df, *cols):
  """The rows where every one of ``cols`` is a finite number."""
  mask = np.ones(len(df), bool)
  for c in cols:
    mask &= np.isfinite(df[c].astype(float).to_numpy())
  return df[mask]


def has(df, *cols) -> bool:
  """Every column present with at least one finite value."""
  return all(c in df.columns and np.isfinite(df[c].astype(float)).any() for c in cols)


def diverged_pairs(df) -> int:
  return int(df["pair_diverged"].fillna(False).astype(bool).sum()) if "pair_diverged" in df else 0


def title(fig, text, df, extra="", shown=False, n=""):
  """The figure's title, with ``n`` (what it shows, :func:`n_text`) and the number of diverged pairs: "not shown",
  or (``shown``) where they are drawn."""
  d = diverged_pairs(df)
  where = "drawn as ✕ at the top of the panels" if shown else "not shown"
  notes = ([n] if n else []) + ([f"{d} diverged pair{'s' if d != 1 else ''} {where}"] if d else [])
  fig.suptitle(text + extra + (f"\n({'; '.join(notes)})" if notes else ""))


def not_finite(df, col):
  """The rows whose ``col`` is not a finite number: pairs without that barrier, which a mean leaves out."""
  return df[~np.isfinite(df[col].astype(float).to_numpy())]


def draw_excluded(ax, df, col, keys, x, color, to_x=float) -> int:
  """The rows of ``df`` without a value of ``col`` as ✕ at the top of ``ax`` (:func:`plotting.excluded`), one row
  of markers per group of ``keys`` (the series) and value of ``x``, coloured by ``color(series key)``; ``to_x`` maps
  the value to the plotted x. Returns the number of rows drawn: :func:`plotting.pad_top` makes room for them once
  the panel's scales are set."""
  bad = not_finite(df, col)
  groups = list(bad.groupby(keys))
  for row, (key, g) in enumerate(groups):
    n = g.groupby(x).size()
    P.excluded(ax, [to_x(v) for v in n.index], list(n), color(key), row)
  return len(groups)


def excluded_phrase(df, cols, x, text) -> str:
  """Caption: the pairs left out of the means (a value of any of ``cols`` missing), per value of ``x`` (written
  by ``text``) and why, and that they are drawn; "" when there are none."""
  mask = np.zeros(len(df), bool)
  for c in cols:
    mask |= ~np.isfinite(df[c].astype(float).to_numpy())
  bad = df[mask]
  if bad.empty:
    return ""
  diverged = bad["pair_diverged"].fillna(False).astype(bool) if "pair_diverged" in bad else np.zeros(len(bad), bool)
  parts = []
  for value in sorted(bad[x].unique()):
    at = (bad[x] == value).to_numpy()
    d, p = int(diverged[at].sum()), int((~diverged[at]).sum())
    why = ([f"{d} diverged"] if d else []) + ([f"{p} with a non-finite interpolation path"] if p else [])
    parts.append(f"{text(value)}: {' and '.join(why)}")
  return (f" Pairs without a barrier are left out of the means (which are over the remaining seeds) and drawn as ✕ "
          f"at the top of the panel at their position, in their line's colour, with their number where several: "
          f"{'; '.join(parts)}.")


def runs_with(df, col):
  """The rows of the runs in which ``col`` has a value (e.g. the runs that ran alignment), diverged pairs included."""
  runs = df.loc[np.isfinite(df[col].astype(float)), "run"].unique()
  return df[df["run"].isin(runs)]


def div_phrase(df) -> str:
  n = diverged_pairs(df)
  return f" {n} diverged pair{'s' if n != 1 else ''} (null metrics) left out." if n else ""


def _plural(n, word):
  return f"{n} {word}{'' if n == 1 else 's'}"


def n_text(df, pairs_note: str = "") -> str:
  """``n = 112 pairs from 16 runs, 2 seeds``: what the rows ``df`` of a figure hold; ``pairs_note`` follows the
  number of pairs."""
  seeds = df["seed"].nunique() if "seed" in df else 0
  return (f"n = {_plural(len(df), 'pair')}{pairs_note} from {_plural(df['run'].nunique(), 'run')}"
          + (f", {_plural(seeds, 'seed')}" if seeds else ""))


def runs_text(df) -> str:
  """``n = 16 runs, 2 seeds``: the runs of a figure drawn from their trajectories."""
  seeds = df["seed"].nunique() if "seed" in df else 0
  return f"n = {_plural(df['run'].nunique(), 'run')}" + (f", {_plural(seeds, 'seed')}" if seeds else "")


def scatter_n_text(df) -> str:
  """:func:`n_text` of a scatter's points with how many have σ > 0 (the perturbed pairs)."""
  return n_text(df, f" ({int((df['sigma'] > 0).sum())} with σ > 0)")


def legend(fig, entries, title=None, ncols=4):
  """One legend for the figure, below the panels (to the right it would collide with the title); ``title`` says what
  colour, marker and line style stand for."""
  fig.legend(handles=P.legend_handles(entries), loc="outside lower center", ncols=min(len(entries), ncols),
             fontsize=8, title=title, title_fontsize=8)


class Out:
  """Collects written figures and their captions, and skipped figures with the reason."""

  def __init__(self, out_dir):
    self.out_dir = Path(out_dir)
    self.made, self.skipped, self.paths = [], [], []

  def emit(self, name, fig, caption):
    self.paths += P.save(fig, self.out_dir, name)
    self.made.append((name, caption))

  def skip(self, name, reason):
    print(f"note: skipped figure {name}: {reason}")
    self.skipped.append((name, reason))


class Context:
  """One setting's rows and trajectories, with the file-name suffix and title addition for that setting."""

  def __init__(self, df, traj, label, out):
    self.df, self.traj, self.out = df, traj, out
    self.suffix = f"__{slug(label)}" if label else ""
    self.extra = f" [{label}]" if label else ""
    self.setting = f" Setting: {label}." if label else ""
    self.tpal = P.TimeStyles(df["t"])
    self.spal = P.SigmaStyles(df["sigma"])
    self.markers = {p: MARKERS[i % len(MARKERS)] for i, p in enumerate(sorted(df["perturbation"].unique()))}

  def name(self, base):
    return base + self.suffix

  def time_legend(self, df, marker=True):
    """One entry per t: its colour with its marker, or (``marker`` False, where markers stand for something else)
    a coloured line."""
    ts = df.drop_duplicates("t").sort_values("t")
    return [(P.time_text(r.t, r.t_epochs), self.tpal(r.t), self.tpal.marker(r.t) if marker else "", "-")
            for r in ts.itertuples()]

  def sigma_legend(self, sigmas):
    return [(P.sigma_text(s), self.spal(s), self.spal.marker(s), "-") for s in sorted(set(float(x) for x in sigmas))]

  def variant_legend(self, labels):
    """Line style per perturbation (black, no marker: the marker is the series')."""
    return [(p, "k", "", P.variant_line(p)) for p in sorted(set(labels))]

  def marker_legend(self, labels):
    return [(p, "k", self.markers[p], "none") for p in sorted(set(labels))]


def line_styles(labels) -> dict:
  """Perturbation label -> line style (:func:`plotting.variant_line`), all solid where there is one label only (the
  legend then has no line-style entries to explain them)."""
  labels = sorted(set(labels))
  return {p: P.variant_line(p) if len(labels) > 1 else "-" for p in labels}


def zero_last(groups):
  """Groups keyed (perturbation, σ) with σ = 0 last, so that its line (at 0) is drawn over the others."""
  return sorted(groups, key=lambda kv: (kv[0][1] == 0, kv[0]))
