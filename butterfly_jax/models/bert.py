"""BERT (Devlin et al. 2019) for sequence classification: an exact port of Hugging Face transformers'
``BertForSequenceClassification``, with explicit parameter names for permutation specs and weight loading.

Input: ``[B, 3, L]`` int32 rows ``(input_ids, token_type_ids, attention_mask)`` (:mod:`butterfly_jax.models.text`).
``embed/{word, position, token_type}`` are summed (positions ``0 .. L-1``; ``L`` at most ``max_positions``) and
normalised (``embed_norm``); ``layers`` post-norm blocks ``layer{i}`` follow, each multi-head self-attention
(``attn/{query,key,value,out}``, padding keys masked) -> residual -> ``attn_norm``, then the MLP (``fc1``,
``hidden_act``, ``fc2``) -> residual -> ``mlp_norm``. The ``pooler`` (dense + tanh) reads the first token
(``[CLS]``) and the ``head`` (transformers' ``classifier``) the pooled vector. ``features["penultimate"]`` is that
pooled vector (``hidden`` wide); ``features["last_hidden_state"]`` the last block's output ``[B, L, hidden]``.

The defaults are BERT-base's (``bert-base-uncased``, the MultiBERTs). ``dropout`` (transformers'
``hidden_dropout_prob``) is recorded but not applied: the apply function is deterministic, in training as in
evaluation, since twins must compute identically and it takes no random key; transformers applies it in
training mode only, so fine-tuning here differs from transformers' in that alone.
"""

import flax.linen as nn
import jax.numpy as jnp

from butterfly_jax.models import text


class Embeddings(nn.Module):
  vocab_size: int
  max_positions: int
  type_vocab_size: int
  hidden: int

  @nn.compact
  def __call__(self, ids, types):
    word = self.param("word", text.INIT, (self.vocab_size, self.hidden))
    position = self.param("position", text.INIT, (self.max_positions, self.hidden))
    token_type = self.param("token_type", text.INIT, (self.type_vocab_size, self.hidden))
    # in transformers' order: (word + token type) + position
    x = jnp.take(word, ids, axis=0) + jnp.take(token_type, types, axis=0)
    return x + position[None, :ids.shape[1]]


class Layer(nn.Module):
  heads: int
  intermediate: int
  layer_norm_eps: float
  hidden_act: str

  @nn.compact
  def __call__(self, x, allowed):
    norm = lambda name: nn.LayerNorm(epsilon=self.layer_norm_eps, use_fast_variance=False, name=name)
    x = norm("attn_norm")(text.SelfAttention(self.heads, name="attn")(x, allowed) + x)
    y = nn.Dense(self.intermediate, kernel_init=text.INIT, name="fc1")(x)
    y = nn.Dense(x.shape[-1], kernel_init=text.INIT, name="fc2")(text.activation(self.hidden_act)(y))
    return norm("mlp_norm")(y + x)


class BERT(nn.Module):
  num_classes: int
  vocab_size: int = 30522
  hidden: int = 768
  layers: int = 12
  heads: int = 12
  intermediate: int = 3072
  max_positions: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  dropout: float = 0.1  # not applied (module docstring)

  @nn.compact
  def __call__(self, x):
    if self.hidden % self.heads:
      raise ValueError(f"model.kwargs.hidden: {self.hidden} is not divisible by model.kwargs.heads = {self.heads}")
    ids, types, mask = text.split_input(x, self.max_positions)
    h = Embeddings(self.vocab_size, self.max_positions, self.type_vocab_size, self.hidden, name="embed")(ids, types)
    h = nn.LayerNorm(epsilon=self.layer_norm_eps, use_fast_variance=False, name="embed_norm")(h)
    allowed = (mask != 0)[:, None, None, :]                              # [B, 1, 1, L]: every query, real keys
    for i in range(self.layers):
      h = Layer(self.heads, self.intermediate, self.layer_norm_eps, self.hidden_act, name=f"layer{i}")(h, allowed)
    pooled = jnp.tanh(nn.Dense(self.hidden, kernel_init=text.INIT, name="pooler")(h[:, 0]))
    logits = nn.Dense(self.num_classes, kernel_init=text.INIT, name="head")(pooled)
    return logits, {"penultimate": pooled, "last_hidden_state": h}
