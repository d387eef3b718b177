"""The random-permutation proxy (the paper's Figure 4, left), on any saved run.

How much of a barrier can a permutation alone explain? Take a trained network θ, permute its hidden units
with a random permutation that leaves a chosen fraction of units in place, and measure the L2 distance
and the Eq. 1 barriers between θ and its permuted copy: the copy computes exactly the same function, so
every bit of barrier comes from the units that moved. Plotted against the fixed-point fraction, this is the
reference curve for the fixed points of weight matching between diverged twins.

    python -m butterfly_jax.proxy --run=DIR [--child=0] [--fractions=0,0.25,0.5,0.75,0.9,1] [--seeds=3] [--align]

(installed as ``butterfly-proxy``) reads ``DIR/config.json`` and the children's checkpoint
``DIR/checkpoints/children`` (or, for a run saved without it, its training-state checkpoint at the end of
training), evaluates on the same examples as the run (``eval.num_examples``, or
``--num_examples``) and writes ``DIR/proxy.json``. With ``--align``, each permuted copy is also aligned back to the
network by the run's own method (``eval.align_method``: weight matching, or activation matching on the run's
``eval.align_examples``): the positive control that tells "alignment returns the identity between twins" (a
finding) from "alignment finds nothing" (a broken method).
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np

from butterfly_jax.core import evaluate, permutations, rng, tree_math
from butterfly_jax.io import runtime
# a saved run's config and children, read as butterfly_jax.load_run reads them (importable from here as before)
from butterfly_jax.io.rundir import RunDirError, load_child, load_run_config, provenance, write_json_atomic
from butterfly_jax.run.commands import absl_argv, help_lists_flags_of
from butterfly_jax.run.setup import Setup

DEFAULT_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def recovery(spec, params, applied: dict, key, max_iter: int = 100, bias: bool = False, setup=None) -> dict:
  """``params`` aligned, as a run aligns its children, to its copy permuted by ``applied``: the positive control
  for alignment. Weight matching (:func:`permutations.weight_matching`); with ``setup`` (a
  :class:`butterfly_jax.run.setup.Setup`), activation matching on its :meth:`Setup.align_examples` instead.
  ``recovered_fraction`` is the fraction of units that the permutation found puts back where they were (1:
  ``applied`` undone exactly); ``l2`` is the distance left after alignment (0 also when the permutation found
  differs from ``applied``'s inverse only among units with equal weights or activations)."""
  permuted = permutations.apply_permutation(spec, applied, params)
  if setup is None:
    found = permutations.weight_matching(key, spec, params, permuted, max_iter, bias=bias)
  else:
    found = permutations.assign_units(spec, setup.activation_sums([params, permuted], None, [1])[1].scores())
  # apply(F, apply(P, θ)) takes θ at P[F] on every permuted axis: the copy is restored where P[F] is the identity
  composed = {name: np.asarray(applied[name])[np.asarray(found[name])] for name in applied}
  aligned = permutations.apply_permutation(spec, found, permuted)
  return {"recovered_fraction": permutations.fixed_point_fraction(composed),
          "l2": tree_math.l2_distance(params, aligned)}


def random_permutation_proxy(setup, params, fractions, seeds: int, key, num_examples: int | None = None,
                             align: bool = False):
  """Rows of (target fraction, seed, realised fixed-point fraction, L2, barriers) for ``params`` against
  random permutations of itself. ``setup`` is the run's :class:`butterfly_jax.run.setup.Setup` (data, model,
  evaluation); the examples are the run's own (:meth:`Setup.evaluation_examples`). With ``align``, each row
  also holds :func:`recovery` under the run's ``eval.align_method`` (``weight_matching``, with its
  ``eval.align_max_iter`` and ``eval.align_bias``, or ``activation_matching``): does it find the permutation?"""
  c = setup.c
  by_activations = align and c.eval.align_method == "activations"
  if by_activations and setup.norm_info is not None:
    raise ValueError("--align: the run aligns by activation matching (eval.align_method='activations'), which the "
                     "proxy runs without BatchNorm statistics; model.norm of this run has them")
  spec = permutations.spec_for(c.model.name, params)
  n = c.eval.num_examples if num_examples is None else num_examples
  indices = setup.evaluation_examples(n)
  alphas = evaluate.alpha_grid(c.eval.num_alphas)
  rows, family = [], [params]
  for i, f in enumerate(fractions):
    for s in range(seeds):
      perm = permutations.random_permutation(rng.proxy_permutation_key(key, i, s), spec, f)
      family.append(permutations.apply_permutation(spec, perm, params))
      rows.append({"target_fraction": float(f), "seed": s,
                   "fixed_point_fraction": permutations.fixed_point_fraction(perm),
                   "l2": tree_math.l2_distance(params, family[-1])})
      if align:
        rows[-1]["activation_matching" if by_activations else "weight_matching"] = recovery(
            spec, params, perm, rng.proxy_alignment_key(key, i, s), c.eval.align_max_iter, c.eval.align_bias,
            setup if by_activations else None)
  curves = setup.evaluate_family(tree_math.stack(family), indices, alphas)
  for row, barrier in zip(rows, evaluate.pair_barriers(curves, alphas, len(family))[0]):
    row["barrier"] = barrier
  return rows, {s: len(v) for s, v in indices.items()}


def run_proxy(run_dir, child=0, fractions=DEFAULT_FRACTIONS, seeds=3, num_examples=None, seed=0,
              align=False) -> dict:
  """Runs the proxy on a saved run and writes ``run_dir/proxy.json``; returns what it wrote."""
  for f in fractions:
    if not 0.0 <= f <= 1.0:
      raise ValueError(f"--fractions: every fraction must lie in [0, 1], got {f}")
  if seeds < 1:
    raise ValueError(f"--seeds: expected an integer >= 1, got {seeds}")
  c = load_run_config(run_dir)
  runtime.configure(c.runtime.deterministic)  # the run's XLA flags, before JAX starts its backends
  params = load_child(run_dir, child)
  setup = Setup(c)
  rows, n = random_permutation_proxy(setup, params, fractions, seeds, jax.random.key(seed), num_examples, align)
  out = {"child": child, "seed": seed, "num_examples": n, "rows": rows, "provenance": provenance()}
  write_json_atomic(Path(run_dir) / "proxy.json", out)
  return json.loads((Path(run_dir) / "proxy.json").read_text())


def main(argv=None):
  from absl import app, flags

  flags.DEFINE_string("run", None, "A finished run directory (with checkpoints/children, or a training state at "
                      "its end).", required=True)
  flags.DEFINE_integer("child", 0, "Which child of the run to permute.")
  flags.DEFINE_list("fractions", [str(f) for f in DEFAULT_FRACTIONS], "Fractions of units left in place.")
  flags.DEFINE_integer("seeds", 3, "Random permutations per fraction.")
  flags.DEFINE_integer("num_examples", None, "Examples per split (default: the run's eval.num_examples; 0 = all).")
  flags.DEFINE_integer("seed", 0, "Seed of the random permutations.")
  flags.DEFINE_bool("align", False, "Also align each permuted copy back to the network by the run's "
                    "eval.align_method (weight or activation matching): does alignment recover a permutation that "
                    "is known to be there?")

  def _main(_):
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax is chatty at INFO
    F = flags.FLAGS
    try:
      fractions = [float(f) for f in F.fractions]
    except ValueError:
      print(f"error: --fractions: expected numbers in [0, 1], got {F.fractions}", file=sys.stderr)
      sys.exit(2)
    try:
      out = run_proxy(F.run, F.child, fractions, F.seeds, F.num_examples, F.seed, F.align)
    except (ValueError, RunDirError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    extra = f" {'recovered':>9} {'aligned L2':>10}" if F.align else ""
    print(f"{'fixed':>8} {'seed':>4} {'L2':>10} {'train loss':>11} {'test loss':>10} {'train err':>10} {'test err':>9}"
          + extra)
    fmt = lambda x, w: f"{'nan':>{w}}" if x is None else f"{x:{w}.4f}"
    for r in out["rows"]:
      b, w = r["barrier"], r.get("weight_matching", r.get("activation_matching"))
      print(f"{r['fixed_point_fraction']:8.3f} {r['seed']:4d} {fmt(r['l2'], 10)} {fmt(b['train']['loss'], 11)} "
            f"{fmt(b['test']['loss'], 10)} {fmt(b['train']['error'], 10)} {fmt(b['test']['error'], 9)}"
            + (f" {fmt(w['recovered_fraction'], 9)} {fmt(w['l2'], 10)}" if w else ""))
    print(f"proxy: {Path(F.run) / 'proxy.json'}")

  help_lists_flags_of(__name__)
  argv = absl_argv(list(sys.argv if argv is None else argv))
  sys.argv = argv
  app.run(_main, argv)


if __name__ == "__main__":
  main()
