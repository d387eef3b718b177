"""Configs that ship inside the package (the command line's default needs no config file)."""

from butterfly_jax.config import default_config


def quickstart():
  """scikit-learn digits (bundled, no download), an MLP, a 4-child family: under 2 minutes on 2 CPU cores."""
  c = default_config()
  c.data.name = "digits"
  c.model.name = "mlp"
  c.model.kwargs.hidden = (128, 128)
  c.train.batch_size = 32
  c.train.steps = "20ep"
  c.optim.lr = 0.05
  c.schedule.warmup = "1ep"
  c.perturb.time = "1ep"
  c.perturb.kind = "batch"
  c.perturb.scales = (0.0, 1e-3, 1e-1)
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
