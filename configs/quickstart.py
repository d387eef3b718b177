"""Quickstart: scikit-learn's bundled digits (no download), MLP 64-128-128-10, four children.

    python -m butterfly_jax.main --config=configs/quickstart.py --workdir=runs/quickstart

Trunk to step 46 (1 epoch of 46 steps at batch 32), then child 0 (unperturbed), a sigma = 0 twin and
batch perturbations of sigma = 1e-3 and 1e-1, all trained to 20 epochs (920 steps) with identical SGD
noise. Takes about 15 s on 2 CPU cores (BUILD_NOTES.md). Expect: the sigma = 0 twin has L2 and
barriers exactly 0; the perturbed children a small but non-zero L2 distance.
"""

from butterfly_jax.configs_embedded import quickstart


def get_config():
  return quickstart()
