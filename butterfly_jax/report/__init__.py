"""The report: run directories collected into one tidy table (one row per child pair), written with its figures.

Command line::

  python -m butterfly_jax.report --runs DIR [--out DIR/report] [--no-figures] [--map] [--no-page]  # butterfly-report
  python -m butterfly_jax.report --table DIR/report/table.parquet --map [--out DIR]      # a written table's map

A run directory is any folder under ``DIR`` holding a butterfly ``config.json`` (folders inside a run
directory are not searched). From notebooks::

  from butterfly_jax.report import load_curves, load_table, load_trajectories, make_figures, make_report
  table = load_table("runs/")              # one row per (run, child k >= 1); see docs/reports.md
  traj = load_trajectories("runs/")        # one row per (run, logged step, member) of metrics.jsonl
  curves = load_curves("runs/")            # one row per (run, child, aligned, split, metric, alpha)
  make_figures(table, "out/", traj)        # every figure the table supports, captions in out/figures.md
  table, paths = make_report("runs/")      # what the command line writes into runs/report: index.html and the rest
  make_map(table, "out/")                  # the instability map: heatmaps, σ*(t) with brackets, map.md

Only pandas is needed to load; pyarrow for Parquet, matplotlib for figures (``pip install '.[report]'``).

``page`` writes the report page, ``index.html``: figures embedded with their captions, the summary, the table,
the map's tables and the provenance in one self-contained file.

``instability`` is the instability map's module (σ*(t) per threshold with its bracket, the seeds' spread, the
seed-bootstrap Spearman statistics, the map's figures and Markdown; its functions are public). The other modules
inside are internal: ``table`` (the tables), ``figures`` (which figures, once per setting), ``pairs``, ``training``
and ``finetune`` (the figures themselves), ``context`` (what they share) and ``plotting`` (matplotlib pieces).
"""

from pathlib import Path

from butterfly_jax.report.page import write_page
from butterfly_jax.report.table import ReportError, load_curves, load_table, load_trajectories, summary, write_table


def make_report(runs_dir, out_dir=None, figures: bool = True, instability_map: bool = False,
                map_metric: str = "train.loss", map_thresholds=(0.005, 0.01, 0.02), page: bool = True):
  """Writes the report of the run directories under ``runs_dir`` into ``out_dir`` (default ``runs_dir/report``):
  ``table``, ``trajectories`` and ``curves`` (the α-curves, long; CSV, and Parquet when pyarrow is installed) and,
  when ``figures``, every figure the table supports with ``figures.md``; with ``instability_map``, the map of
  ``map_metric`` at ``map_thresholds`` too (:func:`butterfly_jax.report.instability.make_map`: ``map.md``, and its
  figures when ``figures``); when ``page``, last, ``index.html`` (:func:`butterfly_jax.report.page.write_page`: all
  of it in one self-contained file). Returns (the pair table, the paths written). Raises ReportError when
  ``runs_dir`` holds no run directories, or (``instability_map``) its runs have no map."""
  out = Path(out_dir) if out_dir else Path(runs_dir) / "report"
  table = load_table(runs_dir)
  paths = write_table(table, out)
  trajectories = load_trajectories(runs_dir)
  paths += write_table(trajectories, out, "trajectories")
  paths += write_table(load_curves(runs_dir), out, "curves")
  if figures:
    from butterfly_jax.report.figures import make_figures
    paths += make_figures(table, out, trajectories)
  if instability_map:
    from butterfly_jax.report.instability import make_map
    paths += make_map(table, out, map_metric, map_thresholds, figures=figures)
  if page:
    paths.append(write_page(table, out, paths, runs_dir))
  return table, paths


def __getattr__(name):
  """``make_figures`` and ``make_map``, imported on first use: matplotlib is needed only when figures are made."""
  if name == "make_figures":
    from butterfly_jax.report.figures import make_figures
    return make_figures
  if name == "make_map":
    from butterfly_jax.report.instability import make_map
    return make_map
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["make_report", "load_curves", "load_table", "load_trajectories", "make_figures", "make_map", "summary",
           "ReportError"]
