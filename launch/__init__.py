"""The launcher's former home, kept so that ``python -m launch ...`` from the repository root and config files
with ``from launch.sweep import product`` keep working: the launcher is :mod:`butterfly_jax.launch`, installed
with the package (``python -m butterfly_jax.launch``, ``butterfly-launch``). ``launch.sweep``, ``launch.state``,
``launch.local`` and ``launch.slurm`` are those modules themselves; ``launch.run_one`` runs the package's
(SLURM scripts written before the move name it).
"""

import sys

from butterfly_jax.launch import grid, local, product, slurm, state, sweep

for _module in (local, slurm, state, sweep):
  sys.modules[f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}"] = _module

__all__ = ["grid", "product"]
