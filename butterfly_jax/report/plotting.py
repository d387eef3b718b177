"""Matplotlib pieces shared by the report's figures: seed aggregation, colours and markers for t and σ, the log σ
axis with its σ = 0 slot, symlog barrier axes, line styles per perturbation, and saving as PNG and PDF.

Colours are qualitative, each paired with its own marker so that series are told apart in greyscale and by
colour-blind readers too: σ has one fixed colour and marker per decade in every figure (:data:`SIGMA_STYLES`, from
Okabe and Ito's colour-blind-safe palette; σ = 0 grey), perturbation times take tab10 colours (black for its grey)
and markers in the order of t. Barriers, which span several orders of magnitude (1e-5 to a few nats), are drawn on
symlog axes, linear below :data:`BARRIER_LINTHRESH`.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global backend state): PNG
is rendered by Agg and PDF by the PDF backend, so it works without a display.
"""

import math
from pathlib import Path

import numpy as np

LOSS_LABEL = "loss barrier (cross-entropy, nats)"
ERROR_LABEL = "error barrier (fraction of examples)"
SIGMA_LABEL = "σ (perturbation norm / network norm at init)"
METRIC_LABEL = "task-metric barrier (on 1 − metric)"  # text tasks: accuracy, F1 or Matthews correlation
METRIC_LABELS = {"loss": LOSS_LABEL, "error": ERROR_LABEL, "metric": METRIC_LABEL}
ZERO_COLOR = "0.45"       # σ = 0 (the unperturbed twin)
SPREAD = "min–max over seeds"
BARRIER_LINTHRESH = 1e-3  # symlog barrier axes: linear in [-1e-3, 1e-3], a decade per tick above

# Okabe & Ito's colour-blind-safe palette.
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7"}
# σ = 10^k -> (colour, marker), the same in every figure; neighbouring decades get contrasting hues.
SIGMA_STYLES = {-6: (OKABE_ITO["yellow"], "*"), -5: (OKABE_ITO["blue"], "o"), -4: (OKABE_ITO["orange"], "s"),
                -3: (OKABE_ITO["bluish green"], "^"), -2: (OKABE_ITO["vermillion"], "D"),
                -1: (OKABE_ITO["sky blue"], "v"), 0: (OKABE_ITO["reddish purple"], "P"), 1: (OKABE_ITO["black"], "X")}
SIGMA_ZERO_STYLE = (ZERO_COLOR, "p")
# σ off the decades above (3e-3, 1e2, ...): these in increasing order of σ.
SIGMA_OTHER_STYLES = (("#8C564B", "<"), ("#BCBD22", ">"), ("#17BECF", "h"), ("#E377C2", "8"), ("#9467BD", "d"))
# Perturbation times: tab10 (its grey, the colour of σ = 0 and child 0, replaced by black) and these markers, in
# increasing order of t.
TIME_COLORS = ("#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#000000", "#BCBD22",
               "#17BECF")
TIME_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
# Line styles per perturbation variant (the part of the label after the kind); the marker is the series' (σ or t).
_VARIANTS = {"": "-", "single-weight": ":", "masked": "--", "fraction": "-."}
VARIANT_LINES = {"": "solid", "single-weight": "dotted", "masked": "dashed", "fraction": "dash-dotted"}


def base_kind(label: str) -> str:
  """``batch/single-weight`` -> ``batch``."""
  return str(label).split("/")[0]


def variant(label: str) -> str:
  """``batch/single-weight`` -> ``single-weight``; ``batch`` -> ``""``."""
  parts = str(label).split("/", 1)
  return parts[1] if len(parts) > 1 else ""


def variant_line(label: str):
  """The line style of a perturbation label's variant (solid for the plain kind)."""
  return _VARIANTS.get(variant(label).split("=")[0], (0, (3, 1, 1, 1)))


def variant_line_name(label: str) -> str:
  """``dotted`` for ``batch/single-weight``: the caption's word for :func:`variant_line`."""
  return VARIANT_LINES.get(variant(label).split("=")[0], "dash-dot-dotted")


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


def per_point(counts, unit: str = "pair") -> str:
  """``n = 3 pairs per point`` or ``n = 1–3 pairs per point``: the rows behind each mean (one per seed in a plain
  sweep; a sweep that also varies something the figure does not split on, such as the pre-training step, pools
  it)."""
  counts = [int(c) for c in counts]
  if not counts:
    return "no points"
  lo, hi = min(counts), max(counts)
  return f"n = {lo} {unit}{'s' if hi > 1 else ''} per point" if lo == hi else f"n = {lo}–{hi} {unit}s per point"


class Styles:
  """A colour and a marker per value of a series variable; calling it gives the colour."""

  def style(self, value):
    raise NotImplementedError

  def __call__(self, value):
    return self.style(value)[0]

  def marker(self, value):
    return self.style(value)[1]

  def rank(self, value) -> int:
    """The place of ``value`` among the values given (for staggering markers)."""
    return sorted(set(self.values) | {float(value)}).index(float(value))


class TimeStyles(Styles):
  """Perturbation times: tab10 colours and :data:`TIME_MARKERS` in increasing order of t (cycling after ten)."""

  def __init__(self, values):
    self.values = sorted({float(v) for v in values if v is not None and np.isfinite(float(v))})
    self._index = {v: i for i, v in enumerate(self.values)}

  def style(self, value):
    i = self._index[float(value)]
    return TIME_COLORS[i % len(TIME_COLORS)], TIME_MARKERS[i % len(TIME_MARKERS)]


def _decade(sigma: float):
  """k where σ = 10^k (to rounding), else None."""
  k = round(math.log10(sigma))
  return k if math.isclose(sigma, 10.0 ** k, rel_tol=1e-6) else None


class SigmaStyles(Styles):
  """σ: the fixed colour and marker of its decade (:data:`SIGMA_STYLES`), grey for σ = 0; a σ off those decades
  takes :data:`SIGMA_OTHER_STYLES` in increasing order among the ``values`` given."""

  def __init__(self, values=()):
    vals = sorted({float(v) for v in values if v is not None and np.isfinite(float(v))})
    self.values = vals
    others = [v for v in vals if v > 0 and _decade(v) not in SIGMA_STYLES]
    self._others = {v: i for i, v in enumerate(others)}

  def style(self, value):
    value = float(value)
    if value <= 0:
      return SIGMA_ZERO_STYLE
    k = _decade(value)
    if k in SIGMA_STYLES:
      return SIGMA_STYLES[k]
    i = self._others.setdefault(value, len(self._others))
    return SIGMA_OTHER_STYLES[i % len(SIGMA_OTHER_STYLES)]


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


def symlog_note(linthresh: float = BARRIER_LINTHRESH) -> str:
  """What an axis label adds for a symlog axis."""
  return f"symlog: linear below {linthresh:g}"


def barrier_label(metric: str, split: str = "", symlog: bool = True) -> str:
  """``train loss barrier (cross-entropy, nats)`` with, for a symlog axis, a second line saying so."""
  text = (f"{split} " if split else "") + METRIC_LABELS[metric]
  return text + (f"\n{symlog_note()}" if symlog else "")


def decade_label(value: float, _pos=None) -> str:
  """``0``, ``10^k`` or ``-10^k`` (mathtext) for 0 and exact decades; ``""`` for any other tick, so a symlog axis
  never prints a limit such as ``7.20327×10^-5`` beside its 0."""
  if value == 0:
    return "0"
  exponent = math.log10(abs(value))
  if not math.isfinite(exponent) or abs(exponent - round(exponent)) > 1e-9:
    return ""
  return f"$\\mathregular{{{'-' if value < 0 else ''}10^{{{int(round(exponent))}}}}}$"


def symlog(ax, which: str = "y", linthresh: float = BARRIER_LINTHRESH) -> None:
  """A symlog axis (linear in [-linthresh, linthresh], logarithmic beyond), labelled at 0 and the decades only;
  ``linthresh`` is taken at the decade at or below it (:func:`auto_linthresh`), so the linear part ends on a
  labelled tick."""
  from matplotlib.ticker import FuncFormatter, NullFormatter, SymmetricalLogLocator
  linthresh = auto_linthresh([linthresh], default=BARRIER_LINTHRESH)
  getattr(ax, f"set_{which}scale")("symlog", linthresh=linthresh)
  axis = ax.xaxis if which == "x" else ax.yaxis
  axis.set_major_locator(SymmetricalLogLocator(base=10, linthresh=linthresh))
  axis.set_major_formatter(FuncFormatter(decade_label))
  axis.set_minor_formatter(NullFormatter())


def auto_linthresh(values, default: float = 1.0) -> float:
  """The decade at or below the smallest |value| > 0: for symlog axes of quantities other than barriers."""
  v = np.abs(np.asarray(values, float))
  v = v[np.isfinite(v) & (v > 0)]
  return default if not len(v) else 10.0 ** math.floor(math.log10(v.min()))


def log_axis(ax, which: str = "x") -> None:
  """A log axis labelled at the decades; where the view holds fewer than two decades, 2 and 5 × 10^k are labelled
  too (never every minor tick: their labels collide)."""
  from matplotlib.ticker import FuncFormatter, LogFormatterSciNotation, LogLocator
  getattr(ax, f"set_{which}scale")("log")
  axis = ax.xaxis if which == "x" else ax.yaxis
  axis.set_major_locator(LogLocator(base=10, numticks=12))
  axis.set_major_formatter(LogFormatterSciNotation())
  axis.set_minor_locator(LogLocator(base=10, subs=np.arange(2, 10), numticks=12))

  def minor(x, pos=None):
    lo, hi = sorted(axis.get_view_interval())
    if lo <= 0 or x <= 0:
      return ""
    if math.floor(math.log10(hi)) - math.ceil(math.log10(lo)) + 1 >= 2:
      return ""
    k = math.floor(math.log10(x) + 1e-9)
    m = x / 10.0 ** k
    return f"${int(round(m))}\\times10^{{{k}}}$" if any(math.isclose(m, s, rel_tol=1e-6) for s in (2, 5)) else ""

  axis.set_minor_formatter(FuncFormatter(minor))


def pad_top(ax, rows: int) -> None:
  """Room at the top of the panel for ``rows`` rows of ✕ (:func:`excluded`), on any y scale, so that the markers
  do not cover the highest points."""
  if rows <= 0:
    return
  lo, hi = ax.get_ylim()
  x0 = ax.get_xlim()[0]
  a, b = ax.transData.transform([[x0, lo], [x0, hi]])[:, 1]  # display y: linear in the scaled y
  top = b + (0.08 + EXCLUDED_ROW * (rows - 1)) * (b - a)
  ax.set_ylim(lo, float(ax.transData.inverted().transform([[0.0, top]])[0, 1]))


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


def band(ax, x, mean, lo, hi, color, label=None, marker="o", linestyle="-", markevery=None, fillstyle="full"):
  """A mean line with markers and a shaded min–max band (error bars where there is one point)."""
  x, mean, lo, hi = (np.asarray(v, float) for v in (x, mean, lo, hi))
  ax.plot(x, mean, marker=marker, linestyle=linestyle, color=color, label=label, markersize=5, markevery=markevery,
          fillstyle=fillstyle, markerfacecolor="white" if fillstyle == "none" else None)
  if len(x) > 1:
    ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)
  else:
    ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], color=color, capsize=3, linestyle="none")


def every_nth(n_points: int, marks: int = 6, offset: int = 0):
  """``markevery`` for about ``marks`` markers on a line of ``n_points``, starting at point ``offset`` modulo the
  step: lines that lie on each other get their markers at different points, so that each stays visible."""
  step = max(1, n_points // marks)
  return (offset % step, step)


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


def new_figure(rows: int, cols: int, width: float = 4.6, height: float = 3.4, sharey=False):
  from matplotlib.figure import Figure
  fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
  axes = fig.subplots(rows, cols, squeeze=False, sharey=sharey)
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
  """Legend handles from (label, color, marker, linestyle[, fillstyle]) tuples."""
  from matplotlib.lines import Line2D
  handles = []
  for lab, c, m, ls, *fill in entries:
    fill = fill[0] if fill else "full"
    handles.append(Line2D([], [], color=c, marker=m, linestyle=ls, label=lab, markersize=6, fillstyle=fill,
                          markerfacecolor="white" if fill == "none" else None))
  return handles
