"""What results.json holds, defined once: typed dicts for every part, :func:`check` that a results dict has the
shape they describe, and :func:`load`, the reader every other module uses.

The run (:mod:`butterfly_jax.run.experiment`) builds a :class:`Results`; the run directory's writer
(:meth:`butterfly_jax.io.rundir.RunDir.finish`) checks it strictly (every required key present, no key the types
do not name, each value of its type) before writing it atomically. Readers
(the command line's summary, the report, the threshold search, a finished run found again) call :func:`load`,
which checks what is there leniently: a run written by an older version (or a reader's own summary) may lack
keys, never hold a value of another type. A diverged child's numbers and flags are null (None), so
every scalar may be None.
"""

import json
import types
import typing
from pathlib import Path
from typing import Any, NotRequired, TypedDict


class ResultsError(ValueError):
  """A results.json that does not hold what :class:`Results` describes; the message names the key."""


Number = float | int | None     # None: a diverged child's (or pair's) number


class Definitions(TypedDict):
  """What σ, the batch direction and CKA mean in the run (:func:`butterfly_jax.config.definitions`)."""
  version: int
  e_init: str
  constant_params: bool
  init_std: float
  normalize: bool
  batch_sign: int
  extra_lr: str
  cka_estimator: str
  finetune_head: str
  translate_fill: NotRequired[str]
  resnet_padding: NotRequired[str]
  align_bias: NotRequired[bool]
  batch_source: NotRequired[str]
  batch_dropout: NotRequired[str]
  eval_dtype: NotRequired[str]


class Mask(TypedDict, total=False):
  """``perturb.mask`` as the run applied it (``applied_exclude``: with the fine-tuning exclusion added)."""
  include: str
  exclude: str
  exclude_finetune: str
  fraction: float
  single: str
  applied_exclude: str


class Perturbation(TypedDict, total=False):
  """How the child was perturbed once at step t: σ (``scale``), the direction and its norms."""
  kind: str
  scale: float
  noise_l2: Number               # ||θ' − θ||, 0 for child 0 and the σ = 0 twin
  expected_init_l2: Number       # E_init
  direction_l2: Number
  dropout_in_gradient: bool
  num_perturbed: int
  num_changed: int               # weights whose value differs from child 0's right after the perturbation
  mask: Mask
  weight: str                    # perturb.mask.single's weight, drawn or named: "path[i,j,...]"


class Metric(TypedDict):
  """A text task's metric (accuracy, F1, Matthews correlation) of one network on one split."""
  name: str
  value: Number


class SplitResult(TypedDict):
  """A child's final loss and accuracy on one split."""
  loss: Number
  accuracy: Number
  metric: NotRequired[Metric]


class Barrier(TypedDict):
  """Eq. 1 on one split: loss, error and (text tasks) the metric's barrier."""
  loss: Number
  error: Number
  metric: NotRequired[Number]


class BarrierSplits(TypedDict):
  train: Barrier
  test: Barrier


class FiniteSplits(TypedDict):
  """Whether each split's α-path stayed finite (a barrier of a path that did not is null)."""
  train: bool
  test: bool


class CurveSplits(TypedDict):
  """Per split, the α-curves: ``{"loss": [...], "error": [...]}`` (and ``"metric"`` for a text task)."""
  train: dict
  test: dict


class Ensemble(TypedDict, total=False):
  accuracy: Number
  loss: Number


class Comparison(TypedDict):
  """A child against child 0: the L2 distance, the barriers and the α-curves they come from."""
  l2: Number
  barrier: BarrierSplits
  barrier_path_finite: NotRequired[FiniteSplits]
  curves: CurveSplits


class UnitCorrelation(TypedDict):
  """Activation matching's evidence: the mean correlation of child 0's units with child k's, unit i with unit i
  (``identity``) and with the unit the matching chose (``matched``); a unit constant on the examples counts 0."""
  identity: Number
  matched: Number


class Aligned(Comparison):
  """The comparison after alignment, with the permutation's fixed points; ``method`` ``"activations"``, its
  ``examples`` and the pair's ``unit_correlation`` for activation matching (``eval.align_method``), absent for
  weight matching (every run before the choice existed, and every run that keeps the default)."""
  fixed_point_fraction: Number
  fixed_point_fractions: NotRequired[dict]
  method: NotRequired[str]
  examples: NotRequired[int]
  unit_correlation: NotRequired[UnitCorrelation]


class VsChild0(Comparison, total=False):
  """Child k >= 1 against child 0: the comparison, ensemble, disagreement and CKA; ``aligned`` after aligning its
  units to child 0's (``eval.align``)."""
  ensemble: Ensemble
  disagreement: Number
  cka: Number
  aligned: Aligned


class Child(TypedDict):
  """One child of the family: child 0 is the unperturbed reference."""
  index: int
  perturb: Perturbation
  train: SplitResult
  test: SplitResult
  diverged: bool
  end_step: NotRequired[int]
  l2_from_init: NotRequired[Number]
  vs_child0: NotRequired[VsChild0]


class StepCounts(TypedDict):
  t: int
  T: int
  steps_per_epoch: int
  warmup: NotRequired[int]


class DataInfo(TypedDict):
  name: str
  source: NotRequired[str]
  num_train: int
  num_test: int
  input_shape: list
  num_classes: int
  metric: NotRequired[str]


class ModelInfo(TypedDict):
  name: str
  num_params: int
  dropout_in_training: NotRequired[bool]
  param_dtype: NotRequired[str]


class Results(TypedDict):
  """results.json."""
  definitions: NotRequired[Definitions]
  children: list                 # [Child, ...], child 0 first
  steps: StepCounts
  alphas: list
  eval: NotRequired[dict]
  data: DataInfo
  model: ModelInfo
  init: NotRequired[dict | None]
  norm_statistics: NotRequired[dict | None]
  kept_steps: NotRequired[list]
  members_strategy: NotRequired[str]
  members_devices: NotRequired[int]
  data_devices: NotRequired[int]
  timing: dict
  provenance: dict


# the item type of the lists that hold typed dicts
_ITEMS = {("Results", "children"): Child}


def _matches(value, hint) -> bool:
  """Whether ``value`` (from JSON) has type ``hint`` (a class, a union, ``Any`` or a typed dict)."""
  if hint is Any or (value is None and hint in (bool, int, float, str)):  # a nulled (diverged) child's values
    return True
  if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
    return any(_matches(value, h) for h in typing.get_args(hint))
  if hint is type(None):
    return value is None
  if typing.is_typeddict(hint):
    return isinstance(value, dict)
  if hint is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  origin = typing.get_origin(hint) or hint
  return isinstance(value, origin)


def check(obj: dict, strict: bool = True, kind: type = Results, where: str = "results") -> None:
  """``obj`` against the typed dict ``kind``: values of their types, nested typed dicts checked in turn; with
  ``strict`` (writing) every required key present and no key outside the type. ResultsError naming the key."""
  if not isinstance(obj, dict):
    raise ResultsError(f"{where}: expected an object, got {type(obj).__name__}")
  hints = typing.get_type_hints(kind)
  if strict:
    missing = sorted(k for k in kind.__required_keys__ if k not in obj)
    if missing:
      raise ResultsError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(k for k in obj if k not in hints)
    if unknown:
      raise ResultsError(f"{where}: {', '.join(unknown)} not in {kind.__name__} (butterfly_jax/io/results.py)")
  for key, value in obj.items():
    if key not in hints:
      continue
    hint = hints[key]
    if not _matches(value, hint):
      raise ResultsError(f"{where}.{key}: expected {getattr(hint, '__name__', hint)}, got {value!r:.80}")
    if typing.is_typeddict(hint):
      check(value, strict, hint, f"{where}.{key}")
    item = _ITEMS.get((kind.__name__, key))
    if item is not None:
      for i, entry in enumerate(value):
        check(entry, strict, item, f"{where}.{key}[{i}]")


def load(path) -> Results:
  """results.json at ``path`` (a file, or a run directory holding one), checked leniently."""
  path = Path(path)
  if path.is_dir():
    path = path / "results.json"
  obj = json.loads(path.read_text())
  check(obj, strict=False, where=str(path))
  return obj
