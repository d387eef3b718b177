"""Shared fixtures: the smoke config and one finished smoke run reused by several tests."""

import pytest

from butterfly_jax import runtime
from butterfly_jax.configs_embedded import smoke

# The XLA flags a run sets (butterfly_jax/runtime.py), before any test starts JAX's backends: in-process runs
# then compute with the same flags, and the same bits, as runs from the command line in a subprocess.
runtime.configure(True)


@pytest.fixture
def smoke_config():
  return smoke()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
  """(config, workdir, results) of one smoke run with a sigma = 0 twin and two perturbed children."""
  from butterfly_jax.experiment import run
  c = smoke()
  c.perturb.scales = (0.0, 1e-2, 1.0)
  workdir = tmp_path_factory.mktemp("smoke")
  return c, workdir, run(c, workdir)
