"""Vision Transformer (Dosovitskiy et al. 2021) with explicit parameter names for permutation specs.

Patches of ``patch`` x ``patch`` pixels are embedded by a strided convolution (``embed``), a learned class
token (``cls``) is prepended and learned position embeddings (``pos_embedding``) added; ``depth`` pre-norm
blocks ``block{i}`` follow, each ``norm1`` -> multi-head self-attention (``attn/{query,key,value,out}``) ->
residual, ``norm2`` -> MLP (``fc1``, GELU, ``fc2``) -> residual; a final ``norm`` and the ``head`` on
the class token. ``features["penultimate"]`` is the normed class token (``width`` wide). ViT-B/16:
``patch=16, depth=12, width=768, heads=12, mlp_dim=3072``. ``image_size`` (0: off) resizes the input
bilinearly to ``image_size`` x ``image_size`` first, inside the model, so that weights pre-trained at that
resolution (224 for the published ViT-B/16 checkpoints) fine-tune on 32x32 CIFAR images with the position
embeddings they were trained with; the data pipeline, its augmentation and its on-device batches stay as they are.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp


class Attention(nn.Module):
  heads: int

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    if width % self.heads:
      raise ValueError(f"model.width: {width} is not divisible by model.heads = {self.heads}")
    head_dim = width // self.heads
    proj = lambda name: nn.DenseGeneral((self.heads, head_dim), name=name)
    q, k, v = proj("query")(x), proj("key")(x), proj("value")(x)       # [B, N, H, hd]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim).astype(q.dtype)
    weights = nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)
    y = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return nn.DenseGeneral(width, axis=(-2, -1), name="out")(y)


class Block(nn.Module):
  heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x):
    x = x + Attention(self.heads, name="attn")(nn.LayerNorm(epsilon=1e-6, name="norm1")(x))
    y = nn.LayerNorm(epsilon=1e-6, name="norm2")(x)
    y = nn.Dense(self.mlp_dim, name="fc1")(y)
    y = nn.Dense(x.shape[-1], name="fc2")(nn.gelu(y))
    return x + y


class ViT(nn.Module):
  num_classes: int
  patch: int = 4
  depth: int = 6
  width: int = 192
  heads: int = 3
  mlp_dim: int = 768
  image_size: int = 0

  @nn.compact
  def __call__(self, x):
    if self.image_size and x.shape[1:3] != (self.image_size, self.image_size):
      x = jax.image.resize(x, (x.shape[0], self.image_size, self.image_size, x.shape[3]), "bilinear")
    if x.shape[1] % self.patch or x.shape[2] % self.patch:
      raise ValueError(f"model.patch: the {x.shape[1]}x{x.shape[2]} input is not divisible into "
                       f"{self.patch}x{self.patch} patches")
    x = nn.Conv(self.width, (self.patch, self.patch), strides=(self.patch, self.patch), padding="VALID",
                name="embed")(x)
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, d))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(x.dtype), x], axis=1)
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, h * w + 1, d))
    x = x + pos.astype(x.dtype)
    for i in range(self.depth):
      x = Block(self.heads, self.mlp_dim, name=f"block{i}")(x)
    features = nn.LayerNorm(epsilon=1e-6, name="norm")(x[:, 0])
    logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(features)
    return logits, {"penultimate": features}
