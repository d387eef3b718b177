"""σ* by per-seed threshold search, as Markdown: each (t, seed)'s bracket and estimate, and the seeds' spread per t.

Reads a ``python -m butterfly_jax.threshold --per_seed`` folder's ``threshold.json`` (the searched points, brackets
and estimates; the search's own run directories beside it) and prints per t each seed's σ*, its bracket and the
bracket's width (hi / lo), then per t the geometric mean of the seeds' σ* and their spread (max / min).

    python -m reproduction.search reproduction/map/mlp_search_batch > reproduction/map/mlp_search_batch.md

(from the repository root).
"""

import math
import sys
from pathlib import Path

from butterfly_jax.report.instability import read_search
from reproduction.stats import folder_main, time_order


def _g(x) -> str:
  return "–" if x is None else f"{x:.3g}"


def report(folder: Path) -> str:
  search = read_search(folder)
  runs = len(list(Path(folder).glob("*/results.json")))
  lines = [f"# σ* by search: `{folder}`", "",
           f"{search['kind']} direction; σ* where each seed's {search['metric']} barrier first reaches "
           f"{search['threshold']:g}, searched over [{search['lo']:g}, {search['hi']:g}] in log σ ({search['points']} σ "
           f"a round, at most {search['rounds']} rounds, stopped at brackets within ×{search['factor']:g}"
           + (f"; the first round's points from `{Path(search['prior']).name}`'s runs where they are this machine's "
              "network" if search.get("prior") else "") + f"); {runs} runs. From `python -m reproduction.search "
           f"{folder}`.", "",
           "| t | seed | status | bracket | hi / lo | σ* (log-linear inside the bracket) |",
           "| --- | ---: | --- | --- | ---: | ---: |"]
  spreads = []
  for t in sorted(search["times"], key=time_order):
    per_seed = search["times"][t]["per_seed"]
    for seed, g in sorted(per_seed.items(), key=lambda kv: int(kv[0])):
      b = g["bracket"]
      lines.append(f"| {t} | {seed} | {g['status'].split(':')[0]} | " + (f"[{b[0]:.3g}, {b[1]:.3g}]" if b else "–")
                   + f" | {_g(b[1] / b[0]) if b else '–'} | {_g(g['sigma_estimate'])} |")
    est = [g["sigma_estimate"] for g in per_seed.values() if g["sigma_estimate"] is not None]
    spreads.append((t, est, len(per_seed)))
  lines += ["", "| t | seeds bracketed | σ* geometric mean | min | max | max / min |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
  for t, est, n in spreads:
    gm = math.exp(sum(math.log(x) for x in est) / len(est)) if est else None
    lines.append(f"| {t} | {len(est)} of {n} | {_g(gm)} | {_g(min(est) if est else None)} | "
                 f"{_g(max(est) if est else None)} | {_g(max(est) / min(est) if est else None)} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  return folder_main(argv, "reproduction.search", __doc__, report, "a threshold search's folder (threshold.json)")


if __name__ == "__main__":
  sys.exit(main())
