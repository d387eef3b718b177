"""butterfly_jax: how sensitive is neural-network training to tiny perturbations?

Public API (stable; notebooks and other tools rely on it)::

  interpolate(params_a, params_b, alpha)    -> (1 - alpha) * a + alpha * b
  l2_distance(params_a, params_b)           -> float
  barrier_from_curve(alphas, values)        -> float (Eq. 1 on a grid)
  create_model(name, key, input_shape, num_classes, **kwargs) -> (apply_fn, params, spec)
  angular_cka(x, y)                         -> float radians (0 = same up to rotation and scale)
  weight_matching(key, spec, params_a, params_b, max_iter=100) -> permutation {name: index array}
  activation_matching(spec, acts_a, acts_b) -> permutation, from activations {name: [..., units]} on the same inputs
  apply_permutation(spec, perm, params)     -> permuted params (same function)
  random_permutation(key, spec, fixed_fraction) -> permutation
  fixed_point_fraction(perm)                -> float
  run_experiment(config, workdir)           -> results dict (also written to workdir/results.json)
  load_run(run_dir)                         -> Run: a saved run's config, results, table, trajectories, curves,
                                               params(k), interpolate(k, alpha), apply_fn, dataset (read lazily)
"""

from butterfly_jax.version import __version__

from butterfly_jax.core.evaluate import barrier_from_curve
from butterfly_jax.core.permutations import (PermutationSpec, activation_matching, apply_permutation,
                                             fixed_point_fraction, random_permutation, spec_for, weight_matching)
from butterfly_jax.core.similarity import angular_cka
from butterfly_jax.core.tree_math import interpolate, l2_distance
from butterfly_jax.models import create_model
from butterfly_jax.saved_run import Run, load_run

from butterfly_jax.run import experiment as _experiment


def run_experiment(config, workdir):
  """Runs one butterfly experiment (trunk, perturbation, children, evaluation); see docs/experiment.md."""
  return _experiment.run(config, workdir)


__all__ = ["interpolate", "l2_distance", "barrier_from_curve", "create_model", "angular_cka", "PermutationSpec",
           "apply_permutation", "fixed_point_fraction", "random_permutation", "spec_for", "weight_matching",
           "activation_matching",
           "run_experiment", "load_run", "Run",
           "__version__"]
