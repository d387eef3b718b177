"""Shared fixtures: the smoke config and one finished smoke run reused by several tests; one persistent JAX
compilation cache for the whole session."""

import os
import shutil
import tempfile

import jax
import pytest

from butterfly_jax.io import runtime
from butterfly_jax.run.configs_embedded import smoke
import xla_flags

# The suite's time is mostly XLA compiling hundreds of small programs that then run for milliseconds. XLA:CPU's
# backend optimisation level 0 compiles them about 40% faster (BUILD_NOTES.md, "Test suite"); every process the
# suite starts inherits it through the environment. The tests compare programs compiled alike (twins, layouts,
# a resumed run against an uninterrupted one), or against references within tolerances, so they hold at any
# level; `tests/test_cli.py::test_main_at_xla_default_optimisation_keeps_twins_bitwise` runs one end-to-end
# family at XLA's default level. BUTTERFLY_JAX_TEST_XLA_OPT=default keeps XLA's default for the whole suite.
if os.environ.get("BUTTERFLY_JAX_TEST_XLA_OPT", "0") != "default" and xla_flags.LEVEL not in os.environ.get(
    "XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags.LEVEL}=0".strip()

# The XLA flags a run sets (butterfly_jax/io/runtime.py), before any test starts JAX's backends: in-process runs
# then compute with the same flags, and the same bits, as runs from the command line in a subprocess.
runtime.configure(True)

# One persistent compilation cache for the session, in this process and (through the environment) in every
# subprocess a test starts: the suite compiles the same small programs in hundreds of runs, most of them in
# subprocesses (the command line, the launcher's workers, resumes) that would otherwise compile from scratch.
# A cached executable is the one XLA compiled (the key covers the program, the XLA flags and the backend), so
# the bits are unchanged. A cache already named in the environment (a developer's own) is used as it is.
# Under pytest-xdist each worker process imports this file; the workers share the first one's folder.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="butterfly_jax_test_cache_")
  os.environ["BUTTERFLY_JAX_TEST_CACHE_OWNER"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_unconfigure(config):
  """Removes the session's cache folder when this process made it (not a developer's own, nor while xdist's
  workers may still read the controller's)."""
  if os.environ.get("BUTTERFLY_JAX_TEST_CACHE_OWNER") == str(os.getpid()):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


# The test files, most expensive first (seconds per file from `python -m pytest -q --durations=0`, 2026-12-02,
# 603 tests, nothing else running). Under `--dist loadfile` each worker takes the next file when it runs out, so
# the long files start first and the cheap ones fill in at the end: both workers busy until the last minute. A
# file missing here goes after these. test_writers.py came later, placed by its own time (2026-12-07: 37 s alone,
# 20 s of CPU, on a machine shared with other jobs).
BY_COST = ("launch", "resume", "sharding", "multihost", "cli", "data_axis", "permutations", "packaging", "report",
           "batchnorm", "notebook", "pretrained", "lm_models", "glue_runs", "writers", "fidelity", "conv", "experiment",
           "runtime", "models", "finetune", "proxy", "perturb", "config", "batches", "memory", "threshold")


def pytest_collection_modifyitems(config, items):
  """Orders the collected tests by their file's place in ``BY_COST`` (a stable sort: within a file, the file's
  own order)."""
  rank = {f"test_{name}.py": i for i, name in enumerate(BY_COST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def smoke_config():
  return smoke()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
  """(config, workdir, results) of one smoke run with a sigma = 0 twin and two perturbed children."""
  from butterfly_jax.run.experiment import run
  c = smoke()
  c.perturb.scales = (0.0, 1e-2, 1.0)
  workdir = tmp_path_factory.mktemp("smoke")
  return c, workdir, run(c, workdir)
