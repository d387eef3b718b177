"""Declared sweeps and a launcher: ``python -m butterfly_jax.launch --config=configs/NAME.py --runs=DIR``.

A config file may define ``sweep(add)``; each ``add(**{"dotted.field": value})`` declares one run.
:mod:`sweep` expands the declarations into configs and directory names, :mod:`local` runs
them in worker processes (:mod:`run_one`), :mod:`slurm` writes a SLURM array job instead,
and :mod:`state` keeps ``DIR/sweep.json``. No experiment logic lives here.
"""

from butterfly_jax.launch.sweep import grid, product

__all__ = ["grid", "product"]
