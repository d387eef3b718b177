"""What is specific to this reproduction (REPRODUCTION.md): the claims files' numbers and the studies' verdicts.

Plain modules, run from the repository root as ``python -m reproduction.MODULE`` (the commands are in each
module's docstring and in REPRODUCTION.md): ``claims`` (every claims file), ``studies`` (the hyperparameter
studies' verdicts), ``pretraining`` (the pre-training study's), ``scale`` (the full-permutation barrier and child
0's errors a barrier is read against), ``stats`` (how the claims files print numbers), ``cost`` (a sweep's cost
against the authors' workflow), ``single_weight`` (which weight a one-weight run perturbs, and when it first
gets a gradient), ``thresholds`` (a map's σ*(t) at the 2% error criterion, each t's plateau and fractions of
the full-permutation barrier), ``floor`` (below the map's plateau: down to one unit in the last place),
``trajectories`` (when the instability ends, how twins separate, their distance from init, their ensembles),
``alignment`` (activation matching beside weight matching) and ``search`` (σ* by per-seed threshold search).
The instability map itself (heatmaps, σ*(t), the seed-bootstrap statistics) is the
report's: :mod:`butterfly_jax.report.instability`.
"""
