"""The pre-training paradox with ResNet-50 (the paper's Figure 5), the other way round: pre-train on CIFAR-10
keeping checkpoints, then butterfly families fine-tuned on CIFAR-100 (a fresh 100-class head) from each.

    python -m butterfly_jax.main --config=configs/resnet50_c10_to_c100.py:pretrain --workdir=runs/r50_c10_pretrain
    python -m butterfly_jax.launch --config=configs/resnet50_c10_to_c100.py --runs=runs/r50_c10_to_c100    # 72 runs
    python -m butterfly_jax.report --runs=runs/r50_c10_to_c100

Everything else (model, optimizer, schedules, augmentation, kept checkpoints, the sweep, the estimated GPU
cost of about 23 GPU-hours) is as in ``configs/resnet50_c100_to_c10.py``, whose docstring gives the
details, and whose ``transfer_config`` this file uses. ``launch`` takes the ``:pretrain``
argument too (one run).
"""

from butterfly_jax.config import config_file

transfer = config_file("resnet50_c100_to_c10.py", beside=__file__)
PRETRAIN_DIR = "runs/r50_c10_pretrain"


def get_config(phase: str = "finetune"):
  return transfer.transfer_config(phase, "cifar10", "cifar100", PRETRAIN_DIR)


def sweep(add, phase: str = "finetune"):
  transfer.transfer_sweep(add, phase, PRETRAIN_DIR)
