"""Fashion-MNIST on CPU: an MLP family at one perturbation time, real data, about 10 minutes on 2 cores.

    apt-get install -y dataset-fashion-mnist   # the idx files, in /usr/share/datasets/fashion-mnist
    python -m butterfly_jax.main --config=configs/fashion_mnist.py --workdir=runs/fmnist_t0
    python -m butterfly_jax.main --config=configs/fashion_mnist.py --workdir=runs/fmnist_late \
        --config.perturb.time=5ep --config.perturb.scales='(0.0,1e-3,1e-2,1e-1,1.0)'

Chosen by measurement (BUILD_NOTES.md, "Finding a CPU setting"): see there for what was tried, the wall
times and whether the butterfly effect appears.
"""

from butterfly_jax.config import default_config


def get_config():
  c = default_config()
  c.data.name = "fashion_mnist"
  c.data.dir = "/usr/share/datasets/fashion-mnist"
  c.model.name = "mlp"
  c.model.kwargs.hidden = (512, 512)
  c.train.batch_size = 128
  c.train.steps = "20ep"          # 20 * 468 = 9,360 steps
  c.optim.name = "sgd"
  c.optim.lr = 0.1
  c.optim.momentum = 0.9
  c.schedule.name = "triangular"
  c.schedule.warmup = "1ep"
  c.perturb.time = "0"           # steps ("0", "2000") or epochs ("5ep"): keep it a string
  c.perturb.kind = "batch"
  c.perturb.scales = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
  c.eval.num_alphas = 11
  c.eval.num_examples = 0         # full splits: 60k train, 10k test
  c.log.every_steps = 468
  return c
