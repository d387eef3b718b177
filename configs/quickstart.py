"""Quickstart: scikit-learn's bundled digits (no download), MLP 64-128-128-10, five children.

    python -m butterfly_jax.main --config=configs/quickstart.py --workdir=runs/quickstart

Perturbed at t = 0 (no trunk): child 0 (unperturbed), a sigma = 0 twin and batch perturbations of
sigma = 1e-4, 1e-2 and 1e-1, all trained for 20 epochs (920 steps at batch 32) with identical SGD noise.
Takes about 15 s on 2 CPU cores. Measured (BUILD_NOTES.md): the sigma = 0 twin has L2 and barriers exactly
0; sigma = 1e-4 and 1e-2 end at L2 1.3 and 2.9 with barriers below 1e-3; sigma = 0.1 ends at L2 8.6 with
a train-loss barrier of 0.105 and a train-error barrier of 3.7%. Digits is easy (99% test accuracy): the
small perturbations need the harder Fashion-MNIST setting to show their full effect.
"""

from butterfly_jax.configs_embedded import quickstart


def get_config():
  return quickstart()
