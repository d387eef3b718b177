"""Study: Does weight decay make training less sensitive to a tiny perturbation?

Weight decay (optim.weight_decay, L2 added to the gradient) 0, 5e-4 or 5e-3 x perturbation time 0, 1
or 5 epochs: 9 runs.
Otherwise configs/fashion_mnist.py (MLP 512-512 on Fashion-MNIST, SGD, 20 epochs) with batch perturbations
of sigma 0 (twin), 1e-4 and 1e-2, seed 0 (add seeds to the sweep for error bars).

    python -m butterfly_jax.launch --config=configs/study_weight_decay.py --runs=runs/study_weight_decay
    python -m butterfly_jax.main --config=configs/study_weight_decay.py --workdir=runs/study_weight_decay_one \
        --config.optim.weight_decay=5e-4

Cost: 9 runs of a 4-child family, about 3 to 4 minutes each on 2 CPU cores (BUILD_NOTES.md): about 35
minutes with one worker.
On a GPU cluster: add --slurm=job.sh (one run per array task).
"""

from butterfly_jax.config import config_file

fashion_mnist = config_file("fashion_mnist.py", beside=__file__)
TIMES = ("0", "1ep", "5ep")


def get_config():
  c = fashion_mnist.get_config()
  c.perturb.scales = (0.0, 1e-4, 1e-2)  # the sigma = 0 twin (the control), a tiny and a moderate perturbation
  return c


def sweep(add):
  from butterfly_jax.launch.sweep import product  # only the launcher calls sweep()
  product(add, {"optim.weight_decay": [0.0, 5e-4, 5e-3], "perturb.time": TIMES})
