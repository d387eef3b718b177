"""How the reproduction's claims files print their numbers, the statistics behind their relation claims, and the
command line of the modules that report on one folder of runs.

Spearman's ρ with a bootstrap over seeds (:func:`spearman_by_seed`, :func:`fmt_rho`) is the report's
(:mod:`butterfly_jax.report.instability`, which says why whole seeds are resampled); it is named here too, beside
the formats, so that the claims files take every statistic from one module.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from butterfly_jax.report.instability import LEVEL, N_BOOT, fmt_rho, spearman_by_seed

__all__ = ["LEVEL", "N_BOOT", "UNTRAINED_ERROR", "fmt", "fmt_rho", "folder_main", "mean_range", "sigma_text",
           "spearman_by_seed", "time_order"]

# a network's train error above which it has not learned (chance on Fashion-MNIST's 10 classes: 0.9)
UNTRAINED_ERROR = 0.5


def fmt(x, digits: int = 4) -> str:
  """A number as the claims files print it: fixed ``digits`` decimals, "n/a" for None or a non-finite value."""
  return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def mean_range(values, digits: int = 4) -> str:
  """"mean [min, max]" of ``values`` ("n/a" if there are none)."""
  v = np.asarray(list(values), float)
  return "n/a" if not len(v) else f"{fmt(v.mean(), digits)} [{fmt(v.min(), digits)}, {fmt(v.max(), digits)}]"


def sigma_text(s) -> str:
  """σ as the claims files print it: "0" or the shortest general form (1e-05, 0.01, 1)."""
  return "0" if s == 0 else f"{s:g}"


def time_order(t: str) -> float:
  """A perturbation time's order (``"250"``, ``"1ep"``): steps, or epochs as 1e9 × epochs (after any step count
  the sweeps here use)."""
  return float(t[:-2]) * 1e9 if t.endswith("ep") else float(t)


def folder_main(argv, prog: str, doc: str, report, help_runs: str) -> int:
  """The command line of a module whose report reads one folder of runs: ``python -m PROG RUNS`` prints
  ``report(RUNS)`` (Markdown) to stdout; ``doc``'s first line is its description."""
  parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=doc.splitlines()[0])
  parser.add_argument("runs", type=Path, help=help_runs)
  args = parser.parse_args(argv)
  sys.stdout.write(report(args.runs))
  return 0
