"""Runs runs of ``DIR/sweep.json`` in this process, each with its output appended to ``DIR/<name>/log.txt``.

    python -m butterfly_jax.launch.run_one --runs=DIR --index=I    # run I of DIR/sweep.json (by hand)
    python -m butterfly_jax.launch.run_one --runs=DIR --sweep=DIR/slurm/sweep-H.json --sweep-sha256=HASH \
        --index=I                                                  # run I of a job's snapshot (a SLURM array task)
    python -m butterfly_jax.launch.run_one --runs=DIR --serve      # a local worker of the launcher

A worker imports JAX once and runs one run after another: it reads a run index per line on stdin and
answers one JSON line per run on its original stdout (``{"index", "status", "error", "seconds"}``); its
file descriptors 1 and 2 point at the current run's log while the run lasts (so XLA's own messages land
there too). A run that raises is reported ``failed`` (traceback in its log) and the worker goes on. A
finished run (results.json with this config) is ``skipped``; an unfinished one resumes from its last intact
checkpoint; one that another process is running right now (a resubmitted array task, a local launcher on
the same DIR: the run directory's lock) is ``busy`` and left alone (exit status 3 with ``--index``). A run
directory that holds another config's run, finished or not (another sweep's run of the same name:
``--set`` values are not part of run names), fails the run with RunDirError: that run's files are neither
deleted nor overwritten (the refusal is appended to its log.txt).

With ``--index``, a snapshot whose content is not ``--sweep-sha256``, or a run whose config does not match
its ``config_sha256``, is an error (exit status 2) and nothing runs.

A stop signal (``--stop-signals``, SIGUSR1 and SIGTERM by default: :mod:`butterfly_jax.run.interrupt`) stops the
run after the step in progress with a training-state checkpoint there: the run is ``interrupted``, and the process
exits with status 75 (a worker after answering; one that has no run yet answers ``interrupted`` for the run it is
handed and exits). Running the run again resumes it bitwise; a SLURM job script written with ``--requeue`` requeues
the task (slurm.py).
"""

import argparse
import contextlib
import ctypes
import datetime
import json
import os
import signal
import sys
import threading
import time
import traceback

from butterfly_jax.io.rundir import RunDirBusy
from butterfly_jax.launch import state as state_lib
from butterfly_jax.run import interrupt
from butterfly_jax.run.experiment import run


@contextlib.contextmanager
def _output_to(path):
  """File descriptors 1 and 2 (and so sys.stdout/sys.stderr and C libraries) appended to ``path``."""
  sys.stdout.flush()
  sys.stderr.flush()
  saved = os.dup(1), os.dup(2)
  fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  try:
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    yield
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    for f in (fd, *saved):
      os.close(f)


def _stamp() -> str:
  return datetime.datetime.now().isoformat(sep=" ", timespec="seconds")


def _error_line(e: BaseException) -> str:
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def execute(runs_dir, item: dict, allow_code_change: bool = False) -> dict:
  """Runs one sweep.json entry (or finds it finished); returns {"status", "error", "seconds"}: ``finished``,
  ``skipped``, ``busy``, ``interrupted`` (a stop signal: checkpointed, resumable) or ``failed``.
  ``allow_code_change``: an unfinished run whose checkpoints another package source wrote resumes anyway
  (:func:`butterfly_jax.io.rundir.check_resume`); without it that run fails, nothing deleted."""
  name = item["name"]
  path = state_lib.run_dir(runs_dir, name)
  path.mkdir(parents=True, exist_ok=True)
  tic = time.time()
  status, error = "failed", None
  with _output_to(state_lib.log_path(runs_dir, name)):
    print(f"==== {_stamp()} launch: run {item['index']} {name} (pid {os.getpid()}) ====", flush=True)
    try:
      if state_lib.finished(runs_dir, name, item["config"]):
        status = "skipped"
        print("already finished with this config; nothing to do")
      else:
        run(state_lib.config_from_json(item["config"]), path, allow_code_change=allow_code_change)
        status = "finished"
    except RunDirBusy as e:  # another process runs it: nothing to do here, nothing touched
      status, error = "busy", _error_line(e)
      print(f"launch: {e}")
    except interrupt.Interrupted as e:  # a stop signal: checkpointed, the next attempt resumes
      status, error = "interrupted", str(e)
      print(f"launch: {e}")
    except Exception as e:  # a failing run is reported; the worker goes on with the next one
      traceback.print_exc()
      error = _error_line(e)
      if isinstance(e, state_lib.RunDirError) and str(path.resolve()) in str(e):  # about this run's directory
        print("launch: this run's directory holds another config's run, such as another sweep's run of the same "
              "name (--set values are not part of run names); nothing of it was overwritten. Give each sweep its "
              "own --runs")
    print(f"==== {_stamp()} launch: {status} after {time.time() - tic:.1f} s ====", flush=True)
  return {"status": status, "error": error, "seconds": round(time.time() - tic, 3)}


def _die_with_parent(parent_pid: int) -> None:
  """A worker must not outlive its launcher (even a SIGKILLed one): it would keep writing a run directory
  that the next launcher starts again. Linux: the kernel's parent-death signal; everywhere: a watcher."""
  if sys.platform.startswith("linux"):
    try:
      ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
      pass
  if os.getppid() != parent_pid:
    os._exit(1)

  def watch():
    while os.getppid() == parent_pid:
      time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGKILL)

  threading.Thread(target=watch, daemon=True).start()


def serve(runs_dir, parent_pid: int | None, allow_code_change: bool = False) -> int:
  """The local worker loop: an index per stdin line, a JSON answer per run on the original stdout. Returns the
  exit status: 0 at the end of stdin, :data:`~butterfly_jax.run.interrupt.EXIT_STATUS` after a stop signal (the
  run it was running, or was handed next, answered ``interrupted``)."""
  if parent_pid:
    _die_with_parent(parent_pid)
  control = os.fdopen(os.dup(1), "w", buffering=1)
  os.dup2(2, 1)  # stray prints between runs must not reach the answer channel
  state = state_lib.read(runs_dir)
  while line := sys.stdin.readline():
    if not line.strip():
      continue
    index = int(line)
    signum = interrupt.requested()
    if signum is not None:  # stopped between runs: this one is not started
      answer = {"status": "interrupted", "error": f"stopped by {interrupt.name(signum)} before it started",
                "seconds": 0.0}
    else:
      answer = execute(runs_dir, state_lib.entry(state, index), allow_code_change)
    control.write(json.dumps({"index": index, **answer}) + "\n")
    if answer["status"] == "interrupted":
      return interrupt.EXIT_STATUS
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m butterfly_jax.launch.run_one", description=__doc__.split("\n\n")[0])
  parser.add_argument("--runs", required=True, help="the sweep's directory (holds sweep.json)")
  mode = parser.add_mutually_exclusive_group(required=True)
  mode.add_argument("--index", type=int, help="run this run of sweep.json (0-based)")
  mode.add_argument("--serve", action="store_true", help="worker of python -m butterfly_jax.launch: indices on stdin")
  parser.add_argument("--sweep", metavar="FILE", help="with --index: read the runs from this snapshot of the sweep "
                      "(a job's DIR/slurm/sweep-<hash>.json) instead of DIR/sweep.json")
  parser.add_argument("--sweep-sha256", metavar="HEX", help="with --sweep: the SHA-256 its content must have")
  parser.add_argument("--allow-code-change", action="store_true",
                      help="resume unfinished runs although the package source changed since their checkpoints")
  parser.add_argument("--stop-signals", default=",".join(interrupt.DEFAULT_SIGNALS), metavar="SIG,...",
                      help="signals on which a run stops after the step in progress, checkpointed there, and the "
                           f"process exits with status {interrupt.EXIT_STATUS} (default %(default)s; '' = none)")
  parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.sweep is not None and args.index is None:
    parser.error("--sweep: only with --index")
  if args.sweep_sha256 is not None and args.sweep is None:
    parser.error("--sweep-sha256: only with --sweep")
  try:
    stop_signals = interrupt.parse(args.stop_signals)
  except ValueError as e:
    parser.error(f"--stop-signals: {e}")
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and tfds are chatty at INFO
  previous = interrupt.install(stop_signals)  # put back on return: main may be called in a process that goes on
  try:
    if args.serve:
      return serve(args.runs, args.parent_pid, args.allow_code_change)
    try:
      state = (state_lib.read(args.runs) if args.sweep is None
               else state_lib.read_snapshot(args.sweep, args.sweep_sha256))
      item = state_lib.entry(state, args.index)
    except state_lib.StateError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
    answer = execute(args.runs, item, args.allow_code_change)
  finally:
    interrupt.restore(previous)
  log = state_lib.log_path(args.runs, item["name"])
  print(f"run {args.index} {item['name']}: {answer['status']} ({answer['seconds']:.1f} s)"
        + (f": {answer['error']}" if answer["error"] else "") + f"; log: {log}")
  return {"failed": 1, "busy": 3, "interrupted": interrupt.EXIT_STATUS}.get(answer["status"], 0)


if __name__ == "__main__":
  sys.exit(main())
