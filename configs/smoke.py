"""Smoke test: 40 steps of a 64-32-10 MLP on digits, two children, 5-point barrier curves on 200 examples.

    python -m butterfly_jax.main --config=configs/smoke.py --workdir=/tmp/smoke

Seconds on CPU; used by the end-to-end tests. Not a scientific setting.
"""

from butterfly_jax.configs_embedded import smoke


def get_config():
  return smoke()
