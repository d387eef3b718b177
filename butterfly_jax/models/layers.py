"""Shared layer choices: He-normal init (as in the paper), a per-pixel LayerNorm, and the norm switch."""

import flax.linen as nn

# Kaiming/He normal with fan-in, plain (not truncated) normal, as torch.nn.init.kaiming_normal_.
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")

NORMS = ("layernorm", "none")


def norm_layer(kind: str, name: str):
  """LayerNorm over the last (channel) axis at each position, or the identity."""
  if kind == "layernorm":
    return nn.LayerNorm(reduction_axes=-1, epsilon=1e-5, name=name)
  if kind == "none":
    return lambda x: x
  raise ValueError(f"model.norm: unknown norm {kind!r}; allowed: {', '.join(NORMS)}")
