"""Command line: ``python -m butterfly_jax.main --config=configs/NAME.py --workdir=DIR [--config.a.b=value]``.

Installed as ``butterfly-run``. Without ``--config`` the embedded default (the quickstart: scikit-learn digits,
no download) runs; ``configs/NAME.py`` is the shipped config of that name from any directory where no such file
exists (:mod:`butterfly_jax.run.config_files`).

Exit status and what stderr shows:

* 0: the run finished (or had finished before); a summary and the path of results.json on stdout.
* 2: a bad input, before anything trains: a config field (``--config.a.b`` naming no field, a value out of
  range, a model argument the model does not take), a flag, the data, the work directory. One line
  ``error: FIELD: what is wrong and what is allowed``.
* 3: another process is running in ``--workdir`` (its lock, ``WORKDIR/.lock``); nothing was touched.
* 75: interrupted, resumable: a stop signal (``--stop_signals``: SIGUSR1, which SLURM's ``--signal`` sends before a
  time limit, and SIGTERM, a pre-emption's, by default) stopped the run after the step in progress, with a
  training-state checkpoint at that step boundary (:mod:`butterfly_jax.run.interrupt`); one line ``interrupted:
  stopped by SIGNAL ...`` names it. The same command resumes and ends bitwise as an uninterrupted run would.
* 1: a failure while running. An ``OSError`` (a full disk, a permission) is one line ``error: PATH: reason``;
  every file written so far is kept (files are replaced atomically), and the same command resumes from the newest
  training-state checkpoint once the cause is fixed. Anything else is unexpected (a bug): one line
  ``error: unexpected TYPE: message``, with the traceback written to ``WORKDIR/error_traceback.txt`` (replaced by
  the next failure's; on stderr when the work directory cannot be written).
"""

import errno
import json
import sys
import traceback
from pathlib import Path

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from butterfly_jax import config as config_lib
from butterfly_jax.config import ConfigError
from butterfly_jax.core.perturb import PerturbationError
from butterfly_jax.io import runtime
from butterfly_jax.io.data import DataError
from butterfly_jax.io.pretrained import PretrainedError
from butterfly_jax.io.rundir import RunDirBusy, RunDirError, to_jsonable
from butterfly_jax.run import commands, config_files, configs_embedded, interrupt, spec as spec_lib
from butterfly_jax.run.commands import help_lists_flags_of
from butterfly_jax.run.experiment import run

DEFAULT_CONFIG = f"{configs_embedded.__file__}:quickstart"
# Errors that are the input's fault: exit status 2 with their one-line message.
BAD_INPUT = (ConfigError, DataError, PerturbationError, PretrainedError, RunDirError, FloatingPointError)
TRACEBACK_FILE = "error_traceback.txt"
_CONFIG = commands.CONFIG_FLAG

FLAGS = flags.FLAGS
# No default here: ml_collections would load it, and apply the overrides, while this module is imported, where a
# bad override could not be reported; cli() names the default config on the command line instead.
config_flags.DEFINE_config_file(
    "config", None, f"Path to a config file with get_config() (default: the embedded quickstart, {DEFAULT_CONFIG}).",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (created if missing); required but for the quickstart (no "
                    "--config), which defaults to runs/quickstart.")
flags.DEFINE_bool("discard_unfinished", False,
                  "Delete an unfinished run of another config in --workdir (its checkpoints and metrics) and start "
                  "from step 0; without it such a workdir is an error and nothing is deleted.")
flags.DEFINE_bool("allow_code_change", False,
                  "Resume an unfinished run in --workdir although the package source changed since its checkpoint "
                  "was written (results.json records both); without it such a resume is an error.")
flags.DEFINE_list("stop_signals", list(interrupt.DEFAULT_SIGNALS),
                  "Signals on which the run stops after the step in progress, with a training-state checkpoint there, "
                  f"and exits with status {interrupt.EXIT_STATUS} (interrupted, resumable: the same command resumes); "
                  "'' = none (a signal's default action: SIGTERM ends the run at once, and it resumes from its newest "
                  "periodic checkpoint). Not with --distributed.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() first and run one experiment over every process's devices "
                  "(a TPU pod slice, several GPU nodes under SLURM): start the same command on every host.")
flags.DEFINE_string("coordinator", None, "With --distributed outside TPU/SLURM/Open MPI: process 0's HOST:PORT.")
flags.DEFINE_integer("num_processes", None, "With --distributed outside TPU/SLURM/Open MPI: the number of processes.")
flags.DEFINE_integer("process_id", None, "With --distributed outside TPU/SLURM/Open MPI: this process's index.")
flags.DEFINE_bool("print_config", False,
                  "Print the config as it will run (file, overrides, validated) as JSON and exit: nothing is loaded, "
                  "trained or written.")
flags.DEFINE_bool("dry_run", False,
                  "Print the plan (T, t, K and the sigmas, steps per epoch, warm-up, devices, members strategy) and "
                  "exit: the data are read to count steps; nothing is trained or written.")


CONNECTED_BELOW = 0.01  # the summary's reading of a train-loss barrier (REPRODUCTION.md: a sixth of an early plateau)


def summary(results: dict) -> str:
  """What a run printed at its end: what is being compared, a line per child, and a reading of the smallest σ."""
  steps, children = results.get("steps", {}), results["children"]
  kinds = sorted({str(ch["perturb"].get("kind")) for ch in children[1:] if ch["perturb"].get("kind")})
  twins = [ch for ch in children[1:] if ch["perturb"]["scale"] == 0]
  if twins and twins[0].get("end_step", 0) != children[0].get("end_step", 0):  # extra steps after t > 0
    control = (f"\nThe sigma = 0 twin trains on to step {twins[0]['end_step']} like the perturbed children (child 0 "
               "stops at T):\nits barrier is what the extra training alone does.")
  else:
    control = " The sigma = 0 twin is the control: exactly 0." if twins else ""
  lines = [f"Children perturbed once at step t = {steps.get('t', '?')} of T = {steps.get('T', '?')}"
           + (f" ({', '.join(kinds)} direction)" if kinds else "") + "; every child saw the same batches.",
           "Per child: its test accuracy and train loss; against child 0 (unperturbed): the L2 distance between",
           "their weights and the barrier, how far loss (error) rises above the straight line between the two",
           "networks (0: one linearly connected basin)." + control, ""]
  for ch in children:
    metric = ch["test"].get("metric")  # text tasks: their metric (F1, Matthews correlation) beside the accuracy
    head = (f"child {ch['index']}  sigma={ch['perturb']['scale']:<8g} test acc={_fmt(ch['test']['accuracy'])} "
            + (f"test {metric['name']}={_fmt(metric['value'])} " if metric and metric["name"] != "accuracy" else "")
            + f"train loss={_fmt(ch['train']['loss'])}")
    if "vs_child0" in ch:
      v = ch["vs_child0"]
      b = v["barrier"]
      head += (f"  L2={_fmt(v['l2'])}  barrier loss train/test={_fmt(b['train']['loss'])}/{_fmt(b['test']['loss'])}"
               f"  error train/test={_fmt(b['train']['error'])}/{_fmt(b['test']['error'])}")
      if metric and metric["name"] != "accuracy":
        head += f"  {metric['name']} train/test={_fmt(b['train'].get('metric'))}/{_fmt(b['test'].get('metric'))}"
      blown = [split for split, ok in (v.get("barrier_path_finite") or {}).items() if ok is False]
      if blown:
        head += f"  PATH NOT FINITE ({'/'.join(blown)}: no barrier)"
    if ch["diverged"]:
      head += "  DIVERGED"
    lines.append(head)
  perturbed = [ch for ch in children if ch["perturb"]["scale"] > 0 and "vs_child0" in ch and not ch["diverged"]]
  if perturbed:
    ch = min(perturbed, key=lambda c: c["perturb"]["scale"])
    b = ch["vs_child0"]["barrier"]["train"]["loss"]
    if b is not None:
      reading = ("different basins" if b >= CONNECTED_BELOW else "still linearly connected")
      lines += ["", f"The smallest perturbation (sigma = {ch['perturb']['scale']:g}) ended {_fmt(ch['vs_child0']['l2'])} "
                    f"from child 0 with a train-loss barrier of {_fmt(b)}: {reading} (barrier "
                    f"{'>=' if b >= CONNECTED_BELOW else '<'} {CONNECTED_BELOW:g})."]
  return "\n".join(lines)


def _config_json(config) -> str:
  """``--print_config``: the checked config as the run's ``config.json`` would hold it."""
  spec_lib.check(config)
  return json.dumps(to_jsonable(config.to_dict()), indent=2, sort_keys=True)


def _plan(config) -> str:
  """``--dry_run``: what the run would do, in steps, members and devices, from the config resolved as a run
  resolves it (:func:`butterfly_jax.run.spec.resolve`: the data read, every check made)."""
  runtime.configure(config.runtime.deterministic)
  spec = spec_lib.resolve(config)
  steps, family = spec.steps, spec.family
  extra = family.end_steps[-1] > family.total
  return "\n".join([
      f"model {config.model.name} on {config.data.name}: {spec.data.num_train} training examples, "
      f"{steps.steps_per_epoch} steps per epoch of {config.train.batch_size}",
      f"T = {steps.total} steps, warm-up {steps.warmup}; t = {steps.t} (the trunk: one network)",
      f"K = {family.k} members: child 0 and sigma = {', '.join(f'{s:g}' for s in family.scales) or 'none'} "
      + ("units in the last place" if config.perturb.kind == "ulp" else f"({config.perturb.kind} direction)")
      + "; " + (f"perturbed children train to t + T = {steps.t + steps.total}" if extra
                else f"every child ends at T = {steps.total}"),
      f"network steps: {steps.t + sum(end - steps.t for end in family.end_steps)}",
      f"devices: {spec.devices} ({jax.default_backend()}), members strategy {spec.strategy}; no cost estimate "
      f"(bench/ and the configs' docstrings measure some)"])


def _fmt(x):
  return "nan" if x is None else f"{x:.4f}"


def _fail(status: int, message: str):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(status)


def _one_line(text: str) -> str:
  """The first line of ``text``, and its last where there are several (a traceback's exception line)."""
  lines = [l.strip() for l in str(text).strip().splitlines() if l.strip()] or [""]
  return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def _last_line(text) -> str:
  lines = [l.strip() for l in str(text).strip().splitlines() if l.strip()]
  return lines[-1] if lines else ""


def _config_argument(argv) -> str:
  return commands.config_argument(argv, DEFAULT_CONFIG)


def _unknown_field(argv) -> str | None:
  return commands.unknown_config_field(FLAGS, argv, DEFAULT_CONFIG)


def _parse_flags(argv):
  """absl's flag parsing, with a bad flag or config override reported as one line ``error: ...`` and exit status 2
  (instead of absl's usage message, or ml_collections' traceback for a field the config does not have)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:  # an unknown flag, a value that does not parse as its field's type
    _fail(2, _one_line(e))
  except (AttributeError, KeyError):  # ml_collections: an override of a field the config does not have
    message = _unknown_field(argv)
    if message is None:
      raise
    _fail(2, message)
  except OSError as e:  # an override of a config file that did not load
    _fail(2, f"--config: cannot load {_config_argument(argv)}: {_last_line(e)}")


def _write_traceback(workdir: str) -> str:
  """The current exception's traceback into the work directory; says where (or prints it to stderr)."""
  text = traceback.format_exc()
  try:
    name = TRACEBACK_FILE if jax.process_count() == 1 else f"error_traceback.{jax.process_index()}.txt"
  except Exception:  # pylint: disable=broad-except  (the failure may be JAX's backend itself)
    name = TRACEBACK_FILE
  path = Path(workdir).expanduser() / name
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
  except OSError:
    print(text, file=sys.stderr)
    return "traceback above"
  return f"a bug, not a bad input: traceback in {path.resolve()}"


def _os_error(e: OSError) -> str:
  where = "" if e.filename is None else f"{e.filename}{'' if e.filename2 is None else f' -> {e.filename2}'}: "
  fix = {errno.ENOSPC: "free space", errno.EDQUOT: "free space (a quota)", errno.EACCES: "fix the permission",
         errno.EPERM: "fix the permission", errno.EROFS: "choose a writable --workdir"}.get(e.errno, "fix the cause")
  return (f"{where}{e.strerror or _one_line(e) or type(e).__name__}; the files written so far are kept: {fix} and run "
          "the same command again to resume from the newest checkpoint")


def main(argv):
  del argv
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and tfds are chatty at INFO
  config = FLAGS.config
  try:
    config.get("seed")  # a config file that did not load raises here (ml_collections defers its error)
  except OSError as e:
    _fail(2, f"--config: cannot load {_config_argument(sys.argv)}: {_last_line(e)}")
  workdir = FLAGS.workdir
  try:
    stop_signals = interrupt.parse(FLAGS.stop_signals)
  except ValueError as e:
    _fail(2, f"--stop_signals: {e}")
  try:
    if FLAGS.print_config or FLAGS.dry_run:
      print(_plan(config) if FLAGS.dry_run else _config_json(config))
      return
    if workdir is None:
      if _config_argument(sys.argv) != DEFAULT_CONFIG:
        _fail(2, "--workdir: where the run writes (created if missing) is required; only the quickstart, run "
                 "without --config, defaults to runs/quickstart")
      workdir = "runs/quickstart"
    if FLAGS.distributed:
      runtime.configure(config.runtime.deterministic)  # XLA flags before the backends start
      jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes (GPU/TPU: unaffected)
      # without the three flags: coordinator, process count and index from the TPU, SLURM or Open MPI environment
      jax.distributed.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
    else:  # several processes would have to agree on the step to stop at: they keep the signals' default actions
      interrupt.install(stop_signals)
    results = run(config, workdir, discard_unfinished=FLAGS.discard_unfinished,
                  allow_code_change=FLAGS.allow_code_change)
  except interrupt.Interrupted as e:
    print(f"interrupted: {e}", file=sys.stderr)
    sys.exit(interrupt.EXIT_STATUS)
  except RunDirBusy as e:
    _fail(3, str(e))
  except BAD_INPUT as e:
    _fail(2, str(e))
  except OSError as e:
    _fail(1, _os_error(e))
  except Exception as e:  # pylint: disable=broad-except
    _fail(1, f"unexpected {type(e).__name__}: {_one_line(e)} ({_write_traceback(workdir)})")
  if jax.process_index() == 0:
    print(summary(results))
    print(f"results: {workdir}/results.json")


def cli(argv=None):
  """Runs :func:`main` on ``argv`` (default ``sys.argv``), with the default config named where none is given and
  ``configs/NAME.py`` found among the shipped configs (:mod:`butterfly_jax.run.config_files`). Installed as
  ``butterfly-run``."""
  argv = commands.absl_argv(list(sys.argv if argv is None else argv))
  if not any(_CONFIG.match(a) for a in argv[1:]):
    argv.insert(1, f"--config={DEFAULT_CONFIG}")
  try:
    argv = argv[:1] + config_files.resolve_argv(argv[1:])
  except ConfigError as e:
    _fail(2, str(e))
  sys.argv = argv  # ml_collections reads the overrides from sys.argv
  help_lists_flags_of(__name__)
  if any(a in ("--help", "-h", "--helpfull", "-?") for a in argv[1:]):
    print(config_lib.fields_text() + "\n")  # then absl's usage and flags
  app.run(main, argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
  cli()
