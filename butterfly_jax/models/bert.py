"""BERT (Devlin et al. 2019) for sequence classification: an exact port of Hugging Face transformers'
``BertForSequenceClassification``, with explicit parameter names for permutation specs and weight loading.

Input: ``[B, 3, L]`` int32 rows ``(input_ids, token_type_ids, attention_mask)`` (:mod:`butterfly_jax.models.text`).
``embed/{word, position, token_type}`` are summed (positions ``0 .. L-1``; ``L`` at most ``max_positions``) and
normalised (``embed_norm``); ``layers`` post-norm blocks ``layer{i}`` follow, each multi-head self-attention
(``attn/{query,key,value,out}``, padding keys masked) -> residual -> ``attn_norm``, then the MLP (``fc1``,
``hidden_act``, ``fc2``) -> residual -> ``mlp_norm``. The ``pooler`` (dense + tanh) reads the first token
(``[CLS]``) and the ``head`` (transformers' ``classifier``) the pooled vector. ``features["penultimate"]`` is that
pooled vector (``hidden`` wide); ``features["last_hidden_state"]`` the last block's output ``[B, L, hidden]``.

The defaults are BERT-base's (``bert-base-uncased``, the MultiBERTs). Dropout is transformers': ``dropout``
(``hidden_dropout_prob``) after the embeddings' norm, on each block's attention and MLP outputs before their
residual sums, and on the pooled vector before the classifier; ``attention_dropout``
(``attention_probs_dropout_prob``) on the attention weights. It applies only when the module is called with
``deterministic=False`` and a ``"dropout"`` key, which the training step passes (one key per step, shared by
every member, as the batch is: :func:`butterfly_jax.core.rng.step_dropout_key`); evaluation, the batch perturbation's
gradient and CKA are deterministic, as transformers' evaluation mode.
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
  dropout: float = 0.0
  attention_dropout: float = 0.0

  @nn.compact
  def __call__(self, x, allowed, deterministic: bool = True):
    norm = lambda name: nn.LayerNorm(epsilon=self.layer_norm_eps, use_fast_variance=False, name=name)
    drop = nn.Dropout(self.dropout, deterministic=deterministic)
    attn = text.SelfAttention(self.heads, attention_dropout=self.attention_dropout, name="attn")
    x = norm("attn_norm")(drop(attn(x, allowed, deterministic)) + x)
    y = nn.Dense(self.intermediate, kernel_init=text.INIT, name="fc1")(x)
    y = nn.Dense(x.shape[-1], kernel_init=text.INIT, name="fc2")(text.activation(self.hidden_act)(y))
    return norm("mlp_norm")(drop(y) + x)


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
  dropout: float = 0.1            # transformers' hidden_dropout_prob (training only: module docstring)
  attention_dropout: float = 0.1  # transformers' attention_probs_dropout_prob

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    if self.hidden % self.heads:
      raise ValueError(f"model.kwargs.hidden: {self.hidden} is not divisible by model.kwargs.heads = {self.heads}")
    ids, types, mask = text.split_input(x, self.max_positions)
    h = Embeddings(self.vocab_size, self.max_positions, self.type_vocab_size, self.hidden, name="embed")(ids, types)
    h = nn.LayerNorm(epsilon=self.layer_norm_eps, use_fast_variance=False, name="embed_norm")(h)
    h = nn.Dropout(self.dropout, deterministic=deterministic)(h)
    allowed = (mask != 0)[:, None, None, :]                              # [B, 1, 1, L]: every query, real keys
    for i in range(self.layers):
      h = Layer(self.heads, self.intermediate, self.layer_norm_eps, self.hidden_act, self.dropout,
                self.attention_dropout, name=f"layer{i}")(h, allowed, deterministic)
    pooled = jnp.tanh(nn.Dense(self.hidden, kernel_init=text.INIT, name="pooler")(h[:, 0]))
    logits = nn.Dense(self.num_classes, kernel_init=text.INIT, name="head")(
        nn.Dropout(self.dropout, deterministic=deterministic)(pooled))
    return logits, {"penultimate": pooled, "last_hidden_state": h}
