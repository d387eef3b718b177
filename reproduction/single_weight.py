"""The single-weight runs of a map sweep: which weight each seed drew, how often that weight gets a gradient
early in training, and which perturbation times end bitwise where t = 0 ends.

A one-weight perturbation (``perturb.mask.single=random``) draws its weight from the run's perturbation key, so
every t of a seed perturbs the same weight. If no batch before step t gives that weight a gradient, and it has no
effect on the forward pass of those batches, perturbing it at 0 or at t is the same perturbation: the runs end
bitwise equal. This prints the evidence, per seed, as Markdown:

- the weight (``results.json``'s ``perturb.weight``, or drawn again from the run's config as the run drew it);
- on how many of the training set's examples that weight has a nonzero per-example gradient at initialisation,
  and the first step of the run's batch order whose batch holds one (the first epoch's batches, in order, as
  the run's trunk sees them);
- for each t of the seed, whether every child's final numbers equal those of the t = 0 run exactly.

The gradient is taken at the initial weights, not along the trunk's trajectory: it says when the weight can
first matter, not that the trunk's later steps leave it idle.

    python -m reproduction.single_weight reproduction/map/cnn > reproduction/map/cnn_single_weight.md

(from the repository root).
"""

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

from butterfly_jax.core import members, perturb, rng, tree_math
from butterfly_jax.io import results
from butterfly_jax.proxy import load_run_config  # config.json with fields added since the run filled in
from butterfly_jax.run.setup import Setup


def single_weight_runs(runs: Path) -> dict[int, dict[int, Path]]:
  """``{seed: {t: run directory}}`` of the finished runs under ``runs`` that perturb one weight."""
  out = {}
  for cfg_path in sorted(runs.glob("*/config.json")):
    run = cfg_path.parent
    cfg = json.loads(cfg_path.read_text())
    if not cfg["perturb"]["mask"].get("single") or not (run / "results.json").exists():
      continue
    t = results.load(run)["steps"]["t"]
    out.setdefault(int(cfg["seed"]), {})[int(t)] = run
  return out


def drawn_weight(setup, params) -> str:
  c = setup.c
  mask = perturb.build_mask(params, c.perturb.mask, rng.perturb_key(setup.keys, "mask"), bool(c.init.checkpoint))
  return perturb.single_weight_name(mask)


def gradient_reach(setup, params, weight: str) -> tuple[int, int | None, int]:
  """``(examples, first_step, total)``: the number of training examples whose loss has a nonzero gradient with
  respect to ``weight`` at ``params``, the first step (of the run's first epoch, in its batch order) whose batch
  holds one (None: no batch of the epoch), and the number of examples looked at."""
  parsed = perturb.parse_single_weight(weight)
  if parsed is None:
    raise ValueError(f"not a weight of the form 'path[i,j,...]': {weight!r}")
  path, index = parsed
  flat = tree_math.flat_dict(params)
  treedef = jax.tree_util.tree_structure(params)
  order = list(flat)

  loss_fn = members.cross_entropy(setup.apply_fn, setup.c.train.compute_dtype)  # the training step's loss

  def loss(w, x, y):
    leaves = [flat[p].at[index].set(w) if p == path else flat[p] for p in order]
    return loss_fn(jax.tree_util.tree_unflatten(treedef, leaves), x[None], y[None])

  per_example = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))
  w0 = flat[path][index]
  perm, augment_key = setup.sgd_noise(0)
  examples, first, total = 0, None, 0
  for step in range(setup.batcher.steps_per_epoch):
    x, y = setup.batcher.step_batch(setup.train_data, perm, augment_key, step)
    nonzero = int(jnp.sum(per_example(w0, x, y) != 0))
    examples += nonzero
    total += len(y)
    if nonzero and first is None:
      first = step
  return examples, first, total


def same_end(a: Path, b: Path) -> bool:
  """Every child's final numbers (losses, accuracies, distances, barriers, CKA) equal, exactly."""
  ca, cb = (results.load(r)["children"] for r in (a, b))
  strip = lambda c: {k: v for k, v in c.items() if k not in ("perturb", "index")}
  return len(ca) == len(cb) and all(strip(x) == strip(y) for x, y in zip(ca, cb))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("runs", type=Path, help="a map sweep's runs directory")
  args = p.parse_args(argv)
  by_seed = single_weight_runs(args.runs)
  if not by_seed:
    raise SystemExit(f"{args.runs}: no finished single-weight runs (perturb.mask.single) there")
  rows = []
  for seed, runs in sorted(by_seed.items()):
    first_run = runs[min(runs)]
    setup = Setup(load_run_config(first_run))
    params = setup.init_fn(setup.keys["init"])
    weight = drawn_weight(setup, params)
    recorded = {c["perturb"].get("weight") for r in runs.values()
                for c in results.load(r)["children"][1:]} - {None}
    if recorded - {weight}:
      raise SystemExit(f"seed {seed}: the runs recorded {sorted(recorded)}, the config draws {weight}")
    examples, first, total = gradient_reach(setup, params, weight)
    base = runs[min(runs)]
    for t, run in sorted(runs.items()):
      same = "(itself)" if run == base else ("yes" if same_end(base, run) else "no")
      rows.append([seed, weight, f"{examples} of {total}", "none" if first is None else first, t,
                   f"{min(runs)}: {same}"])
  print(f"Single-weight runs under `{args.runs}` ({sum(map(len, by_seed.values()))} runs; "
        "`reproduction/single_weight.py`). The gradient is at the initial weights, over the first epoch's "
        "batches in the run's order.\n")
  head = ["seed", "weight", "examples with a nonzero gradient at init", "first step whose batch has one", "t",
          "ends bitwise as the run at t ="]
  print("| " + " | ".join(head) + " |\n| " + " | ".join("---" for _ in head) + " |")
  for r in rows:
    print("| " + " | ".join(str(v) for v in r) + " |")


if __name__ == "__main__":
  sys.exit(main())
