"""The command line's default config (the quickstart, no download) and the tests' end-to-end smoke config, as
functions; the config files ``configs/quickstart.py`` and ``configs/smoke.py`` (:mod:`butterfly_jax.config_files`) and
the tests start from them."""

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


def get_config(name: str = "quickstart"):
  """So that this file is itself a config file: ``--config=.../configs_embedded.py:smoke``."""
  configs = {"quickstart": quickstart, "smoke": smoke}
  if name not in configs:
    raise ValueError(f"--config: unknown embedded config {name!r}; allowed: {', '.join(configs)}")
  return configs[name]()
