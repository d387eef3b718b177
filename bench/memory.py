"""Device memory per child (parameters, optimizer state, gradients, activations) and the largest family per GPU.

    python bench/memory.py [--config=configs/resnet20.py] [--data_devices=1,2,4] [--family_ks=1,2] \\
        [--out=bench/memory.json] [--set a.b=v ...]

For the config's model (its data's shapes; convolutions as XLA's own, the GPU default): each child's bytes from
``butterfly_jax.memory.child_memory`` at the training batch split over 1, 2, 4 data devices, in float32 and
bfloat16 compute; the whole family step's memory analysis for K = 1, 2 (``sequential`` and ``vmap``), to show
how a family's temporaries grow with K; and the largest K per 80 GiB device, with JAX's default GPU
preallocation (75%) and with ``XLA_PYTHON_CLIENT_MEM_FRACTION=0.95``. Compiled for the backend it runs on
(on CPU: XLA:CPU's buffer assignment, an estimate of a GPU's).

Also OLMo-1B from its published shapes (16 layers, d_model 2048, 16 heads, SwiGLU MLP of 8192 hidden units,
vocabulary 50,304, tied embeddings, no biases, LayerNorm without parameters), analytically: this package
has no OLMo model to compile (:func:`olmo_1b`).
"""

import argparse
import json
import platform

import jax
import jax.numpy as jnp
import numpy as np
import optax

from butterfly_jax import batches, config as config_lib, members, memory, optim
from butterfly_jax.launch import sweep as sweep_lib
from butterfly_jax.models import make_model
from butterfly_jax.models.registry import MODEL_KWARGS

GIB = 2 ** 30
DEVICE_BYTES = 80 * GIB
# (input shape, classes, training examples) of the datasets a GPU config names; the shapes are all that is used
DATA_SHAPES = {"cifar10": ((32, 32, 3), 10, 50_000), "cifar100": ((32, 32, 3), 100, 50_000),
               "mnist": ((28, 28, 1), 10, 60_000), "fashion_mnist": ((28, 28, 1), 10, 60_000),
               "digits": ((8, 8, 1), 10, 1_437)}


def fits(per_child: int, shared: int) -> dict:
  """Largest K per 80 GiB device at JAX's default preallocation and at 95%."""
  return {f"k_at_{int(f * 100)}pct": memory.largest_family(per_child, int(f * DEVICE_BYTES), shared)
          for f in (0.75, 0.95)}


def family_step(c, apply_fn, init_fn, input_shape, num_train, k, strategy):
  """The memory analysis of the run's own train step for a family of ``k`` (one device, no data axis)."""
  steps = config_lib.resolve_steps(c, num_train)
  transform = optim.make_transform(c, steps["total"], steps["warmup"])
  schedule = optim.make_schedule(c, steps["total"], steps["warmup"])
  a = c.data.augment
  channels = input_shape[-1]
  batcher = batches.Batcher(batch_size=c.train.batch_size, num_examples=num_train, mean=[0.5] * channels,
                            std=[0.25] * channels, flip=a.flip, translate=a.translate, cutout=a.cutout,
                            rotate=a.rotate, erase=a.erase, translate_fill=a.translate_fill)
  step = members.make_train_step(apply_fn, transform, schedule, batcher, strategy, None, c.train.compute_dtype)
  params = jax.eval_shape(init_fn, jax.random.key(0))
  opt = jax.eval_shape(transform.init, params)
  stack = lambda t: jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((k, *x.shape), x.dtype), t)
  family = members.Family(stack(params), stack(opt), jax.ShapeDtypeStruct((k,), jnp.int32),
                          jax.ShapeDtypeStruct((k,), jnp.int32))
  data = (jax.ShapeDtypeStruct((num_train, *input_shape), jnp.uint8), jax.ShapeDtypeStruct((num_train,), jnp.int32))
  perm = jax.ShapeDtypeStruct((num_train,), jnp.int32)
  return memory.compiled_memory(step, family, data, perm, jax.random.key(0), jnp.int32(0))


def olmo_1b(batch: int, seq: int, data_devices: int, compute_dtype: str) -> dict:
  """OLMo-1B's bytes per child from its published shapes, AdamW (two float32 moments per parameter).

  Activations kept for the backward pass, per token and layer (no dropout, as OLMo trains): the residual
  stream and the normalised input of each block (4h), Q, K and V (3h), the attention's softmax (heads x seq),
  its output before the projection (h), the MLP's up-projection (2 x 8192, gate and value) and SwiGLU's output
  (8192); after the last layer the normalised stream (2h) and the logits (vocabulary, in the compute dtype,
  plus a float32 copy for the loss under bfloat16). Elements of the compute dtype; under bfloat16 also the
  parameters' bf16 copy. Attention that recomputes its softmax (flash attention) drops the heads x seq term.
  """
  layers, h, heads, f, vocab = 16, 2048, 16, 8192, 50_304
  params = {"embedding": jax.ShapeDtypeStruct((vocab, h), jnp.float32),   # tied: also the output projection
            "layers": [{"att_qkv": jax.ShapeDtypeStruct((h, 3 * h), jnp.float32),
                        "att_out": jax.ShapeDtypeStruct((h, h), jnp.float32),
                        "ff_proj": jax.ShapeDtypeStruct((h, 2 * f), jnp.float32),
                        "ff_out": jax.ShapeDtypeStruct((f, h), jnp.float32)} for _ in range(layers)]}
  n = int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
  opt = jax.eval_shape(optax.adamw(1e-4).init, params)
  e = 2 if compute_dtype == "bfloat16" else 4
  tokens = batch // data_devices * seq
  per_token = layers * (8 * h + 3 * f + heads * seq) * e + 2 * h * e + vocab * e + (vocab * 4 if e != 4 else 0)
  activations = tokens * per_token + (2 * n if compute_dtype == "bfloat16" else 0)
  child = memory.ChildMemory(memory.tree_bytes(params), memory.tree_bytes(opt), 4 * n, activations)
  return {"num_params": n, "batch": batch, "seq": seq, "data_devices": data_devices, "compute_dtype": compute_dtype,
          **child._asdict(), "total": child.total, **fits(child.total, 0)}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", default="configs/resnet20.py")
  ap.add_argument("--data_devices", default="1,2,4")
  ap.add_argument("--family_ks", default="1,2", help="K of the whole-step analyses ('' = none)")
  ap.add_argument("--olmo_batch", type=int, default=32)
  ap.add_argument("--olmo_seq", type=int, default=128, help="GLUE's max_length in butterfly_jax.text")
  ap.add_argument("--out", default="bench/memory.json")
  ap.add_argument("--set", action="append", default=[], help="a.b=value overrides, parsed by the field's type")
  args = ap.parse_args()
  c = sweep_lib.load_config(args.config, args.set)
  input_shape, classes, num_train = DATA_SHAPES[c.data.name]
  kwargs = c.model.kwargs.to_dict()
  if "conv" in MODEL_KWARGS.get(c.model.name, ()):
    kwargs.setdefault("conv", "xla")
  apply_fn, init_fn = make_model(c.model.name, input_shape, classes, **kwargs)
  steps = config_lib.resolve_steps(c, num_train)
  transform = optim.make_transform(c, steps["total"], steps["warmup"])
  shared = num_train * int(np.prod(input_shape)) + 8 * num_train  # uint8 images, int32 labels and permutation
  out = {"backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
         "machine": platform.processor() or platform.machine(), "config": args.config, "model": c.model.name,
         "model_kwargs": kwargs, "batch": c.train.batch_size, "optim": c.optim.name, "shared_data": shared,
         "children": [], "family_steps": [], "olmo_1b": []}
  for dtype in ("float32", "bfloat16"):
    for d in (int(x) for x in args.data_devices.split(",")):
      child = memory.child_memory(init_fn, apply_fn, transform, input_shape, c.train.batch_size,
                                  compute_dtype=dtype, data_devices=d)
      out["children"].append({"compute_dtype": dtype, "data_devices": d, **child._asdict(), "total": child.total,
                              **fits(child.total, shared)})
      print(json.dumps(out["children"][-1]), flush=True)
  for strategy in ("sequential", "vmap"):
    for k in (int(x) for x in args.family_ks.split(",") if x):
      out["family_steps"].append({"strategy": strategy, "k": k,
                                  **family_step(c, apply_fn, init_fn, input_shape, num_train, k, strategy)})
      print(json.dumps(out["family_steps"][-1]), flush=True)
  for dtype in ("float32", "bfloat16"):
    for d in (1, 2, 4):
      out["olmo_1b"].append(olmo_1b(args.olmo_batch, args.olmo_seq, d, dtype))
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
  print(f"\n{c.model.name} {kwargs}, batch {c.train.batch_size}, {c.optim.name} (MiB per child; K per 80 GiB at 75% / 95%)")
  for r in out["children"]:
    print(f"  {r['compute_dtype']:9} d={r['data_devices']}: params {r['params'] / 2**20:7.1f}  opt {r['opt_state'] / 2**20:7.1f}"
          f"  grads {r['grads'] / 2**20:7.1f}  activations {r['activations'] / 2**20:8.1f}  total {r['total'] / 2**20:8.1f}"
          f"  K {r['k_at_75pct']} / {r['k_at_95pct']}")
  for r in out["family_steps"]:
    print(f"  family step {r['strategy']:10} K={r['k']}: temp {r['temp'] / 2**20:8.1f} MiB, peak {r['peak'] / 2**20:8.1f} MiB")
  print(f"\nOLMo-1B (analytic), batch {args.olmo_batch} x {args.olmo_seq} tokens, AdamW (GiB per child)")
  for r in out["olmo_1b"]:
    print(f"  {r['compute_dtype']:9} d={r['data_devices']}: params {r['params'] / GIB:5.2f}  opt {r['opt_state'] / GIB:5.2f}"
          f"  grads {r['grads'] / GIB:5.2f}  activations {r['activations'] / GIB:6.2f}  total {r['total'] / GIB:6.2f}"
          f"  K {r['k_at_75pct']} / {r['k_at_95pct']}")


if __name__ == "__main__":
  main()
