"""Device memory per child (parameters, optimizer state, gradients, activations) and the largest family per GPU.

    python bench/memory.py [--config=configs/resnet20.py] [--data_devices=1,2,4] [--family_ks=1,2] \\
        [--out=bench/memory.json] [--set a.b=v ...]

For the config's model (its data's shapes; convolutions as XLA's own, the GPU default): each child's bytes from
``butterfly_jax.core.memory.child_memory`` at the training batch split over 1, 2, 4 data devices, in float32 and
bfloat16 compute; the whole family step's memory analysis for K = 1, 2 (``sequential`` and ``vmap``), to show
how a family's temporaries grow with K; and the largest K per 80 GiB device, with JAX's default GPU
preallocation (75%) and with ``XLA_PYTHON_CLIENT_MEM_FRACTION=0.95``. Compiled for the backend it runs on
(on CPU: XLA:CPU's buffer assignment, an estimate of a GPU's).

A GLUE config (``data.name="glue/<task>"``: BERT, OLMo) is compiled the same way from its model and
``data.max_length``, with int32 token inputs and, for BERT, its dropout in the training step; its training-set
size is the task's (:data:`GLUE_TRAIN`), which only the family step's replicated data uses.

    python bench/memory.py --config=configs/olmo1b_qnli.py --family_ks= --out=bench/memory_olmo1b.json
    python bench/memory.py --config=configs/multiberts_qnli.py --family_ks= --out=bench/memory_bert.json
"""

import argparse
import json
import platform

import jax
import jax.numpy as jnp
import numpy as np

from butterfly_jax import config as config_lib
from butterfly_jax.core import batches, members, memory, optim
from butterfly_jax.io import text
from butterfly_jax.launch import sweep as sweep_lib
from butterfly_jax.models import make_model
from butterfly_jax.models.registry import MODEL_KWARGS, has_dropout, input_dtype

GIB = 2 ** 30
DEVICE_BYTES = 80 * GIB
# (input shape, classes, training examples) of the datasets a GPU config names; the shapes are all that is used
DATA_SHAPES = {"cifar10": ((32, 32, 3), 10, 50_000), "cifar100": ((32, 32, 3), 100, 50_000),
               "mnist": ((28, 28, 1), 10, 60_000), "fashion_mnist": ((28, 28, 1), 10, 60_000),
               "digits": ((8, 8, 1), 10, 1_437)}
# GLUE training-set sizes (the tfds/official train splits)
GLUE_TRAIN = {"cola": 8_551, "sst2": 67_349, "mrpc": 3_668, "qqp": 363_846, "mnli": 392_702,
              "mnli_mismatched": 392_702, "qnli": 104_743, "rte": 2_490, "wnli": 635}


def data_shape(c) -> tuple:
  """(input shape, classes, training examples) of the config's data; a GLUE task's input is ``(3, max_length)``."""
  if text.is_text_dataset(c.data.name):
    task = text.glue_task(c.data.name[len(text.GLUE_PREFIX):])
    return (3, c.data.max_length or text.DEFAULT_MAX_LENGTH), task.num_classes, GLUE_TRAIN[task.name]
  return DATA_SHAPES[c.data.name]


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
  tokens = text.is_text_dataset(c.data.name)
  channels = None if tokens else input_shape[-1]  # token ids are read as they are (no normalisation)
  batcher = batches.Batcher(batch_size=c.train.batch_size, num_examples=num_train,
                            mean=None if tokens else [0.5] * channels, std=None if tokens else [0.25] * channels,
                            flip=a.flip, translate=a.translate, cutout=a.cutout, rotate=a.rotate, erase=a.erase,
                            translate_fill=a.translate_fill)
  step = members.make_train_step(apply_fn, transform, schedule, batcher, strategy, None, c.train.compute_dtype,
                                 dropout=has_dropout(c.model.name, **c.model.kwargs.to_dict()))
  params = jax.eval_shape(init_fn, jax.random.key(0))
  opt = jax.eval_shape(transform.init, params)
  stack = lambda t: jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct((k, *x.shape), x.dtype), t)
  family = members.Family(stack(params), stack(opt), jax.ShapeDtypeStruct((k,), jnp.int32),
                          jax.ShapeDtypeStruct((k,), jnp.int32))
  dtype = jnp.int32 if tokens else jnp.uint8
  data = (jax.ShapeDtypeStruct((num_train, *input_shape), dtype), jax.ShapeDtypeStruct((num_train,), jnp.int32))
  perm = jax.ShapeDtypeStruct((num_train,), jnp.int32)
  return memory.compiled_memory(step, family, data, perm, jax.random.key(0), jnp.int32(0))


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", default="configs/resnet20.py")
  ap.add_argument("--data_devices", default="1,2,4")
  ap.add_argument("--family_ks", default="1,2", help="K of the whole-step analyses ('' = none)")
  ap.add_argument("--out", default="bench/memory.json")
  ap.add_argument("--set", action="append", default=[], help="a.b=value overrides, parsed by the field's type")
  args = ap.parse_args()
  c = sweep_lib.load_config(args.config, args.set)
  input_shape, classes, num_train = data_shape(c)
  kwargs = c.model.kwargs.to_dict()
  if "conv" in MODEL_KWARGS.get(c.model.name, ()):
    kwargs.setdefault("conv", "xla")
  apply_fn, init_fn = make_model(c.model.name, input_shape, classes, **kwargs)
  steps = config_lib.resolve_steps(c, num_train)
  transform = optim.make_transform(c, steps["total"], steps["warmup"])
  item = 4 if text.is_text_dataset(c.data.name) else 1  # int32 token ids, uint8 pixels
  shared = num_train * int(np.prod(input_shape)) * item + 8 * num_train  # inputs, int32 labels and permutation
  dropout = has_dropout(c.model.name, **kwargs)
  out = {"backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
         "machine": platform.processor() or platform.machine(), "config": args.config, "model": c.model.name,
         "model_kwargs": kwargs, "batch": c.train.batch_size, "optim": c.optim.name, "shared_data": shared,
         "dropout_in_training": dropout, "children": [], "family_steps": []}
  for dtype in ("float32", "bfloat16"):
    for d in (int(x) for x in args.data_devices.split(",")):
      child = memory.child_memory(init_fn, apply_fn, transform, input_shape, c.train.batch_size,
                                  input_dtype=input_dtype(c.model.name), compute_dtype=dtype, data_devices=d,
                                  dropout=dropout)
      out["children"].append({"compute_dtype": dtype, "data_devices": d, **child._asdict(), "total": child.total,
                              **fits(child.total, shared)})
      print(json.dumps(out["children"][-1]), flush=True)
  for strategy in ("sequential", "vmap"):
    for k in (int(x) for x in args.family_ks.split(",") if x):
      out["family_steps"].append({"strategy": strategy, "k": k,
                                  **family_step(c, apply_fn, init_fn, input_shape, num_train, k, strategy)})
      print(json.dumps(out["family_steps"][-1]), flush=True)
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
  print(f"\n{c.model.name} {kwargs}, batch {c.train.batch_size}, {c.optim.name} (MiB per child; K per 80 GiB at 75% / 95%)")
  for r in out["children"]:
    print(f"  {r['compute_dtype']:9} d={r['data_devices']}: params {r['params'] / 2**20:7.1f}  opt {r['opt_state'] / 2**20:7.1f}"
          f"  grads {r['grads'] / 2**20:7.1f}  activations {r['activations'] / 2**20:8.1f}  total {r['total'] / 2**20:8.1f}"
          f"  K {r['k_at_75pct']} / {r['k_at_95pct']}")
  for r in out["family_steps"]:
    print(f"  family step {r['strategy']:10} K={r['k']}: temp {r['temp'] / 2**20:8.1f} MiB, peak {r['peak'] / 2**20:8.1f} MiB")

if __name__ == "__main__":
  main()
