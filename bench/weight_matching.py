"""Weight-matching benchmark: time to align one network to another (Git Re-Basin weight matching).

    python bench/weight_matching.py [--models resnet20_w1,resnet20_w2,cnn,mlp] [--repeats 3] [--out bench/weight_matching.json]

For each model, two independent initialisations (the hardest case for the matcher: nothing is shared) and a
recovery case (a network against a random permutation of itself plus 1% noise) are matched with the
project's ``weight_matching`` (host, float64, scipy's linear_sum_assignment) until no permutation improves.
Prints seconds per match, rounds, seconds per round, and the L2 distance before and after.
"""

import argparse
import json
import platform
import time

import jax
import numpy as np
import scipy

import butterfly_jax as bj
from butterfly_jax.core import permutations

from bench_models import MODELS  # noqa: E402  (bench/bench_models.py)


def bench(model, repeats):
  name, kwargs, shape = MODELS[model]
  _, a, spec = bj.create_model(name, jax.random.key(0), shape, 10, **kwargs)
  _, b, _ = bj.create_model(name, jax.random.key(1), shape, 10, **kwargs)
  noisy = jax.tree_util.tree_map(lambda x, n: x + 0.01 * n * (np.std(x) + 1e-8), a,
                                 bj.create_model(name, jax.random.key(2), shape, 10, **kwargs)[1])
  hidden = bj.apply_permutation(spec, bj.random_permutation(jax.random.key(3), spec, 0.0), noisy)
  rows = []
  for case, other in (("independent", b), ("recover", hidden)):
    times = []
    for r in range(repeats):
      tic = time.perf_counter()
      perm, rounds = permutations.weight_matching_rounds(jax.random.key(r), spec, a, other)
      times.append(time.perf_counter() - tic)
    aligned = bj.apply_permutation(spec, perm, other)
    rows.append({"model": model, "case": case, "num_params": int(sum(x.size for x in jax.tree_util.tree_leaves(a))),
                 "num_perms": len(spec.names), "units": int(sum(spec.sizes.values())),
                 "seconds": float(np.median(times)), "rounds": rounds,
                 "seconds_per_round": float(np.median(times)) / rounds,
                 "l2_before": bj.l2_distance(a, other), "l2_after": bj.l2_distance(a, aligned)})
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--models", default="resnet20_w1,resnet20_w2,cnn,mlp")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--out", default="bench/weight_matching.json")
  args = ap.parse_args()
  rows = []
  print(f"{'model':<12} {'case':<12} {'params':>8} {'perms':>5} {'s/match':>8} {'rounds':>6} {'s/round':>8} "
        f"{'L2 before':>10} {'L2 after':>9}")
  for m in args.models.split(","):
    for r in bench(m, args.repeats):
      rows.append(r)
      print(f"{r['model']:<12} {r['case']:<12} {r['num_params']:>8} {r['num_perms']:>5} {r['seconds']:>8.3f} "
            f"{r['rounds']:>6} {r['seconds_per_round']:>8.3f} {r['l2_before']:>10.3f} {r['l2_after']:>9.3f}")
  meta = {"command": "python bench/weight_matching.py " + " ".join(f"--{k}={v}" for k, v in vars(args).items()),
          "machine": platform.platform(), "processor": platform.processor(), "cpus": __import__("os").cpu_count(),
          "jax": jax.__version__, "scipy": scipy.__version__, "numpy": np.__version__}
  with open(args.out, "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
