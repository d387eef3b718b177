"""Device memory per child, and the largest family that fits a device.

A child holds its parameters, its optimizer state and, during a step, its gradients (all float32 whatever
``train.compute_dtype``: :func:`butterfly_jax.core.members.cross_entropy`) and its activations. The first three come
from shapes alone (``jax.eval_shape`` of the model's and the optimizer's init); the activations from XLA's
compiled memory analysis of one child's value-and-grad at its batch, the temporaries it allocates (what the
backward pass keeps, a bf16 copy of the parameters under ``bfloat16``, scratch). With a data axis
(``members.data_devices`` = d) a device holds each of its children's parameters, optimizer state and gradients
whole and its activations for ``batch / d`` examples. The analysis is that of the backend it is compiled for:
on CPU, XLA:CPU's buffer assignment, an estimate of a GPU's (other fusions, convolution workspaces).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from butterfly_jax.core import members


class ChildMemory(NamedTuple):
  """Bytes one child occupies on a device during a training step."""
  params: int
  opt_state: int
  grads: int
  activations: int

  @property
  def total(self) -> int:
    return self.params + self.opt_state + self.grads + self.activations


def tree_bytes(tree) -> int:
  """Bytes of every array (or ``ShapeDtypeStruct``) leaf of ``tree``."""
  return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(tree)))


def compiled_memory(fn, *args) -> dict:
  """XLA's memory analysis of ``fn`` (jitted here unless it is already, as a train step that donates its
  family is) compiled for ``args`` (arrays or ``ShapeDtypeStruct``s) on the default backend: ``argument``,
  ``output``, ``alias`` (outputs written into donated arguments) and ``temp`` bytes, and ``peak`` = argument +
  output - alias + temp. Nothing runs."""
  fn = fn if hasattr(fn, "lower") else jax.jit(fn)
  stats = fn.lower(*args).compile().memory_analysis()
  if stats is None:
    raise RuntimeError(f"compiled_memory: the {jax.default_backend()} backend gives no memory analysis")
  out = {"argument": int(stats.argument_size_in_bytes), "output": int(stats.output_size_in_bytes),
         "alias": int(stats.alias_size_in_bytes), "temp": int(stats.temp_size_in_bytes)}
  return dict(out, peak=out["argument"] + out["output"] - out["alias"] + out["temp"])


def child_memory(init_fn, apply_fn, transform, input_shape, batch_size: int, input_dtype=jnp.float32,
                 compute_dtype: str = "float32", data_devices: int = 1, dropout: bool = False) -> ChildMemory:
  """One child's bytes on a device: parameters (``init_fn(key)``'s shapes), optimizer state (``transform``, an
  optax transformation), float32 gradients, and the activations of its value-and-grad on ``batch_size /
  data_devices`` inputs of ``input_shape`` (:func:`compiled_memory`'s temporaries); ``dropout``: with the
  model's dropout applied, as in the training step (its masks are activations too)."""
  if batch_size % data_devices:
    raise ValueError(f"child_memory: batch_size {batch_size} is not divisible by data_devices {data_devices}")
  params = jax.eval_shape(init_fn, jax.random.key(0))
  opt_state = jax.eval_shape(transform.init, params)
  b = batch_size // data_devices
  x = jax.ShapeDtypeStruct((b, *input_shape), input_dtype)
  y = jax.ShapeDtypeStruct((b,), jnp.int32)
  grad_fn = jax.value_and_grad(members.cross_entropy(apply_fn, compute_dtype))
  key = (jax.random.key(0),) if dropout else ()
  activations = compiled_memory(grad_fn, params, x, y, *key)["temp"]
  grads = tree_bytes(jax.tree_util.tree_map(lambda p: jax.ShapeDtypeStruct(p.shape, jnp.float32), params))
  return ChildMemory(tree_bytes(params), tree_bytes(opt_state), grads, activations)


def largest_family(per_child: int, device_bytes: int, shared: int = 0) -> int:
  """The most children that fit ``device_bytes`` when each takes ``per_child`` bytes and the device also holds
  ``shared`` bytes (the training data, replicated on every device); 0 when not even one does. Counts every
  child's activations and gradients as live at once (as under ``vmap``)."""
  if per_child <= 0:
    raise ValueError(f"largest_family: per_child must be > 0 bytes, got {per_child}")
  return max(0, (int(device_bytes) - int(shared)) // int(per_child))
