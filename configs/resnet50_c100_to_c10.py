"""The pre-training paradox with ResNet-50 (the paper's Figure 5): pre-train on CIFAR-100 keeping checkpoints,
then butterfly families fine-tuned on CIFAR-10 from each of them.

    # 1. pre-training: one network, 75,000 steps (192 epochs), checkpoints kept at steps 0, 180, 390, 1500,
    #    3900, 22500, 39000, 75000 and 8 log-spaced early steps
    python -m butterfly_jax.main --config=configs/resnet50_c100_to_c10.py:pretrain --workdir=runs/r50_c100_pretrain
    # 2. fine-tuning sweep: 8 checkpoints x perturbation at step 1 / 100 / 2000 x 3 seeds = 72 runs, each one
    #    family (the twin and sigma = 1e-5, 1e-3, 5e-3, 1e-2, 5e-2; batch perturbations; norms and biases not
    #    perturbed)
    python -m launch --config=configs/resnet50_c100_to_c10.py --runs=runs/r50_c100_to_c10
    # 3. table and figures, barrier against pre-training steps among them
    python -m butterfly_jax.report --runs=runs/r50_c100_to_c10

The authors' recipe (their pre-training-stability scripts; BUILD_NOTES.md "Definitions and recipes" lists
every field): LayerNorm, SGD 0.1 with momentum 0.9 on a one-cycle schedule (2.5% warm-up), batch 128, flips,
rotation by up to 10 degrees, translation by 4 pixels and random erasing of up to 1/16 of the image;
pre-training 75,000 steps without weight decay, fine-tuning 20,000 steps with weight decay 1e-4, perturbed at
steps 1, 100 and 2,000, a fresh 10-class head initialised as torch's ``nn.Linear``, momentum cycled between
0.85 and 0.95 as torch's ``OneCycleLR`` does. The network is the one the authors' code builds as
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

from butterfly_jax.configs_embedded import resnet50_transfer, resnet50_transfer_sweep

PRETRAIN_DIR = "runs/r50_c100_pretrain"


def get_config(phase: str = "finetune"):
  return resnet50_transfer(phase, "cifar100", "cifar10", PRETRAIN_DIR)


def sweep(add, phase: str = "finetune"):
  resnet50_transfer_sweep(add, phase, PRETRAIN_DIR)
