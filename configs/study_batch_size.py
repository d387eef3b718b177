"""Study: Does the batch size change how sensitive training is to a tiny perturbation?

Batch size (train.batch_size) 32, 128 or 512 at the same learning rate 0.1 x perturbation time 0, 1 or
5 epochs: 9 runs. Steps are counted in epochs, so every run sees 20 epochs of data; the batch
perturbation's batch follows the training batch size (perturb.batch_size = 0).
Otherwise configs/fashion_mnist.py (MLP 512-512 on Fashion-MNIST, SGD, 20 epochs) with batch perturbations
of sigma 0 (twin), 1e-4 and 1e-2, seed 0 (add seeds to the sweep for error bars).

    python -m butterfly_jax.launch --config=configs/study_batch_size.py --runs=runs/study_batch_size
    python -m butterfly_jax.main --config=configs/study_batch_size.py --workdir=runs/study_batch_size_one \
        --config.train.batch_size=32

Cost: 9 runs of a 4-child family. Batch 128 is about 3 to 4 minutes a run on 2 CPU cores (BUILD_NOTES.md);
batch 32 takes 4 times the steps and so roughly twice as long, batch 512 somewhat less (estimates, not
measured): about 40 minutes with one worker.
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
  product(add, {"train.batch_size": [32, 128, 512], "perturb.time": TIMES})
