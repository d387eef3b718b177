"""Study: Does a longer learning-rate warm-up make training less sensitive to a tiny perturbation?

Warm-up (schedule.warmup) of 0, 1 or 5 epochs x perturbation time 0, 1 or 5 epochs: 9 runs.
Otherwise configs/fashion_mnist.py (MLP 512-512 on Fashion-MNIST, SGD, 20 epochs) with batch perturbations
of sigma 0 (twin), 1e-4 and 1e-2, seed 0 (add seeds to the sweep for error bars).

    python -m butterfly_jax.launch --config=configs/study_warmup.py --runs=runs/study_warmup
    python -m butterfly_jax.main --config=configs/study_warmup.py --workdir=runs/study_warmup_one \
        --config.schedule.warmup=5ep

Cost: 9 runs of a 4-child family; one such run is about 3 to 4 minutes on 2 CPU cores (4/7 of the
7-child family measured in BUILD_NOTES.md), so about 35 minutes with one worker.
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
  product(add, {"schedule.warmup": ["0", "1ep", "5ep"], "perturb.time": TIMES})
