"""A saved run directory as one object (:func:`load_run`): its config, results, the report's tables, its children's
parameters, its model and its data, each read when first asked for.

    import butterfly_jax as bj
    run = bj.load_run("runs/quickstart")
    run.config.perturb.scales, run.results["children"][1]["vs_child0"]["barrier"]
    run.table                  # the report's pair table of this run: one row per child k >= 1 (pandas)
    run.trajectories           # metrics.jsonl, one row per (logged step, member) (pandas)
    run.curves                 # the α-curves, one row per (child, aligned, split, metric, α) (pandas)
    theta0, theta1 = run.params(0), run.params(1)
    logits, features = run.apply_fn(theta1, run.model_input(run.dataset.test_inputs[:8]))

The module sits with the commands, on top of the package's layers (docs/library.md), because it gathers from all of
them: the run directory's readers (:mod:`butterfly_jax.io.rundir`, :mod:`butterfly_jax.io.results`), the run's
setup (:mod:`butterfly_jax.run.spec`, :mod:`butterfly_jax.run.setup`) and the report's tables
(:mod:`butterfly_jax.report.table`, one of the commands); nothing below it imports it.

What a run that has not finished (no ``results.json``) gives: its config, its trajectories so far, its table (one
status row, as the report shows an unfinished run), its model and data, and the children's parameters once their
checkpoint (``checkpoints/children``, written when training ends, before the evaluation) exists. ``results`` and
``curves`` raise :class:`~butterfly_jax.io.rundir.RunDirError` naming what is missing and how far the run got.
"""

import functools
from pathlib import Path

import jax
import numpy as np

from butterfly_jax.core import evaluate, tree_math
from butterfly_jax.io import results as results_lib
from butterfly_jax.io.rundir import RunDirError, load_children, load_run_config
from butterfly_jax.report.table import load_curves, load_table, load_trajectories, read_metrics
from butterfly_jax.run import spec as spec_lib
from butterfly_jax.run.setup import Setup


class Run:
  """A saved run directory, read lazily: nothing but ``config.json`` is read until an attribute asks for it, and
  each part is read once. Attributes: ``dir`` (the folder, resolved), ``config`` (the run's config, upgraded to
  today's schema), ``finished``, ``num_children``, ``scales`` (σ of each child), and, when first used,
  ``results``, ``table``, ``trajectories``, ``curves`` (pandas: ``pip install 'butterfly_jax[report]'``),
  ``spec``, ``setup``, ``dataset``, ``apply_fn``; methods :meth:`params`, :meth:`interpolate`,
  :meth:`model_input` and :meth:`evaluation_examples`."""

  def __init__(self, run_dir):
    """``run_dir``: a run directory written by ``butterfly_jax.main`` (or :func:`butterfly_jax.run_experiment`);
    RunDirError when it holds no config.json."""
    self.dir = Path(run_dir).expanduser().resolve()
    self.config = load_run_config(self.dir)  # fields added since the run was written hold the values it used

  def __repr__(self) -> str:
    state = "finished" if self.finished else "unfinished"
    return f"Run({str(self.dir)!r}: {state}, {self.num_children} children, σ {', '.join(map(str, self.scales))})"

  @property
  def finished(self) -> bool:
    """Whether the run wrote its results (``results.json``): the last thing a run does."""
    return (self.dir / "results.json").is_file()

  @property
  def scales(self) -> tuple:
    """σ of each child, child 0 (unperturbed) first as 0.0: ``(0.0, *perturb.scales)``."""
    return (0.0, *(float(s) for s in self.config.perturb.scales))

  @property
  def num_children(self) -> int:
    """Child 0 and one child per ``perturb.scales``."""
    return len(self.scales)

  def _not_finished(self, what: str) -> str:
    """Why ``what`` cannot be read from this unfinished run: the missing results.json, how far its metrics.jsonl
    got, and what can be read instead."""
    records = read_metrics(self.dir / "metrics.jsonl")
    got = (f"its metrics.jsonl ends at step {records[-1].get('step')} of the {records[-1].get('phase')} phase"
           if records else "it has logged nothing")
    return (f"{what}: {self.dir / 'results.json'} does not exist, the run has not finished ({got}). An unfinished "
            f"run gives its config, trajectories, table (one status row), dataset and model, and its children's "
            f"parameters once {self.dir / 'checkpoints' / 'children'} exists")

  @functools.cached_property
  def results(self) -> results_lib.Results:
    """results.json (:func:`butterfly_jax.io.results.load`: checked leniently, a ResultsError naming a misshapen
    key); RunDirError for a run that has not finished."""
    if not self.finished:
      raise RunDirError(self._not_finished("results"))
    return results_lib.load(self.dir / "results.json")

  @functools.cached_property
  def table(self):
    """The report's pair table of this run (:func:`butterfly_jax.report.load_table`; columns: docs/reports.md):
    one row per pair (child 0, child k >= 1), its ``run`` column ``"."``; one status row for an unfinished run."""
    return _pandas(load_table, self.dir, "table")

  @functools.cached_property
  def trajectories(self):
    """metrics.jsonl as the report reads it (:func:`butterfly_jax.report.load_trajectories`): one row per (logged
    step, member), the trunk's and the children's phases; what is logged so far for an unfinished run."""
    return _pandas(load_trajectories, self.dir, "trajectories")

  @functools.cached_property
  def curves(self):
    """The α-curves of results.json as a long table (:func:`butterfly_jax.report.load_curves`): one row per (child
    k >= 1, aligned, split, metric, α), α = 0 at child 0 and 1 at child k. RunDirError for an unfinished run."""
    if not self.finished:
      raise RunDirError(self._not_finished("curves"))
    return _pandas(load_curves, self.dir, "curves")

  @functools.cached_property
  def _children(self):
    """Every child's parameters, stacked (:func:`butterfly_jax.io.rundir.load_children`), read once."""
    try:
      return load_children(self.dir)
    except RunDirError as e:
      raise RunDirError(f"the run has children 0..{self.num_children - 1}, but their parameters cannot be read: "
                        f"{e}") from None

  def params(self, k: int):
    """Child ``k``'s parameters as the run saved them at the end of training (numpy arrays, in its
    ``train.param_dtype``): from ``checkpoints/children``, or from the finished run's last training state
    (:func:`butterfly_jax.io.rundir.load_children`). The children's checkpoint is read on the first call and held.
    RunDirError naming the run's children when there is no child ``k``, or naming what is missing when the run
    kept neither checkpoint."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 0 <= k < self.num_children:
      raise RunDirError(f"params({k!r}): the run has children 0..{self.num_children - 1} (σ "
                        f"{', '.join(map(str, self.scales))})")
    return jax.tree_util.tree_map(np.asarray, tree_math.unstack(self._children, int(k)))

  def interpolate(self, k: int, alpha: float):
    """The network at ``alpha`` on the straight path from child 0 (``alpha`` = 0) to child ``k`` (1), between the
    children's float32 upcasts as the run's evaluation interpolates them: the networks its α-curves evaluated
    (:func:`butterfly_jax.interpolate`)."""
    return tree_math.interpolate(Setup.float32(self.params(0)), Setup.float32(self.params(k)), alpha)

  @functools.cached_property
  def spec(self) -> spec_lib.RunSpec:
    """The run's spec (:func:`butterfly_jax.run.spec.resolve` of the config, as for reading a finished run: its
    data loaded, what ``init.checkpoint`` names need not exist any more), resolved for this machine: with no data
    axis (``members.data_devices`` = 1), so that a run trained over several devices is read on one. The devices'
    layout is how a run trained, not which networks it trained."""
    c = self.config.copy_and_resolve_references()
    c.members.data_devices = 1
    return spec_lib.resolve(c, training=False)

  @functools.cached_property
  def setup(self) -> Setup:
    """What the run derived from its spec (:class:`butterfly_jax.run.setup.Setup`): the data on device, the model,
    the evaluation of a family as the run evaluated its children (:meth:`Setup.evaluate_family`)."""
    return Setup(self.spec)

  @property
  def dataset(self):
    """The run's data, loaded on first use (it may take a while): images (:class:`butterfly_jax.io.data.Dataset`:
    ``train_images``, ``test_labels``, ...) or a tokenized text task; ``train_inputs`` / ``test_inputs`` are what
    the model reads once :meth:`model_input` has normalised them."""
    return self.spec.data

  @property
  def apply_fn(self):
    """The run's model: ``apply_fn(params, x, stats=None) -> (logits, features)`` on inputs ``x`` as the model reads
    them (:meth:`model_input`). A BatchNorm model without ``stats`` normalises with the batch's own moments;
    the run re-estimated each network's statistics (``run.setup.evaluate_family`` does as it did)."""
    return self.setup.apply_fn

  def model_input(self, inputs):
    """``inputs`` (a batch of the dataset's ``train_inputs`` or ``test_inputs``) as the model reads them: images
    normalised with the training set's channel statistics, token ids as they are."""
    return evaluate.model_input(inputs, self.setup.mean, self.setup.std)

  def evaluation_examples(self, during: bool = False) -> dict:
    """``{"train": indices, "test": indices}``: the examples the run's final evaluation used (``eval.num_examples``
    of each split, drawn with the run's evaluation key; all of them when 0), or (``during``) those of the
    barriers during training (``eval.during_num_examples``)."""
    c = self.config.eval
    return self.setup.evaluation_examples(c.during_num_examples if during else c.num_examples, during)


def load_run(run_dir) -> Run:
  """The saved run in ``run_dir`` (:class:`Run`): its config read now, everything else when first asked for.
  RunDirError when ``run_dir`` holds no config.json; a run that has not finished loads, and says what it lacks
  when asked for its results or curves."""
  return Run(run_dir)


def _pandas(load, run_dir: Path, what: str):
  """``load(run_dir)``, a report table; without pandas, an ImportError that says how to install it."""
  try:
    return load(run_dir)
  except ModuleNotFoundError as e:
    if e.name != "pandas":
      raise
    raise ModuleNotFoundError(f"Run.{what} is a pandas table: pip install 'butterfly_jax[report]' (or pandas)",
                              name="pandas") from e
