"""ResNet-50 for 32x32 inputs (the CIFAR variant of He et al. 2016's bottleneck ResNet), LayerNorm or none.

A 3x3 stem convolution (``conv_in``, ``norm_in``; no max-pooling at 32x32), then four stages of (3, 4, 6, 3)
bottleneck blocks ``stage{s}_block{b}`` with ``conv1`` (1x1), ``conv2`` (3x3, stride 2 in the first block of
stages 2-4), ``conv3`` (1x1, 4x expansion), each followed by ``norm{1,2,3}``, and a projection shortcut
(``shortcut_conv``, ``shortcut_norm``) where the shape changes (the first block of every stage). Widths
64w, 128w, 256w and 512w (x4 out). 3x3 convolutions are padded as the basic-block ResNets' (``padding``,
:func:`butterfly_jax.models.conv.resnet_padding`). ``features["penultimate"]`` is the pooled 2048w-wide representation.

For activation matching, the units each permutation acts on are ``sow``-n into ``intermediates`` (nothing unless
the caller makes it mutable) after their ReLU: ``P_stem`` the stem's output (the first block projects its
shortcut), ``P_stage{s}`` the block outputs of stage s, ``P_stage{s}_block{b}_inner`` and ``..._inner2`` the block's
first and second ReLU.
"""

import flax.linen as nn
import jax.numpy as jnp

from butterfly_jax.models.conv import resnet_conv
from butterfly_jax.models.layers import he_normal, norm_layer

STAGES = (3, 4, 6, 3)


class Bottleneck(nn.Module):
  channels: int
  stride: int
  norm: str
  conv: str = "auto"
  padding: str = "symmetric"

  @nn.compact
  def __call__(self, x):
    conv = lambda c, k, s, name: resnet_conv(self.conv, c, k, s, name, self.padding)
    out = 4 * self.channels
    y = nn.relu(norm_layer(self.norm, "norm1")(conv(self.channels, 1, 1, "conv1")(x)))
    self.sow("intermediates", f"P_{self.name}_inner", y)
    y = nn.relu(norm_layer(self.norm, "norm2")(conv(self.channels, 3, self.stride, "conv2")(y)))
    self.sow("intermediates", f"P_{self.name}_inner2", y)
    y = norm_layer(self.norm, "norm3")(conv(out, 1, 1, "conv3")(y))
    if self.stride != 1 or x.shape[-1] != out:
      x = norm_layer(self.norm, "shortcut_norm")(conv(out, 1, self.stride, "shortcut_conv")(x))
    return nn.relu(x + y)


class ResNet50(nn.Module):
  num_classes: int
  width: float = 1  # channel multiplier; fractions give small test models (0.125: 8 stem channels)
  norm: str = "layernorm"
  conv: str = "auto"  # how convolutions are computed (butterfly_jax.models.conv); same parameters
  padding: str = "symmetric"  # 3x3 convolutions: torch's padding=1, or "same" (XLA's; butterfly_jax.models.conv)

  @nn.compact
  def __call__(self, x):
    c = int(round(64 * self.width))
    if c < 1:
      raise ValueError(f"model.width: {self.width} leaves no channels (64 x width must be >= 1)")
    x = resnet_conv(self.conv, c, 3, 1, "conv_in", self.padding)(x)
    x = nn.relu(norm_layer(self.norm, "norm_in")(x))
    self.sow("intermediates", "P_stem", x)
    for s, blocks in enumerate(STAGES, start=1):
      for b in range(blocks):
        stride = 2 if (s > 1 and b == 0) else 1
        x = Bottleneck(c * 2 ** (s - 1), stride, self.norm, self.conv, self.padding, name=f"stage{s}_block{b}")(x)
        self.sow("intermediates", f"P_stage{s}", x)
    features = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(self.num_classes, kernel_init=he_normal, name="head")(features)
    return logits, {"penultimate": features}
