"""BERT and OLMo weights from Hugging Face checkpoints (transformers' safetensors folders, one file or shards with
an index: :class:`~butterfly_jax.pretrained.HFCheckpoint`), mapped by name onto
:class:`~butterfly_jax.models.bert.BERT` and :class:`~butterfly_jax.models.olmo.OLMo`.

``load_bert_weights(path, template)`` / ``load_olmo_weights(path, template)`` return ``template`` (the model's
parameters, e.g. a fresh init) with every parameter replaced by the checkpoint's, the head excepted unless
``keep_head`` (a MultiBERTs checkpoint has no classifier). Everything is checked before any array is read (names
and shapes come from the files' headers): a checkpoint of another architecture (an OLMo file for ``bert``; a
``config.json`` whose ``model_type`` is another) is one error saying so; otherwise every parameter that is missing,
unknown or misshapen is named in one error, and, given ``model_kwargs``, every argument that disagrees with the
folder's ``config.json``. Layers a classifier does not use are skipped: BERT's pre-training heads (``cls.*``), the
OLMo causal-LM checkpoints' ``lm_head`` (present when untied, absent when tied: both load), stored rotary and
position-id buffers. Hugging Face linear weights are ``(out, in)``: transposed; attention projections are
reshaped to heads (``[width, heads, head_dim]``, the output ``[heads, head_dim, width]``).
:func:`hf_model_kwargs` reads a ``config.json`` into ``model.name`` and ``model.kwargs``.
"""

import re

import numpy as np

from butterfly_jax import tree_math
from butterfly_jax.pretrained import _HF as _VIT, HFCheckpoint, PretrainedError

_LN = r"LayerNorm\.(?:weight|gamma)", r"LayerNorm\.(?:bias|beta)"  # older conversions name them gamma / beta
_B = r"(?:bert\.)?"
# (pattern, our name or None: skipped, layout)
_BERT = [
    (_B + r"embeddings\.word_embeddings\.weight", "embed/word", None),
    (_B + r"embeddings\.position_embeddings\.weight", "embed/position", None),
    (_B + r"embeddings\.token_type_embeddings\.weight", "embed/token_type", None),
    (_B + r"embeddings\." + _LN[0], "embed_norm/scale", None),
    (_B + r"embeddings\." + _LN[1], "embed_norm/bias", None),
    (_B + r"embeddings\.position_ids", None, None),  # a buffer older transformers saved
    (_B + r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.weight", "layer{}/attn/{}/kernel", "qkv"),
    (_B + r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.bias", "layer{}/attn/{}/bias", "qkv_bias"),
    (_B + r"encoder\.layer\.(\d+)\.attention\.output\.dense\.weight", "layer{}/attn/out/kernel", "out"),
    (_B + r"encoder\.layer\.(\d+)\.attention\.output\.dense\.bias", "layer{}/attn/out/bias", None),
    (_B + r"encoder\.layer\.(\d+)\.attention\.output\." + _LN[0], "layer{}/attn_norm/scale", None),
    (_B + r"encoder\.layer\.(\d+)\.attention\.output\." + _LN[1], "layer{}/attn_norm/bias", None),
    (_B + r"encoder\.layer\.(\d+)\.intermediate\.dense\.weight", "layer{}/fc1/kernel", "linear"),
    (_B + r"encoder\.layer\.(\d+)\.intermediate\.dense\.bias", "layer{}/fc1/bias", None),
    (_B + r"encoder\.layer\.(\d+)\.output\.dense\.weight", "layer{}/fc2/kernel", "linear"),
    (_B + r"encoder\.layer\.(\d+)\.output\.dense\.bias", "layer{}/fc2/bias", None),
    (_B + r"encoder\.layer\.(\d+)\.output\." + _LN[0], "layer{}/mlp_norm/scale", None),
    (_B + r"encoder\.layer\.(\d+)\.output\." + _LN[1], "layer{}/mlp_norm/bias", None),
    (_B + r"pooler\.dense\.weight", "pooler/kernel", "linear"),
    (_B + r"pooler\.dense\.bias", "pooler/bias", None),
    (r"classifier\.weight", "head/kernel", "linear"),
    (r"classifier\.bias", "head/bias", None),
    (r"cls\.(?:predictions|seq_relationship)\..+", None, None),  # pre-training heads (MLM, NSP): unused
]
_M = r"(?:model\.)?"
_OLMO = [
    (_M + r"embed_tokens\.weight", "embed", None),
    (_M + r"layers\.(\d+)\.self_attn\.q_proj\.weight", "layer{}/attn/query/kernel", "qkv"),
    (_M + r"layers\.(\d+)\.self_attn\.k_proj\.weight", "layer{}/attn/key/kernel", "qkv"),
    (_M + r"layers\.(\d+)\.self_attn\.v_proj\.weight", "layer{}/attn/value/kernel", "qkv"),
    (_M + r"layers\.(\d+)\.self_attn\.o_proj\.weight", "layer{}/attn/out/kernel", "out"),
    (_M + r"layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight", "layer{}/{}/kernel", "linear"),
    (r"score\.weight", "head/kernel", "linear"),
    (r"lm_head\.weight", None, None),  # the causal-LM head (untied checkpoints): a classifier has none
    (_M + r"(?:layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq", None, None),  # a buffer older transformers saved
]
TABLES = {"bert": _BERT, "olmo": _OLMO}
FAMILY = {"bert": "BERT", "olmo": "OLMo", "vit": "ViT"}
_A = {"BERT": "a BERT", "OLMo": "an OLMo", "ViT": "a ViT"}
_ALL_TABLES = {**TABLES, "vit": _VIT}

# The Hugging Face tensor's shape for our parameter's shape ``s``, and the array in our layout.
_LAYOUTS = {
    None: (lambda s: tuple(s), lambda x, s: x),
    "linear": (lambda s: tuple(s[::-1]), lambda x, s: x.T),
    "qkv": (lambda s: (s[1] * s[2], s[0]), lambda x, s: x.T.reshape(s)),
    "qkv_bias": (lambda s: (s[0] * s[1],), lambda x, s: x.reshape(s)),
    "out": (lambda s: (s[2], s[0] * s[1]), lambda x, s: x.T.reshape(s)),
}

# config.json field -> model.kwargs argument. The dropout rates are training choices, not shapes: read from the
# checkpoint's config.json when model.kwargs does not set them, never compared (model.kwargs may change them).
_BERT_CONFIG = {"vocab_size": "vocab_size", "hidden_size": "hidden", "num_hidden_layers": "layers",
                "num_attention_heads": "heads", "intermediate_size": "intermediate",
                "max_position_embeddings": "max_positions", "type_vocab_size": "type_vocab_size",
                "layer_norm_eps": "layer_norm_eps", "hidden_act": "hidden_act", "hidden_dropout_prob": "dropout",
                "attention_probs_dropout_prob": "attention_dropout"}
_OLMO_CONFIG = {"vocab_size": "vocab_size", "hidden_size": "hidden", "num_hidden_layers": "layers",
                "num_attention_heads": "heads", "intermediate_size": "intermediate",
                "max_position_embeddings": "max_positions", "hidden_act": "hidden_act"}
_NOT_COMPARED = ("dropout", "attention_dropout")


def _match(table, name):
  """``(target or None, layout)`` of the first pattern of ``table`` matching ``name``, or False."""
  for pattern, target, layout in table:
    m = re.fullmatch(pattern, name)
    if m is not None:
      return (target.format(*m.groups()) if target else None), layout
  return False


def _unsupported(cfg: dict, where: str, checks) -> None:
  bad = [f"{field} = {cfg[field]!r} ({why})" for field, ok, why in checks if field in cfg and not ok(cfg[field])]
  if bad:
    raise PretrainedError(f"init.checkpoint: {where} describes a variant this model does not implement: " +
                          "; ".join(bad))


def _rope_theta(cfg: dict, where: str) -> float:
  """``rope_theta`` of an OLMo config: top-level (older files) or in ``rope_parameters`` (transformers 5); only
  the default rotary type (no scaling) is implemented."""
  rope = cfg.get("rope_parameters") or {}
  scaling = cfg.get("rope_scaling")
  kind = rope.get("rope_type", "default") if isinstance(rope, dict) else None
  scaling_kind = (scaling.get("rope_type") or scaling.get("type")) if isinstance(scaling, dict) else scaling
  if kind != "default" or (scaling and scaling_kind not in (None, "default")):
    raise PretrainedError(f"init.checkpoint: {where}: rotary scaling {rope or scaling!r} is not implemented (only "
                          f"rope_type 'default')")
  return float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))


def hf_model_kwargs(path, cfg: dict | None = None) -> tuple[str, dict]:
  """``(model.name, model.kwargs)`` of a Hugging Face checkpoint folder's ``config.json`` (``cfg``: that file
  already read). A ``model_type`` other than ``bert`` or ``olmo``, or a variant the models do not implement
  (relative positions, grouped-query attention, biases in OLMo, rotary scaling), is a PretrainedError."""
  ckpt = path if isinstance(path, HFCheckpoint) else HFCheckpoint(path)
  where = str(ckpt.config_path)
  cfg = ckpt.config() if cfg is None else cfg
  if cfg is None:
    raise PretrainedError(f"init.checkpoint: {where} does not exist")
  kind = cfg.get("model_type")
  if kind == "bert":
    _unsupported(cfg, where, [
        ("position_embedding_type", lambda v: v == "absolute", "only absolute position embeddings"),
        ("is_decoder", lambda v: not v, "an encoder only"),
        ("add_cross_attention", lambda v: not v, "no cross-attention")])
    kwargs = {ours: cfg[theirs] for theirs, ours in _BERT_CONFIG.items() if theirs in cfg}
    return "bert", kwargs
  if kind == "olmo":
    heads = cfg.get("num_attention_heads")
    _unsupported(cfg, where, [
        ("num_key_value_heads", lambda v: v in (None, heads), "one key/value head per query head"),
        ("attention_bias", lambda v: not v, "no biases"),
        ("head_dim", lambda v: v in (None, cfg.get("hidden_size", 0) // max(heads or 1, 1)), "hidden_size / heads")])
    kwargs = {ours: cfg[theirs] for theirs, ours in _OLMO_CONFIG.items() if theirs in cfg}
    kwargs["rope_theta"] = _rope_theta(cfg, where)
    kwargs["clip_qkv"] = float(cfg.get("clip_qkv") or 0.0)
    return "olmo", kwargs
  raise PretrainedError(f"init.checkpoint: {where}: model_type {kind!r} is not read here; allowed: 'bert' "
                        f"(model.name=bert) and 'olmo' (OLMo-1, model.name=olmo)")


def check_hf_config(path, model_name: str, model_kwargs: dict | None = None) -> None:
  """The checkpoint's ``config.json`` (if it has one) against the model: its ``model_type`` must be
  ``model_name``'s and, given ``model_kwargs`` (``model.kwargs``), every size and setting must agree with the
  model's (arguments not given take the model's defaults). Raises PretrainedError naming each disagreement."""
  from butterfly_jax.models.registry import build_module
  ckpt = path if isinstance(path, HFCheckpoint) else HFCheckpoint(path)
  cfg = ckpt.config()
  if cfg is None:
    return
  kind = cfg.get("model_type")
  if kind in TABLES and kind != model_name:
    raise PretrainedError(f"init.checkpoint: {ckpt.folder} is {_A[FAMILY[kind]]} checkpoint ("
                          f"{ckpt.config_path.name}: model_type {kind!r}), not {_A[FAMILY[model_name]]} one "
                          f"(model.name={model_name})")
  name, theirs = hf_model_kwargs(ckpt, cfg)
  if name != model_name:  # a model_type read here as another model
    raise PretrainedError(f"init.checkpoint: {ckpt.config_path} has model_type {kind!r}; model.name={model_name} "
                          f"reads {model_name!r}")
  if model_kwargs is None:
    return
  module = build_module(model_name, 1, **model_kwargs)
  fields = {v: k for k, v in {**_BERT_CONFIG, **_OLMO_CONFIG, "rope_theta": "rope_theta",
                              "clip_qkv": "clip_qkv"}.items()}
  problems = [f"model.kwargs.{arg} = {getattr(module, arg)!r}, but {fields[arg]} = {value!r} in config.json"
              for arg, value in theirs.items() if arg not in _NOT_COMPARED and getattr(module, arg) != value]
  if problems:
    raise PretrainedError(f"init.checkpoint: {ckpt.config_path} disagrees with the model (set model.kwargs from "
                          f"it: butterfly_jax.pretrained_text.hf_model_kwargs):\n  " + "\n  ".join(problems))


def _wrong_family(ckpt: HFCheckpoint, model_name: str, names) -> None:
  """PretrainedError when most of the file's tensors are another family's names (an OLMo file for ``bert``)."""
  own = sum(_match(TABLES[model_name], n) is not False for n in names)
  for family, table in _ALL_TABLES.items():
    if family == model_name:
      continue
    theirs = [n for n in names if _match(table, n) is not False and _match(TABLES[model_name], n) is False]
    if len(theirs) > own:
      raise PretrainedError(
          f"init.checkpoint: {ckpt.path} is {_A[FAMILY[family]]} checkpoint ({len(theirs)} of its {len(names)} "
          f"tensors have {FAMILY[family]} names, such as {theirs[0]}), not {_A[FAMILY[model_name]]} one "
          f"(model.name={model_name})")


def load_text_weights(path, model_name: str, template, keep_head: bool = False, model_kwargs: dict | None = None,
                      read: bool = True):
  """``template`` with the checkpoint's parameters (:mod:`module docstring <butterfly_jax.pretrained_text>`);
  ``read=False`` checks everything from the headers alone and returns None (``template`` may then hold
  ``jax.ShapeDtypeStruct`` leaves)."""
  if model_name not in TABLES:
    raise PretrainedError(f"init.checkpoint: no Hugging Face loader for model {model_name!r}; allowed: "
                          f"{', '.join(TABLES)}")
  ckpt = HFCheckpoint(path)
  check_hf_config(ckpt, model_name, model_kwargs)
  names = sorted(ckpt.shapes)
  _wrong_family(ckpt, model_name, names)
  family = FAMILY[model_name]
  where = ckpt.source.name
  mapped, problems = {}, []  # our name -> (their name, layout)
  for name in names:
    found = _match(TABLES[model_name], name)
    if found is False:
      problems.append(f"{name}: not a {family} parameter this loader knows")
    elif found[0] is not None:
      target, layout = found
      if target in mapped:
        problems.append(f"{name} and {mapped[target][0]}: both are {target}")
      mapped[target] = (name, layout)
  ours = tree_math.flat_dict(template)
  for name, x in ours.items():
    if name.startswith("head/") and not keep_head:
      continue
    if name not in mapped:
      note = " (a checkpoint without a classifier needs init.keep_head=False)" if name.startswith("head/") else ""
      problems.append(f"{name}: missing from {where}{note}")
      continue
    theirs, layout = mapped[name]
    shape = tuple(x.shape)
    expected = _LAYOUTS[layout][0](shape)
    if ckpt.shapes[theirs] != expected:
      problems.append(f"{name} ({theirs}): file shape {ckpt.shapes[theirs]}, the model needs {expected} "
                      f"(its parameter is {shape})")
  problems += [f"{mapped[n][0]}: in the file, but the model has no {n}" for n in sorted(set(mapped) - set(ours))]
  if problems:
    raise PretrainedError(f"init.checkpoint: {ckpt.path} does not fit model {model_name}:\n  " +
                          "\n  ".join(problems))
  if not read:
    return None
  wanted = {n: mapped[n] for n in ours if n in mapped and (keep_head or not n.startswith("head/"))}
  arrays = ckpt.read([theirs for theirs, _ in wanted.values()])
  out = {}
  for name, x in ours.items():
    if name in wanted:
      theirs, layout = wanted[name]
      out[name] = np.asarray(_LAYOUTS[layout][1](arrays[theirs], tuple(x.shape)), x.dtype)
    else:
      out[name] = x
  return tree_math.unflatten_like(template, out)


def load_bert_weights(path, template, keep_head: bool = False, model_kwargs: dict | None = None) -> dict:
  """A BERT checkpoint (``BertForSequenceClassification``, ``BertForPreTraining``, ``BertModel`` names) onto
  :class:`~butterfly_jax.models.bert.BERT` parameters shaped like ``template``."""
  return load_text_weights(path, "bert", template, keep_head, model_kwargs)


def load_olmo_weights(path, template, keep_head: bool = False, model_kwargs: dict | None = None) -> dict:
  """An OLMo-1 checkpoint (``OlmoForSequenceClassification``, ``OlmoForCausalLM``, ``OlmoModel`` names) onto
  :class:`~butterfly_jax.models.olmo.OLMo` parameters shaped like ``template``."""
  return load_text_weights(path, "olmo", template, keep_head, model_kwargs)
