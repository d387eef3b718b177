"""Study: Are wider networks less sensitive to a tiny perturbation?

Hidden widths (model.kwargs.hidden) 128-128, 512-512 or 1024-1024 x perturbation time 0, 1 or 5
epochs: 9 runs.
Otherwise configs/fashion_mnist.py (MLP 512-512 on Fashion-MNIST, SGD, 20 epochs) with batch perturbations
of sigma 0 (twin), 1e-4 and 1e-2, seed 0 (add seeds to the sweep for error bars).

    python -m butterfly_jax.launch --config=configs/study_width.py --runs=runs/study_width
    python -m butterfly_jax.main --config=configs/study_width.py --workdir=runs/study_width_one \
        '--config.model.kwargs.hidden=(1024,1024)'

Cost: 9 runs of a 4-child family. 512-512 is about 3 to 4 minutes a run on 2 CPU cores (BUILD_NOTES.md); the
cost grows with the parameter count (0.12 M, 0.67 M, 1.9 M), so 1024-1024 takes roughly 3 times as long
(an estimate): about an hour with one worker.
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
  product(add, {"model.kwargs.hidden": [(128, 128), (512, 512), (1024, 1024)], "perturb.time": TIMES})
