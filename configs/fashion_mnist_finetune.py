"""Fine-tuning stability on CPU (the paper's pre-training experiment, scaled down): families on Fashion-MNIST
classes 5-9 (sandal, shirt, sneaker, bag, ankle boot) starting from the classes-0-4 network of
``configs/fashion_mnist_pretrain.py`` at different amounts of pre-training, with a fresh head.

    python -m butterfly_jax.main --config=configs/fashion_mnist_pretrain.py --workdir=runs/fm_pretrain
    python -m butterfly_jax.main --config=configs/fashion_mnist_finetune.py --workdir=runs/fm_finetune

The sweep (pre-training step x perturbation time x seed; sigma 0, 1e-4, 1e-3, 1e-2, 1e-1 as one family;
norm and bias parameters excluded from the mask, as in the paper's fine-tuning runs):

    python -m butterfly_jax.launch --config=configs/fashion_mnist_finetune.py --runs=runs/fm_finetune_sweep

Each run fine-tunes for 5 epochs (1,170 steps) with a 6-child family: 30-40 s on 2 idle CPU cores; the
sweep (5 x 2 x 3 = 30 runs) took 17 minutes (REPRODUCTION.md). ``init.checkpoint`` names the pre-training run directory
(``--set init.checkpoint=DIR:STEP`` style overrides change it).
"""

from butterfly_jax.config import config_file

fashion_mnist = config_file("fashion_mnist.py", beside=__file__)

PRETRAIN_DIR = "runs/fm_pretrain"
# Kept by the pre-training run (234 steps per epoch on its 30,000 images): none, 28 steps, 1, 5 and 10 epochs.
PRETRAIN_STEPS = (0, 28, 234, 1170, 2340)
TIMES = ("0", "1ep")
SEEDS = (0, 1, 2)


def get_config():
  c = fashion_mnist.get_config()
  c.data.classes = (5, 6, 7, 8, 9)
  c.init.checkpoint = f"{PRETRAIN_DIR}:2340"
  c.train.steps = "5ep"
  c.optim.lr = 0.05
  c.schedule.warmup = "0.5ep"
  c.perturb.scales = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
  c.perturb.mask.exclude = ".*norm.*|.*bias.*"
  c.eval.num_examples = 5000
  c.log.every_steps = 117
  return c


def sweep(add):
  for step in PRETRAIN_STEPS:
    for t in TIMES:
      for seed in SEEDS:
        add(**{"init.checkpoint": f"{PRETRAIN_DIR}:{step}", "perturb.time": t, "seed": seed})
