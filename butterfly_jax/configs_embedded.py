"""Configs that ship inside the package (the command line's default needs no config file)."""

from butterfly_jax.config import default_config


def quickstart():
  """scikit-learn digits (bundled, no download), an MLP, a 5-child family perturbed at init: ~15 s on 2 CPU cores."""
  c = default_config()
  c.data.name = "digits"
  c.model.name = "mlp"
  c.model.kwargs.hidden = (128, 128)
  c.train.batch_size = 32
  c.train.steps = "20ep"
  c.optim.lr = 0.05
  c.schedule.warmup = "1ep"
  c.perturb.time = "0"
  c.perturb.kind = "batch"
  c.perturb.scales = (0.0, 1e-4, 1e-2, 1e-1)
  c.eval.num_alphas = 11
  c.log.every_steps = 50
  return c


def smoke():
  """A few steps of a tiny MLP on digits: the end-to-end test config (seconds)."""
  c = quickstart()
  c.model.kwargs.hidden = (32,)
  c.train.steps = "40"   # step fields are strings: "<n>" steps or "<n>ep" (command-line overrides parse as str)
  c.train.batch_size = 16
  c.perturb.time = "10"
  c.schedule.warmup = "5"
  c.perturb.scales = (0.0, 1e-2)
  c.eval.num_alphas = 5
  c.eval.num_examples = 200
  c.eval.batch_size = 128
  c.log.every_steps = 10
  c.log.progress = False
  return c


def fashion_mnist():
  """The CPU real-data setting (``configs/fashion_mnist.py``): Fashion-MNIST from Debian's package, MLP 512-512,
  SGD momentum 0.9, triangular schedule to 0.1, batch 128, 20 epochs, 7 children perturbed at init."""
  c = default_config()
  c.data.name = "fashion_mnist"
  c.data.dir = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist; "" = tensorflow-datasets
  c.model.name = "mlp"
  c.model.kwargs.hidden = (512, 512)
  c.train.batch_size = 128
  c.train.steps = "20ep"          # 20 * 468 = 9,360 steps
  c.optim.name = "sgd"
  c.optim.lr = 0.1
  c.optim.momentum = 0.9
  c.schedule.name = "triangular"
  c.schedule.warmup = "1ep"
  c.perturb.time = "0"           # steps ("0", "2000") or epochs ("5ep"): keep it a string
  c.perturb.kind = "batch"
  c.perturb.scales = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
  c.eval.num_alphas = 11
  c.eval.num_examples = 0         # full splits: 60k train, 10k test
  c.log.every_steps = 468
  return c


STUDY_TIMES = ("0", "1ep", "5ep")


def study():
  """The base of the hyperparameter studies (``configs/study_*.py``): :func:`fashion_mnist` with a sigma = 0
  twin (the control), a tiny and a moderate batch perturbation."""
  c = fashion_mnist()
  c.perturb.scales = (0.0, 1e-4, 1e-2)
  return c


FINETUNE_SCALES = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)  # one family per run: the twin and four perturbed children


def resnet50_transfer(phase: str, pretrain_data: str, finetune_data: str, pretrain_dir: str):
  """The authors' "resnet50-64" (``resnet34``: basic blocks (3, 4, 6, 3), LayerNorm) pre-trained on
  ``pretrain_data`` (``phase="pretrain"``: one network, checkpoints kept) or fine-tuned on ``finetune_data`` from a kept step of ``pretrain_dir`` (``phase="finetune"``),
  for ``configs/resnet50_c100_to_c10.py`` and ``configs/resnet50_c10_to_c100.py``. The authors' scripts'
  recipe (``scripts/pretrain-stability``, ``scripts/train``): SGD 0.1, momentum 0.9, one-cycle with 2.5%
  warm-up, batch 128, flips, rotation by up to 10 degrees, translation by 4 pixels, random erasing up to
  1/16 of the image; pre-training 75,000 steps without weight decay, fine-tuning 20,000 steps with weight
  decay 1e-4, perturbed at steps 1, 100 and 2,000 (BUILD_NOTES.md, "Definitions and recipes")."""
  if phase not in ("pretrain", "finetune"):
    raise ValueError(f"config argument: expected 'pretrain' or 'finetune', got {phase!r}")
  c = default_config()
  c.data.name = pretrain_data if phase == "pretrain" else finetune_data
  c.data.augment.flip = True
  c.data.augment.rotate = 10.0
  c.data.augment.translate = 4
  c.data.augment.erase = 2 / 32
  c.model.name = "resnet34"   # the authors' "resnet50-64"; model.name=resnet50 is the bottleneck ResNet-50
  c.model.kwargs.width = 1
  c.model.kwargs.norm = "layernorm"
  c.train.batch_size = 128
  c.optim.name = "sgd"
  c.optim.lr = 0.1
  c.optim.momentum = 0.9
  c.schedule.name = "onecycle"
  c.perturb.kind = "batch"
  c.eval.num_examples = 10000
  c.log.every_steps = 390
  if phase == "pretrain":
    c.train.steps = "75000"
    c.schedule.warmup = "1875"  # 2.5%
    c.optim.weight_decay = 0.0
    c.perturb.scales = ()  # one network
    c.checkpoint.keep = tuple(str(s) for s in RESNET50_PRETRAIN_STEPS)
    c.checkpoint.keep_log = 8  # and a dense early schedule
  else:
    c.init.checkpoint = f"{pretrain_dir}:{RESNET50_PRETRAIN_STEPS[-1]}"
    c.train.steps = "20000"
    c.schedule.warmup = "500"  # 2.5%
    c.optim.weight_decay = 1e-4
    c.perturb.time = "1"
    c.perturb.scales = RESNET50_FINETUNE_SCALES
  return c


# Steps kept by resnet50_transfer's pre-training and fine-tuned from: the authors' checkpoints (180, 1,500,
# 22,500 and 75,000 steps) and 390, 3,900 and 39,000 between them (1, 10 and 100 epochs at 390 steps each).
RESNET50_PRETRAIN_STEPS = (0, 180, 390, 1500, 3900, 22500, 39000, 75000)
RESNET50_FINETUNE_TIMES = ("1", "100", "2000")  # the authors' perturbation steps
RESNET50_FINETUNE_SCALES = (0.0, 1e-5, 1e-3, 5e-3, 1e-2, 5e-2)  # the twin and the authors' sigmas


def resnet50_transfer_sweep(add, phase: str, pretrain_dir: str):
  """The runs of a ResNet-50 transfer config's ``phase``: the pre-training (one run) or the fine-tuning sweep from
  each of its kept steps (:data:`RESNET50_PRETRAIN_STEPS`)."""
  if phase == "pretrain":
    add()
  else:
    finetune_sweep(add, [f"{pretrain_dir}:{step}" for step in RESNET50_PRETRAIN_STEPS], times=RESNET50_FINETUNE_TIMES)


def finetune_sweep(add, checkpoints, times=("0", "2ep"), seeds=(0, 1, 2)):
  """A fine-tuning sweep: every starting checkpoint (``init.checkpoint`` values) x perturbation time x seed."""
  for checkpoint in checkpoints:
    for t in times:
      for seed in seeds:
        add(**{"init.checkpoint": checkpoint, "perturb.time": t, "seed": seed})


def get_config(name: str = "quickstart"):
  """So that this file is itself a config file: ``--config=.../configs_embedded.py:smoke``."""
  configs = {"quickstart": quickstart, "smoke": smoke, "fashion_mnist": fashion_mnist}
  if name not in configs:
    raise ValueError(f"--config: unknown embedded config {name!r}; allowed: {', '.join(configs)}")
  return configs[name]()
