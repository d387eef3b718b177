"""Do identical members stay bitwise equal under the ``sequential`` strategy? (BUILD_NOTES.md, "Twins under the
sequential strategy").

    XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_fusion_emitters=true" \\
        python bench/sequential_twins.py
    XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_fusion_emitters=false" \\
        python bench/sequential_twins.py

For each small network below, K = 3 identical members (one initialisation) train 10 steps of the project's family
step (SGD momentum 0.9 at lr 0.01, batch 16 of 64 random examples) under ``sequential``: K copies of the step unrolled in one
program. Prints, per network, whether the members' bit patterns are still equal, or the first step at which they
parted.
XLA reads ``XLA_FLAGS`` once per process: set it in the environment (this script adds none).
"""

import jax
import jax.numpy as jnp
import optax

from butterfly_jax.core import members
from butterfly_jax.models import make_model

LR = 0.01  # every network stays finite on the stand-in data at this rate (0.05 blew the CNNs up)
NETWORKS = {
    "resnet8 w0.5 layernorm": ("resnet", (8, 8, 3), dict(depth=8, width=0.5, norm="layernorm")),
    "resnet8 w0.75 layernorm": ("resnet", (8, 8, 3), dict(depth=8, width=0.75, norm="layernorm")),
    "resnet8 w1 layernorm": ("resnet", (8, 8, 3), dict(depth=8, width=1.0, norm="layernorm")),
    "resnet8 w0.5 batchnorm": ("resnet", (8, 8, 3), dict(depth=8, width=0.5, norm="batchnorm")),
    "cnn 5-7, dense 9": ("cnn", (8, 8, 1), dict(channels=(5, 7), dense=9)),
    "cnn 16-32, dense 128": ("cnn", (8, 8, 1), dict(channels=(16, 32), dense=128)),
    "mlp 33-17": ("mlp", (8, 8, 1), dict(hidden=(33, 17))),
}


class _Batches:
  """Batch ``step % 4`` of 16 from the permutation: the same batch for every member."""

  def step_batch(self, data, perm, key, step):
    x, y = data
    i = jax.lax.dynamic_slice_in_dim(perm, (step % 4) * 16, 16)
    return x[i], y[i]


def parted_at(model, shape, kwargs, k=3, steps=10):
  """The first step after which the ``k`` identical members differ, or None."""
  apply_fn, init_fn = make_model(model, shape, 10, **kwargs)
  params = init_fn(jax.random.key(0))
  tx = optax.sgd(1.0, momentum=0.9)
  x = jax.random.normal(jax.random.key(1), (64, *shape))
  y = jax.random.randint(jax.random.key(2), (64,), 0, 10)
  fam = members.new_family([params] * k, [tx.init(params)] * k, [0] * k, [10 ** 6] * k)
  step_fn = members.make_train_step(apply_fn, tx, lambda s: jnp.float32(LR), _Batches(), "sequential")
  for s in range(steps):
    fam, _, _ = step_fn(fam, (x, y), jnp.arange(64), jax.random.key(3), s)
    bits = [jax.lax.bitcast_convert_type(leaf, jnp.uint32) for leaf in jax.tree_util.tree_leaves(fam.params)]
    if any(bool(jnp.any(b[0] != b[j])) for b in bits for j in range(1, k)):  # bit patterns: NaN == NaN here
      return s
  return None


def finite(model, shape, kwargs):
  """Whether one member's weights stay finite over the same 10 steps (the stand-in data may blow a network up)."""
  apply_fn, init_fn = make_model(model, shape, 10, **kwargs)
  params = init_fn(jax.random.key(0))
  tx = optax.sgd(1.0, momentum=0.9)
  x = jax.random.normal(jax.random.key(1), (64, *shape))
  y = jax.random.randint(jax.random.key(2), (64,), 0, 10)
  fam = members.new_family([params], [tx.init(params)], [0], [10 ** 6])
  step_fn = members.make_train_step(apply_fn, tx, lambda s: jnp.float32(LR), _Batches(), "sequential")
  for s in range(10):
    fam, _, _ = step_fn(fam, (x, y), jnp.arange(64), jax.random.key(3), s)
  return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(fam.params))


def main():
  for name, (model, shape, kwargs) in NETWORKS.items():
    s = parted_at(model, shape, kwargs)
    note = "" if finite(model, shape, kwargs) else " (its weights are not finite after 10 steps)"
    print(f"{name:26s} " + ("bitwise equal after 10 steps" if s is None else f"parted at step {s}") + note,
          flush=True)


if __name__ == "__main__":
  main()
