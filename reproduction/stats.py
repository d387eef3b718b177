"""Statistics behind the reproduction's relation claims: Spearman's ρ with a bootstrap over seeds.

A relation such as "barriers track L2 distance" is measured over child pairs. Pairs of one seed share a
trunk and a child 0, so they are not independent: the confidence interval resamples whole seeds (a cluster
bootstrap) and recomputes ρ over the pairs of the resampled seeds. With 3 seeds there are only 10 distinct
resamples, so the interval is coarse; it says how much ρ moves when the seeds change, not more.
"""

import numpy as np
from scipy.stats import spearmanr

LEVEL = 0.95
N_BOOT = 2000


def fmt(x, digits: int = 4) -> str:
  """A number as the claims files print it: fixed ``digits`` decimals, "n/a" for None or a non-finite value."""
  return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


# a network's train error above which it has not learned (chance on Fashion-MNIST's 10 classes: 0.9)
UNTRAINED_ERROR = 0.5


def mean_range(values, digits: int = 4) -> str:
  """"mean [min, max]" of ``values`` ("n/a" if there are none)."""
  v = np.asarray(list(values), float)
  return "n/a" if not len(v) else f"{fmt(v.mean(), digits)} [{fmt(v.min(), digits)}, {fmt(v.max(), digits)}]"


def sigma_text(s) -> str:
  """σ as the claims files print it: "0" or the shortest general form (1e-05, 0.01, 1)."""
  return "0" if s == 0 else f"{s:g}"


def _rho(x, y):
  if len(x) < 3 or np.unique(x).size < 2 or np.unique(y).size < 2:
    return np.nan
  return float(spearmanr(x, y).statistic)


def spearman_by_seed(x, y, seeds, n_boot: int = N_BOOT, level: float = LEVEL, rng_seed: int = 0) -> dict:
  """ρ(x, y) over every pair, and a percentile interval from resampling seeds with replacement.

  Returns ``rho``, ``n`` (pairs), ``seeds`` (distinct seeds), ``lo``/``hi`` (NaN with fewer than 2 seeds),
  ``undefined`` (the fraction of resamples where ρ is undefined: a constant x or y) and ``note`` (why ρ
  itself is undefined, else "").
  """
  x, y, seeds = (np.asarray(v) for v in (x, y, seeds))
  keep = np.isfinite(x.astype(float)) & np.isfinite(y.astype(float))
  x, y, seeds = x[keep].astype(float), y[keep].astype(float), seeds[keep]
  out = {"rho": _rho(x, y), "n": int(len(x)), "seeds": int(np.unique(seeds).size), "lo": np.nan, "hi": np.nan,
         "undefined": np.nan, "note": ""}
  if len(x) < 3:
    out["note"] = "too few pairs"
  elif np.unique(x).size < 2 or np.unique(y).size < 2:
    out["note"] = "a variable is constant"
  groups = [np.flatnonzero(seeds == s) for s in np.unique(seeds)]
  if len(groups) < 2 or not np.isfinite(out["rho"]):
    return out
  rng = np.random.default_rng(rng_seed)
  draws = []
  for _ in range(n_boot):
    idx = np.concatenate([groups[i] for i in rng.integers(len(groups), size=len(groups))])
    draws.append(_rho(x[idx], y[idx]))
  draws = np.asarray(draws)
  ok = draws[np.isfinite(draws)]
  out["undefined"] = float(1 - len(ok) / len(draws))
  if len(ok):
    out["lo"], out["hi"] = (float(q) for q in np.quantile(ok, [(1 - level) / 2, (1 + level) / 2]))
  return out


def fmt_rho(r: dict) -> str:
  """``0.85 [0.71, 0.93] n=42, 3 seeds`` (or the reason ρ is undefined)."""
  if not np.isfinite(r["rho"]):
    return f"undefined ({r['note']}) n={r['n']}"
  ci = (f" [{r['lo']:.2f}, {r['hi']:.2f}]" if np.isfinite(r["lo"]) else " [no interval: 1 seed]")
  return f"{r['rho']:.2f}{ci} n={r['n']}, {r['seeds']} seed{'s' if r['seeds'] != 1 else ''}"
