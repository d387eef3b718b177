"""Running a sweep's pending runs on this machine: N worker processes, a summary, clean interruption.

Each worker is ``python -m butterfly_jax.launch.run_one --serve``, a separate process that imports JAX once and runs
the runs it is handed one after another (process start-up and compilation dominate small runs: see
BUILD_NOTES.md); ``runs_per_worker=1`` gives every run a fresh process. A run's output goes to
``DIR/<name>/log.txt``. A worker that dies (a crash, the OOM killer) fails only the run it was running;
a fresh worker takes the rest.

SIGINT/SIGTERM: the workers are sent SIGTERM (a second signal kills them): each stops its run after the step in
progress with a training-state checkpoint there (:mod:`butterfly_jax.run.interrupt`), the runs in progress are
reported ``interrupted`` and the launcher exits 128 + signal. Workers run in their own session, so a
terminal's Ctrl-C reaches only the launcher, and they die with it even when it is SIGKILLed. A worker stopped by a
signal of its own (exit status 75) reports its run ``interrupted``, not ``failed``, and the others go on; the
launcher then exits 75. The same command resumes interrupted runs. Finished runs are never touched: results.json is
written last and atomically, and a finished run is skipped.
"""

import collections
import json
import os
import re
import signal
import site
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

from butterfly_jax.launch import state as state_lib
from butterfly_jax.run import interrupt

TAIL_LINES = 8
_FOOTER = re.compile(r"^==== .* launch: \w+ after ")  # run_one's last line: the summary says it already


def import_root() -> Path | None:
  """The folder holding the ``butterfly_jax`` package this process runs, where a new process of this interpreter
  might not find it by itself (a checkout, installed editable or not at all: the workers must run the same
  package as the launcher); None for a package installed in a site-packages folder, which every such process
  finds (that folder on ``PYTHONPATH`` would put its modules before the standard library's)."""
  root = Path(__file__).resolve().parents[2]
  sites = [*site.getsitepackages(), site.getusersitepackages(), sysconfig.get_path("purelib"),
           sysconfig.get_path("platlib")]
  return None if root in {Path(p).resolve() for p in sites if p} else root


def worker_env(jax_cache: str | None) -> dict:
  """The workers' environment: this package importable (:func:`import_root`), unbuffered output, the JAX
  compilation cache.

  The persistent compilation cache lets the runs of a sweep (same shapes, other seeds or times) reuse
  compiled programs across workers and invocations. Settings already in the environment win.
  """
  env = dict(os.environ)
  root = import_root()
  if root is not None:
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  env.setdefault("PYTHONUNBUFFERED", "1")   # logs readable while a run is going
  if jax_cache:
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(jax_cache).resolve()))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  return env


class Pool:
  """Hands the pending runs to ``workers`` worker processes and records each answer in ``state``."""

  def __init__(self, runs_dir, state: dict, pending: list, workers: int = 1, runs_per_worker: int = 0,
               env: dict | None = None, out=None, save_every_s: float = 2.0, allow_code_change: bool = False):
    self.runs_dir = Path(runs_dir)
    self.state = state
    self.queue = collections.deque(pending)
    self.total = len(pending)
    self.workers = max(1, min(workers, len(pending)))
    self.runs_per_worker = runs_per_worker
    self.env = env if env is not None else worker_env(None)
    self.out = out or sys.stdout
    self.save_every_s = save_every_s
    self.allow_code_change = allow_code_change
    self.lock = threading.RLock()
    self.procs = set()
    self.done = 0
    self.signal = None
    self._saved_at = 0.0

  # --- called from the worker threads --------------------------------------------------------------------

  def _next(self):
    with self.lock:
      if self.signal is not None or not self.queue:
        return None
      index = self.queue.popleft()
      self.state["runs"][index]["status"] = "running"
      return index

  def _spawn(self):
    proc = subprocess.Popen(
        [sys.executable, "-m", "butterfly_jax.launch.run_one", f"--runs={self.runs_dir}", "--serve",
         f"--parent-pid={os.getpid()}"] + (["--allow-code-change"] if self.allow_code_change else []),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=self.env,
        start_new_session=True)
    with self.lock:
      self.procs.add(proc)
      if self.signal is not None:
        proc.terminate()
    return proc

  def _retire(self, proc, terminate=False):
    if terminate:
      proc.terminate()
    try:
      proc.stdin.close()
    except OSError:
      pass
    proc.wait()
    proc.stdout.close()
    with self.lock:
      self.procs.discard(proc)

  def _record(self, index: int, answer: dict) -> None:
    with self.lock:
      item = self.state["runs"][index]
      item.update(status=answer["status"], error=answer.get("error"), seconds=answer.get("seconds"))
      if item["status"] != "interrupted":
        self.done += 1
      width = len(str(self.total))
      secs = f" ({item['seconds']:.1f} s)" if item["seconds"] is not None else ""
      print(f"[{self.done:>{width}}/{self.total}] {item['status']:<11} {item['name']}{secs}"
            + (f": {item['error']}" if item["status"] == "failed" and item["error"] else ""),
            file=self.out, flush=True)
      if time.time() - self._saved_at > self.save_every_s:
        self.save()

  def _died(self, index: int, proc) -> None:
    item = self.state["runs"][index]
    try:  # it may have written results.json just before it went
      if state_lib.finished(self.runs_dir, item["name"], item["config"]):
        self._record(index, {"status": "finished", "error": None, "seconds": None})
        return
    except (state_lib.RunDirError, OSError, ValueError):
      pass
    code = proc.returncode
    how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
    interrupted = self.signal is not None or code == interrupt.EXIT_STATUS
    note = ("the launcher was stopped" if self.signal is not None else
            "the worker was stopped by a stop signal" if interrupted else "the worker process died")
    note += f" ({how}) during this run" + ("; the same command resumes it from its newest checkpoint"
                                            if interrupted else "")
    try:
      with open(state_lib.log_path(self.runs_dir, item["name"]), "a") as f:
        f.write(f"==== launch: {note} ====\n")
    except OSError:
      pass
    self._record(index, {"status": "interrupted" if interrupted else "failed", "error": note})

  def _worker_loop(self) -> None:
    proc, ran = None, 0
    try:
      while (index := self._next()) is not None:
        if proc is None:
          proc, ran = self._spawn(), 0
        try:
          proc.stdin.write(f"{index}\n")
          proc.stdin.flush()
          line = proc.stdout.readline()
        except OSError:  # BrokenPipeError: the worker is gone
          line = ""
        if not line:
          proc.wait()
          self._died(index, proc)
          self._retire(proc)
          proc = None
          continue
        answer = json.loads(line)
        self._record(index, answer)
        ran += 1
        if answer["status"] == "interrupted" or (self.runs_per_worker and ran >= self.runs_per_worker):
          self._retire(proc)
          proc = None
    finally:
      if proc is not None:
        self._retire(proc, terminate=self.signal is not None)

  # --- called from the main thread ---------------------------------------------------------------------

  def stop(self, signum, _frame=None) -> None:
    """Signal handler: no new runs; workers terminated (killed on a second signal)."""
    with self.lock:
      again = self.signal is not None
      self.signal = signum
      procs = list(self.procs)
    print(f"\nlaunch: {signal.Signals(signum).name}: stopping the workers"
          + (" (killing)" if again else ""), file=self.out, flush=True)
    for proc in procs:
      try:
        proc.kill() if again else proc.terminate()
      except OSError:
        pass

  def save(self) -> None:
    with self.lock:
      state_lib.write(self.runs_dir, self.state)
      self._saved_at = time.time()

  def run(self):
    """Runs everything pending; returns the signal number that stopped it, or None."""
    threads = [threading.Thread(target=self._worker_loop, name=f"worker{i}") for i in range(self.workers)]
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, self.stop) for s in handled}
    try:
      for t in threads:
        t.start()
      while any(t.is_alive() for t in threads):
        for t in threads:
          t.join(timeout=0.2)
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)
      with self.lock:
        for item in self.state["runs"]:
          if item["status"] == "running":
            item["status"] = "interrupted"
      self.save()
    return self.signal


def _tail(path: Path, n: int = TAIL_LINES) -> list:
  try:
    with open(path, "rb") as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - 16384))
      text = f.read().decode("utf-8", "replace")
  except OSError:
    return ["(no log)"]
  lines = [line.rstrip() for line in text.replace("\r", "\n").splitlines()
           if line.strip() and not _FOOTER.match(line) and set(line.strip()) != {"^"}]
  return lines[-n:]


def summary(runs_dir, state: dict) -> str:
  """The end-of-sweep table: ran / skipped / failed (/ interrupted / pending), then each failure's log."""
  runs = state["runs"]
  counts = collections.Counter(r["status"] for r in runs)
  rows = [("ran", counts["finished"], ""), ("skipped", counts["skipped"], "already finished"),
          ("failed", counts["failed"], "")]
  rows += [(s, counts[s], "the same command resumes them" if s == "interrupted" else "")
           for s in ("interrupted", "pending") if counts[s]]
  if counts["busy"]:
    rows.append(("busy", counts["busy"], "another process is running them: left alone"))
  lines = [f"sweep {state['config']}: {len(runs)} runs in {runs_dir}"]
  lines += [f"  {label:<12}{n:>5}" + (f"   ({note})" if note else "") for label, n, note in rows]
  failed = [r for r in runs if r["status"] == "failed"]
  if failed:
    lines.append("failed runs:")
    for r in failed:
      log = state_lib.log_path(runs_dir, r["name"])
      lines.append(f"  {r['name']}: {r['error']}")
      lines.append(f"    log: {log}")
      lines += [f"    | {line}" for line in _tail(log)]
  return "\n".join(lines)
