"""Members-axis benchmark: train-step time of a family of K networks under vmap and sequential.

    python bench/members_axis.py [--models resnet20_w1,cnn,mlp] [--ks 1,2,8] [--steps 5] [--out bench/members_axis.json]

Times ``--steps`` jitted training steps (the project's own family step, batch 128) on random CIFAR-shaped
(or 28x28x1) uint8 data, after one warm-up step (compilation excluded), and prints a table of seconds per
step and the cost of a family relative to one network.
"""

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from butterfly_jax.config import default_config
from butterfly_jax.core import batches, members, optim
from butterfly_jax.models import make_model

from bench_models import MODELS  # noqa: E402  (bench/bench_models.py)


def time_family(model, k, strategy, steps, batch=128, n=2048):
  name, kwargs, shape = MODELS[model]
  apply_fn, init_fn = make_model(name, shape, 10, **kwargs)
  c = default_config()
  transform = optim.make_transform(c)
  schedule = optim.make_schedule(c, 1000, 10)
  rng = np.random.default_rng(0)
  data = (jnp.asarray(rng.integers(0, 256, (n, *shape), dtype=np.uint8)),
          jnp.asarray(rng.integers(0, 10, n, dtype=np.int32)))
  batcher = batches.Batcher(batch_size=batch, num_examples=n, mean=[0.5] * shape[-1], std=[0.25] * shape[-1],
                            flip=False, translate=0, cutout=0)
  step_fn = members.make_train_step(apply_fn, transform, schedule, batcher, strategy)
  params = [init_fn(jax.random.key(i)) for i in range(k)]
  fam = members.new_family(params, [transform.init(p) for p in params], [0] * k, [10**9] * k)
  key = jax.random.key(0)
  perm = batcher.epoch_permutation(key, 0)
  fam, loss, _ = step_fn(fam, data, perm, key, jnp.int32(0))  # compile
  jax.block_until_ready(fam)
  tic = time.perf_counter()
  for s in range(1, 1 + steps):
    fam, loss, _ = step_fn(fam, data, perm, key, jnp.int32(s))  # steps < one epoch of 16
  jax.block_until_ready((fam, loss))
  return (time.perf_counter() - tic) / steps


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--models", default="resnet20_w1,cnn,mlp")
  ap.add_argument("--ks", default="1,2,8")
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--out", default="")
  args = ap.parse_args()
  rows = []
  for model in args.models.split(","):
    for strategy in ("sequential", "vmap"):
      for k in (int(v) for v in args.ks.split(",")):
        s = time_family(model, k, strategy, args.steps)
        rows.append({"model": model, "strategy": strategy, "k": k, "s_per_step": s})
        print(f"{model:12s} {strategy:10s} K={k}: {s * 1e3:9.1f} ms/step", flush=True)
  print("\nfamily cost relative to one network (K=1 of the same strategy):")
  for r in rows:
    base = next(b for b in rows if b["model"] == r["model"] and b["strategy"] == r["strategy"] and b["k"] == 1)
    r["relative_to_single"] = r["s_per_step"] / base["s_per_step"]
    print(f"{r['model']:12s} {r['strategy']:10s} K={r['k']}: {r['relative_to_single']:.2f}x")
  meta = {"machine": platform.processor() or platform.machine(), "cpus": jax.local_device_count(),
          "backend": jax.default_backend(), "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
