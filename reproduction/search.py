"""σ* by per-seed threshold search, as Markdown: each (t, seed)'s bracket and estimate, and the seeds' spread per t.

Reads a ``python -m butterfly_jax.threshold --per_seed`` folder's ``threshold.json`` (the searched points, brackets
and estimates; the search's own run directories beside it) and prints per t each seed's σ*, its bracket and the
bracket's width (hi / lo), then per t the geometric mean of the seeds' σ* and their spread (max / min).

    python -m reproduction.search reproduction/map/mlp_search_batch > reproduction/map/mlp_search_batch.md

(from the repository root).
"""

import json
import sys
from pathlib import Path

from butterfly_jax.config import to_steps
from butterfly_jax.report.instability import read_search, search_sigma_star, seed_spread
from reproduction.stats import folder_main, time_order


def _g(x) -> str:
  return "–" if x is None else f"{x:.3g}"


def report(folder: Path) -> str:
  search = read_search(folder)
  results = sorted(Path(folder).glob("*/results.json"))
  spe = json.loads(results[0].read_text())["steps"]["steps_per_epoch"] if results else None
  lines = [f"# σ* by search: `{folder}`", "",
           f"{search['kind']} direction; σ* where each seed's {search['metric']} barrier first reaches "
           f"{search['threshold']:g}, searched over [{search['lo']:g}, {search['hi']:g}] in log σ ({search['points']} "
           f"σ a round, at most {search['rounds']} rounds, stopped at brackets within ×{search['factor']:g}"
           + (f"; the first round's points from `{Path(search['prior']).name}`'s runs where they are this machine's "
              "network" if search.get("prior") else "") + f"); {len(results)} runs. From "
           f"`python -m reproduction.search {folder}`.", "",
           "| t | seed | status | bracket | hi / lo | σ* (log-linear inside the bracket) |",
           "| --- | ---: | --- | --- | ---: | ---: |"]
  times = sorted(search["times"], key=time_order)
  for t in times:
    for seed, g in sorted(search["times"][t]["per_seed"].items(), key=lambda kv: int(kv[0])):
      b = g["bracket"]
      lines.append(f"| {t} | {seed} | {g['status'].split(':')[0]} | " + (f"[{b[0]:.3g}, {b[1]:.3g}]" if b else "–")
                   + f" | {_g(b[1] / b[0]) if b else '–'} | {_g(g['sigma_estimate'])} |")
  # the seeds' geometric mean and spread: the figure's own numbers (search_sigma_star, seed_spread)
  star = search_sigma_star(search, spe)
  spread = seed_spread(star).set_index("t")
  star = star.set_index("t")
  lines += ["", "| t | seeds bracketed | σ* geometric mean | min | max | max / min |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
  for t in times:
    step = to_steps(t, spe, "perturb.time")
    r, m = spread.loc[step], star.loc[step, "sigma_star"]
    nan = lambda x: None if x != x else x
    lines.append(f"| {t} | {r['bracketed']} of {r['seeds']} | {_g(nan(m))} | {_g(nan(r['min']))} | "
                 f"{_g(nan(r['max']))} | {_g(nan(r['ratio']))} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  return folder_main(argv, "reproduction.search", __doc__, report, "a threshold search's folder (threshold.json)")


if __name__ == "__main__":
  sys.exit(main())
