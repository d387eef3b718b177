"""ResNet-20 for 32x32 inputs (He et al. 2016, CIFAR variant) with LayerNorm instead of BatchNorm, and other
basic-block ResNets with the same stem: ``resnet34`` has stages of (3, 4, 6, 3) blocks with 64w, 128w, 256w and
512w channels, the network the authors' code builds as ``resnet50-64``.

Three stages of three basic blocks with 16w, 32w and 64w channels (w = ``width``); the first block of
stages 2 and 3 halves the resolution and projects the shortcut with a 1x1 convolution and a norm.
Convolutions carry no bias (a norm follows each one). Layer names are explicit so parameter paths
are stable: ``conv_in``, ``norm_in``, ``stage{s}_block{b}/{conv1,norm1,conv2,norm2,shortcut_conv,
shortcut_norm}``, ``head``. The penultimate representation (global-average-pooled, ``64w`` wide) is
``features["penultimate"]``. ``conv`` picks how convolutions are computed (``butterfly_jax.models.conv``:
``auto``, ``xla``, ``saved``, ``fastgrad``, ``im2col``); it changes no parameter. ``padding``: ``symmetric``
pads every 3x3 convolution by 1 on each side, as torch's ``padding=1`` in the authors' ``resnet.py``, so the
strided path samples the pixels its 1x1 shortcut does; ``same`` is XLA's ``SAME`` (definitions' version 2 and
before), which pads a stride-2 layer (0, 1) (:func:`butterfly_jax.models.conv.resnet_padding`).

For activation matching, the units each permutation acts on are ``sow``-n into ``intermediates`` (nothing unless
the caller makes it mutable) after their ReLU: ``P_stage1`` the stem's output and every block output of stage 1,
``P_stage{s}`` the block outputs of stage s, ``P_stage{s}_block{b}_inner`` the block's first ReLU.
"""

import flax.linen as nn
import jax.numpy as jnp

from butterfly_jax.models.conv import resnet_conv
from butterfly_jax.models.layers import he_normal, norm_layer


class BasicBlock(nn.Module):
  channels: int
  stride: int
  norm: str
  conv: str = "auto"
  padding: str = "symmetric"

  @nn.compact
  def __call__(self, x):
    conv = lambda c, k, s, name: resnet_conv(self.conv, c, k, s, name, self.padding)
    y = conv(self.channels, 3, self.stride, "conv1")(x)
    y = nn.relu(norm_layer(self.norm, "norm1")(y))
    self.sow("intermediates", f"P_{self.name}_inner", y)
    y = conv(self.channels, 3, 1, "conv2")(y)
    y = norm_layer(self.norm, "norm2")(y)
    if self.stride != 1 or x.shape[-1] != self.channels:
      x = conv(self.channels, 1, self.stride, "shortcut_conv")(x)
      x = norm_layer(self.norm, "shortcut_norm")(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """CIFAR ResNet of depth 6n+2; ``ResNet(depth=20)`` is ResNet-20. ``stages`` (blocks per stage, e.g.
  ``(3, 4, 6, 3)``) and ``base`` (stage 1's channels before ``width``) give other basic-block layouts with
  the same stem: stage s has ``base * width * 2**(s-1)`` channels."""
  num_classes: int
  depth: int = 20
  width: int = 1
  norm: str = "layernorm"
  conv: str = "auto"
  stages: tuple = ()
  base: int = 16
  padding: str = "symmetric"

  @nn.compact
  def __call__(self, x):
    if self.stages:
      plan = tuple(self.stages)
    elif (self.depth - 2) % 6:
      raise ValueError(f"model.depth: a CIFAR ResNet has depth 6n+2 (20, 32, 44, 56, ...), got {self.depth}")
    else:
      plan = ((self.depth - 2) // 6,) * 3
    c = int(round(self.base * self.width))
    x = resnet_conv(self.conv, c, 3, 1, "conv_in", self.padding)(x)
    x = nn.relu(norm_layer(self.norm, "norm_in")(x))
    self.sow("intermediates", "P_stage1", x)  # stage 1's first block keeps the width: no shortcut projection
    for s, blocks in enumerate(plan, start=1):
      for b in range(blocks):
        stride = 2 if (s > 1 and b == 0) else 1
        x = BasicBlock(c * 2 ** (s - 1), stride, self.norm, self.conv, self.padding, name=f"stage{s}_block{b}")(x)
        self.sow("intermediates", f"P_stage{s}", x)
    features = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(self.num_classes, kernel_init=he_normal, name="head")(features)
    return logits, {"penultimate": features}
