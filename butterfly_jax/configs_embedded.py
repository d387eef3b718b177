"""Configs that ship inside the package (the command line's default needs no config file)."""

from butterfly_jax.config import default_config


def quickstart():
  """scikit-learn digits (bundled, no download), an MLP, a 5-child family perturbed at init: ~15 s on 2 CPU cores."""
  c = default_config()
  c.data.name = "digits"
  c.model.name = "mlp"
  c.model.kwargs.hidden = (128, 128)
  c.train.batch_size = 32
  c.train.steps = "20ep"
  c.optim.lr = 0.05
  c.schedule.warmup = "1ep"
  c.perturb.time = "0"
  c.perturb.kind = "batch"
  c.perturb.scales = (0.0, 1e-4, 1e-2, 1e-1)
  c.eval.num_alphas = 11
  c.log.every_steps = 50
  return c


def smoke():
  """A few steps of a tiny MLP on digits: the end-to-end test config (seconds)."""
  c = quickstart()
  c.model.kwargs.hidden = (32,)
  c.train.steps = "40"   # step fields are strings: "<n>" steps or "<n>ep" (command-line overrides parse as str)
  c.train.batch_size = 16
  c.perturb.time = "10"
  c.schedule.warmup = "5"
  c.perturb.scales = (0.0, 1e-2)
  c.eval.num_alphas = 5
  c.eval.num_examples = 200
  c.eval.batch_size = 128
  c.log.every_steps = 10
  c.log.progress = False
  return c


def fashion_mnist():
  """The CPU real-data setting (``configs/fashion_mnist.py``): Fashion-MNIST from Debian's package, MLP 512-512,
  SGD momentum 0.9, triangular schedule to 0.1, batch 128, 20 epochs, 7 children perturbed at init."""
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
  c.perturb.time = "0"           # steps ("0", "2000") or epochs ("5ep"): keep it a string
  c.perturb.kind = "batch"
  c.perturb.scales = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
  c.eval.num_alphas = 11
  c.eval.num_examples = 0         # full splits: 60k train, 10k test
  c.log.every_steps = 468
  return c


STUDY_TIMES = ("0", "1ep", "5ep")


def study():
  """The base of the hyperparameter studies (``configs/study_*.py``): :func:`fashion_mnist` with a sigma = 0
  twin (the control), a tiny and a moderate batch perturbation."""
  c = fashion_mnist()
  c.perturb.scales = (0.0, 1e-4, 1e-2)
  return c


def get_config(name: str = "quickstart"):
  """So that this file is itself a config file: ``--config=.../configs_embedded.py:smoke``."""
  configs = {"quickstart": quickstart, "smoke": smoke, "fashion_mnist": fashion_mnist}
  if name not in configs:
    raise ValueError(f"--config: unknown embedded config {name!r}; allowed: {', '.join(configs)}")
  return configs[name]()
