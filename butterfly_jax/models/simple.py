"""Small models for CPU-sized experiments: an MLP and a small CNN.

MLP: flatten, ``hidden`` Dense+ReLU layers named ``dense{i}`` (optional per-layer norm ``norm{i}``), ``head``.
CNN: ``conv{i}`` (3x3) + ReLU (+ ``norm{i}``) + 2x2 max-pool per entry of ``channels``, flatten, ``dense`` + ReLU, ``head``.
Both return ``features["penultimate"]``, the input of the head. Both ``sow`` into the ``intermediates`` collection
(nothing unless the caller makes it mutable: :func:`butterfly_jax.models.make_activations`) the units each of their
permutations acts on, after the ReLU, under the permutation's name: ``P_dense{i}``; ``P_conv{i}`` (before pooling)
and ``P_dense``. The CNN's ``conv`` picks how
convolutions are computed (``butterfly_jax.models.conv``: ``auto``, ``xla``, ``saved``, ``fastgrad``,
``im2col``) and
``pool`` how it max-pools (``reshape``, the default, or ``xla`` = ``nn.max_pool``; ``layers.max_pool_2x2``);
neither changes a parameter.
"""

from typing import Sequence

import flax.linen as nn

from butterfly_jax.models.conv import conv_layer
from butterfly_jax.models.layers import he_normal, max_pool_2x2, norm_layer


class MLP(nn.Module):
  num_classes: int
  hidden: Sequence[int] = (512, 512)
  norm: str = "none"

  @nn.compact
  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    for i, h in enumerate(self.hidden):
      x = nn.Dense(h, kernel_init=he_normal, name=f"dense{i}")(x)
      x = nn.relu(norm_layer(self.norm, f"norm{i}")(x))
      self.sow("intermediates", f"P_dense{i}", x)
    logits = nn.Dense(self.num_classes, kernel_init=he_normal, name="head")(x)
    return logits, {"penultimate": x}


class SmallCNN(nn.Module):
  num_classes: int
  channels: Sequence[int] = (32, 64)
  dense: int = 128
  norm: str = "none"
  conv: str = "auto"
  pool: str = "reshape"

  @nn.compact
  def __call__(self, x):
    for i, c in enumerate(self.channels):
      x = conv_layer(self.conv, c, (3, 3), padding="SAME", kernel_init=he_normal, name=f"conv{i}")(x)
      x = nn.relu(norm_layer(self.norm, f"norm{i}")(x))
      self.sow("intermediates", f"P_conv{i}", x)
      x = max_pool_2x2(x, self.pool)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.dense, kernel_init=he_normal, name="dense")(x))
    self.sow("intermediates", "P_dense", x)
    logits = nn.Dense(self.num_classes, kernel_init=he_normal, name="head")(x)
    return logits, {"penultimate": x}
