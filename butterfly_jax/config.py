"""The config's schema: the default experiment config, every field's meaning and allowed values, the checks a
field's value needs on its own (:func:`validate`), :class:`ConfigError`, and step arithmetic ("5ep" -> steps).

A leaf: it imports nothing from the package. Checks that need the package's models, datasets or files (a model's
arguments, a dataset's name, an ``init.checkpoint``) are made once, with the rest of a run's resolution, by
:func:`butterfly_jax.run.spec.resolve`.

Every field's meaning is in :data:`FIELD_DOCS`, from which docs/configs.md's table of fields is generated
(``python -m butterfly_jax.config``). ``configs/*.py`` start from :func:`default_config` and edit a few fields;
``--config.a.b=value`` overrides any of them on the command line.
"""

import importlib.util
import re
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("triangular", "constant", "cosine", "onecycle")
PERTURB_KINDS = ("batch", "gaussian", "ulp")
ULP_MAX = 1 << 16  # perturb.kind="ulp": the most units in the last place a child moves (one nextafter each)
BATCH_SOURCES = ("fresh", "first", "fixed")
BATCH_DROPOUTS = ("authors", "train", "eval")
EVAL_DTYPES = ("float32", "float16", "bfloat16")
INIT_SCALES = ("variance", "mean_square")
EXTRA_LRS = ("decay", "hold")
HEAD_INITS = ("torch_linear", "model")
TRANSLATE_FILLS = ("black", "mean")
ALIGN_METHODS = ("weights", "activations")  # eval.align_method: weight matching, activation matching
WRITERS = ("tensorboard", "wandb")  # log.writers: live trackers besides metrics.jsonl (butterfly_jax/run/writers.py)
# Fields whose default changed when the definitions were aligned with the paper and the authors' code: a stored
# config written before they existed gets the value that reproduces what that run did, so old runs are never
# mistaken for runs under the new definitions. FIELD_VERSIONS: the definitions' version that introduced each.
LEGACY_VALUES = {
    "perturb.batch_sign": -1, "perturb.init_scale": "mean_square", "perturb.extra_lr": "hold",
    "eval.cka_estimator": "biased", "init.head": "model", "data.augment.translate_fill": "mean",
    "model.resnet_padding": "same", "eval.align_bias": True, "perturb.batch_dropout": "eval",
}
FIELD_VERSIONS = {**{field: 2 for field in LEGACY_VALUES},
                  **{field: 3 for field in ("model.resnet_padding", "eval.align_bias", "perturb.batch_dropout")}}
DEFINITIONS_VERSION = 3
RESNETS = ("resnet20", "resnet", "resnet34", "resnet50")


def legacy_applies(config: dict, dotted: str) -> bool:
  """Whether definition field ``dotted`` changes what a run of the stored ``config`` computes: the ResNets'
  padding only for ResNets (a network without one computed under version 2 exactly what it does under 3), the
  weight-matching cost only for aligned runs, the perturbation gradient's dropout only for BERT's batch
  perturbations."""
  if dotted == "model.resnet_padding":
    return get_dotted(config, "model.name") in RESNETS
  if dotted == "eval.align_bias":
    return bool(get_dotted(config, "eval.align", True))
  if dotted == "perturb.batch_dropout":  # the one model with dropout
    return get_dotted(config, "model.name") == "bert" and get_dotted(config, "perturb.kind") == "batch"
  return True
MEMBER_STRATEGIES = ("auto", "vmap", "sequential", "map")
COMPUTE_DTYPES = ("float32", "bfloat16")
PARAM_DTYPES = ("float32", "bfloat16")
_MISSING = object()
PROGRESS_EVERY_S = 30.0  # seconds between the plain progress lines of a run without a terminal


def get_dotted(tree: dict, dotted: str, default=None):
  """``tree["a"]["b"]`` for ``"a.b"``; ``default`` where a level is missing."""
  for part in dotted.split("."):
    if not isinstance(tree, dict) or part not in tree:
      return default
    tree = tree[part]
  return tree


class ConfigError(ValueError):
  """A config field holds a value that is not allowed; the message names the field."""


def config_file(path, beside: str | None = None):
  """The config file at ``path`` (``configs/NAME.py``) executed as a module, as ml_collections and the launcher
  load config files: by path, not as a package. ``beside``: a path relative to that file's folder, so that a
  config file can start from another one's ``get_config()``::

    fashion_mnist = config_file("fashion_mnist.py", beside=__file__)
  """
  path = Path(beside).parent / path if beside else Path(path)
  spec = importlib.util.spec_from_file_location("config_file_" + re.sub(r"\W", "_", path.stem), path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def config_phase(arg, phases, config_file_name: str) -> str:
  """The phase a config file's argument names (``--config=FILE.py:PHASE``): ``arg``, or the first of ``phases``
  when there is none; ConfigError naming the file and the phases allowed otherwise."""
  phase = arg or phases[0]
  if phase not in phases:
    raise ConfigError(f"{config_file_name}: unknown phase {phase!r} (the config argument after ':'); choose one of "
                      f"{', '.join(phases)}")
  return phase


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = "mlp"
  c.model.kwargs = ml_collections.ConfigDict()  # passed to the model: width, norm, hidden, channels, ...
  c.model.resnet_padding = "symmetric"  # ResNets' 3x3 convolutions: torch's padding=1; "same": XLA's (version 2)

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"
  c.data.dir = ""          # local files (CIFAR python tarball/folder, MNIST idx folder, GLUE TSV folder); "" = tfds
  c.data.tfds_dir = ""     # tfds data_dir; "" = tfds default
  c.data.max_length = 0    # text (glue/<task>): tokens per example; 0 = 128 (the authors' GLUE length)
  c.data.tokenizer = ""    # text: a folder with tokenizer.json or vocab.txt; "" = the init.checkpoint folder
  c.data.synthetic = ml_collections.ConfigDict(
      dict(num_train=1024, num_test=256, shape=(32, 32, 3), num_classes=10, seed=0))
  c.data.classes = ()      # a subset of classes, relabelled 0..n-1 in this order; () = all
  c.data.augment = ml_collections.ConfigDict()
  c.data.augment.flip = False      # random horizontal flip
  c.data.augment.translate = 0     # random translation by up to this many pixels
  c.data.augment.translate_fill = "black"  # what translation shifts in: "black" (torchvision's), "mean" (old)
  c.data.augment.cutout = 0        # side of a zeroed square at a random centre; 0 = off
  c.data.augment.rotate = 0.0      # random rotation by up to this many degrees (nearest pixel, black fill)
  c.data.augment.erase = 0.0       # random erasing (torchvision RandomErasing) with probability 0.5 of a box of
  #                                  area fraction in [0.02, erase] and aspect ratio in [0.3, 3.3]; 0 = off

  c.train = ml_collections.ConfigDict()
  c.train.steps = "10ep"    # T: "<n>" steps or "<n>ep"
  c.train.batch_size = 128
  c.train.compute_dtype = "float32"  # "bfloat16": mixed precision (bf16 forward/backward, float32 parameters)
  c.train.param_dtype = "float32"    # "bfloat16": parameters (and optimizer state) held, trained, perturbed in bf16

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "sgd"
  c.optim.lr = 0.1           # peak learning rate
  c.optim.momentum = 0.9     # sgd
  c.optim.nesterov = False   # sgd
  c.optim.b1 = 0.9           # adam/adamw
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.weight_decay = 0.0  # sgd/adam: L2 added to the gradient (torch semantics); adamw: decoupled
  c.optim.clip_norm = 0.0     # > 0: the gradient is rescaled to at most this global L2 norm first; 0 = off

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = "triangular"
  c.schedule.warmup = "1ep"   # triangular/cosine: linear warm-up from 0 to optim.lr; onecycle: its rising phase
  c.schedule.final_lr = 0.0   # triangular/cosine: learning rate reached at step T
  c.schedule.cycle_momentum = True  # onecycle: momentum (Adam b1) cycles base..max as torch's OneCycleLR does
  c.schedule.base_momentum = 0.85
  c.schedule.max_momentum = 0.95

  c.perturb = ml_collections.ConfigDict()
  c.perturb.time = "1ep"      # t: "<n>" steps or "<n>ep"
  c.perturb.kind = "batch"
  c.perturb.scales = (1e-3,)  # sigma for children 1..K-1; child 0 is unperturbed; () = train one network
  c.perturb.seed = -1         # -1: derived from seed; else perturbation directions from this seed alone
  c.perturb.batch_size = 0    # batch perturbation: examples in the fresh batch; 0 = train.batch_size
  c.perturb.batch_source = "fresh"  # its batch: "fresh" (the perturbation key's), "first" (step 0's), "fixed"
  c.perturb.batch_dropout = "authors"  # its gradient with dropout: "authors" (from step 1 on), "train", "eval"
  c.perturb.init_draws = 8    # initialisations averaged to estimate per-layer init statistics
  c.perturb.batch_sign = 1    # batch direction: +1 theta + sigma*grad (the paper's), -1 a descent step
  c.perturb.normalize = True  # eps scaled to norm E_init (the paper's); False: theta + sigma * direction * mask
  c.perturb.init_scale = "variance"  # E_init from init variances (the paper's); "mean_square": E[theta_0^2]
  c.perturb.constant_params = False  # True: constant-initialised parameters get the next layer's init std
  c.perturb.init_std = 0.0    # > 0: every randomly initialised layer's init std taken as this (authors' ViT: 0.02)
  c.perturb.rewind_lr = False  # perturbed children restart the LR schedule at t (needs extra_steps)
  c.perturb.extra_steps = False  # perturbed children train T steps after t (end at t+T); child 0 ends at T
  c.perturb.extra_lr = "decay"  # extra steps: "decay" linearly from the LR at t to 0 at t+T; "hold" (old)
  c.perturb.mask = ml_collections.ConfigDict()
  c.perturb.mask.include = ".*"  # regex on parameter paths such as "stage1_block0/conv1/kernel"
  c.perturb.mask.exclude = ""    # regex; e.g. ".*norm.*|.*bias.*"
  # regex also excluded when fine-tuning (init.checkpoint set): norms and biases, as in the paper's fine-tuning
  # runs ("" = perturb them too)
  c.perturb.mask.exclude_finetune = ".*norm.*|.*bias.*"
  c.perturb.mask.fraction = 1.0  # random fraction of the included weights
  c.perturb.mask.single = ""     # "" | "random" | "path[i,j,...]": perturb exactly one weight

  c.members = ml_collections.ConfigDict()
  c.members.strategy = "auto"  # auto: vmap on GPU/TPU; on CPU sequential (map for text models); BUILD_NOTES.md
  c.members.devices = 0        # split the children over at most this many local devices (0 = all)
  c.members.data_devices = 1   # devices sharing each member's batch (a data axis); 1 = none, 0 = those left over

  c.eval = ml_collections.ConfigDict()
  c.eval.num_alphas = 11      # interpolation grid, 0 and 1 included
  c.eval.num_examples = 0     # per split; 0 = the full split
  c.eval.batch_size = 1000
  c.eval.alpha_chunk = 1      # networks evaluated at once (vmap) inside lax.map; 1 = one by one
  c.eval.every_steps = 0      # also barriers during training, every N steps (0 = off)
  c.eval.during_num_examples = 1000  # examples per split for the barriers during training
  c.eval.align = True         # also compare each child with child 0 after aligning its units to child 0's
  c.eval.align_method = "weights"  # how: "weights" (weight matching) or "activations" (activation matching)
  c.eval.align_max_iter = 100  # weight-matching rounds at most
  c.eval.align_bias = False    # biases in weight matching's cost; False: left out (the authors')
  c.eval.align_examples = 2000  # activation matching: training examples whose activations are correlated
  c.eval.dtype = "float32"     # precision of the evaluated networks' forward: "float16" (the authors' autocast)
  c.eval.cka_examples = 2000  # test examples for angular CKA (0 = off)
  c.eval.cka_feature = "penultimate"  # the named feature (model outputs) compared by CKA
  c.eval.cka_estimator = "unbiased"   # "unbiased" (the authors', Gram diagonals zeroed) or "biased"
  # BatchNorm models only: unaugmented training examples on which every evaluated network's statistics are
  # re-estimated, rounded down to whole training batches (at least one)
  c.eval.norm_stats_examples = 4096

  c.init = ml_collections.ConfigDict()
  c.init.checkpoint = ""  # "RUN_DIR:STEP": start from child 0 of a saved run at a kept step (fine-tuning)
  c.init.keep_head = False  # False: the head is freshly initialised (from the init key) for the new labels
  c.init.head = "torch_linear"  # a fresh head when fine-tuning: torch nn.Linear's default init, or "model"

  c.runtime = ml_collections.ConfigDict()
  c.runtime.deterministic = True  # GPU: deterministic reductions, no autotuning (butterfly_jax/io/runtime.py)

  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 50
  c.log.progress = True
  c.log.writers = ()       # live tracking besides metrics.jsonl: "tensorboard", "wandb"
  c.log.wandb_project = ""  # the W&B project; "" = $WANDB_PROJECT, else "butterfly_jax"

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.trunk = True
  c.checkpoint.children = True
  c.checkpoint.keep = ()  # steps ("<n>" or "<n>ep") at which child 0's weights are kept, e.g. for fine-tuning from
  c.checkpoint.keep_log = 0  # also keep this many log-spaced steps in [1, T] (a dense early schedule)
  c.checkpoint.every_steps = "1000"  # training state for exact resume every "<n>" steps (or "<n>ep"); "0" = off
  return c


# One line per field of default_config(): its meaning, as docs/configs.md's table shows it (generated from
# here by fields_table(); tests/test_config.py checks that they agree).
FIELD_DOCS = {
    'checkpoint.children': 'orbax checkpoint of the children at the end (`checkpoints/children`)',
    'checkpoint.every_steps': (
        'training-state checkpoints for exact resume, steps or `"<n>ep"`; `"0"` = none (a killed run restarts '
        'from step 0)'),
    'checkpoint.keep': 'steps (or `"<n>ep"`) at which child 0\'s weights are kept in `checkpoints/keep/<step>`',
    'checkpoint.keep_log': 'also keep this many log-spaced steps in [1, T] (a dense early schedule)',
    'checkpoint.trunk': 'orbax checkpoint of the trunk at *t* (`checkpoints/trunk`)',
    'data.augment.cutout': 'a zeroed N×N square at a random centre; 0 = off',
    'data.augment.erase': (
        "torchvision's `RandomErasing(p=0.5, scale=(0.02, N), ratio=(0.3, 3.3), value=mean)`: N is the largest "
        'erased area fraction'),
    'data.augment.flip': 'random horizontal flip',
    'data.augment.rotate': (
        "rotation by a uniform angle up to ±N degrees (nearest pixel, black fill: torchvision's "
        '`RandomRotation(N)`)'),
    'data.augment.translate': 'random translation by up to N pixels',
    'data.augment.translate_fill': (
        "what translation shifts in: `black` (torchvision's `RandomAffine`, the authors'), `mean` (the data "
        'mean; version 1)'),
    'data.classes': (
        'a subset of classes, relabelled 0..n−1 in the given order (e.g. pre-train on `(0,1,2,3,4)`, fine-tune '
        'on `(5,6,7,8,9)`); `()` = all'),
    'data.dir': (
        'local files: a CIFAR python tarball / folder, an MNIST-format idx folder such as '
        '`/usr/share/datasets/fashion-mnist`, the GLUE folder in the official TSV layout (holding `QNLI/`, ...; '
        'or the task\'s own folder); `""` = tensorflow-datasets. An error for `digits` and `synthetic`, which '
        'read no files'),
    'data.max_length': (
        'text: tokens per example (pairs truncated longest-first, padded to it), at most the model\'s '
        '`max_positions`; 0 = 128 (the authors\' GLUE length). An error for image data'),
    'data.name': (
        '`cifar10`, `cifar100`, `fashion_mnist`, `mnist`, `digits`, `synthetic`; text: `glue/cola`, `glue/sst2`, '
        '`glue/mrpc`, `glue/qqp`, `glue/mnli`, `glue/mnli_mismatched`, `glue/qnli`, `glue/rte`, `glue/wnli` (for '
        '`bert` and `olmo`; evaluated on the validation split, with the task\'s metric)'),
    'data.synthetic.num_classes': '`synthetic` data: classes',
    'data.synthetic.num_test': '`synthetic` data: test examples',
    'data.synthetic.num_train': '`synthetic` data: training examples',
    'data.synthetic.seed': '`synthetic` data: the seed its images and labels are drawn from',
    'data.synthetic.shape': '`synthetic` data: image shape',
    'data.tokenizer': (
        "text: the checkpoint folder whose tokenizer (`tokenizer.json`, else `vocab.txt`) tokenizes the task; "
        '`""` = the `init.checkpoint` folder. An error for image data'),
    'data.tfds_dir': (
        'tensorflow-datasets `data_dir`; an error with `data.dir`, `digits` or `synthetic` (it would not be '
        'read)'),
    'eval.align': (
        'also align each child to child 0 (`eval.align_method`) and report aligned L2, barriers, fixed points'),
    'eval.align_bias': (
        "weight matching's cost includes the biases (norm biases too); `False`: every parameter whose path "
        "contains `bias` is left out of it, as in the authors' code (definitions' version 3; version 2 included "
        'them). The permutation found moves the biases either way'),
    'eval.align_examples': (
        'activation matching: training examples (unaugmented, drawn once with the evaluation key; all if fewer) on '
        "which each pair's units are correlated"),
    'eval.align_max_iter': 'weight-matching rounds at most',
    'eval.align_method': (
        "`weights`: weight matching (Git Re-Basin's coordinate descent on the parameters); `activations`: activation "
        "matching, each permutation's units matched by the correlation of their post-ReLU activations on "
        '`eval.align_examples` training examples (one linear assignment each; `mlp`, `cnn` and the ResNets). '
        'results.json records `method` beside an activation-matched pair\'s aligned numbers'),
    'eval.alpha_chunk': 'interpolated networks evaluated at once under `vmap`',
    'eval.batch_size': '',
    'eval.cka_estimator': "`unbiased` (Gram diagonals zeroed, the authors'), `biased`",
    'eval.cka_examples': 'test examples for angular CKA (0 = off)',
    'eval.cka_feature': 'the named model feature compared by CKA',
    'eval.during_num_examples': 'examples per split for those',
    'eval.dtype': (
        "the evaluated networks' forward (interpolated in float32) in `float32`, `float16` (the authors' "
        'evaluation under CUDA autocast) or `bfloat16`: reduced precision for accelerators, recorded under '
        '`definitions`; barriers then carry its round-off (a σ = 0 twin stays exactly 0)'),
    'eval.every_steps': 'also barriers during training every N steps (in `metrics.jsonl`)',
    'eval.norm_stats_examples': (
        "BatchNorm models: unaugmented training images on which every evaluated network's statistics are "
        're-estimated (whole training batches)'),
    'eval.num_alphas': 'interpolation grid, 0 and 1 included',
    'eval.num_examples': 'examples per split for final metrics and barriers; 0 = all',
    'init.checkpoint': (
        '`"RUN_DIR:STEP"`: start from child 0 of a saved run at a kept step (fine-tuning); for ViTs also a '
        'weights file, for BERT and OLMo a Hugging Face checkpoint folder (docs/pretraining.md)'),
    'init.head': (
        "a fresh head's init: torch `nn.Linear`'s default, U(±1/√fan_in) (the authors'); `model`: the model's "
        "own (a ViT's is zero, which passes no gradient to the backbone at *t* = 0)"),
    'init.keep_head': 'False: a fresh head (from the init key) for the new labels; True: keep the saved one',
    'log.every_steps': 'a `metrics.jsonl` line every N steps',
    'log.wandb_project': 'the W&B project of `log.writers`\' `wandb`; `""` = `WANDB_PROJECT`, else `butterfly_jax`',
    'log.writers': (
        'live tracking besides `metrics.jsonl`, which stays the record: a tuple of `tensorboard` (event files in '
        '`WORKDIR/tensorboard`) and `wandb` (a W&B run under `WORKDIR/wandb`; its mode, entity and login are W&B\'s '
        'own, e.g. `WANDB_MODE=offline`), with the same values: per-child losses, learning rates, evaluations and '
        'barriers, the α-curves, the config. The `track` extra installs both; cannot change results '
        '(docs/run-directory.md, "Live tracking")'),
    'log.progress': (
        "progress with ETA: a bar in a terminal or a notebook; in a file or a pipe (a SLURM log, `launch`'s "
        f"`log.txt`) a plain line every {PROGRESS_EVERY_S:g} s and at the end"),
    'members.devices': (
        'split the children over at most this many devices (0 = all that divide K evenly; with `--distributed`,'
        " every process's); more than there are: all of them, with a warning naming the two numbers"),
    'members.data_devices': (
        "devices that split each member's batches (training, evaluation, perturbation) along a `data` mesh axis, "
        'parameters and optimizer state replicated over it: 1 = none (the batch replicated); N > 1 (dividing '
        '`train.batch_size`, `eval.batch_size` and a batch perturbation\'s batch, at most the device count); 0 = '
        'the devices the members axis leaves over, as many as divide those batch sizes. Same training, other '
        'round-off (docs/devices.md)'),
    'members.strategy': (
        '`vmap` (one batched computation), `sequential` (the members unrolled one after another in the jitted '
        'step), `map` (one compiled member step looped over the members, `lax.map`), or `auto`: `vmap` on GPU/TPU; '
        'on CPU `sequential`, and `map` for text models (docs/experiment.md, step 4)'),
    'model.kwargs': (
        '`width` (> 0, may be fractional), `norm` (`layernorm`/`batchnorm`/`none`) for ResNets (`resnet`: also '
        '`depth` 6n+2, or `stages`, e.g. `(3, 4, 6, 3)`, and `base` channels; `resnet20` and `resnet34` fix '
        'their layout); `hidden` (a tuple of widths, `()` = none), `norm` for the MLP; `channels`, `dense`, '
        '`norm` for the CNN; `patch`, `depth`, `width` (divisible by `heads`), `heads`, `mlp_dim`, `image_size`'
        ' (input resized inside the model; 0 = off) for the ViT; `conv` (`auto` = `fastgrad` on CPU, `xla` on '
        'GPU/TPU; `xla`, `saved`, `fastgrad`, `im2col`: how convolutions are computed, same parameters) for '
        'ResNets and the CNN; `pool` (`reshape`, `xla`) for the CNN; `vocab_size`, `hidden` (divisible by '
        '`heads`), `layers`, `heads`, `intermediate`, `max_positions` (the longest sequence), `hidden_act` for '
        'BERT and OLMo, with `type_vocab_size`, `layer_norm_eps`, `dropout` and `attention_dropout` (in the training '
        'step only, with a key per step shared by every child; default 0.1 each) for BERT and '
        '`rope_theta`, `clip_qkv` (0 = none) for OLMo (defaults: BERT-base, OLMo-1B). Checked before any '
        'compute: an argument the model does not take, a width, depth or size below 1, a wrong type, patches '
        'or poolings that do not fit the images are errors naming the argument. On the command line, '
        '`--config.model.kwargs.X` '
        'overrides only arguments the config file sets'),
    'model.resnet_padding': (
        "ResNets' 3×3 convolutions: `symmetric` pads 1 on every side (torch's `padding=1`, the authors'), so a "
        "stride-2 layer samples the pixels its 1×1 shortcut does; `same`: XLA's `SAME`, which pads a stride-2 "
        'layer of even size (0, 1), one pixel out of line with the shortcut (definitions\' version 2 and before)'),
    'model.name': (
        '`resnet20`, `resnet` (depth 6n+2), `resnet34` (basic blocks (3, 4, 6, 3), 64w–512w channels: the '
        'authors\' "resnet50-64"), `resnet50` (bottlenecks, 32×32 inputs), `mlp`, `cnn`, `vit`, `vit_b16` '
        '(ViT-B/16 shapes), `bert`, `olmo` (text: input `(3, L)` int32 token ids, token types, attention mask)'),
    'optim.b1': 'Adam/AdamW β1',
    'optim.b2': 'Adam/AdamW β2',
    'optim.clip_norm': (
        "> 0: each member's gradient rescaled to at most this global L2 norm, before weight decay and momentum "
        '(0: off)'),
    'optim.eps': 'Adam/AdamW ε',
    'optim.lr': 'peak learning rate',
    'optim.momentum': 'SGD momentum',
    'optim.name': '`sgd` (momentum, torch semantics), `adam`, `adamw`',
    'optim.nesterov': 'SGD: Nesterov momentum',
    'optim.weight_decay': 'SGD/Adam: L2 added to the gradient; AdamW: decoupled',
    'perturb.batch_sign': "batch direction: 1 = +∇ℓ (the paper's), −1 = −∇ℓ (an extra SGD step)",
    'perturb.batch_size': "batch perturbation's batch; 0 = `train.batch_size`",
    'perturb.batch_source': (
        "the batch perturbation's examples and augmentation: `fresh`, drawn with the run's perturbation key (the "
        "paper's \"random batch\", independent SGD noise); `first`, exactly the first training batch of epoch 0 "
        "(the authors' code when the perturbation seed equals the loader seed; its size is `train.batch_size`); "
        "`fixed`, drawn with the perturbation key of seed 0, one batch for every run whatever its seeds (the "
        "authors' scripts, which leave the perturbation seed unset)"),
    'perturb.batch_dropout': (
        "a model with dropout (BERT): the batch perturbation's gradient with dropout on: `authors` from step 1 on "
        "(their model is in train mode then, still in eval mode at step 0), `train` always, `eval` never "
        "(definitions' version 2). Its masks come from the perturbation key"),
    'perturb.constant_params': (
        "constant-initialised parameters get the next random layer's init std (the authors' "
        '`include_constant_params`)'),
    'perturb.extra_lr': (
        'their learning rate after *t*: linearly from its value at *t* to `schedule.final_lr` at *t*+*T*; '
        "`hold`: the schedule's value at *T* (version 1)"),
    'perturb.extra_steps': 'perturbed children train *T* steps after *t*',
    'perturb.init_draws': 'initialisations used to estimate Var_init per layer',
    'perturb.init_scale': 'E_init from init variances; `mean_square`: from E[θ₀²] (version 1, for old runs)',
    'perturb.init_std': "> 0: every random layer's init std taken as this (the authors' ViT/BERT: 0.02)",
    'perturb.kind': (
        '`batch`, `gaussian`, or `ulp`: each masked weight moved σ units in the last place of its own value (σ '
        'whole, toward +∞; with `perturb.mask.single` the smallest perturbation there is)'),
    'perturb.mask.exclude': 'a regex of parameter paths left out of M, e.g. `.*norm.*|.*bias.*`',
    'perturb.mask.exclude_finetune': 'also excluded when fine-tuning (`init.checkpoint` set); `""` = perturb them too',
    'perturb.mask.fraction': 'a random fraction of the included weights',
    'perturb.mask.include': 'the mask M: a regex on parameter paths such as `stage1_block0/conv1/kernel`',
    'perturb.mask.single': '`random` or `path[i,j,...]`: perturb exactly one weight; `""` = off',
    'perturb.normalize': 'ε scaled to norm E_init; False: θ + σ·ε̂·M',
    'perturb.rewind_lr': 'perturbed children restart the learning-rate schedule at *t* (needs `extra_steps`)',
    'perturb.scales': 'σ of children 1..K−1; `()` = no children: train one network (a pre-training run)',
    'perturb.seed': '≥ 0: perturbation key from this seed alone (a new direction, same trunk)',
    'perturb.time': '*t*',
    'runtime.deterministic': (
        'GPU: deterministic reductions and no autotuning (`--xla_gpu_deterministic_ops=true '
        '--xla_gpu_autotune_level=0` added to `XLA_FLAGS` before JAX starts; flags you set yourself win); False'
        ' trades them for speed. On CPU (jaxlib 0.10.x) a speed flag is always added (BUILD_NOTES.md)'),
    'schedule.base_momentum': 'onecycle with `cycle_momentum`: the lowest momentum',
    'schedule.cycle_momentum': (
        "onecycle: momentum (Adam's β1) cycles from `max_momentum` to `base_momentum` and back, as torch's "
        '`OneCycleLR` does'),
    'schedule.final_lr': 'learning rate at *T*',
    'schedule.max_momentum': 'onecycle with `cycle_momentum`: the highest momentum',
    'schedule.name': (
        "`triangular` (linear warm-up, linear decay), `constant`, `cosine`, `onecycle` (torch's `OneCycleLR` "
        'with its defaults: cosine from lr/25 to lr over the warm-up, then to lr/2.5e5 at *T*)'),
    'schedule.warmup': 'warm-up length (onecycle: its rising phase), steps or `"<n>ep"`',
    'seed': 'splits into the role keys',
    'train.batch_size': '',
    'train.compute_dtype': (
        '`bfloat16`: mixed precision, the training forward and backward passes in bf16 with float32 parameters,'
        ' optimizer state and loss; evaluation stays float32'),
    'train.param_dtype': (
        '`bfloat16`: the parameters are held in bf16 (initialised or loaded, then rounded once), trained (bf16 '
        'optimizer state, each update computed in float32 and rounded once) and perturbed (θ + σε computed in '
        'float32, rounded once: a change under half a bf16 spacing is lost), as the authors hold OLMo; distances, '
        'barriers and evaluation use their float32 upcasts (interpolations between the upcasts)'),
    'train.steps': '*T*, steps or `"<n>ep"`',
}


def fields(tree: dict | None = None, prefix: str = "") -> dict:
  """{dotted field: default} of :func:`default_config` (``tree``: its ``to_dict()``), groups flattened; an empty
  group (``model.kwargs``) is one field."""
  tree = default_config().to_dict() if tree is None else tree
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      out.update(fields(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def _cell(text: str) -> str:
  return text.replace("|", "\\|")


def fields_table() -> str:
  """docs/configs.md's table of fields: every field of :func:`default_config`, its default and :data:`FIELD_DOCS`.
  ``python -m butterfly_jax.config`` prints it."""
  def default(value):
    if isinstance(value, str):
      return f"`{value}`" if value else '`""`'
    if isinstance(value, (tuple, dict)):
      return f"`{value!r}`"
    return repr(value)
  rows = ["| field | default | meaning |", "| --- | --- | --- |"]
  rows += [f"| `{key}` | {_cell(default(value))} | {_cell(FIELD_DOCS[key])} |" for key, value in fields().items()]
  return "\n".join(rows)


def fields_text() -> str:
  """Every field of :func:`default_config` with its default and :data:`FIELD_DOCS`, as plain text for a command's
  ``--help``."""
  lines = ["Config fields (override any with --config.FIELD=VALUE; docs/configs.md):"]
  for key, value in fields().items():
    doc = re.sub(r"`([^`]*)`", r"\1", FIELD_DOCS[key])
    lines.append(f"  {key} = {value!r}\n      {doc}")
  return "\n".join(lines)


def upgrade(stored: dict, defaults: dict | None = None) -> dict:
  """A stored config (``config.json`` of an earlier run) with every field added since then filled in with its
  default. New fields default to the behaviour before they existed, so a finished run stays recognised as
  the same config, and can be loaded, after the tool gains fields; fields whose default changed with the
  definitions (:data:`LEGACY_VALUES`) get their old value, and step fields stored as ints their text
  (:func:`steps_text`)."""
  top = defaults is None
  defaults = default_config().to_dict() if defaults is None else defaults
  out = dict(stored)
  for key, value in defaults.items():
    if key not in out:
      out[key] = value
    elif isinstance(value, dict) and isinstance(out[key], dict) and value:
      out[key] = upgrade(out[key], value)
  if top:
    for dotted, old in LEGACY_VALUES.items():
      if get_dotted(stored, dotted, _MISSING) is _MISSING and legacy_applies(stored, dotted):  # older than the field
        _set_dotted(out, dotted, old)
    for dotted in STEP_FIELDS:  # int steps, as older versions allowed, as text
      _set_dotted(out, dotted, steps_text(get_dotted(out, dotted), dotted))
  return out


def _set_dotted(tree: dict, dotted: str, value) -> None:
  """``tree["a"]["b"] = value`` for ``"a.b"``, copying the dicts on the way (``tree`` itself is changed)."""
  *parents, field = dotted.split(".")
  node = tree
  for part in parents:
    node[part] = dict(node[part])
    node = node[part]
  node[field] = value


def definitions(c) -> dict:
  """What sigma, the batch direction and CKA mean in a run of config ``c``, how its ResNets pad and what weight
  matching's cost holds (written to results.json)."""
  p = c.perturb
  return {"version": DEFINITIONS_VERSION, "e_init": p.init_scale, "constant_params": bool(p.constant_params),
          "init_std": float(p.init_std), "normalize": bool(p.normalize), "batch_sign": int(p.batch_sign),
          "extra_lr": p.extra_lr, "cka_estimator": c.eval.cka_estimator, "finetune_head": c.init.head,
          "translate_fill": c.data.augment.translate_fill, "resnet_padding": c.model.resnet_padding,
          "align_bias": bool(c.eval.align_bias), "batch_source": p.batch_source, "batch_dropout": p.batch_dropout,
          "eval_dtype": c.eval.dtype}


def model_kwargs(c) -> dict:
  """The keyword arguments model ``c.model.name`` is built with: ``model.kwargs``, and for a ResNet its padding
  (``model.resnet_padding``)."""
  kwargs = c.model.kwargs.to_dict()
  if c.model.name in RESNETS:
    kwargs["padding"] = c.model.resnet_padding
  return kwargs


# Fields that count training steps. Each holds text: "<n>" steps or "<n>ep" epochs (n may be fractional), resolved
# against the data's steps per epoch by resolve_steps; checkpoint.keep holds a tuple of such texts. Text, not int,
# so that the command line parses "--config.perturb.time=5ep" and "--config.train.steps=2000" alike.
STEP_FIELDS = ("train.steps", "perturb.time", "schedule.warmup", "checkpoint.every_steps", "checkpoint.keep")
_STEPS = re.compile(r"^\s*(?:(\d+)|(\d+(?:\.\d+)?)\s*ep)\s*$")


def to_steps(value: Any, steps_per_epoch: int | None, field: str) -> int | None:
  """A step field's text, "<n>" steps or "<n>ep" epochs, as steps; with ``steps_per_epoch=None`` (the data
  unknown), None for epochs. ConfigError naming ``field`` for anything else, an int included."""
  m = _STEPS.match(value) if isinstance(value, str) else None
  if m is None:
    hint = f" (steps are text: {str(value)!r})" if is_int(value) else ""
    raise ConfigError(f"{field}: expected steps \"<n>\" or epochs \"<n>ep\" such as '2000' or '5ep', "
                      f"got {value!r}{hint}")
  if m.group(1) is not None:
    return int(m.group(1))
  return None if steps_per_epoch is None else int(round(float(m.group(2)) * steps_per_epoch))


def check_steps(c: ml_collections.ConfigDict) -> None:
  """Every step field (:data:`STEP_FIELDS`) holds step text; ConfigError naming the field otherwise."""
  for field in STEP_FIELDS:
    section, leaf = field.split(".")
    value = c[section][leaf]
    if field == "checkpoint.keep":
      if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise ConfigError(f"checkpoint.keep: expected a tuple of steps such as ('0', '100', '5ep'), got {value!r}")
      for v in value:
        to_steps(v, None, field)
    else:
      to_steps(value, None, field)


def steps_text(value: Any, field: str) -> Any:
  """A step field's value as stored by an older version, which allowed ints (2000, 2000.0): as text ("2000").
  The one place where int steps are converted; text is kept as it is, anything else left for validation."""
  if isinstance(value, (list, tuple)) and field == "checkpoint.keep":
    return type(value)(steps_text(v, field) for v in value)
  if isinstance(value, bool):
    return value
  if is_int(value) or (isinstance(value, float) and value.is_integer()):
    return str(int(value))
  return value


def parse_init_checkpoint(value) -> tuple[str, int | None]:
  """``init.checkpoint`` read: ``(RUN_DIR, STEP)`` for ``"RUN_DIR:STEP"`` (child 0 of a saved run at a kept step; the
  step is the digits after the last colon), else ``(value, None)``: the path of a weights file, or ``""`` for a
  fresh init (None reads as ``""``). Whether the run directory, the kept step or the file exist is not checked."""
  text = "" if value is None else str(value)
  run_dir, sep, step = text.rpartition(":")
  if sep and step.isascii() and step.isdigit():
    return run_dir, int(step)
  return text, None


def choice(value, allowed, field):
  if value not in allowed:
    raise ConfigError(f"{field}: unknown value {value!r}; allowed: {', '.join(allowed)}")


def finite_in(field, value, lo, hi=float("inf"), lo_open=False, hi_open=False):
  """ConfigError naming ``field`` unless ``value`` is a finite number in the interval."""
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
        and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi))
  if not ok:
    left, right = "(" if lo_open else "[", ")" if hi_open or hi == float("inf") else "]"
    raise ConfigError(f"{field}: must be a finite number in {left}{lo}, {hi}{right}, got {value!r}")


def is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def int_at_least(field, value, lo, note=""):
  if not is_int(value) or value < lo:
    raise ConfigError(f"{field}: expected an integer >= {lo}{note}, got {value!r}")


def ints_at_least_one(field, value, what):
  """A tuple (or list) of integers >= 1; () allowed."""
  if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or not all(
      is_int(v) and v >= 1 for v in value):
    raise ConfigError(f"{field}: expected a tuple of {what}, integers >= 1, got {value!r}")


def validate(c: ml_collections.ConfigDict) -> None:
  """Checks every field that can be checked without data; raises ConfigError naming the field."""
  check_steps(c)
  choice(c.optim.name, OPTIMIZERS, "optim.name")
  choice(c.schedule.name, SCHEDULES, "schedule.name")
  choice(c.perturb.kind, PERTURB_KINDS, "perturb.kind")
  choice(c.eval.dtype, EVAL_DTYPES, "eval.dtype")
  choice(c.perturb.batch_source, BATCH_SOURCES, "perturb.batch_source")
  choice(c.perturb.batch_dropout, BATCH_DROPOUTS, "perturb.batch_dropout")
  if c.perturb.batch_source == "first" and c.perturb.batch_size not in (0, c.train.batch_size):
    raise ConfigError(f"perturb.batch_size: perturb.batch_source='first' perturbs with the first training batch, "
                      f"of train.batch_size = {c.train.batch_size} examples; leave perturb.batch_size 0, got "
                      f"{c.perturb.batch_size!r}")
  choice(c.members.strategy, MEMBER_STRATEGIES, "members.strategy")
  choice(c.train.compute_dtype, COMPUTE_DTYPES, "train.compute_dtype")
  choice(c.train.param_dtype, PARAM_DTYPES, "train.param_dtype")
  choice(c.perturb.init_scale, INIT_SCALES, "perturb.init_scale")
  choice(c.perturb.extra_lr, EXTRA_LRS, "perturb.extra_lr")
  choice(c.init.head, HEAD_INITS, "init.head")
  choice(c.data.augment.translate_fill, TRANSLATE_FILLS, "data.augment.translate_fill")
  check_writers(c)
  if c.perturb.batch_sign not in (1, -1) or isinstance(c.perturb.batch_sign, bool):
    raise ConfigError(f"perturb.batch_sign: expected 1 (theta + sigma * grad, the paper's) or -1 (a descent step), "
                      f"got {c.perturb.batch_sign!r}")
  for field in ("normalize", "constant_params", "rewind_lr", "extra_steps"):
    if not isinstance(c.perturb[field], bool):
      raise ConfigError(f"perturb.{field}: expected True or False, got {c.perturb[field]!r}")
  std = c.perturb.init_std
  if isinstance(std, bool) or not isinstance(std, (int, float)) or not 0 <= std < float("inf"):
    raise ConfigError(f"perturb.init_std: expected a finite number >= 0 (0 = the model's own init), got {std!r}")
  if c.perturb.init_scale == "mean_square" and (c.perturb.constant_params or std):
    raise ConfigError("perturb.init_scale: 'mean_square' (the old rule) takes no perturb.constant_params or "
                      "perturb.init_std; use init_scale='variance'")
  if c.perturb.rewind_lr and not c.perturb.extra_steps:
    raise ConfigError("perturb.rewind_lr: a rewound child restarts the schedule at t and needs T more steps to "
                      "finish it; set perturb.extra_steps=True as well (without it, it would stop at step T "
                      "mid-schedule, at a learning rate above 0)")
  choice(c.eval.align_method, ALIGN_METHODS, "eval.align_method")
  for field in ("align", "align_bias"):
    if not isinstance(c.eval[field], bool):
      raise ConfigError(f"eval.{field}: expected True or False, got {c.eval[field]!r}")
  if not isinstance(c.schedule.cycle_momentum, bool):
    raise ConfigError(f"schedule.cycle_momentum: expected True or False, got {c.schedule.cycle_momentum!r}")
  if c.schedule.name == "onecycle" and c.schedule.cycle_momentum and not (
      0 <= c.schedule.base_momentum <= c.schedule.max_momentum < 1):
    raise ConfigError(f"schedule.base_momentum, schedule.max_momentum: need 0 <= base <= max < 1, got "
                      f"{c.schedule.base_momentum!r} and {c.schedule.max_momentum!r}")
  aug = c.data.augment
  for field, v in (("rotate", aug.rotate), ("erase", aug.erase)):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
      raise ConfigError(f"data.augment.{field}: expected a number >= 0 (0 = off), got {v!r}")
  if not aug.erase <= 1 or (aug.erase and aug.erase < 0.02):
    raise ConfigError(f"data.augment.erase: the largest erased area fraction must be in [0.02, 1] (0 = off), "
                      f"got {aug.erase!r}")
  scales = c.perturb.scales
  if isinstance(scales, (int, float)):
    raise ConfigError(f"perturb.scales: expected a tuple of sigmas, one per perturbed child, got {scales!r}")
  scales = tuple(scales)
  for s in scales:
    if not isinstance(s, (int, float)) or isinstance(s, bool) or not s >= 0 or s == float("inf"):
      raise ConfigError(f"perturb.scales: every sigma must be a finite number >= 0, got {s!r}")
    if c.perturb.kind == "ulp" and (s != int(s) or s > ULP_MAX):
      raise ConfigError(f"perturb.scales: with perturb.kind='ulp' each sigma is a whole number of units in the last "
                        f"place, 0 to {ULP_MAX}, got {s!r}")
  positive = {
      "train.batch_size": c.train.batch_size, "eval.batch_size": c.eval.batch_size,
      "eval.alpha_chunk": c.eval.alpha_chunk, "log.every_steps": c.log.every_steps,
      "eval.norm_stats_examples": c.eval.norm_stats_examples,
      "perturb.init_draws": c.perturb.init_draws, "eval.align_max_iter": c.eval.align_max_iter,
      "eval.align_examples": c.eval.align_examples,
  }
  for field, v in positive.items():
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
      raise ConfigError(f"{field}: expected an integer >= 1, got {v!r}")
  for field, v in {"members.devices": c.members.devices, "eval.num_examples": c.eval.num_examples, "eval.every_steps": c.eval.every_steps,
                   "perturb.batch_size": c.perturb.batch_size, "eval.cka_examples": c.eval.cka_examples,
                   "eval.during_num_examples": c.eval.during_num_examples}.items():
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
      raise ConfigError(f"{field}: expected an integer >= 0, got {v!r}")
  check_data_devices(c)
  if not isinstance(c.eval.num_alphas, int) or c.eval.num_alphas < 2:
    raise ConfigError(f"eval.num_alphas: expected an integer >= 2 (the grid includes 0 and 1), got {c.eval.num_alphas!r}")
  finite_in("optim.lr", c.optim.lr, 0.0)
  finite_in("optim.momentum", c.optim.momentum, 0.0, 1.0, hi_open=True)
  finite_in("optim.b1", c.optim.b1, 0.0, 1.0, hi_open=True)
  finite_in("optim.b2", c.optim.b2, 0.0, 1.0, hi_open=True)
  finite_in("optim.eps", c.optim.eps, 0.0, lo_open=True)
  finite_in("schedule.final_lr", c.schedule.final_lr, 0.0)
  if not c.optim.weight_decay >= 0:
    raise ConfigError(f"optim.weight_decay: must be >= 0, got {c.optim.weight_decay!r}")
  if isinstance(c.optim.clip_norm, bool) or not c.optim.clip_norm >= 0 or c.optim.clip_norm == float("inf"):
    raise ConfigError(f"optim.clip_norm: must be a finite number >= 0 (0 = no clipping), got {c.optim.clip_norm!r}")
  if not 0 < c.perturb.mask.fraction <= 1:
    raise ConfigError(f"perturb.mask.fraction: must be in (0, 1], got {c.perturb.mask.fraction!r}")
  for field in ("include", "exclude", "exclude_finetune"):
    try:
      re.compile(c.perturb.mask[field])
    except re.error as e:
      raise ConfigError(f"perturb.mask.{field}: not a valid regular expression ({e})") from None


def check_writers(c: ml_collections.ConfigDict) -> None:
  """``log.writers``: a tuple of distinct names of :data:`WRITERS`; ``log.wandb_project`` text. Whether each
  writer's package is installed is checked with the run's resolution (:func:`butterfly_jax.run.writers.check`)."""
  writers = c.log.writers
  usage = (f"allowed: {', '.join(WRITERS)}, as a tuple (on the command line --config.log.writers=tensorboard or "
           f"--config.log.writers=\"('tensorboard', 'wandb')\")")
  if isinstance(writers, (str, bytes)) or not isinstance(writers, (tuple, list)):
    raise ConfigError(f"log.writers: expected a tuple of writer names, got {writers!r}; {usage}")
  for name in writers:
    if name not in WRITERS:
      raise ConfigError(f"log.writers: unknown writer {name!r}; {usage}")
  if len(set(writers)) < len(writers):
    raise ConfigError(f"log.writers: each writer once, got {tuple(writers)!r}")
  if not isinstance(c.log.wandb_project, str):
    raise ConfigError(f"log.wandb_project: expected text (\"\" = WANDB_PROJECT, else butterfly_jax), got "
                      f"{c.log.wandb_project!r}")


def split_batch_sizes(c: ml_collections.ConfigDict) -> dict:
  """``{field: size}`` of the batches a data axis (``members.data_devices``) splits: training (and BatchNorm's
  statistics), evaluation (and CKA), and a batch perturbation's."""
  out = {"train.batch_size": c.train.batch_size, "eval.batch_size": c.eval.batch_size}
  if c.perturb.kind == "batch" and len(c.perturb.scales):
    out["perturb.batch_size"] = c.perturb.batch_size or c.train.batch_size
  return out


def check_data_devices(c: ml_collections.ConfigDict) -> None:
  """``members.data_devices``: an integer >= 0 that, above 1, divides every batch it splits (the device count is
  checked when the mesh is built, :func:`butterfly_jax.core.placement.data_size`)."""
  n = c.members.data_devices
  if not isinstance(n, int) or isinstance(n, bool) or n < 0:
    raise ConfigError(f"members.data_devices: expected an integer >= 0 (1 = no data axis, 0 = the devices left "
                      f"over), got {n!r}")
  if n > 1:
    bad = {f: b for f, b in split_batch_sizes(c).items() if b % n}
    if bad:
      raise ConfigError(f"members.data_devices: {n} devices must split every batch evenly, and "
                        f"{', '.join(f'{f} = {b}' for f, b in bad.items())} is not divisible by {n}; allowed: 0 "
                        f"(auto), 1, or a common divisor of {', '.join(split_batch_sizes(c))}")


def resolve_steps(c: ml_collections.ConfigDict, num_train: int) -> dict:
  """Steps per epoch, T, t and the warm-up, in steps; checks t <= T and batch size <= data size."""
  if c.train.batch_size > num_train:
    raise ConfigError(f"train.batch_size: {c.train.batch_size} exceeds the {num_train} training examples")
  spe = num_train // c.train.batch_size
  total = to_steps(c.train.steps, spe, "train.steps")
  if total < 1:
    raise ConfigError(f"train.steps: must be at least 1 step, got {c.train.steps!r}")
  t = to_steps(c.perturb.time, spe, "perturb.time")
  if t > total:
    raise ConfigError(f"perturb.time: t = {t} steps ({c.perturb.time!r}) is after the end of training "
                      f"T = {total} steps ({c.train.steps!r}); need t <= T")
  if (c.perturb.extra_steps and t and not c.perturb.rewind_lr and c.perturb.extra_lr == "hold"
      and c.schedule.name != "constant" and not c.schedule.final_lr):
    raise ConfigError("perturb.extra_lr: 'hold' keeps the schedule's final learning rate, 0, for the perturbed "
                      "children's steps after T, which then change nothing; use perturb.extra_lr='decay' (or "
                      "perturb.rewind_lr=True)")
  warmup = to_steps(c.schedule.warmup, spe, "schedule.warmup")
  if warmup > total:
    raise ConfigError(f"schedule.warmup: {warmup} steps is longer than training ({total} steps)")
  pbs = c.perturb.batch_size or c.train.batch_size
  if pbs > num_train:
    raise ConfigError(f"perturb.batch_size: {pbs} exceeds the {num_train} training examples")
  every = to_steps(c.checkpoint.every_steps, spe, "checkpoint.every_steps")
  keep = {to_steps(k, spe, "checkpoint.keep") for k in c.checkpoint.keep}
  if not isinstance(c.checkpoint.keep_log, int) or c.checkpoint.keep_log < 0:
    raise ConfigError(f"checkpoint.keep_log: expected an integer >= 0, got {c.checkpoint.keep_log!r}")
  if c.checkpoint.keep_log:
    keep |= {int(round(s)) for s in np.geomspace(1, total, c.checkpoint.keep_log)}
  late = sorted(k for k in keep if k > total)
  if late:
    raise ConfigError(f"checkpoint.keep: steps {late} are after the end of training (T = {total} steps)")
  return dict(keep=sorted(keep), steps_per_epoch=spe, total=total, t=t, warmup=warmup, perturb_batch=pbs, checkpoint_every=every)


if __name__ == "__main__":
  print(fields_table())
