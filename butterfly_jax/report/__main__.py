"""The report's command line (:func:`butterfly_jax.report.make_report`; docs/reports.md)::

  python -m butterfly_jax.report --runs DIR [--out DIR/report] [--no-figures] [--map] [--no-page]
  python -m butterfly_jax.report --table TABLE --map [--out TABLE's folder]

with ``--map-metric``, ``--map-thresholds``, ``--map-scale`` and ``--map-search`` for the instability map
(:mod:`butterfly_jax.report.instability`).
``--runs`` prints the summary and the files written, the report page (``index.html``,
:mod:`butterfly_jax.report.page`) last, and exits 2 when ``DIR`` holds no run directories; ``--table`` draws only
the map, from a table the report wrote. Either exits 2 when ``--map`` finds no map to draw (``--runs`` writes the
page first)."""

import argparse
import sys
from pathlib import Path

from butterfly_jax.report import ReportError, make_report, summary
from butterfly_jax.report.page import write_page
from butterfly_jax.run.commands import spellings
from butterfly_jax.threshold import METRICS

THRESHOLDS = "0.005,0.01,0.02"


def _thresholds(text: str) -> tuple:
  """``--map-thresholds``: comma-separated positive finite numbers."""
  try:
    levels = tuple(float(v) for v in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
  if not levels or any(not (0 < v < float("inf")) for v in levels):
    raise argparse.ArgumentTypeError(f"every threshold must be a positive finite number, got {text!r}")
  return levels


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m butterfly_jax.report",
                                   description="Collect butterfly_jax run directories into a table, figures and a "
                                   "page.")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--runs", help="folder searched recursively for run directories")
  source.add_argument("--table", help="a table the report wrote (table.parquet or table.csv): draw its instability "
                      "map only (implies --map), writing nothing else")
  parser.add_argument("--out", default=None, help="output folder (default: RUNS/report; with --table, the table's "
                      "folder)")
  parser.add_argument(*spellings("--no-figures"), action="store_true", help="write the tables only (with --map: "
                      "map.md, no map figures)")
  parser.add_argument("--map", action="store_true", help="also the instability map: map.md, map_<kind>.png, "
                      "threshold.png, relations_<kind>.png and figure1_<kind>.png in the output folder (a sweep over "
                      "perturb.time and σ)")
  parser.add_argument(*spellings("--no-page"), action="store_true", help="no index.html (the report page: figures, "
                      "captions, summary, table, map and provenance in one self-contained file)")
  parser.add_argument(*spellings("--map-metric"), default="train.loss", choices=METRICS,
                      help="the map's barrier (default: train.loss)")
  parser.add_argument(*spellings("--map-thresholds"), type=_thresholds, default=_thresholds(THRESHOLDS),
                      help=f"barrier values σ*(t) is found for, comma-separated (one panel each; default: "
                      f"{THRESHOLDS})")
  parser.add_argument(*spellings("--map-scale"), default=None,
                      help="a run directory holding proxy.json (python -m butterfly_jax.proxy --fractions=0), or a "
                      "folder of them: figure1_<kind>.png draws their full-permutation barrier")
  parser.add_argument(*spellings("--map-search"), action="append", default=[],
                      help="a per-seed threshold search (python -m butterfly_jax.threshold --per_seed: its "
                      "threshold.json or folder) at the 2%% test-error criterion: figure1_<kind>.png draws its σ*; "
                      "once per direction")
  args = parser.parse_args(argv)
  try:
    if args.table:
      from butterfly_jax.report.instability import read_table
      table, out, paths = read_table(args.table), args.out or Path(args.table).parent, []
    else:
      table, paths = make_report(args.runs, args.out, figures=not args.no_figures, page=False)
      out = args.out or Path(args.runs) / "report"
      print(summary(table))
  except (ReportError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for p in paths:
    print(p)
  status = 0
  if args.map or args.table:
    from butterfly_jax.report.instability import make_map
    try:
      made = make_map(table, out, args.map_metric, args.map_thresholds, figures=not args.no_figures,
                      scale=args.map_scale, searches=args.map_search)
    except (ReportError, ValueError, FileNotFoundError) as e:
      print(f"error: --map: {e}", file=sys.stderr)
      made, status = [], 2
    for p in made:
      print(p)
    paths += made
  if args.runs and not args.no_page:  # last: the page shows what was written, the map included
    print(write_page(table, out, paths, args.runs))
  return status


if __name__ == "__main__":
  sys.exit(main())
