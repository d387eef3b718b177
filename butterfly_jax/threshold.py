"""Threshold search: for each perturbation time, the σ at which a barrier first exceeds a threshold.

    python -m butterfly_jax.threshold --config=configs/NAME.py --runs=DIR --times=0,1ep,5ep [--seeds=0,1,2]
        [--threshold=0.1] [--metric=train.loss] [--lo=1e-6] [--hi=1] [--rounds=3] [--points=4] [--per_seed]
        [--prior=SWEEP_DIR] [--factor=2] [--config.a.b=v]

Installed as ``butterfly-threshold``; ``configs/NAME.py`` is a shipped config from any directory
(:mod:`butterfly_jax.run.config_files`). A bracketing search in log σ, run only as far as it needs. Round 1 runs, for each time and seed, one
family whose children have ``--points`` σ values log-spaced over [lo, hi] (a child's result depends on
its σ, not on its siblings, so one family measures several σ at once). The barrier of each σ is averaged
over seeds (a diverged child counts as above the threshold); the bracket shrinks to the two neighbouring σ
between which the mean crosses the threshold, and the next round puts ``--points`` new σ inside it. The
estimate is the log-linear interpolation of the mean barrier to the threshold inside the final bracket.

``--per_seed`` brackets each seed on its own barriers instead (each seed's families hold its own σ; the result
gives each seed's σ* and bracket and their spread). ``--prior=SWEEP_DIR`` takes the finished runs there that are
runs of this config at another time, seed and σ set (a map's sweep) as measured points, so the first round refines
their bracket instead of laying a grid (its family measures the bracket's ends again: on the same network they
must repeat, ``reproduced``); ``--factor=2`` stops refining a bracket once its ends are within a factor of 2.
Points are kept by network (:func:`network`: child 0's final losses): a barrier is against one child 0, and a
prior run on another machine may have trained another one. Only the network of the search's own runs counts; the
others' points are reported, and their bracket only says where to look first. A crossing below the smallest or
above the largest σ measured is looked for a decade further out.

Each run is an ordinary run directory under ``DIR`` named by time, seed and σ values, so a second
invocation finds them finished and runs nothing; an interrupted one resumes. ``DIR/threshold.json``
holds every measured point, the brackets and the estimates.
"""

import hashlib
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np

from butterfly_jax.config import ConfigError, upgrade
from butterfly_jax.io import results as results_lib
from butterfly_jax.io import rundir as rundir_lib
from butterfly_jax.io.rundir import write_json_atomic
from butterfly_jax.io.text import is_text_dataset
from butterfly_jax.run import config_files, experiment
from butterfly_jax.run.commands import absl_argv, help_lists_flags_of, unknown_config_field

# "*.metric": a text task's metric barrier (Eq. 1 on 1 - metric: F1, Matthews correlation or accuracy)
METRICS = ("train.loss", "train.error", "test.loss", "test.error", "train.metric", "test.metric")


class ThresholdError(ValueError):
  """A bad argument to the threshold search; the message names it."""


def _name(t: str, seed: int, sigmas) -> str:
  digest = hashlib.sha1(json.dumps([float(s) for s in sigmas]).encode()).hexdigest()[:8]
  return f"t={t},seed={seed},sigmas={sigmas[0]:.3g}-{sigmas[-1]:.3g}-{digest}"


def _grid(lo: float, hi: float, points: int, inclusive: bool):
  """``points`` σ log-spaced over [lo, hi] (inclusive) or strictly inside it."""
  if inclusive:
    return [float(s) for s in np.geomspace(lo, hi, points)]
  return [float(s) for s in np.geomspace(lo, hi, points + 2)[1:-1]]


def _barrier(child: dict, metric: str) -> float:
  """The child's barrier (``inf`` if it diverged: it is above any threshold)."""
  if child["diverged"]:
    return math.inf
  split, name = metric.split(".")
  value = child["vs_child0"]["barrier"][split][name]
  return math.inf if value is None else float(value)


def crossing(sigmas, means, threshold: float):
  """Where the mean barrier first reaches ``threshold`` along increasing ``sigmas`` (> 0): ``(status, bracket,
  estimate)``. ``status`` is ``"bracketed"`` (``bracket`` the two neighbouring σ between which the mean first
  crosses; ``estimate`` the log-linear interpolation of the mean to the threshold inside it, or the upper σ
  when its mean is infinite, i.e. diverged), ``"below: ..."`` (no σ reaches it) or ``"above: ..."`` (the
  smallest σ already does); bracket and estimate are None unless bracketed."""
  above = [i for i, m in enumerate(means) if m >= threshold]
  if not above:
    return "below: no sigma up to hi reaches the threshold", None, None
  if above[0] == 0:
    return "above: the smallest sigma already reaches the threshold", None, None
  i = above[0]
  (s0, s1), (m0, m1) = (sigmas[i - 1], sigmas[i]), (means[i - 1], means[i])
  frac = 1.0 if not math.isfinite(m1) else (threshold - m0) / (m1 - m0)
  estimate = float(10 ** (math.log10(s0) + frac * (math.log10(s1) - math.log10(s0))))
  return "bracketed", [s0, s1], estimate


def network(res) -> tuple:
  """A run's child 0 as its final train and test losses: two runs with equal ones trained the same network (the
  same trunk and child 0, bit for bit); runs of one config on another CPU or build may not have (BUILD_NOTES.md,
  "Machine variance"), and their barriers are then measured against another network."""
  child0 = res["children"][0]
  return (child0.get("train", {}).get("loss"), child0.get("test", {}).get("loss"))


def _points(res, metric) -> dict:
  return {float(child["perturb"]["scale"]): _barrier(child, metric) for child in res["children"][1:]
          if child["perturb"]["scale"] > 0}


def prior_points(base_config, prior, metric: str) -> dict:
  """``{(t, seed): {network: {σ: barrier}}}`` (:func:`network`) from the finished runs under ``prior`` (a sweep's or
  an earlier search's folder) that are runs of ``base_config`` but for ``perturb.time``, ``seed`` and
  ``perturb.scales``: the same identity a run directory checks before it counts a run as finished
  (:func:`butterfly_jax.io.rundir.comparable`), so a map's σ grid becomes the search's first round. A child's result
  depends on its own σ, not on its siblings'."""
  out = {}
  for d in sorted(Path(prior).iterdir()):
    if not ((d / "results.json").is_file() and (d / "config.json").is_file()):
      continue
    stored = rundir_lib.to_jsonable(upgrade(json.loads((d / "config.json").read_text())))
    c = base_config.copy_and_resolve_references()
    c.perturb.time, c.seed = str(stored["perturb"]["time"]), int(stored["seed"])
    c.perturb.scales = tuple(stored["perturb"]["scales"])
    if rundir_lib.comparable(stored) != rundir_lib.comparable(c.to_dict()):
      continue
    res = results_lib.load(d / "results.json")
    out.setdefault((c.perturb.time, c.seed), {}).setdefault(network(res), {}).update(_points(res, metric))
  return out


class _Seed:
  """One (time, seed): its points by network, and the network the search measures on (that of its own latest run;
  before any, the prior's network with the most points)."""

  def __init__(self, known: dict):
    self.by_network = {k: dict(v) for k, v in known.items()}
    self.current = None
    self.verified = not known  # whether a run of this search has measured on the prior's network
    self.reproduced = {}       # σ measured twice on one network: whether the barrier was the same

  def network(self):
    if self.current is not None:
      return self.current
    return max(self.by_network, key=lambda k: len(self.by_network[k]), default=None)

  def usable(self) -> dict:
    return self.by_network.get(self.network(), {})

  def others(self) -> dict:
    return {k: v for k, v in self.by_network.items() if k != self.network()}

  def add(self, res, metric):
    net, points = network(res), _points(res, metric)
    old = self.by_network.setdefault(net, {})
    for sigma, value in points.items():
      if sigma in old:
        self.reproduced[sigma] = old[sigma] == value
    old.update(points)
    self.verified = True  # a run of this search has measured on the network it now uses
    self.current = net


def _crossing_of(points: list, lo, hi, threshold):
  """:func:`crossing` on the σ in [lo, hi] measured in every one of ``points`` (``{σ: barrier}`` dicts, one per
  seed of a group), of their mean: ``(grid, means, (status, bracket, estimate))``."""
  grid = sorted(set.intersection(*(set(p) for p in points))) if points else []
  grid = [x for x in grid if lo <= x <= hi]
  means = [float(np.mean([p[x] for p in points])) for x in grid]
  return grid, means, crossing(grid, means, threshold) if grid else ("none", None, None)


def _next_sigmas(group, lo, hi, threshold, points, factor, first_round):
  """The σ the group's next families hold (empty: the group is done). A bracket is refined inside (with its ends
  again while the prior's network is not yet measured by a run of this search, which re-measures them); a crossing
  below the smallest or above the largest σ measured is looked for a decade further out, up to ``lo`` or ``hi``;
  with nothing on the network measured, another network's bracket (a prior from another machine) says where to
  look, and failing that a grid spans [lo, hi]."""
  grid, _, (status, bracket, _) = _crossing_of([g.usable() for g in group], lo, hi, threshold)
  if status == "bracketed":
    if factor and bracket[1] / bracket[0] <= factor:
      return []
    sigmas = _grid(*bracket, points, inclusive=False)
    return sigmas + (list(bracket) if not all(g.verified for g in group) else [])
  if not grid:
    _, _, (_, hint, _) = _crossing_of([next(iter(g.others().values()), {}) for g in group], lo, hi, threshold)
    if hint is not None:
      return _grid(*hint, points, inclusive=False) + list(hint)
    return _grid(lo, hi, points, inclusive=True) if first_round else []
  if status.startswith("above") and grid[0] > lo:
    return _grid(max(lo, grid[0] / 10), grid[0], points, inclusive=True)[:-1]
  if status.startswith("below") and grid[-1] < hi:
    return _grid(grid[-1], min(hi, grid[-1] * 10), points, inclusive=True)[1:]
  return []


def search(base_config, runs_dir, times, seeds, threshold=0.1, metric="train.loss", lo=1e-6, hi=1.0, rounds=3,
           points=4, run_fn=None, per_seed=False, prior=None, factor=0.0) -> dict:
  """Runs the search (see the module docstring) and returns what it writes to ``runs_dir/threshold.json``."""
  if metric not in METRICS:
    raise ThresholdError(f"--metric: unknown barrier {metric!r}; allowed: {', '.join(METRICS)}")
  if metric.endswith(".metric") and not is_text_dataset(base_config.data.name):
    raise ThresholdError(f"--metric: {metric} is a text task's metric barrier (data.name=glue/<task>), and "
                         f"data.name={base_config.data.name}; allowed here: {', '.join(METRICS[:4])}")
  if not 0 < lo < hi:
    raise ThresholdError(f"--lo, --hi: need 0 < lo < hi, got {lo} and {hi}")
  if points < 2 or rounds < 1:
    raise ThresholdError(f"--points must be >= 2 and --rounds >= 1, got {points} and {rounds}")
  if factor and not factor > 1:
    raise ThresholdError(f"--factor: a bracket's hi/lo at which to stop, > 1 (0 = run every round), got {factor}")
  if not seeds or not times:
    raise ThresholdError("--times and --seeds: give at least one of each")
  if prior is not None and not Path(prior).is_dir():
    raise ThresholdError(f"--prior: {prior} is not a folder of runs")
  run_fn = run_fn or experiment.run
  runs_dir = Path(runs_dir)
  runs_dir.mkdir(parents=True, exist_ok=True)
  known = prior_points(base_config, prior, metric) if prior is not None else {}
  seeds = [int(s) for s in seeds]
  groups = [[s] for s in seeds] if per_seed else [seeds]
  out = {"kind": base_config.perturb.kind, "threshold": threshold, "metric": metric, "lo": lo, "hi": hi,
         "rounds": rounds, "points": points,
         "seeds": seeds, "per_seed": bool(per_seed), "factor": factor,
         "prior": None if prior is None else str(prior), "times": {}}
  for t in times:
    state = {s: _Seed(known.get((str(t), s), {})) for s in seeds}
    for r in range(rounds):
      todo = {}  # seed -> the σ its next family holds
      for group in groups:
        for sigma in _next_sigmas([state[s] for s in group], lo, hi, threshold, points, factor, r == 0):
          for s in group:
            todo.setdefault(s, set()).add(sigma)
      if not todo:
        break
      for seed, sigmas in todo.items():
        sigmas = sorted(sigmas)
        c = base_config.copy_and_resolve_references()
        c.perturb.time, c.seed, c.perturb.scales = str(t), seed, tuple(sigmas)
        state[seed].add(run_fn(c, runs_dir / _name(str(t), seed, sigmas)), metric)
    summaries = []
    for group in groups:
      grid, means, (status, bracket, estimate) = _crossing_of([state[s].usable() for s in group], lo, hi,
                                                              threshold)
      summaries.append({
          "status": status if grid else "below: nothing measured", "bracket": bracket,
          "sigma_estimate": estimate,
          "points": [{"sigma": x, "mean": m, "per_seed": {str(s): state[s].usable()[x] for s in group}}
                     for x, m in zip(grid, means)],
          # child 0 of the network the points were measured on; points on other networks (a prior run on
          # another machine), left out; σ measured twice on one network and whether the barrier repeated
          "network": {str(s): list(state[s].network() or []) for s in group},
          "other_networks": {str(s): [{"network": list(k), "points": {str(x): v for x, v in sorted(p.items())}}
                                      for k, p in state[s].others().items()] for s in group},
          "reproduced": {str(s): {str(x): same for x, same in sorted(state[s].reproduced.items())} for s in group}})
    if per_seed:
      est = [g["sigma_estimate"] for g in summaries if g["sigma_estimate"] is not None]
      out["times"][str(t)] = {"per_seed": {str(s): g for s, g in zip(seeds, summaries)},
                              "spread": [min(est), max(est)] if est else None}
    else:
      out["times"][str(t)] = summaries[0]
    write_json_atomic(runs_dir / "threshold.json", out)  # after every time: nothing finished is lost
  return json.loads((runs_dir / "threshold.json").read_text())


def main(argv=None):
  from absl import app, flags
  from ml_collections import config_flags

  config_flags.DEFINE_config_file("config", None, "Config file (get_config()) of the runs.", lock_config=True)
  flags.DEFINE_string("runs", None, "Folder of the search's runs and threshold.json.", required=True)
  flags.DEFINE_list("times", None, "Perturbation times (steps or '<n>ep').", required=True)
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds averaged at each sigma.")
  flags.DEFINE_float("threshold", 0.1, "Barrier threshold.")
  flags.DEFINE_string("metric", "train.loss", f"Barrier compared: one of {', '.join(METRICS)}.")
  flags.DEFINE_float("lo", 1e-6, "Smallest sigma searched.")
  flags.DEFINE_float("hi", 1.0, "Largest sigma searched.")
  flags.DEFINE_integer("rounds", 3, "Bracketing rounds.")
  flags.DEFINE_integer("points", 4, "Sigma values per round (children per family).")
  flags.DEFINE_bool("per_seed", False, "Bracket each seed's own barrier (its own sigma* and bracket; the seeds' "
                    "spread) instead of the mean over seeds.")
  flags.DEFINE_string("prior", None, "A folder of finished runs of this config (a sweep's, an earlier search's): "
                      "their sigma values are measured points, so the search starts from their bracket.")
  flags.DEFINE_float("factor", 0.0, "Stop refining a bracket once hi/lo <= this (e.g. 2); 0 = run every round.")

  def _main(_):
    F = flags.FLAGS
    if F.config is None:
      print("error: --config: give a config file, e.g. --config=configs/fashion_mnist.py", file=sys.stderr)
      sys.exit(2)
    try:
      seeds = [int(s) for s in F.seeds]
    except ValueError:
      print(f"error: --seeds: expected integers, got {F.seeds}", file=sys.stderr)
      sys.exit(2)
    logging.getLogger().setLevel(logging.WARNING)
    try:
      out = search(F.config, F.runs, F.times, seeds, F.threshold, F.metric, F.lo, F.hi, F.rounds, F.points,
                   per_seed=F.per_seed, prior=F.prior, factor=F.factor)
    except (ThresholdError, ConfigError, ValueError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    over = "each seed's own barrier" if out["per_seed"] else f"mean over seeds {out['seeds']}"
    print(f"sigma at which the {out['metric']} barrier reaches {out['threshold']} ({over})")

    def line(label, r):
      est = "-" if r["sigma_estimate"] is None else f"{r['sigma_estimate']:.3g}"
      br = "" if r["bracket"] is None else f" in [{r['bracket'][0]:.3g}, {r['bracket'][1]:.3g}]"
      print(f"  {label:<20} sigma*={est}{br}  ({r['status']})")

    for t, r in out["times"].items():
      if out["per_seed"]:
        for seed, g in r["per_seed"].items():
          line(f"t={t} seed={seed}", g)
      else:
        line(f"t={t}", r)
    print(f"details: {Path(F.runs) / 'threshold.json'}")

  argv = absl_argv(list(sys.argv if argv is None else argv))
  try:
    argv = argv[:1] + config_files.resolve_argv(argv[1:])
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  sys.argv = argv  # ml_collections reads the overrides from sys.argv
  help_lists_flags_of(__name__)

  def parse(argv):
    """absl's parsing, once (a second parse defines the config overrides' flags twice), with a bad flag or override
    one line ``error: ...`` and exit status 2."""
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except (AttributeError, KeyError):  # ml_collections: an override of a field the config does not have
      message = unknown_config_field(flags.FLAGS, argv)
      if message is None:
        raise
      print(f"error: {message}", file=sys.stderr)
      sys.exit(2)

  app.run(_main, argv, flags_parser=parse)


if __name__ == "__main__":
  main()
