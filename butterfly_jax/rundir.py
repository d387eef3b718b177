"""The run directory: config.json, metrics.jsonl, results.json, checkpoints/ and provenance.

Files are written atomically (a temporary file, then ``os.replace``), so a killed run never leaves a torn
``results.json``; a finished run (``results.json`` present) is never overwritten.
"""

import json
import logging
import math
import os
import shutil
import subprocess
from pathlib import Path

import jax
import numpy as np

import butterfly_jax


class RunDirError(ValueError):
  """The work directory cannot be used for this run."""


def to_jsonable(obj):
  """numpy/jax scalars and arrays to Python; non-finite floats to None (JSON has no NaN)."""
  if isinstance(obj, dict):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if isinstance(obj, (np.ndarray, jax.Array)):
    return to_jsonable(np.asarray(obj).tolist())
  if isinstance(obj, (np.floating, float)):
    f = float(obj)
    return f if math.isfinite(f) else None
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, np.bool_):
    return bool(obj)
  return obj


def write_json_atomic(path: Path, obj) -> None:
  path = Path(path)
  tmp = path.with_name(f".{path.name}.tmp")
  with open(tmp, "w") as f:
    json.dump(to_jsonable(obj), f, indent=1, allow_nan=False)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def git_revision() -> str | None:
  """The git revision of the installed package's checkout (with '-dirty'), or None outside a checkout."""
  here = Path(butterfly_jax.__file__).resolve().parent
  try:
    rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                         timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return rev + ("-dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return None


def provenance() -> dict:
  return {
      "package_version": butterfly_jax.__version__,
      "git_revision": git_revision(),
      "jax_version": jax.__version__,
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
  }


class RunDir:
  """Paths and writers of one run directory."""

  def __init__(self, workdir):
    self.root = Path(workdir).expanduser().resolve()
    self.config = self.root / "config.json"
    self.metrics = self.root / "metrics.jsonl"
    self.results = self.root / "results.json"
    self.checkpoints = self.root / "checkpoints"

  def finished_results(self, config_dict: dict):
    """The stored results if this config already finished here; RunDirError if another config did."""
    if not self.results.exists():
      return None
    stored = json.loads(self.config.read_text()) if self.config.exists() else None
    if stored != to_jsonable(config_dict):
      raise RunDirError(f"--workdir {self.root} holds the finished results of a different config "
                        f"(see {self.config}); choose another --workdir")
    return json.loads(self.results.read_text())

  def start(self, config_dict: dict) -> None:
    """Creates the directory; an unfinished earlier attempt's metrics and checkpoints are cleared."""
    self.root.mkdir(parents=True, exist_ok=True)
    if self.metrics.exists() or self.checkpoints.exists():
      logging.warning("%s holds an unfinished run; starting it again from step 0", self.root)
      self.metrics.unlink(missing_ok=True)
      shutil.rmtree(self.checkpoints, ignore_errors=True)
    write_json_atomic(self.config, config_dict)

  def log(self, record: dict) -> None:
    with open(self.metrics, "a") as f:
      f.write(json.dumps(to_jsonable(record), allow_nan=False) + "\n")

  def save_checkpoint(self, name: str, tree) -> Path:
    import orbax.checkpoint as ocp  # imported lazily: slow import
    path = self.checkpoints / name
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, tree, force=True)
    checkpointer.wait_until_finished()
    return path

  def finish(self, results: dict) -> None:
    write_json_atomic(self.results, results)


def restore_checkpoint(path, target=None):
  """Restores a checkpoint written by :meth:`RunDir.save_checkpoint` (as ``target``'s structure if given)."""
  import orbax.checkpoint as ocp
  checkpointer = ocp.StandardCheckpointer()
  if target is None:
    return checkpointer.restore(Path(path).resolve())
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
  return checkpointer.restore(Path(path).resolve(), abstract)
