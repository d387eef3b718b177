"""Study: SGD or Adam: which is more sensitive to a tiny perturbation?

SGD (momentum 0.9, peak learning rate 0.1, the base) or Adam (peak learning rate 1e-3) x perturbation
time 0, 1 or 5 epochs: 6 runs, both with the triangular schedule.
Otherwise configs/fashion_mnist.py (MLP 512-512 on Fashion-MNIST, SGD, 20 epochs) with batch perturbations
of sigma 0 (twin), 1e-4 and 1e-2, seed 0 (add seeds to the sweep for error bars).

    python -m butterfly_jax.launch --config=configs/study_optimizer.py --runs=runs/study_optimizer
    python -m butterfly_jax.main --config=configs/study_optimizer.py --workdir=runs/study_optimizer_one \
        --config.optim.name=adam --config.optim.lr=1e-3

Cost: 6 runs of a 4-child family, about 3 to 4 minutes each on 2 CPU cores (BUILD_NOTES.md): about 25
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
  for optimizer in ({"optim.name": "sgd"}, {"optim.name": "adam", "optim.lr": 1e-3}):
    product(add, {"perturb.time": TIMES}, fixed=optimizer)
