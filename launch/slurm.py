"""A SLURM array-job script for a sweep: task i runs run i of ``DIR/sweep.json`` (and skips it if finished).

    python -m launch --config=configs/NAME.py --runs=DIR --slurm=job.sh \
        --slurm-args=--partition=gpu --slurm-args=--gres=gpu:1 --slurm-args=--time=02:00:00
    sbatch job.sh

Only unfinished runs are in ``--array``; ``--workers=N`` caps the tasks running at once (``%N``). Each
task's own output goes to ``DIR/slurm/<job>_<task>.out``; the run's output to ``DIR/<name>/log.txt``.
"""

import os
import shlex
import sys
from pathlib import Path

from launch.local import REPO_ROOT


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


def _sbatch_line(arg: str) -> str:
  arg = arg.strip()
  if arg.startswith("#SBATCH"):
    return arg
  return "#SBATCH " + (arg if arg.startswith("-") else "--" + arg)


def script(runs_dir, indices, sbatch_args=(), max_parallel: int | None = None, jax_cache: str | None = None,
           python: str | None = None) -> str:
  """The text of the array-job script for the runs ``indices`` of ``runs_dir``/sweep.json."""
  runs_dir = Path(runs_dir).resolve()
  python = python or sys.executable
  user = [_sbatch_line(a) for a in sbatch_args]
  q = shlex.quote
  lines = [
      "#!/bin/bash",
      f"# butterfly_jax sweep: task i runs run i of {runs_dir}/sweep.json, skipped if already finished.",
      "# Submit: sbatch THIS_FILE. Run one task by hand: SLURM_ARRAY_TASK_ID=i bash THIS_FILE",
  ]
  if not any(a.split()[1].startswith(("--job-name", "-J")) for a in user):
    lines.append(f"#SBATCH --job-name=butterfly-{runs_dir.name}")
  lines.append(f"#SBATCH --array={array_spec(indices)}" + (f"%{max_parallel}" if max_parallel else ""))
  if not any(a.split()[1].startswith(("--output", "-o")) for a in user):
    lines.append(f"#SBATCH --output={runs_dir}/slurm/%A_%a.out")
  lines += user
  lines += [
      "set -euo pipefail",
      f"cd {q(str(REPO_ROOT))}",
      f'export PYTHONPATH={q(str(REPO_ROOT))}"${{PYTHONPATH:+:$PYTHONPATH}}"',
      "export PYTHONUNBUFFERED=1",
  ]
  if jax_cache:
    lines += [
        f'export JAX_COMPILATION_CACHE_DIR="${{JAX_COMPILATION_CACHE_DIR:-{Path(jax_cache).resolve()}}}"',
        'export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}"',
    ]
  lines.append(f'exec {q(python)} -m launch.run_one --runs={q(str(runs_dir))} '
               '--index="${SLURM_ARRAY_TASK_ID:?set by sbatch --array}"')
  return "\n".join(lines) + "\n"


def write(path, runs_dir, indices, **kwargs) -> Path:
  """Writes the script (executable) and creates DIR/slurm for the tasks' output."""
  path = Path(path)
  (Path(runs_dir) / "slurm").mkdir(parents=True, exist_ok=True)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(script(runs_dir, indices, **kwargs))
  os.chmod(path, 0o755)
  return path
