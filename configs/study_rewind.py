"""Study: Does restarting the learning-rate schedule after the perturbation change its effect?

perturb.rewind_lr off, or on (with perturb.extra_steps, so that the perturbed children run the whole
schedule, warm-up included, in the T steps after t; rewinding alone would stop them mid-schedule at T)
x perturbation time 1, 5 or 10 epochs: 6 runs (at t = 0 rewinding changes nothing). The sigma = 0
child is rewound too: it measures the effect of rewinding itself, against which sigma > 0 compares.
Otherwise configs/fashion_mnist.py (MLP 512-512 on Fashion-MNIST, SGD, 20 epochs) with batch perturbations
of sigma 0 (twin), 1e-4 and 1e-2, seed 0 (add seeds to the sweep for error bars).

    python -m butterfly_jax.launch --config=configs/study_rewind.py --runs=runs/study_rewind
    python -m butterfly_jax.main --config=configs/study_rewind.py --workdir=runs/study_rewind_one \
        --config.perturb.time=5ep --config.perturb.rewind_lr=True --config.perturb.extra_steps=True

Cost: 6 runs of a 4-child family; rewound runs train the perturbed children t steps longer. About 3 to 5
minutes a run on 2 CPU cores (BUILD_NOTES.md): about 30 minutes with one worker.
On a GPU cluster: add --slurm=job.sh (one run per array task).
"""

from butterfly_jax.config import config_file

fashion_mnist = config_file("fashion_mnist.py", beside=__file__)
TIMES = ["1ep", "5ep", "10ep"]


def get_config():
  c = fashion_mnist.get_config()
  c.perturb.scales = (0.0, 1e-4, 1e-2)  # the sigma = 0 twin (the control), a tiny and a moderate perturbation
  return c


def sweep(add):
  from butterfly_jax.launch.sweep import product  # only the launcher calls sweep()
  product(add, {"perturb.time": TIMES})
  product(add, {"perturb.time": TIMES}, fixed={"perturb.rewind_lr": True, "perturb.extra_steps": True})
