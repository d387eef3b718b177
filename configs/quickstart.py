"""Quickstart: scikit-learn's bundled digits (no download), MLP 64-128-128-10, five children.

    python -m butterfly_jax.main --config=configs/quickstart.py --workdir=runs/quickstart
    python -m butterfly_jax.main --config=configs/quickstart.py --workdir=runs/quickstart_late --config.perturb.time=10ep

Perturbed at t = 0 (no trunk): child 0 (unperturbed), a sigma = 0 twin and batch perturbations of
sigma = 1e-6, 1e-4 and 1e-2, all trained for 20 epochs (1,860 steps at batch 16, learning rate 0.1) with
identical SGD noise. Each run takes about 20 s on 2 CPU cores. Measured (BUILD_NOTES.md, "Quickstart";
seeds 0-2): at t = 0, sigma = 1e-6 ends 31-42 apart in L2 with train-loss barriers 0.13-0.34 (another
basin); at t = 10 epochs the same sigma ends at L2 <= 0.0002 with barrier 0.0000. The sigma = 0 twin is
exactly 0.

Its sweep: 36 runs, perturbation time 0, 1, 2 or 5 epochs x seeds 0, 1, 2 x (batch or gaussian direction
with sigma 0 (twin), 1e-5 ... 1e-1; or one random kernel weight moved by 0.1, 1 or 10 times its init RMS):

    python -m butterfly_jax.launch --config=configs/quickstart.py --runs=runs/quickstart_sweep
"""

from butterfly_jax.run.configs_embedded import quickstart

TIMES = ["0", "1ep", "2ep", "5ep"]
SEEDS = [0, 1, 2]
SCALES = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
SINGLE_WEIGHT_SCALES = (0.0, 0.1, 1.0, 10.0)  # relative to that weight's init RMS
# One random kernel weight, moved by +-sigma times its init RMS (a gaussian direction: a batch gradient can be
# exactly zero on one weight, e.g. one fed by a pixel that is 0 in every image; biases start at 0, RMS 0).
SINGLE_WEIGHT = {"perturb.kind": "gaussian", "perturb.mask.single": "random", "perturb.mask.exclude": ".*bias",
                 "perturb.scales": SINGLE_WEIGHT_SCALES}


def get_config():
  return quickstart()


def sweep(add):
  from butterfly_jax.launch.sweep import product  # only the launcher calls sweep()
  product(add, {"perturb.time": TIMES, "seed": SEEDS, "perturb.kind": ["batch", "gaussian"]},
          fixed={"perturb.scales": SCALES})
  product(add, {"perturb.time": TIMES, "seed": SEEDS}, fixed=SINGLE_WEIGHT)
