"""Live tracking besides metrics.jsonl (``log.writers``): TensorBoard event files and a W&B run, fed the same values.

What they show, under which names, and what a resumed run shows: docs/run-directory.md, "Live tracking".

metrics.jsonl stays the record. The writers are given each log line as the run directory wrote it
(:attr:`butterfly_jax.io.rundir.RunDir.listeners`) and results.json once written, and nothing else: they cannot
change a run's numbers, and ``log.writers`` is outside the run's identity
(:data:`butterfly_jax.io.rundir.NON_RESULT_FIELDS`). Only the primary process writes. The values both writers show
are computed here once (:func:`record_scalars`, :func:`final_scalars`, :func:`alpha_curves`); each backend
(:class:`TensorBoard`, :class:`WandB`) only writes them.

A writer whose package is missing is a ConfigError while the run is resolved (:func:`check`); one that cannot start
(W&B online without a login or a network) a :class:`WriterError` before anything trains (:func:`opened`); one that
fails later is logged and switched off, and the run goes on.
"""

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re

from butterfly_jax import config as config_lib
from butterfly_jax.config import ConfigError
from butterfly_jax.core import hosts
from butterfly_jax.io import rundir as rundir_lib

EXTRA = "track"  # pyproject.toml's extra that installs every writer's package
PACKAGES = {"tensorboard": "tensorboardX", "wandb": "wandb"}  # each writer's package (imported as named)
TENSORBOARD_DIR = "tensorboard"  # in the run directory
WANDB_DIR = "wandb"  # in the run directory (W&B's own name for it)
DEFAULT_WANDB_PROJECT = "butterfly_jax"
# What to do when a writer cannot start.
_HINTS = {
    "tensorboard": "check that the run directory can be written, or drop 'tensorboard' from log.writers",
    "wandb": ("log in (wandb login, or WANDB_API_KEY), or track without the network (WANDB_MODE=offline; later "
              "wandb sync WORKDIR/wandb/offline-run-*), or drop 'wandb' from log.writers"),
}
# Per-member keys of a log line shown as scalars; the first two only while the member trains.
_MEMBER_KEYS = ("train_loss", "lr", "l2_from_init", "l2_to_child0", "eval_train_loss", "eval_test_error")
_WHILE_TRAINING = ("train_loss", "lr")
# Keys of a child in results.json that are no final scalar: its description, flags and curves.
_NOT_FINAL = ("index", "perturb", "end_step", "diverged", "curves", "barrier_path_finite")
TABLE_COLUMNS = ("child", "sigma", "aligned", "split", "quantity", "index", "alpha", "value")


class WriterError(ConfigError):
  """A writer of ``log.writers`` cannot start; the message names it and what to do. Raised before training."""


def check(c) -> None:
  """Each writer of ``log.writers`` has its package installed (found, not imported: no files, no network); else a
  ConfigError naming the field, the writer and what to install. The names themselves are checked with the other
  fields (:func:`butterfly_jax.config.check_writers`)."""
  for name in c.log.writers:
    if importlib.util.find_spec(PACKAGES[name]) is None:
      raise ConfigError(_missing(name))


def _missing(name: str) -> str:
  return (f"log.writers: {name!r} needs the {PACKAGES[name]} package, which is not installed: pip install "
          f"'butterfly_jax[{EXTRA}]' (or pip install {PACKAGES[name]}), or drop {name!r} from log.writers")


def _number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flat(tree: dict, prefix: str = "", suffix: str = "", skip=()) -> dict:
  """``{prefix + "a/b" + suffix: number}`` for every number in the nested dict ``tree`` (bools, text, nulls and
  lists left out; keys in ``skip`` left out at any depth)."""
  out = {}
  for key, value in tree.items():
    if key in skip:
      continue
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}/", suffix, skip))
    elif _number(value):
      out[f"{prefix}{key}{suffix}"] = value
  return out


def record_scalars(line: dict) -> dict:
  """``{tag: value}`` of one metrics.jsonl line as written (nulls, a diverged member's numbers, left out): each
  member's loss, learning rate and distances, the children's evaluations and the pairs' barriers during training.
  Names: docs/run-directory.md, "Live tracking"."""
  names = ["trunk"] if line["phase"] == "trunk" else [f"child{j}" for j in range(len(line["train_loss"]))]
  active = line.get("active") or [True] * len(names)
  out = {}
  for key in _MEMBER_KEYS:
    for j, value in enumerate(line.get(key) or ()):
      if (key in _WHILE_TRAINING and not active[j]) or (key == "l2_to_child0" and j == 0):
        continue  # a stopped member's loss is no loss; child 0 (or the trunk) is at 0 from itself
      if _number(value):
        out[f"{key}/{names[j]}"] = value
  for j, pair in enumerate(line.get("barrier") or (), start=1):
    out.update(_flat(pair, "barrier/", f"/child{j}"))
  return out


def final_scalars(results: dict) -> dict:
  """``{tag: value}`` of results.json's children: each child's losses, accuracies, distances and, for j >= 1, its
  comparison with child 0 (barriers, CKA, ensemble; aligned too), as ``final/<key path>/child<j>``."""
  out = {}
  for child in results["children"]:
    out.update(_flat(child, "final/", f"/child{child['index']}", skip=_NOT_FINAL))
  return out


def final_step(results: dict) -> int:
  """The step the final values are shown at: the last training step (a child with extra steps ends after T)."""
  ends = [child["end_step"] for child in results["children"] if _number(child.get("end_step"))]
  return max(ends) if ends else results["steps"]["T"]


def alpha_curves(results: dict) -> list[dict]:
  """The α-curves of every pair (child 0, child j) in results.json as rows of :data:`TABLE_COLUMNS` (``index``:
  the position on the ``alphas`` grid); a diverged pair's nulls left out."""
  rows = []
  alphas = results["alphas"]
  for child in results["children"][1:]:
    vs = child.get("vs_child0") or {}
    for aligned, comparison in ((False, vs), (True, vs.get("aligned") or {})):
      for split, quantities in (comparison.get("curves") or {}).items():
        for quantity, values in quantities.items():
          rows += [{"child": child["index"], "sigma": child["perturb"]["scale"], "aligned": aligned, "split": split,
                    "quantity": quantity, "index": i, "alpha": alpha, "value": value}
                   for i, (alpha, value) in enumerate(zip(alphas, values)) if _number(value)]
  return rows


def curve_tag(row: dict) -> str:
  """A curve's name: ``alpha_curve/<split>/<quantity>/child<j>`` (``alpha_curve_aligned/...`` after matching)."""
  return f"alpha_curve{'_aligned' if row['aligned'] else ''}/{row['split']}/{row['quantity']}/child{row['child']}"


def hyperparameters(c) -> dict:
  """The config as ``{dotted field: value}``, numbers, bools and text as they are and anything else (tuples,
  ``model.kwargs``) as its JSON: what TensorBoard's HParams dashboard takes."""
  flat = config_lib.fields(rundir_lib.to_jsonable(c.to_dict()))
  return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in flat.items()}


def wandb_id(rundir, c) -> str:
  """The W&B run id of the run of config ``c`` in ``rundir``: the directory's name and a hash of its path, of the
  config's fields that identify the run (:func:`butterfly_jax.io.rundir.comparable`) and of the package source
  (:func:`butterfly_jax.io.rundir.source_hash`). Every attempt of the run by the same program (a resume, or a
  restart from step 0, which repeats its numbers) continues the same W&B run, whose repeated steps W&B drops; another
  config in the directory (``--discard_unfinished``), or another program (whose numbers may differ), is another."""
  key = json.dumps([str(rundir.root), rundir_lib.comparable(c.to_dict()), rundir_lib.source_hash()], sort_keys=True)
  name = re.sub(r"[^A-Za-z0-9_-]", "_", rundir.root.name)[:40]
  return f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


class TensorBoard:
  """Event files in ``WORKDIR/tensorboard``, one per attempt of the run: a resume adds one, named to sort after the
  earlier ones; a run that starts from step 0 deletes the earlier ones first, as the run directory deletes their
  metrics.jsonl. TensorBoard reads a run's files in name order, and where a series' step goes back (a resumed attempt
  repeats the steps after its checkpoint) it drops the earlier points from that step on: each series then shows
  every step once, as metrics.jsonl does. ``log``, ``finish`` and ``close`` as :class:`Writers` calls them."""

  name = "tensorboard"

  def __init__(self, c, rundir, fresh: bool):
    import tensorboardX  # an optional dependency (the track extra), imported when asked for
    from tensorboardX import summary
    folder = rundir.root / TENSORBOARD_DIR
    earlier = sorted(folder.glob("events.out.tfevents.*")) if folder.is_dir() else []
    if fresh:
      for path in earlier:
        path.unlink()
      earlier = []
    attempt = len(earlier)
    self._writer = tensorboardX.SummaryWriter(logdir=str(folder), filename_suffix=f".{attempt:04d}")
    k = len(c.perturb.scales) + 1
    metrics = ["final/test/accuracy/child0"] + [f"final/vs_child0/barrier/test/{q}/child{j}"
                                                for j in range(1, k) for q in ("loss", "error")]
    experiment, start, self._end = summary.hparams(hyperparameters(c), {tag: 0.0 for tag in metrics})
    self._writer.file_writer.add_summary(experiment)
    self._writer.file_writer.add_summary(start)
    config_json = json.dumps(rundir_lib.to_jsonable(c.to_dict()), indent=1)
    self._writer.add_text("config", "\n".join("    " + line for line in config_json.splitlines()), global_step=0)
    self._writer.flush()

  def log(self, step: int, scalars: dict) -> None:
    for tag, value in scalars.items():
      self._writer.add_scalar(tag, value, global_step=step)
    self._writer.flush()

  def finish(self, step: int, scalars: dict, rows: list, alphas: list) -> None:
    for tag, value in scalars.items():
      self._writer.add_scalar(tag, value, global_step=step)
    for row in rows:
      self._writer.add_scalar(curve_tag(row), row["value"], global_step=row["index"])
    grid = "\n".join(f"| {i} | {alpha!r} |" for i, alpha in enumerate(alphas))
    self._writer.add_text("alphas", "the step of every `alpha_curve` tag is the position on this α grid:\n\n"
                                    f"| step | α |\n| --- | --- |\n{grid}", global_step=step)
    self._writer.file_writer.add_summary(self._end)
    self._writer.flush()

  def close(self, ok: bool) -> None:
    del ok  # a failed attempt's events stay: the next attempt's replace them from its checkpoint on
    self._writer.close()


class WandB:
  """A W&B run under ``WORKDIR/wandb`` (``log.wandb_project``; mode, entity and login from W&B's environment),
  with the id :func:`wandb_id`: a resumed attempt continues the same run (``resume="allow"``). W&B keeps a run's
  steps increasing and drops the points a resumed attempt repeats (those after its checkpoint), which equal the
  ones it has, a resume being exact. Offline, each attempt is a folder ``WORKDIR/wandb/offline-run-*`` of that id,
  which ``wandb sync`` uploads. ``log``, ``finish`` and ``close`` as :class:`Writers` calls them."""

  name = "wandb"

  def __init__(self, c, rundir, fresh: bool):
    del fresh  # the W&B run's id says which attempts are one run (wandb_id)
    import wandb  # an optional dependency (the track extra), imported when asked for
    self._wandb = wandb
    project = c.log.wandb_project or os.environ.get("WANDB_PROJECT") or DEFAULT_WANDB_PROJECT
    self._run = wandb.init(project=project, dir=str(rundir.root), id=wandb_id(rundir, c), name=rundir.root.name,
                           resume="allow", config=rundir_lib.to_jsonable(c.to_dict()))

  def log(self, step: int, scalars: dict) -> None:
    self._run.log(scalars, step=step)

  def finish(self, step: int, scalars: dict, rows: list, alphas: list) -> None:
    wandb = self._wandb
    table = wandb.Table(columns=list(TABLE_COLUMNS), data=[[row[k] for k in TABLE_COLUMNS] for row in rows])
    curves = {}
    for row in rows:
      curves.setdefault(curve_tag(row).rpartition("/")[0], {}).setdefault(row["child"], {})[row["index"]] = row
    plots = {}
    for name, children in curves.items():
      full = {j: [points[i]["value"] for i in range(len(alphas))] for j, points in children.items()
              if len(points) == len(alphas)}
      if full:
        plots[name] = wandb.plot.line_series(xs=list(alphas), ys=list(full.values()),
                                             keys=[f"child{j} (σ={children[j][0]['sigma']:g})" for j in full],
                                             title=f"{name}: child 0 to child j", xname="alpha")
    self._run.log({**scalars, "alpha_curves": table, **plots}, step=step)

  def close(self, ok: bool) -> None:
    self._run.finish(exit_code=0 if ok else 1)


BACKENDS = {"tensorboard": TensorBoard, "wandb": WandB}


class Writers:
  """The open writers of one attempt of a run (the primary process's; none elsewhere). Called with each log line as
  written (a :attr:`RunDir.listeners` entry); :meth:`finish` with the results once written. A writer that fails is
  logged and switched off: the run, metrics.jsonl and results.json never depend on one."""

  def __init__(self, backends=()):
    self.backends = list(backends)

  def __call__(self, line: dict) -> None:
    self._each("log", lambda: (line["step"], record_scalars(line)))

  def finish(self, results: dict) -> None:
    """Shows the run's final numbers and α-curves (``results``: results.json as read)."""
    self._each("finish", lambda: (final_step(results), final_scalars(results), alpha_curves(results),
                                  results["alphas"]))

  def close(self, ok: bool) -> None:
    """Flushes and closes every writer; ``ok`` False: the attempt failed (W&B marks its run so)."""
    for backend in self.backends:
      try:
        backend.close(ok)
      except Exception as e:  # pylint: disable=broad-except  (closing a tracker must not hide the run's outcome)
        logging.warning("log.writers: %s failed to close (%s: %s)", backend.name, type(e).__name__, e)
    self.backends = []

  def _each(self, method: str, arguments) -> None:
    """``backend.method(*arguments())`` for every writer still on; a writer that raises is switched off."""
    if not self.backends:
      return
    try:
      args = arguments()
    except Exception as e:  # pylint: disable=broad-except
      for backend in list(self.backends):
        self._switch_off(backend, e)
      return
    for backend in list(self.backends):
      try:
        getattr(backend, method)(*args)
      except Exception as e:  # pylint: disable=broad-except  (a tracker must not cost the run)
        self._switch_off(backend, e)

  def _switch_off(self, backend, error) -> None:
    logging.warning("log.writers: %s failed (%s: %s) and is off for the rest of this attempt; metrics.jsonl and "
                    "results.json are written as ever", backend.name, type(error).__name__, error)
    self.backends.remove(backend)
    with contextlib.suppress(Exception):
      backend.close(False)


def open_writers(c, rundir, fresh: bool) -> Writers:
  """The writers of ``log.writers`` started for the run in ``rundir`` (by this process; the primary alone should),
  ``fresh`` when the run starts from step 0 rather than resumes; :class:`WriterError` naming the writer and what to
  do if one cannot start, the others closed again."""
  opened = Writers()
  for name in c.log.writers:
    try:
      opened.backends.append(BACKENDS[name](c, rundir, fresh))
    except ImportError as e:
      opened.close(False)
      raise WriterError(f"{_missing(name)} ({type(e).__name__}: {e})") from e
    except Exception as e:  # pylint: disable=broad-except  (W&B raises several kinds when it cannot start)
      opened.close(False)
      raise WriterError(f"log.writers: {name!r} could not start ({type(e).__name__}: {_one_line(e)}); nothing "
                        f"has trained in this attempt. {_HINTS[name][0].upper()}{_HINTS[name][1:]}") from e
  return opened


def _one_line(error) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[0] if lines else ""


@contextlib.contextmanager
def opened(c, rundir, fresh: bool):
  """The run's writers (:func:`open_writers`, on the primary process; every process learns whether they started)
  given every log line of ``rundir`` while the block runs, then closed (failed if the block raised). Yields the
  :class:`Writers`, to be told the results (:meth:`Writers.finish`)."""
  writers, error = Writers(), None
  if c.log.writers:
    if hosts.is_primary():
      try:
        writers = open_writers(c, rundir, fresh)
      except WriterError as e:
        error = e
    if not hosts.agree(error is None):
      raise error or WriterError("log.writers: the primary process could not start its writers (its log says why)")
  rundir.listeners.append(writers)
  ok = False
  try:
    yield writers
    ok = True
  finally:
    rundir.listeners.remove(writers)
    writers.close(ok)
