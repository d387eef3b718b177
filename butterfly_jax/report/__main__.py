"""The report's command line: ``python -m butterfly_jax.report --runs DIR [--out DIR/report] [--no-figures]``
(:func:`butterfly_jax.report.make_report`); prints the summary and the files written, exits 2 when ``DIR`` holds no
run directories."""

import argparse
import sys

from butterfly_jax.report import ReportError, make_report, summary
from butterfly_jax.run.commands import spellings


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m butterfly_jax.report",
                                   description="Collect butterfly_jax run directories into a table and figures.")
  parser.add_argument("--runs", required=True, help="folder searched recursively for run directories")
  parser.add_argument("--out", default=None, help="output folder (default: RUNS/report)")
  parser.add_argument(*spellings("--no-figures"), action="store_true", help="write the tables only")
  args = parser.parse_args(argv)
  try:
    table, paths = make_report(args.runs, args.out, figures=not args.no_figures)
  except ReportError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(summary(table))
  for p in paths:
    print(p)
  return 0


if __name__ == "__main__":
  sys.exit(main())
