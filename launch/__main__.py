"""``python -m launch`` from the repository root: the launcher, :mod:`butterfly_jax.launch`."""

import sys

from butterfly_jax.launch.__main__ import main

if __name__ == "__main__":
  sys.exit(main())
