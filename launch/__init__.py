"""Declared sweeps and a launcher: ``python -m launch --config=configs/NAME.py --runs=DIR``.

A config file may define ``sweep(add)``; each ``add(**{"dotted.field": value})`` declares one run.
:mod:`launch.sweep` expands the declarations into configs and directory names, :mod:`launch.local` runs
them in worker processes (:mod:`launch.run_one`), :mod:`launch.slurm` writes a SLURM array job instead,
and :mod:`launch.state` keeps ``DIR/sweep.json``. No experiment logic lives here.
"""

from launch.sweep import grid, product

__all__ = ["grid", "product"]
