"""XLA flags for subprocesses that must compile as runs outside the suite do.

The suite compiles at XLA:CPU's backend optimisation level 0 (tests/conftest.py). Tests whose subject is how
XLA compiles a layout (several devices, several processes, bitwise against one device) start their
subprocesses at XLA's default level instead: at level 0 those layouts are not bitwise equal to one device
(BUILD_NOTES.md, "Test suite").
"""

import os

LEVEL = "--xla_backend_optimization_level"  # tests/conftest.py sets it to 0 for the suite


def default_level(extra: str = "") -> str:
  """This process's XLA_FLAGS without the suite's optimisation level, plus ``extra``."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(LEVEL)]
  return " ".join(flags + extra.split())


def suite_level(extra: str = "") -> str:
  """This process's XLA_FLAGS (the suite's level 0 included), plus ``extra``: for subprocesses whose comparisons
  hold within round-off at any level and compile faster at level 0."""
  return " ".join(os.environ.get("XLA_FLAGS", "").split() + extra.split())
