"""``DIR/sweep.json``: the runs of a sweep (name, overrides, full config, status), and whether a run is done.

The full config of every run travels to the worker processes through this file as JSON (``to_dict()``,
tuples written as lists and read back as tuples). JSON rather than pickle: readable, independent of
Python and ml_collections versions, and exactly what the run directory's own ``config.json`` holds, so
"already finished with the same config" is a comparison of the two.

Statuses: ``pending`` (not run yet), ``running``, ``finished`` (ran in this invocation), ``skipped``
(finished before), ``failed``, ``interrupted`` (the launcher was stopped while it ran).
"""

import datetime
import json
from pathlib import Path

import ml_collections

from butterfly_jax.rundir import RunDir, RunDirError, to_jsonable, write_json_atomic

SWEEP_FILE = "sweep.json"
LOG_FILE = "log.txt"


class StateError(ValueError):
  """DIR/sweep.json is missing or does not hold the requested run."""


def _tuples(obj):
  """JSON lists back to tuples (ml_collections configs hold tuples), recursively."""
  if isinstance(obj, dict):
    return {k: _tuples(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return tuple(_tuples(v) for v in obj)
  return obj


def config_to_json(config: ml_collections.ConfigDict) -> dict:
  return to_jsonable(config.to_dict())


def config_from_json(d: dict) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(_tuples(d))


def run_dir(runs_dir, name: str) -> Path:
  return Path(runs_dir) / name


def log_path(runs_dir, name: str) -> Path:
  return run_dir(runs_dir, name) / LOG_FILE


def finished(runs_dir, name: str, config_json: dict) -> bool:
  """True if DIR/<name> holds results of this config; RunDirError if it holds those of another config."""
  return RunDir(run_dir(runs_dir, name)).finished_results(config_json) is not None


def new_state(config_spec: str, set_items, runs) -> dict:
  """The content of sweep.json for runs from :func:`launch.sweep.expand` (all ``pending``)."""
  return {
      "config": str(config_spec),
      "set": list(set_items),
      "written": datetime.datetime.now().isoformat(timespec="seconds"),
      "runs": [{"index": r.index, "name": r.name, "overrides": to_jsonable(r.overrides), "status": "pending",
                "error": None, "seconds": None, "config": config_to_json(r.config)} for r in runs],
  }


def write(runs_dir, state: dict) -> None:
  Path(runs_dir).mkdir(parents=True, exist_ok=True)
  state["written"] = datetime.datetime.now().isoformat(timespec="seconds")
  write_json_atomic(Path(runs_dir) / SWEEP_FILE, state)


def read(runs_dir) -> dict:
  path = Path(runs_dir) / SWEEP_FILE
  if not path.exists():
    raise StateError(f"--runs: {path} does not exist; expand the sweep first with "
                     f"python -m launch --config=configs/NAME.py --runs={runs_dir}")
  return json.loads(path.read_text())


def entry(state: dict, index: int) -> dict:
  runs = state["runs"]
  if not 0 <= index < len(runs):
    raise StateError(f"--index: {index} is out of range; this sweep has runs 0..{len(runs) - 1}")
  return runs[index]


__all__ = ["RunDirError", "StateError", "config_from_json", "config_to_json", "entry", "finished", "log_path",
           "new_state", "read", "run_dir", "write"]
