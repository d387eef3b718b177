"""The run directory: config.json, metrics.jsonl, results.json, checkpoints/ and provenance.

What a run directory promises, and the tests that check it (tests/test_resume.py):

* One process at a time: a run holds an exclusive lock on ``WORKDIR/.lock`` (``flock``, released by the
  kernel however the process ends); a second process on the same workdir gets :class:`RunDirBusy` and
  touches nothing.
* Files are written atomically (a temporary file, ``fsync``, ``os.replace``, ``fsync`` of the directory), so
  a killed run never leaves a torn ``results.json``; a finished run (``results.json`` present) is never
  overwritten. A write that fails (a full disk) raises an ``OSError`` naming the file, leaves the file as it
  was and removes its temporary copy.
* A training-state checkpoint is committed in a durable order: its files, then the metrics log, then its
  manifest (with a SHA-256 of every file), then the directory entries; only then are older checkpoints
  deleted. A kill or power loss at any point leaves at least one intact checkpoint, and a resume restarts
  from the newest intact one and ends bitwise identical to an uninterrupted run.
* A resume checks that the code (the package source's hash; the git revision is recorded) and the
  ``init.checkpoint`` source are those the checkpoint was written with (:func:`check_resume`).
"""

import contextlib
import datetime
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import jax
import ml_collections
import numpy as np

from butterfly_jax.config import upgrade
from butterfly_jax.core import hosts, tree_math
from butterfly_jax.io import results as results_lib, runtime
from butterfly_jax.version import __version__

PACKAGE = Path(__file__).resolve().parents[1]  # the butterfly_jax folder


class RunDirError(ValueError):
  """The work directory cannot be used for this run."""


class RunDirBusy(RunDirError):
  """Another process is running in the work directory."""


LOCK_FILE = ".lock"

# The training phases in the order a run goes through them: a checkpoint's and a log line's place in the run
# is (phase's position, step). Evaluation lines (no training phase) come after both.
PHASES = ("trunk", "children")
PHASE_ORDER = {phase: i for i, phase in enumerate(PHASES)}


# Config fields that cannot change a run's results: a run that differs from a stored one only in these is
# the same run (it resumes, and its finished results are returned). The live writers (log.writers) see the
# run's log lines and results, never its state.
NON_RESULT_FIELDS = (("log", "progress"), ("log", "every_steps"), ("log", "writers"), ("log", "wandb_project"))


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


def fsync_dir(path) -> None:
  """Makes the entries of directory ``path`` (a rename, a new file) durable."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def fsync_tree(root) -> None:
  """Makes every file under ``root``, and the directory entries down to them, durable (files first)."""
  root = Path(root)
  dirs = [root]
  for p in sorted(root.rglob("*")):
    if p.is_dir():
      dirs.append(p)
    elif p.is_file():
      with open(p, "rb") as f:
        os.fsync(f.fileno())
  for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):  # the deepest first
    fsync_dir(d)


@contextlib.contextmanager
def naming(path):
  """An ``OSError`` raised inside without a file name (a write or fsync that finds the disk full names none)
  is raised again naming ``path``, with the same errno and reason."""
  try:
    yield
  except OSError as e:
    if e.filename is not None:
      raise
    raise OSError(e.errno, e.strerror or str(e), str(path)) from e


def write_json_atomic(path: Path, obj) -> None:
  """Writes ``obj`` as JSON to ``path`` durably: a temporary file of this process, fsync, rename, fsync of
  the directory. Readers see the old content or the new one, never a mixture; on any failure ``path`` is as
  it was and no temporary file stays."""
  path = Path(path)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  try:
    with naming(path):
      with open(tmp, "w") as f:
        json.dump(to_jsonable(obj), f, indent=1, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
      fsync_dir(path.parent)
  except BaseException:
    with contextlib.suppress(OSError):
      tmp.unlink(missing_ok=True)
    raise


def git_revision() -> str | None:
  """The git revision of the installed package's checkout (with '-dirty'), or None outside a checkout."""
  here = PACKAGE
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


@functools.lru_cache(maxsize=1)  # read once per process: checkpoints ask at every save
def host_cpu() -> str:
  """The host CPU's model and a digest of its instruction-set flags (Linux ``/proc/cpuinfo``; elsewhere the
  platform's processor name). XLA:CPU compiles for the CPU it runs on: the same program and config gave
  other last bits on another machine of the same kind (BUILD_NOTES.md, "Known limits")."""
  import platform
  fields = runtime.cpu_info()
  if fields is None:
    return platform.processor() or platform.machine() or "unknown"
  flags = " ".join(sorted(fields.get("flags", "").split()))
  return f"{fields.get('model name', platform.machine())} (flags {hashlib.sha256(flags.encode()).hexdigest()[:12]})"


def xla_flags() -> str:
  """``XLA_FLAGS`` as this process has it (the flags XLA read when the backends started, if nothing changed
  them since: :mod:`butterfly_jax.io.runtime` sets them before that); they change CPU results in the last bits."""
  return os.environ.get("XLA_FLAGS", "")


def provenance() -> dict:
  return {
      "package_version": __version__,
      "git_revision": loaded_revision(),
      "jax_version": jax.__version__,
      "backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "host_cpu": host_cpu(),
      "xla_flags": xla_flags(),
  }


_SOURCE_HASH = []
# Package folders and modules that cannot change a run's numbers: the launcher starts runs; a config file's
# content reaches a run as its config (compared field by field on resume); the report, the proxy and the threshold
# search read finished runs; the command-line help and the progress display print; the live writers (log.writers)
# copy log lines and results out; the stop signals' handling (run/interrupt.py) says when a run stops, not what it
# computes. Editing any of them must not make an unfinished run refuse to resume (documents are not Python files:
# never hashed).
NOT_THE_PROGRAM = ("launch", "configs", "report", "proxy.py", "threshold.py", "run/commands.py", "run/progress.py",
                   "run/writers.py", "run/interrupt.py")


_TEMPORARY = re.compile(r"^\..+\.\d+\.tmp$")  # write_json_atomic's and the metrics log's ".NAME.PID.tmp"


def sweep_temporaries(root) -> list[Path]:
  """Deletes the temporary files that writes killed before their rename left under ``root`` (``.NAME.PID.tmp``);
  called by the holder of the run directory's lock, so no live writer owns one. Returns what it deleted."""
  swept = []
  for f in Path(root).rglob(".*.tmp"):
    if f.is_file() and _TEMPORARY.match(f.name):
      f.unlink(missing_ok=True)
      swept.append(f)
  if swept:
    logging.info("removed %d temporary files of interrupted writes under %s", len(swept), root)
  return swept


def tree_hash(root) -> str:
  """SHA-256 over the Python files under ``root`` (relative names and contents), outside :data:`NOT_THE_PROGRAM`."""
  root = Path(root)
  h = hashlib.sha256()
  for f in sorted(root.rglob("*.py")):
    relative = f.relative_to(root).as_posix()
    if not any(relative == n or relative.startswith(n + "/") for n in NOT_THE_PROGRAM):
      h.update(relative.encode() + b"\0" + f.read_bytes() + b"\0")
  return h.hexdigest()


def source_hash() -> str:
  """SHA-256 over the package's Python files (:func:`tree_hash`) when this process first asked: two processes
  with the same hash run the same program, whatever their git revisions say."""
  if not _SOURCE_HASH:
    _SOURCE_HASH.append(tree_hash(PACKAGE))
  return _SOURCE_HASH[0]


def code_identity() -> dict:
  """What a checkpoint records of the program that wrote it (see :func:`check_resume`)."""
  import jaxlib
  return {"source_sha256": source_hash(), "git_revision": loaded_revision(), "jax_version": jax.__version__,
          "jaxlib_version": jaxlib.__version__, "backend": jax.default_backend(),
          "device_kind": jax.devices()[0].device_kind, "host_cpu": host_cpu(), "xla_flags": xla_flags()}


def fingerprint(path) -> str:
  """SHA-256 of a file, or of every file's name and hash under a directory."""
  path = Path(path)
  if path.is_dir():
    return hashlib.sha256(json.dumps(_hash_files(path), sort_keys=True).encode()).hexdigest()
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


_PLATFORM = ("jax_version", "jaxlib_version", "backend", "device_kind", "host_cpu", "xla_flags")


def check_resume(meta: dict, identity: dict, allow_code_change: bool = False) -> list:
  """Whether a checkpoint's ``meta`` may be resumed by this process (``identity``: ``code``, from
  :func:`code_identity`, and ``init_source``); returns the notes to log, raises :class:`RunDirError` if not.

  * another ``init.checkpoint`` source (its files changed, or another path): refused, always;
  * other package source: refused, unless ``allow_code_change`` (results then record both programs);
  * the same source under another git revision (a commit that changed no package file): resumed, noted;
  * another JAX version, backend, device kind, host CPU or ``XLA_FLAGS``: resumed, noted: the run stays valid
    but is no longer bitwise the uninterrupted one (a record a checkpoint lacks is not compared).
  Checkpoints written before these were recorded are resumed with a note."""
  notes = []
  if "code" not in meta:
    return ["its checkpoint predates code and init-source records: resuming without checking them"]
  if meta.get("init_source") != identity.get("init_source"):
    raise RunDirError(f"init.checkpoint: the weights this run started from changed since its checkpoint was "
                      f"written (then {meta.get('init_source')}, now {identity.get('init_source')}): resuming would "
                      f"mix two starting points. Restore them, or pass --discard_unfinished to start again")
  old, new = meta["code"], identity["code"]
  if old["source_sha256"] != new["source_sha256"]:
    what = (f"the package source changed since its checkpoint was written (revision {old['git_revision']}, "
            f"now {new['git_revision']}; source SHA-256 {old['source_sha256'][:12]}, now {new['source_sha256'][:12]})")
    if not allow_code_change:
      raise RunDirError(f"{what}: its numerics may differ. Resume it with the code that started it, pass "
                        f"--allow_code_change to resume anyway (results.json records both), or "
                        f"--discard_unfinished to start again")
    notes.append(what + "; resuming anyway (--allow_code_change)")
  elif old["git_revision"] != new["git_revision"]:
    notes.append(f"the git revision changed ({old['git_revision']} -> {new['git_revision']}) but not the package "
                 f"source: resuming")
  changed = [f"{k} {old.get(k)} -> {new.get(k)}" for k in _PLATFORM if k in old and old.get(k) != new.get(k)]
  if changed:
    notes.append(f"resuming on another platform ({'; '.join(changed)}): the run is not bitwise the "
                 f"uninterrupted one")
  return notes


def try_lock(path):
  """An exclusive ``flock`` on ``path`` (created with its folder), held while the returned handle is open and
  released by the kernel however the process ends: ``(handle, None)``, the file then naming this process; or
  ``(None, holder)`` when another process holds it, ``holder`` being what that process wrote."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  handle = open(path, "a+")
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.seek(0)
    holder = handle.read().strip() or "a process that did not say who it is"
    handle.close()
    return None, holder
  handle.seek(0)
  handle.truncate()
  handle.write(f"pid {os.getpid()} on {socket.gethostname()} since "
               f"{datetime.datetime.now().isoformat(sep=' ', timespec='seconds')}\n")
  handle.flush()
  return handle, None


class RunDir:
  """Paths and writers of one run directory."""

  def __init__(self, workdir):
    self.root = Path(workdir).expanduser().resolve()
    self.config = self.root / "config.json"
    self.metrics = self.root / "metrics.jsonl"
    self.results = self.root / "results.json"
    self.checkpoints = self.root / "checkpoints"
    self.lock_file = self.root / LOCK_FILE
    self.identity = {}       # recorded in every training-state checkpoint (set by start)
    self.resume_notes = []   # what check_resume noted about the checkpoint resumed from
    self.listeners = []      # called with each log line as written (see log): the live writers

  @contextlib.contextmanager
  def locked(self):
    """Holds the run directory's exclusive lock (the primary process takes it; every process learns the
    outcome); :class:`RunDirBusy`, naming the holder, if another process holds it. The lock is an ``flock`` on
    ``WORKDIR/.lock``: the kernel releases it however the process ends (on NFS it needs a server with locks)."""
    created = not self.root.exists()
    handle, holder = try_lock(self.lock_file) if hosts.is_primary() else (None, None)
    if not hosts.agree(holder is None):
      raise RunDirBusy(f"--workdir {self.root} is in use by another process ({holder or 'see the primary'}); "
                       f"nothing was touched. Wait for it to finish or stop it, then run again")
    if handle is not None and self.root.is_dir():
      sweep_temporaries(self.root)
    try:
      yield self
    finally:
      if handle is not None:
        if created and [f.name for f in self.root.iterdir()] == [LOCK_FILE]:
          # a run refused before it wrote anything (a bad input found while setting up) leaves no directory
          # behind: the lock file goes while it is still held, then the folder if nothing else appeared in it
          self.lock_file.unlink(missing_ok=True)
          try:
            self.root.rmdir()
          except OSError:
            pass
        handle.close()  # releases the lock; a lock file that stays is left (deleting it would race a new holder)

  def finished_results(self, config_dict: dict):
    """The stored results if this config already finished here; RunDirError if another config did."""
    if not self.results.exists():
      return None
    stored = self._stored_config()
    if comparable(stored or {}) != comparable(config_dict):
      raise RunDirError(f"--workdir {self.root} holds the finished results of a different config "
                        f"(see {self.config}); choose another --workdir")
    return results_lib.load(self.results)

  def _stored_config(self):
    """``config.json`` with the fields added to the tool since it was written filled in with their defaults."""
    if not self.config.exists():
      return None
    return to_jsonable(upgrade(json.loads(self.config.read_text())))

  def start(self, config_dict: dict, resume: bool = True, discard: bool = False, identity: dict | None = None,
            allow_code_change: bool = False):
    """Creates the directory and returns the resume point: ``(meta, path)`` of the newest intact training
    state if an unfinished earlier attempt of the same config left one (and ``resume``), else ``None``, in
    which case an earlier attempt's metrics and checkpoints are cleared and the run starts from step 0.

    An unfinished attempt of a *different* config (fields that cannot change results, such as
    ``log.progress``, aside) is a :class:`RunDirError` naming the fields, unless ``discard``: its
    checkpoints (kept pre-training weights included) are never deleted by accident. So is a checkpoint
    that :func:`check_resume` refuses for ``identity`` (``code``, ``init_source``; recorded in every
    checkpoint this run writes). Call it holding :meth:`locked`.
    Under ``jax.distributed`` the primary process decides and writes; the others then read its decision."""
    self.identity = dict(identity or {})
    error, state = None, None
    if hosts.is_primary():
      try:
        state = self._start(config_dict, resume, discard, allow_code_change)
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

  def _start(self, config_dict: dict, resume: bool, discard: bool = False, allow_code_change: bool = False):
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
    why = "without a usable checkpoint"
    if state is not None and self.identity:
      try:
        self.resume_notes = check_resume(state[0], self.identity, allow_code_change)
      except RunDirError as e:
        if not discard:
          raise RunDirError(f"--workdir {self.root} holds an unfinished run that cannot be resumed: {e}; nothing "
                            f"was deleted") from None
        state, why = None, "that could not be resumed, discarded (--discard_unfinished)"
    if state is not None:
      meta, _ = state
      logging.warning("%s holds an unfinished run; resuming it from its %s checkpoint at step %d", self.root,
                      meta["phase"], meta["step"])
      for note in self.resume_notes:
        logging.warning("%s: %s", self.root, note)
      self._truncate_metrics(meta)
      return state
    if unfinished:
      logging.warning("%s holds an unfinished run %s; starting from step 0", self.root,
                      "of another config, discarded (--discard_unfinished)" if not same else why)
      self.metrics.unlink(missing_ok=True)
      shutil.rmtree(self.checkpoints, ignore_errors=True)
    write_json_atomic(self.config, config_dict)
    return None

  def _truncate_metrics(self, meta: dict) -> None:
    """Drops the log lines written after the checkpoint ``meta`` (they will be written again)."""
    if not self.metrics.exists():
      return
    here = (PHASE_ORDER[meta["phase"]], meta["step"])
    keep = []
    for line in self.metrics.read_text().splitlines():
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:  # a line torn by the kill
        continue
      if (PHASE_ORDER.get(rec.get("phase"), len(PHASES)), rec.get("step", 0)) <= here:
        keep.append(line)
    tmp = self.metrics.with_name(f".metrics.jsonl.{os.getpid()}.tmp")
    with naming(self.metrics):
      with open(tmp, "w") as f:
        f.write("".join(l + "\n" for l in keep))
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, self.metrics)
      fsync_dir(self.root)

  # Training state checkpoints (exact resume): checkpoints/state/<step>/{tree/, manifest.json}. The
  # manifest, written last and atomically, holds the metadata and a SHA-256 of every file of the tree: a
  # checkpoint without it, or whose files do not match it, is torn and skipped.

  @property
  def states(self) -> Path:
    return self.checkpoints / "state"

  def save_state(self, meta: dict, tree, keep: int = 2) -> Path:
    """Saves the training state ``tree`` with ``meta`` (``phase``, ``step``, ...; the run's identity is added);
    keeps the newest ``keep``. Every process calls it (the arrays are gathered); the primary writes.

    The commit order is durable: the tree's files (fsynced), the metrics log up to here (fsynced), the
    manifest (atomic, fsynced), the directory entries; then older checkpoints are deleted."""
    path = self.state_path(meta["phase"], meta["step"])
    if not hosts.is_primary():
      self.save_checkpoint(path.relative_to(self.checkpoints) / "tree", tree)
      return path
    if path.exists():
      shutil.rmtree(path)
    self.save_checkpoint(path.relative_to(self.checkpoints) / "tree", tree)  # fsyncs the tree
    if self.metrics.exists():
      with open(self.metrics, "rb") as f:
        os.fsync(f.fileno())
    write_json_atomic(path / "manifest.json",
                      {"meta": {**meta, **self.identity}, "sha256": _hash_files(path / "tree")})
    fsync_dir(self.states)
    fsync_dir(self.checkpoints)
    for old in sorted(p for p in self.states.iterdir() if p.is_dir())[:-keep]:
      shutil.rmtree(old, ignore_errors=True)
    return path

  def state_path(self, phase: str, step: int) -> Path:
    """The folder of the training state at ``phase`` step ``step`` (its order among the checkpoints is its name's)."""
    return self.states / f"{PHASE_ORDER[phase]}_{step:010d}"

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
    """Appends ``record`` to metrics.jsonl as one JSON line (the primary process), then calls each of
    :attr:`listeners` with the line as written (non-finite numbers null): live writers show what the record
    holds (:mod:`butterfly_jax.run.writers`)."""
    if not hosts.is_primary():
      return
    line = to_jsonable(record)
    with naming(self.metrics), open(self.metrics, "a") as f:
      f.write(json.dumps(line, allow_nan=False) + "\n")
    for listener in self.listeners:
      listener(line)

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
    with naming(path):
      checkpointer.save(path, tree, force=True)
      checkpointer.wait_until_finished()
      fsync_tree(path)
      fsync_dir(path.parent)
    return path

  def finish(self, results: dict) -> None:
    """Writes results.json, checked against its types first (:func:`butterfly_jax.io.results.check`)."""
    if hosts.is_primary():
      results = to_jsonable(results)
      results_lib.check(results, strict=True)
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


# Reading a saved run back: its config and its children's parameters (the proxy and butterfly_jax.load_run).

def load_run_config(run_dir) -> ml_collections.ConfigDict:
  """``run_dir``'s config.json as a ConfigDict, upgraded (:func:`butterfly_jax.config.upgrade`): the fields added to
  the tool since the run was written hold the values that run used, so the config describes the run under today's
  schema. RunDirError when the folder holds no config.json."""
  path = Path(run_dir) / "config.json"
  if not path.exists():
    raise RunDirError(f"{path} does not exist; give a run directory written by butterfly_jax.main (butterfly-run)")
  return ml_collections.ConfigDict(upgrade(json.loads(path.read_text())))


def load_children(run_dir):
  """Every child's parameters, stacked along a leading members axis (child 0 first), as the run saved them (in its
  ``train.param_dtype``): from the children's checkpoint ``checkpoints/children`` (written at the end of training,
  before the evaluation), or, for a finished run saved without one (``checkpoint.children=False``), from its last
  training-state checkpoint when that holds the children at their end steps (``checkpoint.every_steps`` saves one
  at the end of training). RunDirError naming what is missing otherwise."""
  root = Path(run_dir).resolve()
  path = root / "checkpoints" / "children"
  return restore_checkpoint(path)["params"] if path.exists() else _final_state_params(root, path)


def load_child(run_dir, child: int):
  """Child ``child``'s parameters (:func:`load_children`), as host (numpy) arrays; RunDirError naming the run's
  children when it has no child ``child``."""
  params = load_children(run_dir)
  k = tree_math.num_members(params)
  if not 0 <= child < k:
    raise RunDirError(f"child {child}: the run {Path(run_dir)} has children 0..{k - 1}")
  return jax.tree_util.tree_map(np.asarray, tree_math.unstack(params, child))


def _final_state_params(root: Path, children: Path):
  """The children's parameters from the finished run's newest training state, if it is the children's
  phase with every child at its end step; else a RunDirError naming what is missing."""
  rundir = RunDir(root)
  state = rundir.latest_state() if rundir.results.exists() else None
  if state is None:
    raise RunDirError(f"{children} does not exist and {root} holds no finished run with a training-state "
                      "checkpoint; the run must finish with checkpoint.children=True or checkpoint.every_steps on")
  meta, tree_path = state
  family = restore_checkpoint(tree_path)["family"]
  ends = np.asarray(family["end_step"])
  if meta.get("phase") != "children" or int(meta["step"]) < int(ends.max()):
    raise RunDirError(f"{children} does not exist and the newest training state ({meta.get('phase')} at "
                      f"step {meta.get('step')}) is not the children at their end steps ({int(ends.max())})")
  return family["params"]
