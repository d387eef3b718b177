"""The REPRODUCTION.md sweep: Fashion-MNIST, MLP 512-512, 6 epochs, on 2 CPU cores.

A cheaper sibling of ``configs/fashion_mnist.py`` (6 epochs instead of 20, barriers on 5,000 examples of
each split) so that the whole sweep fits a few CPU hours. One run (t = 0, batch direction):

    python -m butterfly_jax.main --config=configs/reproduce_fashion_mnist.py --workdir=runs/rep_t0

The sweep and its report (from the repository root):

    python -m butterfly_jax.launch --config=configs/reproduce_fashion_mnist.py --runs=reproduction/fashion_mnist/runs
    python -m butterfly_jax.report --runs=reproduction/fashion_mnist/runs --out=reproduction/fashion_mnist/report

The sweep: perturbation time 0, 1, 2 and 4 epochs x seeds 0, 1, 2 x (batch or gaussian direction, with
sigma 0 (the twin), 1e-5 ... 1e-1 as one 7-child family; or one random kernel weight moved by 0.1, 1 or 10
times its init RMS). 36 runs, seed by seed (a partial sweep covers every time and kind for the first
seeds); a 7-child run perturbed at 0 takes about 2.5 minutes on 2 idle cores, 4.4 under load.
"""

from butterfly_jax.config import config_file

fashion_mnist = config_file("fashion_mnist.py", beside=__file__)

TIMES = ["0", "1ep", "2ep", "4ep"]
SEEDS = [0, 1, 2]
SCALES = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
SINGLE_WEIGHT = {"perturb.kind": "gaussian", "perturb.mask.single": "random", "perturb.mask.exclude": ".*bias",
                 "perturb.scales": (0.0, 0.1, 1.0, 10.0)}


def get_config():
  c = fashion_mnist.get_config()
  c.train.steps = "6ep"
  c.perturb.scales = SCALES
  c.eval.num_examples = 5000
  c.eval.cka_examples = 2000
  c.log.every_steps = 117
  c.eval.every_steps = 468          # barriers during training, each epoch, on 1,000 examples per split
  c.log.progress = False
  c.checkpoint.trunk = False
  c.checkpoint.children = True   # for python -m butterfly_jax.proxy
  return c


def sweep(add):
  """Both directions at every time and seed, then the single-weight runs."""
  for seed in SEEDS:
    for t in TIMES:
      for kind in ("batch", "gaussian"):
        add(**{"perturb.time": t, "seed": seed, "perturb.kind": kind})
      add(**{"perturb.time": t, "seed": seed, **SINGLE_WEIGHT})
