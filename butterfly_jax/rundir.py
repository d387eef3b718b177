"""The run directory: config.json, metrics.jsonl, results.json, checkpoints/ and provenance.

Files are written atomically (a temporary file, then ``os.replace``), so a killed run never leaves a torn
``results.json``; a finished run (``results.json`` present) is never overwritten.
"""

import hashlib
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
from butterfly_jax import hosts


class RunDirError(ValueError):
  """The work directory cannot be used for this run."""


# Config fields that cannot change a run's results: a run that differs from a stored one only in these is
# the same run (it resumes, and its finished results are returned).
NON_RESULT_FIELDS = (("log", "progress"), ("log", "every_steps"))


def comparable(config_dict: dict) -> dict:
  """``config_dict`` as JSON without :data:`NON_RESULT_FIELDS`."""
  out = to_jsonable(config_dict)
  for section, field in NON_RESULT_FIELDS:
    if isinstance(out.get(section), dict):
      out[section] = {k: v for k, v in out[section].items() if k != field}
  return out


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
  """The dotted names of the fields in which two config dicts differ."""
  out = []
  for key in sorted(set(a) | set(b)):
    x, y = a.get(key), b.get(key)
    if isinstance(x, dict) and isinstance(y, dict):
      out += config_differences(x, y, f"{prefix}{key}.")
    elif x != y:
      out.append(f"{prefix}{key}")
  return out


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


_LOADED_REVISION = []


def loaded_revision() -> str | None:
  """The git revision when this process first asked, i.e. of the code it runs: a long-lived worker (the
  launcher's) must not report a checkout that changed under it."""
  if not _LOADED_REVISION:
    _LOADED_REVISION.append(git_revision())
  return _LOADED_REVISION[0]


def provenance() -> dict:
  return {
      "package_version": butterfly_jax.__version__,
      "git_revision": loaded_revision(),
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
    stored = self._stored_config()
    if comparable(stored or {}) != comparable(config_dict):
      raise RunDirError(f"--workdir {self.root} holds the finished results of a different config "
                        f"(see {self.config}); choose another --workdir")
    return json.loads(self.results.read_text())

  def _stored_config(self):
    """``config.json`` with the fields added to the tool since it was written filled in with their defaults."""
    if not self.config.exists():
      return None
    from butterfly_jax.config import upgrade
    return to_jsonable(upgrade(json.loads(self.config.read_text())))

  def start(self, config_dict: dict, resume: bool = True, discard: bool = False):
    """Creates the directory and returns the resume point: ``(meta, path)`` of the newest intact training
    state if an unfinished earlier attempt of the same config left one (and ``resume``), else ``None``, in
    which case an earlier attempt's metrics and checkpoints are cleared and the run starts from step 0.

    An unfinished attempt of a *different* config (fields that cannot change results, such as
    ``log.progress``, aside) is a :class:`RunDirError` naming the fields, unless ``discard``: its
    checkpoints (kept pre-training weights included) are never deleted by accident.
    Under ``jax.distributed`` the primary process decides and writes; the others then read its decision."""
    error, state = None, None
    if hosts.is_primary():
      try:
        state = self._start(config_dict, resume, discard)
      except RunDirError as e:
        error = e
    hosts.sync("butterfly_jax:rundir_start")
    if error is not None:
      raise error
    if not hosts.is_primary():
      if self._stored_config() is not None and comparable(self._stored_config()) != comparable(config_dict):
        raise RunDirError(f"--workdir {self.root} holds another config's unfinished run")
      state = self.latest_state() if resume else None
    return state

  def _start(self, config_dict: dict, resume: bool, discard: bool = False):
    self.root.mkdir(parents=True, exist_ok=True)
    stored = self._stored_config()
    same = stored is not None and comparable(stored) == comparable(config_dict)
    unfinished = self.metrics.exists() or self.checkpoints.exists()
    if stored is not None and not same and unfinished and not discard:
      fields = config_differences(comparable(stored), comparable(config_dict))
      raise RunDirError(f"--workdir {self.root} holds an unfinished run of another config (it differs in "
                        f"{', '.join(fields[:8])}{', ...' if len(fields) > 8 else ''}); nothing was deleted. Run "
                        f"the same config to resume it, choose another --workdir, or pass --discard_unfinished to "
                        f"delete its checkpoints and metrics and start this config from step 0")
    state = self.latest_state() if (resume and same) else None
    if state is not None:
      meta, _ = state
      logging.warning("%s holds an unfinished run; resuming it from its %s checkpoint at step %d", self.root,
                      meta["phase"], meta["step"])
      self._truncate_metrics(meta)
      return state
    if unfinished:
      logging.warning("%s holds an unfinished run %s; starting from step 0", self.root,
                      "of another config, discarded (--discard_unfinished)" if not same else
                      "without a usable checkpoint")
      self.metrics.unlink(missing_ok=True)
      shutil.rmtree(self.checkpoints, ignore_errors=True)
    write_json_atomic(self.config, config_dict)
    return None

  def _truncate_metrics(self, meta: dict) -> None:
    """Drops the log lines written after the checkpoint ``meta`` (they will be written again)."""
    if not self.metrics.exists():
      return
    order = {"trunk": 0, "children": 1}
    here = (order[meta["phase"]], meta["step"])
    keep = []
    for line in self.metrics.read_text().splitlines():
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:  # a line torn by the kill
        continue
      if (order.get(rec.get("phase"), 2), rec.get("step", 0)) <= here:
        keep.append(line)
    tmp = self.metrics.with_name(".metrics.jsonl.tmp")
    tmp.write_text("".join(l + "\n" for l in keep))
    os.replace(tmp, self.metrics)

  # Training state checkpoints (exact resume): checkpoints/state/<step>/{tree/, manifest.json}. The
  # manifest, written last and atomically, holds the metadata and a SHA-256 of every file of the tree: a
  # checkpoint without it, or whose files do not match it, is torn and skipped.

  @property
  def states(self) -> Path:
    return self.checkpoints / "state"

  def save_state(self, meta: dict, tree, keep: int = 2) -> Path:
    """Saves the training state ``tree`` with ``meta`` (``phase``, ``step``, ...); keeps the newest ``keep``.
    Every process calls it (the arrays are gathered); the primary writes."""
    order = {"trunk": 0, "children": 1}
    path = self.states / f"{order[meta['phase']]}_{meta['step']:010d}"
    if not hosts.is_primary():
      self.save_checkpoint(path.relative_to(self.checkpoints) / "tree", tree)
      return path
    if path.exists():
      shutil.rmtree(path)
    self.save_checkpoint(path.relative_to(self.checkpoints) / "tree", tree)
    write_json_atomic(path / "manifest.json", {"meta": meta, "sha256": _hash_files(path / "tree")})
    for old in sorted(p for p in self.states.iterdir() if p.is_dir())[:-keep]:
      shutil.rmtree(old, ignore_errors=True)
    return path

  def latest_state(self):
    """``(meta, tree_path)`` of the newest intact training state, or ``None``; torn ones are logged and skipped."""
    if not self.states.is_dir():
      return None
    for path in sorted((p for p in self.states.iterdir() if p.is_dir()), reverse=True):
      manifest = path / "manifest.json"
      try:
        info = json.loads(manifest.read_text())
        intact = info["sha256"] == _hash_files(path / "tree")
      except (OSError, ValueError, KeyError):
        intact = False
      if intact:
        return info["meta"], path / "tree"
      logging.warning("checkpoint %s is incomplete or corrupt; trying the previous one", path)
    return None

  def log(self, record: dict) -> None:
    if not hosts.is_primary():
      return
    with open(self.metrics, "a") as f:
      f.write(json.dumps(to_jsonable(record), allow_nan=False) + "\n")

  def save_checkpoint(self, name: str, tree) -> Path:
    """Saves ``tree`` as host arrays (it restores on any device count); every process calls it, the primary
    writes."""
    import orbax.checkpoint as ocp  # imported lazily: slow import
    path = self.checkpoints / name
    tree = hosts.fetch(tree)
    if not hosts.is_primary():
      return path
    # the primary alone: orbax would otherwise wait at barriers for processes that write nothing
    checkpointer = ocp.StandardCheckpointer(
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0}))
    checkpointer.save(path, tree, force=True)
    checkpointer.wait_until_finished()
    return path

  def finish(self, results: dict) -> None:
    if hosts.is_primary():
      write_json_atomic(self.results, results)
    hosts.sync("butterfly_jax:rundir_finish")


def _hash_files(root: Path) -> dict:
  """SHA-256 of every file under ``root`` (relative paths)."""
  out = {}
  for f in sorted(p for p in Path(root).rglob("*") if p.is_file()):
    h = hashlib.sha256()
    with open(f, "rb") as fh:
      for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
    out[str(f.relative_to(root))] = h.hexdigest()
  if not out:
    raise ValueError(f"{root}: no files")
  return out


def restore_checkpoint(path, target=None):
  """Restores a checkpoint written by :meth:`RunDir.save_checkpoint` (as ``target``'s structure if given)."""
  import orbax.checkpoint as ocp
  checkpointer = ocp.StandardCheckpointer()
  if target is None:
    return checkpointer.restore(Path(path).resolve())
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
  return checkpointer.restore(Path(path).resolve(), abstract)
