"""Command line: ``python -m butterfly_jax.main --config=configs/NAME.py --workdir=DIR [--config.a.b=value]``.

Without ``--config`` the embedded default (the quickstart: scikit-learn digits, no download) runs.
"""

import sys

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from butterfly_jax import configs_embedded
from butterfly_jax.config import ConfigError
from butterfly_jax.data import DataError
from butterfly_jax.perturb import PerturbationError
from butterfly_jax.pretrained import PretrainedError
from butterfly_jax.rundir import RunDirBusy, RunDirError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", f"{configs_embedded.__file__}:quickstart",
    "Path to a config file with get_config() (default: the embedded quickstart).", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (created if missing).")
flags.DEFINE_bool("discard_unfinished", False,
                  "Delete an unfinished run of another config in --workdir (its checkpoints and metrics) and start "
                  "from step 0; without it such a workdir is an error and nothing is deleted.")
flags.DEFINE_bool("allow_code_change", False,
                  "Resume an unfinished run in --workdir although the package source changed since its checkpoint "
                  "was written (results.json records both); without it such a resume is an error.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first and run one experiment over every process's devices "
                  "(a TPU pod slice, several GPU nodes under SLURM): start the same command on every host.")
flags.DEFINE_string("coordinator", None, "With --distributed outside TPU/SLURM/Open MPI: process 0's HOST:PORT.")
flags.DEFINE_integer("num_processes", None, "With --distributed outside TPU/SLURM/Open MPI: the number of processes.")
flags.DEFINE_integer("process_id", None, "With --distributed outside TPU/SLURM/Open MPI: this process's index.")


def summary(results: dict) -> str:
  lines = []
  for ch in results["children"]:
    head = (f"child {ch['index']}  sigma={ch['perturb']['scale']:<8g} test acc={_fmt(ch['test']['accuracy'])} "
            f"train loss={_fmt(ch['train']['loss'])}")
    if "vs_child0" in ch:
      v = ch["vs_child0"]
      b = v["barrier"]
      head += (f"  L2={_fmt(v['l2'])}  barrier loss train/test={_fmt(b['train']['loss'])}/{_fmt(b['test']['loss'])}"
               f"  error train/test={_fmt(b['train']['error'])}/{_fmt(b['test']['error'])}")
    if ch["diverged"]:
      head += "  DIVERGED"
    lines.append(head)
  return "\n".join(lines)


def _fmt(x):
  return "nan" if x is None else f"{x:.4f}"


def main(argv):
  del argv
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and tfds are chatty at INFO
  config = FLAGS.config
  workdir = FLAGS.workdir or "runs/quickstart"
  from butterfly_jax.experiment import run
  if FLAGS.distributed:
    from butterfly_jax import runtime
    runtime.configure(config.runtime.deterministic)  # XLA flags before the backends start
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes (GPU/TPU: unaffected)
    # without the three flags: coordinator, process count and index from the TPU, SLURM or Open MPI environment
    jax.distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
  try:
    results = run(config, workdir, discard_unfinished=FLAGS.discard_unfinished,
                  allow_code_change=FLAGS.allow_code_change)
  except RunDirBusy as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)
  except (ConfigError, DataError, PerturbationError, PretrainedError, RunDirError, FloatingPointError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if jax.process_index() == 0:
    print(summary(results))
    print(f"results: {workdir}/results.json")


if __name__ == "__main__":
  app.run(main)
