"""How the reproduction's claims files print their numbers, and the statistics behind their relation claims.

Spearman's ρ with a bootstrap over seeds (:func:`spearman_by_seed`, :func:`fmt_rho`) is the report's
(:mod:`butterfly_jax.report.instability`, which says why whole seeds are resampled); it is named here too, beside
the formats, so that the claims files take every statistic from one module.
"""

import numpy as np

from butterfly_jax.report.instability import LEVEL, N_BOOT, fmt_rho, spearman_by_seed

__all__ = ["LEVEL", "N_BOOT", "UNTRAINED_ERROR", "fmt", "fmt_rho", "mean_range", "sigma_text", "spearman_by_seed"]

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
