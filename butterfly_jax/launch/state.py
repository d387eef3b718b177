"""``DIR/sweep.json``: the runs of a sweep (name, overrides, full config, status), and whether a run is done.

The full config of every run travels to the worker processes through this file as JSON (``to_dict()``,
tuples written as lists and read back as tuples). JSON rather than pickle: readable, independent of
Python and ml_collections versions, and exactly what the run directory's own ``config.json`` holds, so
"already finished with the same config" is a comparison of the two.

Every run also carries ``config_sha256``, a SHA-256 of its config's canonical JSON, checked before it runs.

Statuses: ``pending`` (not run yet), ``running``, ``finished`` (ran in this invocation), ``skipped``
(finished before; its ``seconds`` are then the run's own wall time, ``timing.total_s`` of its results.json),
``failed``, ``busy`` (another process was running it: its run directory was locked), ``interrupted`` (the
launcher was stopped while it ran).

A SLURM job does not read ``sweep.json``, which the next launcher call rewrites (another ``--set`` gives
other configs under the same run names): it reads its own snapshot ``DIR/slurm/sweep-<hash>.json``, the
sweep without statuses or times, named by a SHA-256 of that content and never rewritten with other content.
The job script passes the full hash; a snapshot whose content no longer has it is refused. Writing a job
script prunes the snapshots whose runs have all finished (:func:`prune_snapshots`).
"""

import datetime
import hashlib
import json
from pathlib import Path

import ml_collections

from butterfly_jax.io.rundir import RunDir, RunDirError, to_jsonable, write_json_atomic

SWEEP_FILE = "sweep.json"
SNAPSHOT_DIR = "slurm"
LOG_FILE = "log.txt"
_SNAPSHOT_FIELDS = ("index", "name", "overrides", "config", "config_sha256")


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


def sha256_json(obj) -> str:
  """SHA-256 of ``obj`` as canonical JSON (keys sorted, no spaces): the same for a dict and its JSON read back."""
  text = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)
  return hashlib.sha256(text.encode()).hexdigest()


def run_dir(runs_dir, name: str) -> Path:
  return Path(runs_dir) / name


def log_path(runs_dir, name: str) -> Path:
  return run_dir(runs_dir, name) / LOG_FILE


def finished(runs_dir, name: str, config_json: dict) -> bool:
  """True if DIR/<name> holds results of this config; RunDirError if it holds those of another config."""
  return finished_results(runs_dir, name, config_json) is not None


def finished_results(runs_dir, name: str, config_json: dict) -> dict | None:
  """DIR/<name>'s results.json if it holds results of this config, else None; RunDirError if it holds those of
  another config."""
  return RunDir(run_dir(runs_dir, name)).finished_results(config_json)


def new_state(config_spec: str, set_items, runs) -> dict:
  """The content of sweep.json for runs from :func:`butterfly_jax.launch.sweep.expand` (all ``pending``)."""
  return {
      "config": str(config_spec),
      "set": list(set_items),
      "written": datetime.datetime.now().isoformat(timespec="seconds"),
      "runs": [{"index": r.index, "name": r.name, "overrides": to_jsonable(r.overrides), "status": "pending",
                "error": None, "seconds": None, "config": config_to_json(r.config),
                "config_sha256": sha256_json(config_to_json(r.config))} for r in runs],
  }


def write(runs_dir, state: dict) -> None:
  Path(runs_dir).mkdir(parents=True, exist_ok=True)
  state["written"] = datetime.datetime.now().isoformat(timespec="seconds")
  write_json_atomic(Path(runs_dir) / SWEEP_FILE, state)


def read(runs_dir) -> dict:
  path = Path(runs_dir) / SWEEP_FILE
  if not path.exists():
    raise StateError(f"--runs: {path} does not exist; expand the sweep first with "
                     f"python -m butterfly_jax.launch --config=configs/NAME.py --runs={runs_dir}")
  return json.loads(path.read_text())


def entry(state: dict, index: int) -> dict:
  """Run ``index`` of ``state``; a StateError if it is out of range or its config no longer has its hash."""
  runs = state["runs"]
  if not 0 <= index < len(runs):
    raise StateError(f"--index: {index} is out of range; this sweep has runs 0..{len(runs) - 1}")
  item = runs[index]
  if "config_sha256" in item and sha256_json(item["config"]) != item["config_sha256"]:
    raise StateError(f"--index: the config of run {index} ({item['name']}) was edited after the sweep was "
                     "expanded (it no longer matches its config_sha256); nothing was run. Expand the sweep again")
  return item


def snapshot(state: dict) -> dict:
  """What a job's tasks need of ``state``: the sweep, every run's name and config; no statuses, no times."""
  return {"config": state["config"], "set": list(state["set"]),
          "runs": [{k: item[k] for k in _SNAPSHOT_FIELDS} for item in state["runs"]]}


def snapshot_path(runs_dir, content: dict) -> tuple:
  """``(DIR/slurm/sweep-<first 12 hex digits>.json, full SHA-256)`` of a :func:`snapshot`."""
  digest = sha256_json(content)
  return Path(runs_dir).resolve() / SNAPSHOT_DIR / f"sweep-{digest[:12]}.json", digest


def write_snapshot(runs_dir, state: dict) -> tuple:
  """Writes the :func:`snapshot` of ``state`` (atomically; a file already holding it is left as it is);
  returns ``(path, sha256)``."""
  content = snapshot(state)
  path, digest = snapshot_path(runs_dir, content)
  try:
    same = sha256_json(json.loads(path.read_text())) == digest
  except (OSError, ValueError):
    same = False
  if not same:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, content)
  return path, digest


def prune_snapshots(runs_dir, keep=None) -> list[Path]:
  """Deletes the job snapshots in ``DIR/slurm`` (but ``keep``) whose every run has finished (or holds another
  config's results, which no task of theirs would overwrite): no task of their jobs has a run left to do. A task
  of such a job still queued finds its snapshot gone and stops with an error naming it, having run nothing.
  Returns the deleted files."""
  folder = Path(runs_dir) / SNAPSHOT_DIR
  keep = Path(keep).resolve() if keep is not None else None
  pruned = []
  for path in sorted(folder.glob("sweep-*.json")) if folder.is_dir() else ():
    if keep is not None and path.resolve() == keep:
      continue
    try:
      runs = json.loads(path.read_text())["runs"]
    except (OSError, ValueError, KeyError, TypeError):
      continue  # not a snapshot this code wrote: left alone

    def done(item):
      try:
        return finished(runs_dir, item["name"], item["config"])
      except RunDirError:
        return True
    if all(done(item) for item in runs):
      path.unlink(missing_ok=True)
      pruned.append(path)
  return pruned


def read_snapshot(path, sha256: str | None = None) -> dict:
  """A job's snapshot; a StateError if it is missing, or its content's SHA-256 is not ``sha256`` (when given)."""
  path = Path(path)
  again = "; nothing was run. Write a new job script with python -m butterfly_jax.launch ... --slurm=FILE"
  try:
    content = json.loads(path.read_text())
  except FileNotFoundError:
    raise StateError(f"--sweep: {path} does not exist{again}") from None
  except (OSError, ValueError) as e:
    raise StateError(f"--sweep: {path} cannot be read ({e}){again}") from None
  if not isinstance(content, dict) or not isinstance(content.get("runs"), list):
    raise StateError(f"--sweep: {path} is not a sweep snapshot (no list of runs){again}")
  if sha256 is not None and sha256_json(content) != sha256:
    raise StateError(f"--sweep: {path} was modified after the job script was written (its content's SHA-256 is "
                     f"{sha256_json(content)}, the job expects {sha256}){again}")
  return content


__all__ = ["RunDirError", "StateError", "config_from_json", "config_to_json", "entry", "finished", "log_path",
           "new_state", "prune_snapshots", "read", "read_snapshot", "run_dir", "sha256_json", "snapshot",
           "snapshot_path", "write",
           "write_snapshot"]
