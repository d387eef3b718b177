"""Shared layer choices: He-normal init (as in the paper), a per-pixel LayerNorm, BatchNorm, the norm switch,
max-pooling."""

import flax.linen as nn
import jax
import jax.numpy as jnp

# Kaiming/He normal with fan-in, plain (not truncated) normal, as torch.nn.init.kaiming_normal_.
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

NORMS = ("layernorm", "batchnorm", "none")


def torch_linear_init(key, kernel, bias=None):
  """torch ``nn.Linear``'s default init for a flax Dense ``kernel [fan_in, ...]`` (and ``bias``): both uniform on
  ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` (``kaiming_uniform_(a=sqrt(5))`` for the weight). Returns the pair."""
  bound = 1.0 / float(kernel.shape[0]) ** 0.5
  kk, kb = jax.random.split(key)
  new_kernel = jax.random.uniform(kk, kernel.shape, kernel.dtype, -bound, bound)
  new_bias = None if bias is None else jax.random.uniform(kb, bias.shape, bias.dtype, -bound, bound)
  return new_kernel, new_bias


class BatchNorm(nn.Module):
  """BatchNorm over all but the channel axis, with ``scale`` and ``bias`` parameters like ``nn.LayerNorm``'s.

  Statistics are not training state here. Called with a ``batch_stats`` collection (``mean``, ``var``), it
  normalises with those (evaluation); without one, with the batch's own moments (training, and the
  re-estimation passes). Under ``mutable=["batch_stats"]`` it also writes the batch's moments there, which is
  how :func:`butterfly_jax.models.registry.make_model`'s ``moments_fn`` reads them. So every network that is
  evaluated (a child, an interpolated or a permuted one) gets statistics estimated for its own weights
  (``evaluate.estimate_norm_stats``) and nothing stale is ever carried along. Moments are float32.
  """
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    if self.has_variable("batch_stats", "mean"):
      mean, var = self.get_variable("batch_stats", "mean"), self.get_variable("batch_stats", "var")
    else:
      axes = tuple(range(x.ndim - 1))
      x32 = x.astype(jnp.float32)
      mean = jnp.mean(x32, axes)
      var = jnp.mean(jnp.square(x32 - mean), axes)
      if self.is_mutable_collection("batch_stats"):
        self.put_variable("batch_stats", "mean", mean)
        self.put_variable("batch_stats", "var", var)
    mul = (scale * jnp.reciprocal(jnp.sqrt(var + self.epsilon))).astype(x.dtype)
    return (x - mean.astype(x.dtype)) * mul + bias.astype(x.dtype)


def norm_layer(kind: str, name: str):
  """LayerNorm over the last (channel) axis at each position, BatchNorm (:class:`BatchNorm`), or the identity."""
  if kind == "layernorm":
    return nn.LayerNorm(reduction_axes=-1, epsilon=1e-5, name=name)
  if kind == "batchnorm":
    return BatchNorm(name=name)
  if kind == "none":
    return lambda x: x
  raise ValueError(f"model.norm: unknown norm {kind!r}; allowed: {', '.join(NORMS)}")


POOLS = ("reshape", "xla")


def max_pool_2x2(x, impl: str = "reshape"):
  """2x2 max-pooling with stride 2 and ``VALID`` padding (an odd last row or column is dropped), NHWC.

  ``xla``: ``nn.max_pool`` (``lax.reduce_window``), whose gradient XLA:CPU computes slowly (an iota and a
  reduce-window over packed value/index pairs; its cost: BUILD_NOTES.md, "Max-pool"). ``reshape``:
  the same maximum over a ``[..., H/2, 2, W/2, 2, C]`` view, bitwise the same forward values; its gradient
  goes to the window's maximum as well, but is split equally between exactly tied maxima where
  ``reduce_window`` gives it all to the first (ties between positive ReLU outputs; a window of zeros passes
  no gradient through the ReLU either way).
  """
  if impl == "xla":
    return nn.max_pool(x, (2, 2), strides=(2, 2))
  if impl != "reshape":
    raise ValueError(f"model.pool: unknown pooling {impl!r}; allowed: {', '.join(POOLS)}")
  h, w, c = x.shape[-3] // 2, x.shape[-2] // 2, x.shape[-1]
  x = x[..., :2 * h, :2 * w, :].reshape(*x.shape[:-3], h, 2, w, 2, c)
  return x.max(axis=(-4, -2))
