"""The command line's default config (the quickstart, no download) and the tests' end-to-end smoke config, as
functions; the config files ``configs/quickstart.py`` and ``configs/smoke.py`` (:mod:`butterfly_jax.run.config_files`) and
the tests start from them."""

from butterfly_jax.config import default_config


def quickstart():
  """scikit-learn digits (bundled, no download), an MLP, a 5-child family perturbed at init (σ down to 1e-6):
  tens of seconds on 2 CPU cores. Batch 16 at learning rate 0.1 is noisy enough that σ = 1e-6 at t = 0 ends in
  another basin, while at t = 10 epochs it does not (at 5 epochs barriers of 0.004-0.023 remain; BUILD_NOTES.md,
  "Quickstart")."""
  c = default_config()
  c.data.name = "digits"
  c.model.name = "mlp"
  c.model.kwargs.hidden = (128, 128)
  c.train.batch_size = 16
  c.train.steps = "20ep"
  c.optim.lr = 0.1
  c.schedule.warmup = "1ep"
  c.perturb.time = "0"
  c.perturb.kind = "batch"
  c.perturb.scales = (0.0, 1e-6, 1e-4, 1e-2)
  c.eval.num_alphas = 11
  c.log.every_steps = 50
  return c


def smoke():
  """A few steps of a tiny MLP on digits: the end-to-end test config (seconds)."""
  c = quickstart()
  c.optim.lr = 0.05
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
