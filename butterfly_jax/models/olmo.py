"""OLMo (Groeneveld et al. 2024; OLMo-1, transformers' ``model_type="olmo"``) for sequence classification: an
exact port of Hugging Face transformers' ``OlmoForSequenceClassification``, with explicit parameter names for
permutation specs and weight loading.

Input: ``[B, 3, L]`` int32 rows ``(input_ids, token_type_ids, attention_mask)``; ``token_type_ids`` is ignored.
The token embedding (``embed``) feeds ``layers`` pre-norm decoder blocks ``layer{i}``: a LayerNorm without scale or
bias (eps 1e-5, in float32), causal multi-head self-attention with rotary position embeddings (``rope_theta``,
positions ``0 .. L-1`` as transformers counts them without ``position_ids``; queries, keys and values clamped to
``[-clip_qkv, clip_qkv]`` when ``clip_qkv`` > 0) over the tokens with ``attention_mask`` 1, residual; the same
norm, the SwiGLU MLP ``down(act(gate(x)) * up(x))``, residual. No layer has a bias. A final norm, and the
``head`` (transformers' ``score``, no bias) reads the hidden state of each sequence's last token: the rightmost
position whose ``attention_mask`` is 1 (transformers takes the rightmost token that is not ``pad_token_id``; the
two agree when padding is marked in both, left or right). ``features["penultimate"]`` is that pooled hidden state
(``hidden`` wide), ``features["last_hidden_state"]`` the normed last hidden states ``[B, L, hidden]`` (what
``OlmoModel`` returns; times the embedding, or the causal-LM checkpoint's ``lm_head``, they are
``OlmoForCausalLM``'s logits).

The defaults are OLMo-1B's (``allenai/OLMo-1B-hf``). Tied or untied word embeddings (``tie_word_embeddings``)
only matter to the language-model head, which a classifier does not have, so they are no argument here: the
loader skips a causal-LM checkpoint's ``lm_head`` where it has one, untied
(:func:`butterfly_jax.io.pretrained.load_olmo_weights`). ``L`` may not exceed ``max_positions``, the context
the model was trained with.
"""

import flax.linen as nn
import jax.numpy as jnp

from butterfly_jax.models import text

NORM_EPS = 1e-5  # transformers' OlmoLayerNorm: fixed, not a config field


class Layer(nn.Module):
  heads: int
  intermediate: int
  rope_theta: float
  clip_qkv: float
  hidden_act: str

  @nn.compact
  def __call__(self, x, allowed):
    attn = text.SelfAttention(self.heads, use_bias=False, clip_qkv=self.clip_qkv, rope_theta=self.rope_theta,
                              name="attn")
    x = x + attn(text.layer_norm(x, NORM_EPS), allowed)
    y = text.layer_norm(x, NORM_EPS)
    dense = lambda n, name: nn.Dense(n, use_bias=False, kernel_init=text.INIT, name=name)
    y = text.activation(self.hidden_act)(dense(self.intermediate, "gate")(y)) * dense(self.intermediate, "up")(y)
    return x + dense(x.shape[-1], "down")(y)


class OLMo(nn.Module):
  num_classes: int
  vocab_size: int = 50304
  hidden: int = 2048
  layers: int = 16
  heads: int = 16
  intermediate: int = 8192
  max_positions: int = 2048
  rope_theta: float = 10000.0
  clip_qkv: float = 0.0  # 0: no clamping (transformers' null)
  hidden_act: str = "silu"

  @nn.compact
  def __call__(self, x):
    if self.hidden % self.heads or (self.hidden // self.heads) % 2:
      raise ValueError(f"model.kwargs.hidden: {self.hidden} is not divisible into {self.heads} heads of an even "
                       f"size (rotary embeddings rotate unit pairs)")
    ids, _, mask = text.split_input(x, self.max_positions)
    length = ids.shape[1]
    embed = self.param("embed", text.INIT, (self.vocab_size, self.hidden))
    h = jnp.take(embed, ids, axis=0)
    causal = jnp.tril(jnp.ones((length, length), bool))
    allowed = causal[None, None] & (mask != 0)[:, None, None, :]          # [B, 1, L, L]
    for i in range(self.layers):
      h = Layer(self.heads, self.intermediate, self.rope_theta, self.clip_qkv, self.hidden_act, name=f"layer{i}")(
          h, allowed)
    h = text.layer_norm(h, NORM_EPS)
    last = jnp.argmax(jnp.arange(length) * (mask != 0), axis=-1)           # transformers' formula, on the mask
    pooled = h[jnp.arange(h.shape[0]), last]
    logits = nn.Dense(self.num_classes, use_bias=False, kernel_init=text.INIT, name="head")(pooled)
    return logits, {"penultimate": pooled, "last_hidden_state": h}
