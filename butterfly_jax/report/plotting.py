"""Matplotlib pieces shared by the report's figures: seed aggregation, colours for t and σ, the log σ axis
with its σ = 0 slot, markers per perturbation, and saving as PNG and PDF.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global backend state): PNG
is rendered by Agg and PDF by the PDF backend, so it works without a display.
"""

import math
from pathlib import Path

import numpy as np

LOSS_LABEL = "loss barrier (cross-entropy, nats)"
ERROR_LABEL = "error barrier (fraction of examples)"
SIGMA_LABEL = "σ (perturbation norm / network norm at init)"
METRIC_LABELS = {"loss": LOSS_LABEL, "error": ERROR_LABEL}
ZERO_COLOR = "0.45"       # σ = 0 (the unperturbed twin)
SPREAD = "min–max over seeds"
# Markers and line styles per perturbation variant (the part of the label after the kind).
_VARIANTS = {"": ("o", "-"), "single-weight": ("*", ":"), "masked": ("s", "--"), "fraction": ("D", "-.")}


def base_kind(label: str) -> str:
  """``batch/single-weight`` -> ``batch``."""
  return str(label).split("/")[0]


def variant(label: str) -> str:
  """``batch/single-weight`` -> ``single-weight``; ``batch`` -> ``""``."""
  parts = str(label).split("/", 1)
  return parts[1] if len(parts) > 1 else ""


def variant_style(label: str):
  """(marker, linestyle) of a perturbation label's variant."""
  v = variant(label)
  return _VARIANTS.get(v.split("=")[0], ("^", (0, (3, 1, 1, 1))))


def aggregate(df, keys, column):
  """Mean, min, max and count of ``column`` over the rows of each group of ``keys`` (seeds), NaNs left out;
  groups with no finite value are dropped. Returns a DataFrame sorted by ``keys``."""
  sub = df[list(keys) + [column]].copy()
  sub[column] = sub[column].astype(float)
  sub = sub[np.isfinite(sub[column])]
  if sub.empty:
    return sub.assign(mean=[], min=[], max=[], n=[])
  g = sub.groupby(list(keys), dropna=False)[column]
  out = g.agg(["mean", "min", "max", "count"]).rename(columns={"count": "n"}).reset_index()
  return out.sort_values(list(keys)).reset_index(drop=True)


def seeds_phrase(counts) -> str:
  """``n = 2 seeds per point`` or ``n = 1–3 seeds per point``."""
  counts = [int(c) for c in counts]
  if not counts:
    return "no points"
  lo, hi = min(counts), max(counts)
  return f"n = {lo} seed{'s' if hi > 1 else ''} per point" if lo == hi else f"n = {lo}–{hi} seeds per point"


class Palette:
  """Colours for a set of values: categorical for perturbation times, log-scaled for σ (σ = 0 grey)."""

  def __init__(self, values, cmap="viridis", log=False):
    import matplotlib
    self.log = log
    self.cmap = matplotlib.colormaps[cmap]
    vals = sorted({float(v) for v in values if v is not None and np.isfinite(float(v))})
    self.values = vals
    pos = [v for v in vals if v > 0] if log else vals
    if log:
      lo, hi = (math.log10(min(pos)), math.log10(max(pos))) if pos else (0.0, 1.0)
      self._pos = lambda v: 0.5 if hi == lo else (math.log10(v) - lo) / (hi - lo)
    else:
      index = {v: i for i, v in enumerate(pos)}
      self._pos = lambda v: 0.5 if len(pos) < 2 else index[v] / (len(pos) - 1)

  def __call__(self, value):
    value = float(value)
    if self.log and value <= 0:
      return ZERO_COLOR
    return self.cmap(0.85 * self._pos(value))  # the top of viridis/plasma is too pale on white


def sigma_text(sigma) -> str:
  sigma = float(sigma)
  return "σ = 0" if sigma == 0 else f"σ = {sigma:.0e}".replace("e-0", "e-").replace("e+0", "e+")


def time_text(t, t_epochs) -> str:
  t_epochs = float(t_epochs) if t_epochs is not None and not _isnan(t_epochs) else None
  return f"t = {int(t)} steps" + (f" ({t_epochs:.3g} ep)" if t_epochs is not None else "")


def _isnan(x) -> bool:
  try:
    return math.isnan(float(x))
  except (TypeError, ValueError):
    return True


class SigmaAxis:
  """A log σ axis with σ = 0 drawn in a slot 1.5 decades left of the smallest σ > 0, behind a dotted line.

  The slot is a label position, not a value on the axis; :meth:`x` maps σ (0 included) to the plotted x.
  """

  def __init__(self, sigmas):
    pos = sorted({float(s) for s in sigmas if float(s) > 0})
    if not pos:
      raise ValueError("SigmaAxis: no σ > 0 to place on a log axis")
    self.has_zero = any(float(s) == 0 for s in sigmas)
    self.lo, self.hi = pos[0], pos[-1]
    self.zero_x = self.lo / 10 ** 1.5
    self.separator = self.lo / 10 ** 0.75

  def x(self, sigma) -> float:
    return self.zero_x if float(sigma) == 0 else float(sigma)

  def zero_slot(self, i: int, n: int) -> float:
    """x of the i-th of n series in the σ = 0 slot, spread over ±0.3 decades so that none hides another."""
    step = 0.0 if n < 2 else min(0.15, 0.6 / (n - 1))
    return self.zero_x * 10 ** (step * (i - (n - 1) / 2))

  def style(self, ax) -> None:
    from matplotlib.ticker import NullLocator
    ax.set_xscale("log")
    lo_dec, hi_dec = math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi))
    step = max(1, (hi_dec - lo_dec + 1) // 6)
    ticks = [10.0 ** k for k in range(lo_dec, hi_dec + 1, step) if 10.0 ** k >= self.separator]
    labels = [f"$10^{{{int(round(math.log10(v)))}}}$" for v in ticks]
    left = self.lo / 10 ** 0.5
    if self.has_zero:
      ticks, labels = [self.zero_x] + ticks, ["σ=0"] + labels
      ax.axvline(self.separator, color="0.6", linestyle=":", linewidth=1)
      left = self.zero_x / 10 ** 0.5
    ax.set_xticks(ticks, labels)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(left, self.hi * 10 ** 0.5)


def band(ax, x, mean, lo, hi, color, label=None, marker="o", linestyle="-"):
  """A mean line with markers and a shaded min–max band (error bars where there is one point)."""
  x, mean, lo, hi = (np.asarray(v, float) for v in (x, mean, lo, hi))
  ax.plot(x, mean, marker=marker, linestyle=linestyle, color=color, label=label, markersize=5)
  if len(x) > 1:
    ax.fill_between(x, lo, hi, color=color, alpha=0.18, linewidth=0)
  else:
    ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], color=color, capsize=3, linestyle="none")


def points(ax, x, mean, lo, hi, color, marker="o", label=None):
  """Markers with min–max error bars, no line (σ = 0 in its slot, single points)."""
  x, mean, lo, hi = (np.asarray(v, float) for v in (x, mean, lo, hi))
  ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], color=color, marker=marker, linestyle="none", capsize=3,
              markersize=6, markerfacecolor="white", label=label)


EXCLUDED_MARKER = "x"
EXCLUDED_LABEL = "at the top: pairs without a barrier (diverged, or a non-finite path), not in the mean"


EXCLUDED_ROW = 0.06  # height of one row of ✕ markers, as a fraction of the panel's


def excluded(ax, x, counts, color, row: int = 0) -> None:
  """Pairs left out of a mean (no barrier: a diverged pair, a non-finite path) as ✕ at the top of the panel at
  their x (data coordinates), with their number beside it where there are several; ``row`` (one per series) stacks
  them downwards, so that two series at the same x do not hide each other."""
  transform = ax.get_xaxis_transform()  # x in data coordinates, y as a fraction of the panel's height
  y = 0.96 - EXCLUDED_ROW * row
  for xi, n in zip(np.asarray(x, float), counts):
    ax.plot([xi], [y], marker=EXCLUDED_MARKER, color=color, linestyle="none", markersize=7, markeredgewidth=1.6,
            transform=transform, clip_on=False, gid="excluded")
    if int(n) > 1:
      ax.annotate(f"{int(n)}", (xi, y), xycoords=transform, xytext=(5, -3), textcoords="offset points",
                  fontsize=7, color=color, gid="excluded_count")


def new_figure(rows: int, cols: int, width: float = 4.6, height: float = 3.4):
  from matplotlib.figure import Figure
  fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
  axes = fig.subplots(rows, cols, squeeze=False)
  return fig, axes


def save(fig, out_dir, name: str) -> list[Path]:
  """``name``.png (150 dpi) and ``name``.pdf in ``out_dir``."""
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
  for path in paths:  # "tight": constrained layout can leave a long label past the edge
    fig.savefig(path, dpi=150, bbox_inches="tight", pad_inches=0.08)
  return paths


def legend_handles(entries):
  """Legend handles from (label, color, marker, linestyle) tuples."""
  from matplotlib.lines import Line2D
  return [Line2D([], [], color=c, marker=m, linestyle=ls, label=lab, markersize=6) for lab, c, m, ls in entries]
