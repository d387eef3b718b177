"""The pre-training paradox with ResNet-50 (the paper's Figure 5): pre-train on CIFAR-100 keeping checkpoints,
then butterfly families fine-tuned on CIFAR-10 from each of them.

    # 1. pre-training: one network, 75,000 steps (192 epochs), checkpoints kept at steps 0, 180, 390, 1500,
    #    3900, 22500, 39000, 75000 and 8 log-spaced early steps
    python -m butterfly_jax.main --config=configs/resnet50_c100_to_c10.py:pretrain --workdir=runs/r50_c100_pretrain
    # 2. fine-tuning sweep: 8 checkpoints x perturbation at step 1 / 100 / 2000 x 3 seeds = 72 runs, each one
    #    family (the twin and sigma = 1e-5, 1e-3, 5e-3, 1e-2, 5e-2; batch perturbations; norms and biases not
    #    perturbed)
    python -m butterfly_jax.launch --config=configs/resnet50_c100_to_c10.py --runs=runs/r50_c100_to_c10
    # 3. table and figures, barrier against pre-training steps among them
    python -m butterfly_jax.report --runs=runs/r50_c100_to_c10

The authors' recipe (their pre-training-stability scripts ``scripts/pretrain-stability`` and ``scripts/train``;
BUILD_NOTES.md "Definitions and recipes" lists every field): LayerNorm, SGD 0.1 with momentum 0.9 on a one-cycle schedule (2.5% warm-up), batch 128, flips,
rotation by up to 10 degrees, translation by 4 pixels and random erasing of up to 1/16 of the image (their
``--cutout=2``: ``RandomErasing`` of at most 2/32 of the area) when fine-tuning and pre-training on CIFAR-10, 1/8
when pre-training on CIFAR-100 (``--cutout=4``); pre-training 75,000 steps without weight decay (their scripts
set ``WD=1e-4`` but never pass it), fine-tuning 20,000 steps with weight decay 1e-4, perturbed at steps 1, 100
and 2,000, a fresh head initialised as the model's own (He-normal, std sqrt(2/512) = 0.0625, bias 0: the
authors' checkpoint loader skips the mismatched ``fc`` and keeps their ``reset_parameters``' init;
``init.head="model"``), momentum cycled between 0.85 and 0.95 as torch's ``OneCycleLR`` does. The network is the one the authors' code builds as
``resnet50-64``: basic blocks in stages of (3, 4, 6, 3) with 64 to 512 channels (ResNet-34's layout),
``model.name=resnet34`` here; ``--set model.name=resnet50`` runs the bottleneck ResNet-50 the paper's text
names instead. Data: tensorflow-datasets ``cifar100`` / ``cifar10``, or
``--config.data.dir=`` a folder holding the official python tarballs. ``launch`` takes the ``:pretrain``
argument too (one run; e.g. to submit it with ``--slurm=FILE``).

GPU cost (estimated, not measured): XLA counts 2.01 GFLOP per image forward and 6.04 GFLOP per training image
(``resnet34``, 32x32). Pre-training is 9.6M training images, 5.8e16 FLOP; one fine-tuning run (7 networks x
20,000 steps, then about 115 evaluated networks on 20k images) about 1.1e17 FLOP. At an assumed 100 TFLOP/s
sustained (about 20% of an H100's dense TF32 peak) that is about 10 minutes of pre-training and 19 minutes per
fine-tuning run: about 23 GPU-hours for the sweep. ``--set train.compute_dtype=bfloat16`` trades exactness
for speed (BUILD_NOTES.md). The same study sized for 2 CPU cores: ``configs/fashion_mnist_pretrain.py`` and
``configs/fashion_mnist_finetune.py`` (REPRODUCTION.md).
"""

from butterfly_jax.config import default_config

PRETRAIN_DIR = "runs/r50_c100_pretrain"
# Steps kept by the pre-training and fine-tuned from: the authors' checkpoints (180, 1,500, 22,500 and 75,000
# steps) and 390, 3,900 and 39,000 between them (1, 10 and 100 epochs at 390 steps each).
PRETRAIN_STEPS = (0, 180, 390, 1500, 3900, 22500, 39000, 75000)
FINETUNE_TIMES = ("1", "100", "2000")  # the authors' perturbation steps
FINETUNE_SCALES = (0.0, 1e-5, 1e-3, 5e-3, 1e-2, 5e-2)  # the twin and the authors' sigmas


def get_config(phase: str = "finetune"):
  return transfer_config(phase, "cifar100", "cifar10", PRETRAIN_DIR)


def sweep(add, phase: str = "finetune"):
  transfer_sweep(add, phase, PRETRAIN_DIR)


def transfer_config(phase: str, pretrain_data: str, finetune_data: str, pretrain_dir: str):
  """Pre-training on ``pretrain_data`` (``phase="pretrain"``: one network, checkpoints kept) or fine-tuning on
  ``finetune_data`` from a kept step of ``pretrain_dir`` (``phase="finetune"``); also the base of
  ``configs/resnet50_c10_to_c100.py``."""
  if phase not in ("pretrain", "finetune"):
    raise ValueError(f"config argument: expected 'pretrain' or 'finetune', got {phase!r}")
  c = default_config()
  c.data.name = pretrain_data if phase == "pretrain" else finetune_data
  c.data.augment.flip = True
  c.data.augment.rotate = 10.0
  c.data.augment.translate = 4
  # the authors' cutout N: RandomErasing of at most N/32 of the area; N = 4 pre-training on CIFAR-100, else 2
  c.data.augment.erase = (4 if phase == "pretrain" and pretrain_data == "cifar100" else 2) / 32
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
    c.checkpoint.keep = tuple(str(s) for s in PRETRAIN_STEPS)
    c.checkpoint.keep_log = 8  # and a dense early schedule
  else:
    c.init.checkpoint = f"{pretrain_dir}:{PRETRAIN_STEPS[-1]}"
    c.init.head = "model"  # the authors' fresh fc: their model's He-normal init, not torch's nn.Linear default
    c.train.steps = "20000"
    c.schedule.warmup = "500"  # 2.5%
    c.optim.weight_decay = 1e-4
    c.perturb.time = "1"
    c.perturb.scales = FINETUNE_SCALES
  return c


def transfer_sweep(add, phase: str, pretrain_dir: str):
  """The runs of ``phase``: the pre-training (one run) or the fine-tuning sweep, every kept step of the
  pre-training (:data:`PRETRAIN_STEPS`) x perturbation time x seed."""
  if phase == "pretrain":
    add()
  else:
    from butterfly_jax.launch.sweep import product  # only the launcher calls sweep()
    product(add, {"init.checkpoint": [f"{pretrain_dir}:{step}" for step in PRETRAIN_STEPS],
                  "perturb.time": FINETUNE_TIMES, "seed": (0, 1, 2)})
