"""Command line: run a config file's declared sweep.

    python -m butterfly_jax.launch --config=configs/NAME.py[:arg] --runs=DIR [--workers=N] [--dry-run]
        [--set a.b=value ...] [--config.a.b=value ...] [--slurm=FILE [--slurm-args=--partition=gpu ...]
        [--requeue[=[SIGNAL@]SECONDS]]]

The same command is installed as ``butterfly-launch``, and ``python -m launch`` runs it from the repository
root. Expands ``sweep(add)`` of the config file (see sweep.py), writes ``DIR/sweep.json``, skips runs
already finished in ``DIR/<name>`` and runs the rest in worker processes (local.py), or writes a SLURM array
job instead (``--slurm``), whose tasks read the job's own snapshot of the sweep, ``DIR/slurm/sweep-<hash>.json``
(slurm.py; ``--requeue``: pre-emptible tasks, requeued after SLURM's warning before the time limit, each resuming
its run from the checkpoint it stopped at). ``configs/NAME.py`` is the shipped config of that name from any directory
where no such file exists (:mod:`butterfly_jax.run.config_files`). Exit status: 0 all done, 1 a run failed or was
busy (another process ran it), 2 a bad sweep or command line, 3 another launcher holds DIR, 75 a worker was stopped
by a signal of its own (its run checkpointed: the same command resumes it), 128 + signal when the launcher was
interrupted.

Run names come from the sweep's own overrides; ``--set`` values are not part of them. Another ``--set``
(or config file) on the same DIR rewrites ``DIR/sweep.json`` (the launcher says so) and names its runs as
before: a run directory that already holds another config's run, finished or not, is refused (that run
fails with RunDirError), never overwritten. Give another sweep its own ``--runs``.
"""

import argparse
import json
import re
import sys
from pathlib import Path

from butterfly_jax.config import ConfigError
from butterfly_jax.io.rundir import try_lock
from butterfly_jax.launch import local, slurm, state as state_lib
from butterfly_jax.launch.sweep import SweepError, expand
from butterfly_jax.run import interrupt
from butterfly_jax.run.commands import spellings

PROG = "python -m butterfly_jax.launch"  # also installed as butterfly-launch
_CONFIG_OVERRIDE = re.compile(r"^--config\.([A-Za-z0-9_.]+)(?:=(.*))?$", re.S)


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                              epilog="--config.a.b=value is the same as --set a.b=value.")
  p.add_argument("--config", required=True, help="config file with get_config() and sweep(add); path or path:arg")
  p.add_argument("--runs", required=True, help="directory of the sweep: DIR/sweep.json and DIR/<run name>/")
  p.add_argument("--workers", type=int, default=None,
                 help="runs at once: worker processes (default 1); with --slurm, the array's %%N cap (default none)")
  p.add_argument(*spellings("--runs-per-worker"), type=int, default=0,
                 help="a worker is replaced after this many runs (0 = never; 1 = a fresh process per run)")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help="override for every run, parsed by the field's type (tuples: '(0.0,1e-4)')")
  p.add_argument(*spellings("--allow-code-change"), action="store_true",
                 help="resume unfinished runs although the package source changed since their checkpoints were "
                      "written (without it such a run fails and nothing of it is deleted; results.json records both)")
  p.add_argument(*spellings("--dry-run"), action="store_true", help="list the runs and their status; run and write nothing")
  p.add_argument("--slurm", metavar="FILE", help="write a SLURM array-job script instead of running")
  p.add_argument(*spellings("--slurm-args"), action="append", default=[], metavar="ARG",
                 help="an #SBATCH line, e.g. --partition=gpu, --gres=gpu:1, --time=02:00:00 (repeatable)")
  p.add_argument("--requeue", nargs="?", const=slurm.DEFAULT_REQUEUE, default=None, metavar="[SIGNAL@]SECONDS",
                 help="with --slurm: pre-emptible tasks. SLURM sends SIGNAL (USR1 or USR2) SECONDS before the time "
                      f"limit (default {slurm.DEFAULT_REQUEUE}); the run stops after the step in progress with a "
                      "checkpoint there and the task is requeued, to resume from it (also on SIGTERM: checkpointed, "
                      "not requeued)")
  p.add_argument(*spellings("--jax-cache"), default=None, metavar="DIR",
                 help="JAX persistent compilation cache shared by the runs (default RUNS/jax_cache; '' = off)")
  return p


def parse_args(argv):
  """argparse, plus ``--config.a.b=value`` / ``--config.a.b value`` collected as ``--set`` items."""
  argv = list(argv)
  rest, sets, i = [], [], 0
  while i < len(argv):
    m = _CONFIG_OVERRIDE.match(argv[i])
    if m and m.group(2) is None:
      if i + 1 >= len(argv):
        raise SystemExit(f"{argv[i]}: expected a value")
      sets.append(f"{m.group(1)}={argv[i + 1]}")
      i += 2
      continue
    if m:
      sets.append(f"{m.group(1)}={m.group(2)}")
    else:
      rest.append(argv[i])
    i += 1
  args = _parser().parse_args(rest)
  args.set = args.set + sets
  if args.workers is not None and args.workers < 1:
    _parser().error(f"--workers: expected an integer >= 1, got {args.workers}")
  if args.runs_per_worker < 0:
    _parser().error(f"--runs-per-worker: expected an integer >= 0, got {args.runs_per_worker}")
  if args.requeue is not None and not args.slurm:
    _parser().error("--requeue: only with --slurm (a local launcher's workers checkpoint on SIGTERM anyway)")
  return args


def _statuses(runs_dir, runs, state):
  """Marks runs already finished in DIR ``skipped`` (with the wall time their results.json records, so that a
  later call's sweep.json keeps every run's time) and those holding another config's results ``failed``."""
  for run, item in zip(runs, state["runs"]):
    try:
      results = state_lib.finished_results(runs_dir, run.name, item["config"])
      if results is not None:
        item.update(status="skipped", seconds=(results.get("timing") or {}).get("total_s"))
    except state_lib.RunDirError as e:
      item.update(status="failed", error=str(e))


class BusyError(RuntimeError):
  """Another launcher holds the sweep directory."""


def _lock(runs_dir: Path):
  """An exclusive lock on DIR for this launcher's lifetime (released by the kernel however it ends)."""
  handle, holder = try_lock(runs_dir / ".launch.lock")
  if handle is None:
    raise BusyError(f"another launcher is running on {runs_dir} ({holder}); wait for it or stop it")
  return handle


def _dry_run(runs_dir, state, pending, out) -> int:
  width = len(str(len(state["runs"])))
  for item in state["runs"]:
    print(f"{item['index']:>{width}}  {item['status']:<8} {item['name']}", file=out)
  print(f"{len(state['runs'])} runs, {len(pending)} to run, in {runs_dir}", file=out)
  return 0


def _sweep_text(config_spec, set_items) -> str:
  return f"--config={config_spec}" + "".join(f" --set {item}" for item in set_items)


def _warn_if_another_sweep(runs_dir, args, runs, out) -> None:
  """A line on ``out`` when DIR/sweep.json was written for another config spec or ``--set`` list."""
  try:
    before = json.loads((runs_dir / state_lib.SWEEP_FILE).read_text())
    spec, set_items, names = before["config"], list(before["set"]), {item["name"] for item in before["runs"]}
  except (OSError, ValueError, KeyError, TypeError):
    return
  if spec == str(args.config) and set_items == list(args.set):
    return
  shared = sum(run.name in names for run in runs)
  print(f"warning: {runs_dir / state_lib.SWEEP_FILE} was written for another sweep ({_sweep_text(spec, set_items)}; "
        f"now {_sweep_text(args.config, args.set)}); --set values are not part of run names, and {shared} of "
        f"this sweep's {len(runs)} run names are also in that one: a run directory of the same name that holds "
        "another config's run is refused, not overwritten (give another sweep its own --runs). Job scripts "
        "written before run their own snapshot of their sweep", file=out, flush=True)


def _write_slurm(args, runs_dir, state, pending, jax_cache, out) -> int:
  sweep, digest = state_lib.snapshot_path(runs_dir, state_lib.snapshot(state))
  kwargs = dict(sbatch_args=args.slurm_args, max_parallel=args.workers, jax_cache=jax_cache, sweep=sweep,
                sweep_sha256=digest, allow_code_change=args.allow_code_change, requeue=args.requeue)
  try:
    slurm.script(runs_dir, pending, **kwargs)
  except slurm.SlurmError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  state_lib.write(runs_dir, state)
  if not pending:
    state_lib.prune_snapshots(runs_dir)
    print(f"all {len(state['runs'])} runs of {runs_dir} are finished: no script written", file=out)
    return 0
  state_lib.write_snapshot(runs_dir, state)
  state_lib.prune_snapshots(runs_dir, keep=sweep)
  path = slurm.write(args.slurm, runs_dir, pending, **kwargs)
  print(f"{len(pending)} of {len(state['runs'])} runs to do: wrote {path} (array {slurm.array_spec(pending)}; "
        f"its tasks read {sweep}); submit with: sbatch {path}", file=out)
  return 0


def _run_here(args, runs_dir, state, pending, jax_cache, out) -> int:
  state_lib.write(runs_dir, state)
  print(f"sweep {args.config}: {len(state['runs'])} runs, {len(state['runs']) - len(pending)} already finished, "
        f"{len(pending)} to run in {runs_dir}", file=out, flush=True)
  stopped = None
  if pending:
    pool = local.Pool(runs_dir, state, pending, workers=args.workers or 1, runs_per_worker=args.runs_per_worker,
                      env=local.worker_env(jax_cache), out=out, allow_code_change=args.allow_code_change)
    stopped = pool.run()
  print(local.summary(runs_dir, state), file=out, flush=True)
  if stopped is not None:
    return 128 + int(stopped)
  if any(item["status"] in ("failed", "busy") for item in state["runs"]):
    return 1
  return interrupt.EXIT_STATUS if any(item["status"] == "interrupted" for item in state["runs"]) else 0


def main(argv=None, out=None) -> int:
  """The launcher; returns the exit status."""
  out = out or sys.stdout
  args = parse_args(sys.argv[1:] if argv is None else argv)
  runs_dir = Path(args.runs).expanduser().resolve()
  try:
    runs = expand(args.config, set_items=args.set)
  except (SweepError, ConfigError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  _warn_if_another_sweep(runs_dir, args, runs, out)
  state = state_lib.new_state(args.config, args.set, runs)
  _statuses(runs_dir, runs, state)
  pending = [item["index"] for item in state["runs"] if item["status"] == "pending"]
  jax_cache = str(runs_dir / "jax_cache") if args.jax_cache is None else (args.jax_cache or None)
  if args.dry_run:
    return _dry_run(runs_dir, state, pending, out)
  try:
    lock = _lock(runs_dir)
  except BusyError as e:
    print(f"error: {e}", file=sys.stderr)
    return 3
  with lock:
    if args.slurm:
      return _write_slurm(args, runs_dir, state, pending, jax_cache, out)
    return _run_here(args, runs_dir, state, pending, jax_cache, out)


if __name__ == "__main__":
  sys.exit(main())
