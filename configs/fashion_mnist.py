"""Fashion-MNIST on CPU: an MLP family at one perturbation time, real data, about 10 minutes on 2 cores.

    apt-get install -y dataset-fashion-mnist   # the idx files, in /usr/share/datasets/fashion-mnist
    python -m butterfly_jax.main --config=configs/fashion_mnist.py --workdir=runs/fmnist_t0
    python -m butterfly_jax.main --config=configs/fashion_mnist.py --workdir=runs/fmnist_late \
        --config.perturb.time=5ep --config.perturb.scales='(0.0,1e-3,1e-2,1e-1,1.0)'

Chosen by measurement (BUILD_NOTES.md, "Finding a CPU setting"): see there for what was tried, the wall
times and whether the butterfly effect appears.

Its sweep: 45 runs, perturbation time 0, 1, 2, 5 or 10 epochs x seeds 0, 1, 2 x (batch or gaussian
direction with sigma 0 (twin), 1e-5 ... 1e-1; or one random kernel weight moved by 0.1, 1 or 10 times its
init RMS, as in BUILD_NOTES.md):

    python -m butterfly_jax.launch --config=configs/fashion_mnist.py --runs=runs/fashion_mnist_sweep

Cost: one run is one family, 5.5 minutes alone on 2 CPU cores and up to 8.5 sharing them (BUILD_NOTES.md),
so the sweep is about 5 hours there with one worker; on a GPU cluster write a SLURM array instead
(--slurm=job.sh, one run per task).
"""

from butterfly_jax.config import default_config

TIMES = ["0", "1ep", "2ep", "5ep", "10ep"]
SEEDS = [0, 1, 2]
SINGLE_WEIGHT_SCALES = (0.0, 0.1, 1.0, 10.0)  # relative to that weight's init RMS
# One random kernel weight, moved by +-sigma times its init RMS (a gaussian direction: a batch gradient can be
# exactly zero on one weight, e.g. one fed by a pixel that is 0 in every image; biases start at 0, RMS 0).
SINGLE_WEIGHT = {"perturb.kind": "gaussian", "perturb.mask.single": "random", "perturb.mask.exclude": ".*bias",
                 "perturb.scales": SINGLE_WEIGHT_SCALES}


def get_config():
  """Fashion-MNIST from Debian's package, MLP 512-512, SGD momentum 0.9, triangular schedule to 0.1, batch 128,
  20 epochs, 7 children perturbed at init; the base of the other Fashion-MNIST configs."""
  c = default_config()
  c.data.name = "fashion_mnist"
  c.data.dir = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist; "" = tensorflow-datasets
  c.model.name = "mlp"
  c.model.kwargs.hidden = (512, 512)
  c.train.batch_size = 128
  c.train.steps = "20ep"          # 20 * 468 = 9,360 steps
  c.optim.name = "sgd"
  c.optim.lr = 0.1
  c.optim.momentum = 0.9
  c.schedule.name = "triangular"
  c.schedule.warmup = "1ep"
  c.perturb.time = "0"
  c.perturb.kind = "batch"
  c.perturb.scales = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
  c.eval.num_alphas = 11
  c.eval.num_examples = 0         # full splits: 60k train, 10k test
  c.log.every_steps = 468
  return c


def sweep(add):
  """get_config()'s sigmas (0, 1e-5 ... 1e-1) for both directions, then the single-weight runs."""
  from butterfly_jax.launch.sweep import product  # only the launcher calls sweep()
  product(add, {"perturb.time": TIMES, "seed": SEEDS, "perturb.kind": ["batch", "gaussian"]})
  product(add, {"perturb.time": TIMES, "seed": SEEDS}, fixed=SINGLE_WEIGHT)
