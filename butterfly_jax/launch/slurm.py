"""A SLURM array-job script for a sweep: task i runs run i of the job's sweep (and skips it if finished).

    python -m butterfly_jax.launch --config=configs/NAME.py --runs=DIR --slurm=job.sh \
        --slurm-args=--partition=gpu --slurm-args=--gres=gpu:1 --slurm-args=--time=02:00:00
    sbatch job.sh

Only unfinished runs are in ``--array``; ``--workers=N`` caps the tasks running at once (``%N``). Each
task's own output goes to ``DIR/slurm/<job>_<task>.out``; the run's output to ``DIR/<name>/log.txt``. A task
runs ``python -m butterfly_jax.launch.run_one`` with the launcher's interpreter, in the directory the launcher
was called from (where relative paths in the configs resolve, as for local workers).

The tasks read the job's own snapshot of the sweep, ``DIR/slurm/sweep-<hash>.json`` (state.py),
not ``DIR/sweep.json``: a later launcher call on DIR (another ``--set``, an edited config file) rewrites
sweep.json, but the tasks still queued run the configs their job was written for, and a snapshot modified
since is refused. ``--set`` values are not part of run names, so two sweeps in one DIR share run
directories: a task whose run directory holds the other sweep's run (finished or not) fails with
RunDirError and overwrites nothing. Give another sweep its own ``--runs``.

``--requeue[=[SIGNAL@]SECONDS]`` (default ``USR1@300``) makes the tasks pre-emptible: ``#SBATCH --requeue``,
``#SBATCH --signal=B:SIGNAL@SECONDS`` (SLURM signals the job's shell SECONDS before the time limit) and
``--open-mode=append`` (a requeued task's output follows its earlier attempt's). The script then runs the task in
the background and forwards SIGNAL and SIGTERM to it; the run stops after the step in progress with a
training-state checkpoint there and exits 75 (:mod:`butterfly_jax.run.interrupt`). After SIGNAL, the task is
requeued (``scontrol requeue JOB_TASK``) and resumes from that checkpoint, bitwise as if uninterrupted. After a
SIGTERM alone it is not: a pre-emption requeues a ``--requeue`` job itself, and scancel or the time limit mean to
end it.
"""

import os
import re
import shlex
import sys
from pathlib import Path

from butterfly_jax.launch.local import import_root
from butterfly_jax.run import interrupt

DEFAULT_REQUEUE = "USR1@300"
REQUEUE_SIGNALS = ("USR1", "USR2")  # SIGTERM is not one: scancel, pre-emptions and the time limit send it too


def array_spec(indices) -> str:
  """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"`` (sbatch --array syntax)."""
  indices = sorted(set(indices))
  parts, start = [], None
  for i, x in enumerate(indices):
    if start is None:
      start = x
    if i + 1 == len(indices) or indices[i + 1] != x + 1:
      parts.append(f"{start}-{x}" if x != start else f"{x}")
      start = None
  return ",".join(parts)


class SlurmError(ValueError):
  """A value cannot be written safely into the job script; the message names the option."""


_UNSAFE_SBATCH = ("\n", "\r", "\0")


def _sbatch_line(arg: str) -> str:
  if any(c in arg for c in _UNSAFE_SBATCH):
    raise SlurmError(f"--slurm-args: {arg!r} holds a line break or NUL, which would start a new line of the job "
                     "script; give one option per --slurm-args")
  arg = arg.strip()
  if arg.startswith("#SBATCH"):
    return arg
  return "#SBATCH " + (arg if arg.startswith("-") else "--" + arg)


def _sbatch_value(value: str, what: str) -> str:
  """``value`` for an ``#SBATCH --opt=value`` line (read by sbatch, not by a shell): as it is when plain,
  in double quotes when it holds spaces or shell characters; an error for what sbatch cannot read back
  (quotes, line breaks, NUL, and ``%``, which sbatch expands in file names)."""
  if any(c in value for c in (*_UNSAFE_SBATCH, '"', "%")):
    raise SlurmError(f"{what}: {value!r} cannot be written in an #SBATCH line (it holds a quote, a line break, "
                     "NUL or '%'); choose another path")
  return value if re.fullmatch(r"[\w./:@+,=-]+", value) else f'"{value}"'



def requeue_signal(text: str) -> tuple:
  """``--requeue``'s ``[SIGNAL@]SECONDS`` (``USR1@300``, ``600``, ``SIGUSR2@120``) as ``(name, seconds)``: the
  signal SLURM sends the job's shell that many seconds before the time limit (``#SBATCH --signal=B:...``). A
  SlurmError names what is wrong."""
  m = re.fullmatch(r"\s*(?:([A-Za-z0-9]+)@)?(\d+)\s*", str(text))
  if not m:
    raise SlurmError(f"--requeue: expected [SIGNAL@]SECONDS such as {DEFAULT_REQUEUE} or 600, got {text!r}")
  try:
    (signum,) = interrupt.parse(m.group(1) or "USR1")
  except ValueError as e:
    raise SlurmError(f"--requeue: {e}") from None
  name, seconds = signum.name[3:], int(m.group(2))
  if name not in REQUEUE_SIGNALS:
    raise SlurmError(f"--requeue: SIG{name}: the warning before the time limit must be one of "
                     f"{', '.join(REQUEUE_SIGNALS)} (scancel, a pre-emption and the time limit send SIGTERM, and "
                     "only the warning requeues the task)")
  if not 1 <= seconds <= 65535:
    raise SlurmError(f"--requeue: {seconds} seconds; SLURM takes 1 to 65535")
  return name, seconds


def _requeue_task(command: str, name: str) -> list:
  """The end of a ``--requeue`` script: the task run in the background with SIGNAL ``name`` and SIGTERM forwarded
  to it, and requeued when it stopped after SIGNAL (exit status 75, or killed by a signal before its handler was in
  place: either way it resumes from its newest checkpoint)."""
  return [
      f"# SLURM sends this shell SIG{name} before the time limit (--signal=B:...); a pre-emption, scancel and the",
      "# time limit send SIGTERM. Both are forwarded to the run, which stops after the step in progress with a",
      f"# training-state checkpoint there and exits {interrupt.EXIT_STATUS}. After SIG{name} the task is requeued and "
      "resumes from",
      "# that checkpoint; after SIGTERM alone it is not (a pre-emption requeues a --requeue job itself; scancel and",
      "# the time limit end it).",
      'task="${SLURM_ARRAY_TASK_ID:?set by sbatch --array}"',
      'if [ "${SLURM_RESTART_COUNT:-0}" != 0 ]; then',
      '  echo "butterfly_jax: task $task requeued (restart ${SLURM_RESTART_COUNT}): its run resumes from its '
      'checkpoint"',
      "fi",
      "run_pid= stop= warned= trapped=",
      "forward() {",
      '  trapped=1 stop=$1',
      f'  if [ "$1" = {name} ]; then warned=1; fi',
      '  if [ -n "$run_pid" ]; then kill -s "$1" "$run_pid" 2>/dev/null || true; fi',
      "}",
      f"trap 'forward {name}' {name}",
      "trap 'forward TERM' TERM",
      command + f'--stop-signals={name},TERM --index="$task" &',
      "run_pid=$!",
      'if [ -n "$stop" ]; then kill -s "$stop" "$run_pid" 2>/dev/null || true; fi  # a signal before the run started',
      "status=",
      "while :; do  # a trapped signal ends wait early: wait again for the run's own exit status",
      "  trapped= code=0",
      '  wait "$run_pid" || code=$?',
      '  if [ "$code" != 127 ] || [ -z "$status" ]; then status=$code; fi  # 127: its status was reported already',
      '  [ -n "$trapped" ] || break',
      "done",
      f'if [ -n "$warned" ] && {{ [ "$status" = {interrupt.EXIT_STATUS} ] || [ "$status" -gt 128 ]; }}; then',
      '  job="${SLURM_JOB_ID:-}"',
      '  if [ -n "${SLURM_ARRAY_JOB_ID:-}" ]; then job="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; fi',
      '  if [ -z "$job" ]; then',
      '    echo "butterfly_jax: task $task stopped (exit status $status); not a SLURM job: run it again to resume"',
      '  elif scontrol requeue "$job"; then',
      '    echo "butterfly_jax: task $task stopped before the time limit (exit status $status): requeued $job, it '
      'resumes from its checkpoint"',
      "  else",
      '    echo "butterfly_jax: task $task stopped (exit status $status); scontrol requeue $job failed: submit the '
      'job again to resume" >&2',
      "  fi",
      "fi",
      'exit "$status"',
  ]


def script(runs_dir, indices, sbatch_args=(), max_parallel: int | None = None, jax_cache: str | None = None,
           python: str | None = None, sweep=None, sweep_sha256: str | None = None,
           allow_code_change: bool = False, requeue: str | None = None) -> str:
  """The text of the array-job script for the runs ``indices`` of the snapshot ``sweep`` (whose content has
  the SHA-256 ``sweep_sha256``), or of ``runs_dir``/sweep.json without one. The tasks run in this process's
  working directory, where relative paths in the configs (an ``init.checkpoint`` run directory) resolve, as
  for the local workers. ``requeue`` (``[SIGNAL@]SECONDS``, :func:`requeue_signal`): pre-emptible tasks, requeued
  after SLURM's warning before the time limit (the module's docstring)."""
  runs_dir = Path(runs_dir).resolve()
  python = python or sys.executable
  user = [_sbatch_line(a) for a in sbatch_args]
  given = lambda *names: any(a.split()[1].startswith(names) for a in user if len(a.split()) > 1)
  warning = requeue_signal(requeue) if requeue is not None else None
  if warning is not None and given("--signal"):
    raise SlurmError("--slurm-args: --signal with --requeue: give the warning as --requeue=SIGNAL@SECONDS (the "
                     "script forwards that signal to the run)")
  if warning is not None and given("--no-requeue"):
    raise SlurmError("--slurm-args: --no-requeue contradicts --requeue")
  q = shlex.quote
  if any(c in str(runs_dir) for c in _UNSAFE_SBATCH):
    raise SlurmError(f"--runs: {str(runs_dir)!r} holds a line break or NUL; choose another path")
  source = runs_dir / "sweep.json"
  if sweep is not None:
    source = Path(sweep).resolve()
    if any(c in str(source) for c in _UNSAFE_SBATCH):
      raise SlurmError(f"--runs: {str(source)!r} holds a line break or NUL; choose another path")
    if not re.fullmatch(r"[0-9a-f]{64}", sweep_sha256 or ""):
      raise SlurmError(f"sweep_sha256: expected 64 hex digits, got {sweep_sha256!r}")
  lines = [
      "#!/bin/bash",
      f"# butterfly_jax sweep: task i runs run i of {q(str(source))}, skipped if already finished.",
      "# Submit: sbatch THIS_FILE. Run one task by hand: SLURM_ARRAY_TASK_ID=i bash THIS_FILE",
  ]
  if not any(a.split()[1].startswith(("--job-name", "-J")) for a in user):
    lines.append(f"#SBATCH --job-name={_sbatch_value('butterfly-' + runs_dir.name, '--runs')}")
  lines.append(f"#SBATCH --array={array_spec(indices)}" + (f"%{max_parallel}" if max_parallel else ""))
  if not any(a.split()[1].startswith(("--output", "-o")) for a in user):
    plain = _sbatch_value(str(runs_dir), "--runs") == str(runs_dir)  # checks it, too
    output = f"{runs_dir}/slurm/%A_%a.out"
    lines.append(f"#SBATCH --output={output}" if plain else f'#SBATCH --output="{output}"')
  if warning is not None:
    lines += [] if given("--requeue") else ["#SBATCH --requeue"]
    lines.append(f"#SBATCH --signal=B:{warning[0]}@{warning[1]}")
    lines += [] if given("--open-mode") else ["#SBATCH --open-mode=append"]
  lines += user
  here, root = Path.cwd().resolve(), import_root()
  if any(c in str(here) for c in _UNSAFE_SBATCH):
    raise SlurmError(f"the working directory {str(here)!r} holds a line break or NUL; run the launcher elsewhere")
  lines += ["set -euo pipefail", f"cd {q(str(here))}"]
  if root is not None:
    lines.append(f'export PYTHONPATH={q(str(root))}"${{PYTHONPATH:+:$PYTHONPATH}}"')
  lines.append("export PYTHONUNBUFFERED=1")
  if jax_cache:
    lines += [  # the default path through a quoted variable: nothing in it is ever expanded by the shell
        f"butterfly_jax_cache={q(str(Path(jax_cache).resolve()))}",
        'export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$butterfly_jax_cache}"',
        'export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}"',
    ]
  snapshot = f"--sweep={q(str(source))} --sweep-sha256={sweep_sha256} " if sweep is not None else ""
  command = (f"{q(python)} -m butterfly_jax.launch.run_one --runs={q(str(runs_dir))} {snapshot}"
             + ("--allow-code-change " if allow_code_change else ""))
  if warning is None:
    lines.append(f'exec {command}--index="${{SLURM_ARRAY_TASK_ID:?set by sbatch --array}}"')
  else:
    lines += _requeue_task(command, warning[0])
  return "\n".join(lines) + "\n"


def write(path, runs_dir, indices, **kwargs) -> Path:
  """Writes the script (executable) and creates DIR/slurm for the tasks' output."""
  path = Path(path)
  (Path(runs_dir) / "slurm").mkdir(parents=True, exist_ok=True)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(script(runs_dir, indices, **kwargs))
  os.chmod(path, 0o755)
  return path
