"""``python -m launch.run_one``, as SLURM scripts written before the launcher moved into the package name it:
:mod:`butterfly_jax.launch.run_one`."""

import sys

from butterfly_jax.launch.run_one import main

if __name__ == "__main__":
  sys.exit(main())
