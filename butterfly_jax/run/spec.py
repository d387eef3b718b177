"""A config resolved once into a run's frozen spec (:func:`resolve`), before any run directory is created or
locked: every check that needs no training is made here, and the phases read the spec.

:func:`check` is what a config needs beyond its own fields' values (:func:`butterfly_jax.config.validate`) without
reading data: the model and its arguments, the dataset's name and paths, the text task's settings.
:func:`resolve` adds what the data decide: steps as numbers (:class:`Steps`), the family's plan
(:class:`FamilyPlan`), ``init.checkpoint`` parsed once (:class:`InitSource`), the devices' layout, and the checks
that need only the model's shapes (the perturbation mask, the CKA feature). Errors are
:class:`~butterfly_jax.config.ConfigError` (or the data's :class:`~butterfly_jax.io.data.DataError` and the
weights' :class:`~butterfly_jax.io.pretrained.PretrainedError`), each naming its field.
"""

import dataclasses
import logging
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from butterfly_jax import config as config_lib
from butterfly_jax.config import ConfigError, choice, finite_in, int_at_least, ints_at_least_one, is_int
from butterfly_jax.core import members, perturb, placement, rng
from butterfly_jax.core.similarity import CKA_ESTIMATORS
from butterfly_jax.io import pretrained, text
from butterfly_jax.io.data import DATASETS, FILELESS, DataError, load_dataset, select_classes
from butterfly_jax.io.rundir import RunDir
from butterfly_jax.models import ACTIVATION_MODELS, input_dtype, make_model
from butterfly_jax.models.conv import CONV_IMPLS, RESNET_PADDINGS
from butterfly_jax.models.layers import NORMS, POOLS
from butterfly_jax.models.registry import MODEL_KWARGS, MODELS, TEXT_MODELS, build_module
from butterfly_jax.models.text import ACTIVATIONS, check_token_ids
from butterfly_jax.run import writers


@dataclasses.dataclass(frozen=True)
class Steps:
  """The run's step counts, resolved against the data (:func:`butterfly_jax.config.resolve_steps`)."""
  steps_per_epoch: int
  total: int            # T
  t: int                # the perturbation's step
  warmup: int
  perturb_batch: int    # examples in a batch perturbation's batch
  checkpoint_every: int
  keep: tuple           # steps whose child 0 is kept (checkpoint.keep, checkpoint.keep_log)


@dataclasses.dataclass(frozen=True)
class FamilyPlan:
  """The family: ``k`` members (child 0 and one child per perturbation scale), perturbed at step ``t`` of ``total``,
  each with its end step and learning-rate offset."""
  scales: tuple
  k: int
  t: int
  total: int
  end_steps: tuple
  lr_offsets: tuple


@dataclasses.dataclass(frozen=True)
class InitSource:
  """``init.checkpoint`` read once: ``kind`` "fresh" (the model's own init), "weights" (a weights file or a
  checkpoint folder from outside, at ``path``) or "run" (child 0 of a saved run ``run_dir`` at its kept step
  ``step``, whose checkpoint folder is ``path``)."""
  given: str
  kind: str
  path: Path | None = None
  run_dir: str | None = None
  step: int | None = None


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """What a run is, resolved from its config before anything trains or is written."""
  config: ml_collections.ConfigDict
  data: Any                  # images (butterfly_jax.io.data.Dataset) or a text task (butterfly_jax.io.text.TextDataset)
  steps: Steps
  family: FamilyPlan
  init: InitSource
  model_kwargs: dict         # model.kwargs and, for a ResNet, its padding (butterfly_jax.config.model_kwargs)
  strategy: str              # members.strategy resolved (member_strategy)
  devices: int               # the devices this process sees

  @property
  def c(self) -> ml_collections.ConfigDict:
    return self.config


def check_model_kwargs(name: str, kwargs: dict) -> None:
  """``model.kwargs`` of model ``name``: only the arguments it takes (:data:`MODEL_KWARGS`), each of the right
  type and range, together a network that has every layer (a width that rounds to no channels is an error).
  The module is built (a dataclass, no compute) to read the defaults of the arguments not given."""
  allowed = MODEL_KWARGS[name]
  unknown = sorted(set(kwargs) - set(allowed))
  if unknown:
    raise ConfigError(f"model.kwargs: model {name} takes no {', '.join(unknown)}; it takes {', '.join(allowed)}")
  m = build_module(name, 1, **kwargs)
  for key in kwargs:
    field, value = f"model.kwargs.{key}", kwargs[key]
    if key == "norm":
      choice(value, NORMS, field)
    elif key == "conv":
      choice(value, CONV_IMPLS, field)
    elif key == "pool":
      choice(value, POOLS, field)
    elif key == "hidden" and name == "mlp":
      ints_at_least_one(field, value, "hidden-layer widths")
    elif key == "channels":
      ints_at_least_one(field, value, "convolution channels")
    elif key == "stages":
      ints_at_least_one(field, value, "blocks per stage")
    elif key == "image_size":
      int_at_least(field, value, 0, " (0 = no resizing)")
    elif key == "hidden_act":
      choice(value, tuple(ACTIVATIONS), field)
    elif key in ("layer_norm_eps", "rope_theta"):
      finite_in(field, value, 0.0, lo_open=True)
    elif key in ("dropout", "attention_dropout"):
      finite_in(field, value, 0.0, 1.0, hi_open=True)
    elif key == "clip_qkv":
      finite_in(field, value, 0.0)
    elif key == "width" and name.startswith("resnet"):
      finite_in(field, value, 0.0, lo_open=True)
    elif key == "depth" and name == "resnet":
      if not is_int(value) or value < 8 or (value - 2) % 6:
        raise ConfigError(f"{field}: a CIFAR ResNet has depth 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, ...), "
                          f"got {value!r}")
    else:  # dense, base, patch, heads, mlp_dim; width and depth of the ViT; the text models' sizes
      int_at_least(field, value, 1)
  if name.startswith("resnet"):
    base = 64 if name == "resnet50" else m.base
    if int(round(base * m.width)) < 1:
      raise ConfigError(f"model.kwargs.width: {m.width!r} leaves no channels ({base} x width rounds to 0)")
    if name == "resnet" and "depth" in kwargs and m.stages:
      raise ConfigError("model.kwargs.depth: not used when model.kwargs.stages is set (the stages give the depth); "
                        "set one of them")
  if name.startswith("vit") and m.width % m.heads:
    raise ConfigError(f"model.kwargs.width: {m.width} is not divisible by model.kwargs.heads = {m.heads}")
  if name in TEXT_MODELS and m.hidden % m.heads:
    raise ConfigError(f"model.kwargs.hidden: {m.hidden} is not divisible by model.kwargs.heads = {m.heads}")
  if name == "olmo" and (m.hidden // m.heads) % 2:
    raise ConfigError(f"model.kwargs.hidden: {m.hidden} is not divisible into {m.heads} heads of an even size "
                      f"(rotary embeddings rotate unit pairs)")


def check_model_input(c: ml_collections.ConfigDict, input_shape) -> None:
  """The model's arguments that depend on the data's image size (ViT patches, the CNN's poolings) or sequence
  length (a text model's position table)."""
  kwargs = c.model.kwargs.to_dict()
  m = build_module(c.model.name, 1, **kwargs)
  if c.model.name in TEXT_MODELS:
    if len(input_shape) != 2 or int(input_shape[0]) != 3:
      raise ConfigError(f"model.name: {c.model.name} reads token ids: a text model's input is (3, L) (input_ids, "
                        f"token_type_ids, attention_mask), but data.name={c.data.name} gives "
                        f"{tuple(input_shape)}")
    if int(input_shape[1]) > m.max_positions:
      raise ConfigError(f"model.kwargs.max_positions: the data's sequences of {int(input_shape[1])} tokens do not "
                        f"fit the model's {m.max_positions} positions; shorten the sequences")
    return
  h, w = int(input_shape[0]), int(input_shape[1])
  where = f"the {h}x{w} images of data.name={c.data.name}"
  if c.model.name.startswith("vit"):
    if m.image_size:
      h = w = m.image_size
      where = f"the {h}x{w} input (model.kwargs.image_size)"
    if h % m.patch or w % m.patch:
      raise ConfigError(f"model.kwargs.patch: {where} do not divide into {m.patch}x{m.patch} patches")
  if c.model.name == "cnn" and min(h, w) < 2 ** len(m.channels):
    raise ConfigError(f"model.kwargs.channels: {len(m.channels)} convolutions, each followed by a 2x2 max-pool, "
                      f"leave nothing of {where}; at most {int(np.log2(min(h, w)))}")


# data.augment fields that change what a model sees (data.augment.translate_fill only matters with translate)
_AUGMENTS = ("flip", "translate", "cutout", "rotate", "erase")


def check_data(c: ml_collections.ConfigDict) -> None:
  """The ``data`` fields: a known dataset; paths that it reads; for text (``glue/<task>``) a text model, a
  tokenizer to read, ``data.max_length``, and none of the image-only fields (classes, synthetic, augmentation);
  for images none of the text-only fields."""
  d = c.data
  if text.is_text_dataset(d.name):
    try:
      text.dataset_task(d.name)
    except DataError as e:
      raise ConfigError(str(e)) from None
  else:
    choice(d.name, DATASETS + text.DATASETS, "data.name")
  for field in ("dir", "tfds_dir", "tokenizer"):
    if not isinstance(d[field], str):
      raise ConfigError(f"data.{field}: expected a path (a string; \"\" = unset), got {d[field]!r}")
  if d.name in FILELESS and (d.dir or d.tfds_dir):
    field = "data.dir" if d.dir else "data.tfds_dir"
    raise ConfigError(f"{field}: data.name={d.name} reads no files (it is {FILELESS[d.name]}), so "
                      f"{field}={d[field.split('.')[1]]!r} would be ignored; leave it \"\"")
  if d.dir and d.tfds_dir:
    raise ConfigError(f"data.tfds_dir: not read when data.dir is set (local files, not tensorflow-datasets); set "
                      f"one of them, got data.dir={d.dir!r} and data.tfds_dir={d.tfds_dir!r}")
  int_at_least("data.max_length", d.max_length, 0, " (0 = 128 for text data)")
  if not text.is_text_dataset(d.name):
    if c.model.name in TEXT_MODELS:
      raise ConfigError(f"model.name: {c.model.name} reads token ids, but data.name={d.name} holds images; give it "
                        f"a text task: {', '.join(text.DATASETS)}")
    for field in ("max_length", "tokenizer"):
      if d[field]:
        raise ConfigError(f"data.{field}: only text data (glue/<task>) has sequences to tokenize, so "
                          f"data.{field}={d[field]!r} would be ignored for data.name={d.name}; leave it "
                          + ("0" if field == "max_length" else '""'))
    return
  if c.model.name not in TEXT_MODELS:
    raise ConfigError(f"model.name: data.name={d.name} holds token ids, which only the text models read; allowed: "
                      f"{', '.join(TEXT_MODELS)}")
  if d.classes:
    raise ConfigError(f"data.classes: a GLUE task keeps its own labels (data.name={d.name}); leave it (), got "
                      f"{d.classes!r}")
  if d.synthetic.to_dict() != config_lib.default_config().data.synthetic.to_dict():
    raise ConfigError(f"data.synthetic: read by data.name=synthetic only, not by the text task {d.name}; leave it "
                      f"at its default")
  augmented = [f"data.augment.{f}={d.augment[f]!r}" for f in _AUGMENTS if d.augment[f]]
  if augmented:
    raise ConfigError(f"data.augment: image augmentations do nothing to token ids (data.name={d.name}); turn off "
                      f"{', '.join(augmented)}")
  weights, step = config_lib.parse_init_checkpoint(c.init.checkpoint)
  if not d.tokenizer and (not weights or step is not None):
    raise ConfigError(f"data.tokenizer: data.name={d.name} is tokenized with a checkpoint's own tokenizer: set "
                      f"data.tokenizer to a folder with tokenizer.json or vocab.txt (it defaults to init.checkpoint "
                      f"when that is a Hugging Face checkpoint folder; init.checkpoint is {c.init.checkpoint!r})")


def load_data(c, init: InitSource | None = None):
  """The run's dataset: images (:func:`butterfly_jax.io.data.load_dataset`, ``data.classes``) or, for
  ``data.name="glue/<task>"``, the tokenized task (:func:`load_text_task`; ``init``: ``init.checkpoint`` as
  :func:`init_source` read it)."""
  if text.is_text_dataset(c.data.name):
    return load_text_task(c, init)
  data = load_dataset(c.data.name, c.data.dir or None, tfds_data_dir=c.data.tfds_dir or None,
                      synthetic=c.data.synthetic.to_dict())
  return select_classes(data, c.data.classes) if c.data.classes else data


def tokenizer_folder(c, init: InitSource | None = None) -> str:
  """``data.tokenizer``, else the ``init.checkpoint`` folder, or the folder of an ``init.checkpoint`` file (a
  ``.safetensors`` file or a sharded index: the tokenizer files lie beside it); :func:`check_data` requires one."""
  if c.data.tokenizer:
    return c.data.tokenizer
  weights = (init or init_source(c, exists=False)).path
  return str(weights.parent if weights.is_file() else weights)


def load_text_task(c, init: InitSource | None = None) -> text.TextDataset:
  """GLUE task ``data.name`` tokenized by the checkpoint's tokenizer (``data.tokenizer``) to ``data.max_length``
  tokens, from the TSV folder ``data.dir`` or through tensorflow-datasets. What can be checked without compute is
  checked first, each a :class:`~butterfly_jax.io.data.DataError` or
  :class:`~butterfly_jax.io.pretrained.PretrainedError` naming the field: the length against the model's position
  table; an ``init.checkpoint`` folder's ``config.json`` against the model (its architecture and sizes); the
  checkpoint's tensors (names and shapes, from the file headers); the tokenizer against the embedding table;
  once tokenized, every token id and type against their tables."""
  task = text.dataset_task(c.data.name)
  kwargs = c.model.kwargs.to_dict()
  module = build_module(c.model.name, task.num_classes, **kwargs)
  max_length = c.data.max_length or text.DEFAULT_MAX_LENGTH
  text.check_positions(max_length, module.max_positions)
  init = init or init_source(c, exists=False)
  if init.kind == "weights" and init.path.exists():  # before minutes of tokenizing a large task
    check_weights(c, init, jax.eval_shape(make_model(c.model.name, (3, max_length), task.num_classes, **kwargs)[1],
                                          jax.random.key(0)))
  tokenizer = text.load_tokenizer(tokenizer_folder(c, init))
  text.check_vocab(tokenizer, module.vocab_size)
  if c.data.dir:
    data = text.load_glue_tsv(task.name, c.data.dir, tokenizer, max_length)
  else:
    data = text.load_glue_tfds(task.name, tokenizer, max_length, c.data.tfds_dir or None)
  for split in ("train", "test"):
    try:
      check_token_ids(getattr(data, f"{split}_inputs"), module.vocab_size, getattr(module, "type_vocab_size", None),
                      where=f"{data.source} ({split})")
    except ValueError as e:
      raise DataError(str(e)) from None
  return data


def check_weights(c, init: InitSource, shapes) -> None:
  """A text model's ``init.checkpoint`` weights (``init``) against the model whose parameters have ``shapes``,
  from the checkpoint folder's ``config.json`` (its architecture and sizes) and its files' headers (the tensors'
  names and shapes): :class:`~butterfly_jax.io.pretrained.PretrainedError` naming every disagreement, before any
  array is read."""
  if init.kind != "weights" or c.model.name not in TEXT_MODELS or not init.path.exists():
    return
  kwargs = c.model.kwargs.to_dict()
  if init.path.is_dir():
    pretrained.check_hf_config(init.given, c.model.name, kwargs)
  pretrained.load_weights(init.given, c.model.name, shapes, c.init.keep_head, kwargs, read=False)


def member_strategy(c, backend: str | None = None) -> str:
  """``members.strategy`` resolved (:func:`members.resolve_strategy`): ``auto`` runs a text model under ``map`` on
  a CPU, since unrolled (``sequential``) BERT members that start identical were measured to part in their last
  bits on XLA:CPU, so a sigma = 0 twin would be no exact control (BUILD_NOTES.md, "Decisions"). An explicit
  ``sequential`` is kept, with a warning."""
  text_model = c.model.name in TEXT_MODELS
  if text_model and c.members.strategy == "sequential":
    logging.warning("members.strategy: 'sequential' with text model %s: identical BERT members were measured to "
                    "part in their last bits on XLA:CPU when unrolled, so a sigma = 0 twin may not stay exactly 0; "
                    "'map' (what 'auto' picks on a CPU) runs every member through one compiled step",
                    c.model.name)
  return members.resolve_strategy(c.members.strategy, backend, text=text_model)


def check(c: ml_collections.ConfigDict) -> None:
  """Every check of ``c`` that needs neither its data nor training: its fields' values
  (:func:`butterfly_jax.config.validate`), the model and its arguments, the dataset and its settings, the live
  writers' packages (:func:`butterfly_jax.run.writers.check`)."""
  config_lib.validate(c)
  writers.check(c)
  choice(c.model.name, tuple(MODELS), "model.name")
  check_model_kwargs(c.model.name, c.model.kwargs.to_dict())
  choice(c.model.resnet_padding, RESNET_PADDINGS, "model.resnet_padding")
  choice(c.eval.cka_estimator, CKA_ESTIMATORS, "eval.cka_estimator")
  check_align_method(c)
  check_data(c)


def check_align_method(c: ml_collections.ConfigDict) -> None:
  """Activation matching needs the model's hidden units' activations, which only the models of
  :data:`~butterfly_jax.models.ACTIVATION_MODELS` provide; a ConfigError naming the field for the others (when
  ``eval.align`` would use it)."""
  if c.eval.align and c.eval.align_method == "activations" and c.model.name not in ACTIVATION_MODELS:
    raise ConfigError(f"eval.align_method: 'activations' matches the units by their activations, which model.name="
                      f"{c.model.name} does not provide (models with them: {', '.join(ACTIVATION_MODELS)}); use "
                      "eval.align_method='weights' (weight matching), or eval.align=False")


def kept_steps(run_dir) -> list[int]:
  """The kept steps of a saved run (``checkpoint.keep``), from its checkpoint folders."""
  folder = RunDir(run_dir).checkpoints / "keep"
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def init_source(c, model_name: str | None = None, exists: bool = True) -> InitSource:
  """``init.checkpoint`` parsed (:func:`butterfly_jax.config.parse_init_checkpoint`); with ``exists``, what it names
  must exist and fit the model's kind: a weights file or folder (for the models that read one,
  :data:`butterfly_jax.io.pretrained.WEIGHT_MODELS`) or a kept step of a saved run."""
  given = c.init.checkpoint
  if not given:
    return InitSource(given="", kind="fresh")
  model_name = model_name or c.model.name
  run_dir, step = config_lib.parse_init_checkpoint(given)
  if step is None:
    if exists and not Path(given).exists():
      raise ConfigError(f"init.checkpoint: expected 'RUN_DIR:STEP' (a kept step of a saved run), a ViT weights file "
                        f"or a BERT / OLMo checkpoint folder that exists, got {given!r}")
    if exists and model_name not in pretrained.WEIGHT_MODELS:
      raise ConfigError(f"init.checkpoint: a weights file is read for models {', '.join(pretrained.WEIGHT_MODELS)} "
                        f"only; for model {model_name} give 'RUN_DIR:STEP' of a saved run")
    return InitSource(given=given, kind="weights", path=Path(given))
  path = RunDir(run_dir).checkpoints / "keep" / str(step)
  if exists and not path.is_dir():
    raise ConfigError(f"init.checkpoint: {path} does not exist; kept steps of {run_dir}: "
                      f"{kept_steps(run_dir) or 'none (set checkpoint.keep in that run)'}")
  return InitSource(given=given, kind="run", path=path, run_dir=run_dir, step=step)


def family_plan(c, steps: Steps) -> FamilyPlan:
  """Child 0 and one child per ``perturb.scales``: perturbed children train to ``t + T`` with
  ``perturb.extra_steps``, from a rewound schedule with ``perturb.rewind_lr``."""
  scales = tuple(float(s) for s in c.perturb.scales)
  k, t, total = len(scales) + 1, steps.t, steps.total
  end_steps = (total,) + (t + total if c.perturb.extra_steps else total,) * (k - 1)
  lr_offsets = (0,) + (t if c.perturb.rewind_lr else 0,) * (k - 1)
  return FamilyPlan(scales, k, t, total, end_steps, lr_offsets)


def check_devices(c, available: int) -> None:
  """``members.devices`` (a warning when more are asked for than exist) and ``members.data_devices`` against
  the devices this process sees and the batches a data axis splits."""
  if c.members.devices > available:
    logging.warning("members.devices: %d devices asked for, %d available; the children split over at most %d",
                    c.members.devices, available, available)
  try:
    placement.data_size(1, available, c.members.devices, c.members.data_devices,
                        tuple(config_lib.split_batch_sizes(c).values()))
  except placement.PlacementError as e:
    raise ConfigError(str(e)) from None


def check_shapes(c, data, model_kwargs: dict) -> None:
  """Config errors that depend on the model's parameters and features, found from their shapes alone (no
  compute): the perturbation mask and the CKA feature."""
  apply_fn, init_fn = make_model(c.model.name, data.input_shape, data.num_classes, **model_kwargs)
  keys = rng.role_keys(c.seed, c.perturb.seed)
  shapes = jax.eval_shape(init_fn, keys["init"])
  if c.perturb.scales:
    try:
      perturb.build_mask(shapes, c.perturb.mask, rng.perturb_key(keys, "mask"), bool(c.init.checkpoint))
    except perturb.PerturbationError as e:
      raise ConfigError(str(e)) from None
  if c.eval.cka_examples and len(c.perturb.scales):
    x = jax.ShapeDtypeStruct((1, *data.input_shape), input_dtype(c.model.name))
    features = jax.eval_shape(lambda p, x: apply_fn(p, x)[1], shapes, x)
    if c.eval.cka_feature not in features:
      raise ConfigError(f"eval.cka_feature: the model has no feature {c.eval.cka_feature!r}; it has "
                        f"{', '.join(sorted(features))}")


def resolve(c: ml_collections.ConfigDict, training: bool = True) -> RunSpec:
  """``c`` checked (:func:`check`), its data read, and everything a run derives before training. With
  ``training`` (a run about to train) also what ``init.checkpoint`` names must exist, and the checks on the model's
  shapes (:func:`check_shapes`); without it (reading a finished run, whose config was checked when it ran, by
  the rules of its version) neither, and ``c`` is not checked again."""
  if training:
    check(c)
  init = init_source(c, exists=training)
  data = load_data(c, init)
  steps = config_lib.resolve_steps(c, data.num_train)
  steps = Steps(**{**steps, "keep": tuple(steps["keep"])})
  check_model_input(c, data.input_shape)
  available = jax.device_count()
  check_devices(c, available)
  model_kwargs = config_lib.model_kwargs(c)
  if training:
    check_shapes(c, data, model_kwargs)
  return RunSpec(config=c, data=data, steps=steps, family=family_plan(c, steps), init=init,
                 model_kwargs=model_kwargs, strategy=member_strategy(c), devices=available)
