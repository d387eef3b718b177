"""What the text models (:mod:`~butterfly_jax.models.bert`, :mod:`~butterfly_jax.models.olmo`) share: the input
layout, activations under their Hugging Face names, and multi-head self-attention with a mask.

A text model's input ``x`` is one int32 array ``[B, 3, L]`` whose rows are ``(input_ids, token_type_ids,
attention_mask)``, so that batches, families and interpolation treat it as one array like an image batch; its
``input_shape`` is ``(3, L)`` (:data:`butterfly_jax.models.registry.INPUT_DTYPES`). ``attention_mask`` is 1 for
a token and 0 for padding, as Hugging Face tokenizers return it.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Hugging Face's ``hidden_act`` names (transformers' ACT2FN) -> the function. "gelu" is the exact (erf) GELU.
ACTIVATIONS = {
    "gelu": functools.partial(nn.gelu, approximate=False),
    "gelu_new": functools.partial(nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(nn.gelu, approximate=True),
    "relu": nn.relu,
    "silu": nn.silu,
    "swish": nn.silu,
}

# transformers' initializer_range for both families: every weight matrix and embedding is N(0, 0.02^2)
INIT = nn.initializers.normal(0.02)


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"model.kwargs.hidden_act: unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def split_input(x, max_positions: int):
  """``(input_ids, token_type_ids, attention_mask)``, each ``[B, L]``, of a ``[B, 3, L]`` integer input. Shapes
  are static, so a wrong layout or ``L`` above ``max_positions`` is a ValueError at trace time, before compute."""
  if x.ndim != 3 or x.shape[1] != 3:
    raise ValueError(f"a text model's input is [B, 3, L] (input_ids, token_type_ids, attention_mask), got shape "
                     f"{tuple(x.shape)}")
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise ValueError(f"a text model's input holds integer token ids (int32), got {x.dtype}")
  if x.shape[2] > max_positions:
    raise ValueError(f"model.kwargs.max_positions: sequences of {x.shape[2]} tokens do not fit the model's "
                     f"{max_positions} positions")
  return x[:, 0], x[:, 1], x[:, 2]


def check_token_ids(x, vocab_size: int, type_vocab_size: int | None = None, where: str = "the data") -> None:
  """ValueError unless the host array ``x [N, 3, L]`` holds token ids in ``[0, vocab_size)``, token types in
  ``[0, type_vocab_size)`` (BERT; None: not read) and a 0/1 attention mask. For the data pipeline to call once,
  before training: inside the model an id out of range would gather NaN (jnp.take's fill), not fail."""
  x = np.asarray(x)
  if x.ndim != 3 or x.shape[1] != 3 or not np.issubdtype(x.dtype, np.integer):
    raise ValueError(f"{where}: a text model's input is integer [N, 3, L], got {x.dtype} {x.shape}")
  rows = [("token ids", x[:, 0], vocab_size, "model.kwargs.vocab_size"), ("attention mask", x[:, 2], 2, None)]
  if type_vocab_size is not None:
    rows.insert(1, ("token type ids", x[:, 1], type_vocab_size, "model.kwargs.type_vocab_size"))
  for what, values, n, field in rows:
    if values.size and (values.min() < 0 or values.max() >= n):
      limit = f"{field} = {n}" if field else "0 or 1"
      raise ValueError(f"{where}: {what} range over [{values.min()}, {values.max()}], outside [0, {n}) ({limit})")


def layer_norm(x, eps: float):
  """LayerNorm over the last axis without scale or bias, in float32 with the two-pass variance (torch's
  ``F.layer_norm``); the result in ``x``'s dtype."""
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, -1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), -1, keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def rotary(x, theta: float):
  """Rotary position embeddings of ``x [B, L, H, hd]`` as transformers applies them (``rotate_half``: unit ``i``
  pairs with ``i + hd/2``, frequency ``theta^(-2i/hd)``), positions ``0 .. L-1``."""
  length, dim = x.shape[1], x.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
  freqs = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]
  emb = jnp.concatenate([freqs, freqs], -1)[None, :, None, :]       # [1, L, 1, hd]
  cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
  half = dim // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], -1)
  return x * cos + rotated * sin


class SelfAttention(nn.Module):
  """Multi-head self-attention: ``query``, ``key``, ``value`` kernels ``[width, heads, head_dim]``, ``out``
  ``[heads, head_dim, width]`` (the ViT's layout, so permutation specs read alike). ``allowed [B, 1, L, L]``:
  which keys each query attends to; a query with none attends uniformly to all (as transformers' additive mask
  of the float minimum does), which only padding positions meet. ``clip_qkv`` > 0 clamps the projections,
  ``rope_theta`` > 0 rotates queries and keys (OLMo). ``attention_dropout``: dropout on the attention weights
  when called with ``deterministic=False`` (BERT's ``attention_probs_dropout_prob``)."""
  heads: int
  use_bias: bool = True
  clip_qkv: float = 0.0
  rope_theta: float = 0.0
  attention_dropout: float = 0.0

  @nn.compact
  def __call__(self, x, allowed, deterministic: bool = True):
    width = x.shape[-1]
    head_dim = width // self.heads
    proj = lambda name: nn.DenseGeneral((self.heads, head_dim), use_bias=self.use_bias, kernel_init=INIT,
                                        name=name)
    q, k, v = proj("query")(x), proj("key")(x), proj("value")(x)       # [B, L, H, hd]
    if self.clip_qkv:
      q, k, v = (jnp.clip(t, -self.clip_qkv, self.clip_qkv) for t in (q, k, v))
    if self.rope_theta:
      q, k = rotary(q, self.rope_theta), rotary(k, self.rope_theta)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) * jnp.asarray(head_dim ** -0.5, q.dtype)
    logits = jnp.where(allowed, logits, jnp.finfo(logits.dtype).min)
    weights = nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)
    weights = nn.Dropout(self.attention_dropout, deterministic=deterministic)(weights)
    y = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return nn.DenseGeneral(width, axis=(-2, -1), use_bias=self.use_bias, kernel_init=INIT, name="out")(y)
