"""The pre-training paradox with ResNet-50 (the paper's Figure 5): pre-train on CIFAR-100 keeping checkpoints,
then butterfly families fine-tuned on CIFAR-10 from each of them.

    # 1. pre-training: one network, 60 epochs, checkpoints kept at 0, 1, 2, 5, 10, 20, 40, 60 epochs and 8
    #    log-spaced early steps
    python -m butterfly_jax.main --config=configs/resnet50_c100_to_c10.py:pretrain --workdir=runs/r50_c100_pretrain
    # 2. fine-tuning sweep: 8 checkpoints x perturbation at 0 / 2 epochs x 3 seeds = 48 runs, each one family
    #    (the twin and sigma = 1e-4, 1e-3, 1e-2, 1e-1; batch perturbations; norms and biases not perturbed)
    python -m launch --config=configs/resnet50_c100_to_c10.py --runs=runs/r50_c100_to_c10
    # 3. table and figures, barrier against pre-training steps among them
    python -m butterfly_jax.report --runs=runs/r50_c100_to_c10

ResNet-50 for 32x32 inputs with BatchNorm (every evaluated network, interpolated and aligned ones included,
gets statistics re-estimated on 4,096 training images), SGD momentum 0.9, weight decay 5e-4, batch 128,
triangular learning rate (1 epoch warm-up; 0.1 pre-training, 0.05 fine-tuning), flips and translation by 4
pixels, a fresh 10-class head; fine-tuning runs 30 epochs. Data: tensorflow-datasets ``cifar100`` /
``cifar10``, or ``--config.data.dir=`` a folder holding the official python tarballs. ``launch`` takes
the ``:pretrain`` argument too (one run; e.g. to submit it with ``--slurm=FILE``).

GPU cost (estimated, not measured): XLA counts 2.47 GFLOP per image forward and 7.39 GFLOP per training image
(ResNet-50, 32x32). Pre-training is 3.0M training images, 2.2e16 FLOP; one fine-tuning run (6 networks x 30
epochs, then 102 evaluated networks on 24k images) about 7.3e16 FLOP. At an assumed 100 TFLOP/s sustained
(about 20% of an H100's dense TF32 peak) that is about 4 minutes of pre-training and 12 minutes per
fine-tuning run: about 10 GPU-hours for the sweep. ``--set train.compute_dtype=bfloat16`` trades exactness
for speed (BUILD_NOTES.md). The same study sized for 2 CPU cores: ``configs/fashion_mnist_pretrain.py`` and
``configs/fashion_mnist_finetune.py`` (REPRODUCTION.md).
"""

from butterfly_jax.configs_embedded import resnet50_transfer, resnet50_transfer_sweep

PRETRAIN_DIR = "runs/r50_c100_pretrain"


def get_config(phase: str = "finetune"):
  return resnet50_transfer(phase, "cifar100", "cifar10", PRETRAIN_DIR)


def sweep(add, phase: str = "finetune"):
  resnet50_transfer_sweep(add, phase, PRETRAIN_DIR)
