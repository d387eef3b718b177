"""Pre-trained weights from outside, and the readers of their files.

ViT weights: safetensors (Hugging Face names), Flax msgpack and orbax checkpoints (this project's names or the
original Google ViT / big_vision names) and the original Google ``.npz`` files, mapped onto
:class:`~butterfly_jax.models.vit.ViT` by :func:`load_vit_weights`. Layers the ViT does not have and fine-tuning
never uses (the ImageNet-21k checkpoints' ``pooler`` / ``pre_logits``) are skipped. BERT and OLMo weights (Hugging
Face checkpoints, one file or shards with an index): :func:`load_text_weights` (below). :func:`load_weights`
reads ``init.checkpoint`` for any of them.

Every loader returns parameters shaped like a template (the model's parameters, e.g. a fresh init), or raises
:class:`PretrainedError` listing every parameter that is missing, unknown or misshapen. Safetensors files are read
by the ``safetensors`` library, which checks each header (dtypes, shapes, offsets inside the file, no overlaps)
before reading; every reader turns a damaged file into a PretrainedError naming it.

BERT and OLMo weights from Hugging Face checkpoints (transformers' safetensors folders, one file or shards with
an index: :class:`HFCheckpoint`), mapped by name onto
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

import json
import re
from pathlib import Path

import numpy as np
import safetensors
from safetensors import safe_open

from butterfly_jax.core import tree_math
from butterfly_jax.io.rundir import restore_checkpoint
from butterfly_jax.models.registry import TEXT_MODELS
from butterfly_jax.models.registry import build_module


class PretrainedError(ValueError):
  """A weights file that cannot be read or does not fit the model; the message names the parameters."""


def _widened(x: np.ndarray) -> np.ndarray:
  """bfloat16 (an ml_dtypes type NumPy cannot compute with) as float32; other arrays as they are."""
  return x.astype(np.float32) if x.dtype.name == "bfloat16" else x


def _safetensors_error(path, e: Exception) -> PretrainedError:
  if isinstance(e, OSError):
    return PretrainedError(f"init.checkpoint: {path}: cannot read ({type(e).__name__}: {e})")
  return PretrainedError(f"init.checkpoint: {path} is not a valid safetensors file: {e}")


def safetensors_shapes(path) -> dict:
  """``{name: shape}`` of a ``.safetensors`` file, from its header alone (nothing else is read)."""
  try:
    with safe_open(str(path), framework="numpy") as f:
      return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
  except (OSError, safetensors.SafetensorError) as e:
    raise _safetensors_error(path, e) from None


def read_safetensors(path, names=None) -> dict:
  """``{name: array}`` of a ``.safetensors`` file (or of its tensors ``names``), BF16 widened to float32. The
  library checks the header before any array is read: PretrainedError names the file and what is wrong."""
  try:
    with safe_open(str(path), framework="numpy") as f:
      return {name: _widened(f.get_tensor(name)) for name in (f.keys() if names is None else names)}
  except (OSError, safetensors.SafetensorError) as e:
    raise _safetensors_error(path, e) from None
  except Exception as e:  # a dtype NumPy cannot hold (float8, ...)
    raise PretrainedError(f"init.checkpoint: {path}: cannot read its tensors as NumPy arrays "
                          f"({type(e).__name__}: {e})") from None


INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# What else a Hugging Face folder may hold instead of safetensors weights: not read (pickles can run code)
_OTHER_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


class HFCheckpoint:
  """The tensors of a Hugging Face checkpoint: a folder holding ``model.safetensors`` or shards listed by
  ``model.safetensors.index.json`` (its ``weight_map``: tensor name -> shard file), or one such file named
  directly; the ``config.json`` beside it, if any (:meth:`config`). Only the headers are read on construction
  (``shapes``); :meth:`read` reads arrays."""

  def __init__(self, path):
    path = Path(path)
    self.path = path
    if not path.exists():
      raise PretrainedError(f"init.checkpoint: {path} does not exist")
    if path.is_dir():
      found = [name for name in (SINGLE, INDEX) if (path / name).is_file()]
      if not found:
        other = [name for name in _OTHER_WEIGHTS if (path / name).exists()]
        raise PretrainedError(
            f"init.checkpoint: {path} holds no {SINGLE} or {INDEX}" + (
                f" (it has {', '.join(other)}: only safetensors weights are read, since PyTorch pickles can run "
                f"code; convert it with transformers: from_pretrained(...).save_pretrained(DIR, "
                f"safe_serialization=True))" if other else ""))
      path = path / found[0]
    self.source = path  # the safetensors file or the index
    self.folder = path.parent
    self.config_path = self.folder / "config.json"
    self.files = {}   # tensor name -> the file holding it
    self.shapes = {}  # tensor name -> shape
    if path.name.endswith(".json"):
      self._read_index(path)
    else:
      self.shapes = safetensors_shapes(path)
      self.files = dict.fromkeys(self.shapes, path)

  def _read_index(self, index: Path) -> None:
    try:
      spec = json.loads(index.read_text())
    except (OSError, ValueError) as e:
      raise PretrainedError(f"init.checkpoint: {index} is not a readable JSON file ({e})") from None
    weight_map = spec.get("weight_map") if isinstance(spec, dict) else None
    if not (isinstance(weight_map, dict) and weight_map
            and all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items())):
      raise PretrainedError(f"init.checkpoint: {index}: expected an object with a non-empty \"weight_map\" of "
                            f"tensor names to shard file names")
    shards = sorted(set(weight_map.values()))
    bad = [s for s in shards if Path(s).name != s or s in (".", "..") or not s.endswith(".safetensors")]
    if bad:
      raise PretrainedError(f"init.checkpoint: {index}: shards must be .safetensors files beside the index, got "
                            f"{bad}")
    missing = [s for s in shards if not (self.folder / s).is_file()]
    if missing:
      raise PretrainedError(f"init.checkpoint: {index} lists shards that are not in {self.folder}: {missing}")
    problems = []
    for shard in shards:
      file = self.folder / shard
      for name, shape in safetensors_shapes(file).items():
        if name in self.files:
          problems.append(f"{name}: in both {self.files[name].name} and {shard}")
        self.files[name], self.shapes[name] = file, shape
    for name, shard in weight_map.items():
      if name not in self.files or self.files[name].name != shard:
        problems.append(f"{name}: listed in {index.name} for {shard}, but not in it")
    if problems:
      raise PretrainedError(f"init.checkpoint: the shards of {index} do not agree with it:\n  " +
                            "\n  ".join(problems))

  def read(self, names) -> dict:
    """``{name: array}`` of the tensors ``names``, each shard opened once."""
    by_file = {}
    for name in names:
      by_file.setdefault(self.files[name], []).append(name)
    out = {}
    for file, group in by_file.items():
      out.update(read_safetensors(file, group))
    return out

  def config(self) -> dict | None:
    """The folder's ``config.json`` (transformers' model config), or None where there is none."""
    if not self.config_path.is_file():
      return None
    try:
      cfg = json.loads(self.config_path.read_text())
    except (OSError, ValueError) as e:
      raise PretrainedError(f"init.checkpoint: {self.config_path} is not a readable JSON file ({e})") from None
    if not isinstance(cfg, dict):
      raise PretrainedError(f"init.checkpoint: {self.config_path}: expected a JSON object")
    return cfg


def read_flax(path) -> dict:
  """Flat ``{'a/b/c': array}`` of a Flax msgpack file or an orbax checkpoint directory."""
  path = Path(path)
  if path.is_dir():
    try:
      tree = restore_checkpoint(path)
    except Exception as e:  # orbax raises several types on a foreign or damaged directory
      raise PretrainedError(f"init.checkpoint: {path} is not a readable orbax checkpoint "
                            f"({type(e).__name__}: {e})") from None
  else:
    from flax import serialization
    try:
      tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack raises several types on foreign bytes
      raise PretrainedError(f"init.checkpoint: {path} is not a Flax msgpack file ({e})") from None
  if isinstance(tree, dict) and set(tree) == {"params"}:
    tree = tree["params"]
  return {name: np.asarray(x) for name, x in tree_math.flat_dict(tree).items()}


def read_npz(path) -> dict:
  """``{name: array}`` of a NumPy ``.npz`` file (the original Google ViT checkpoints, ``Transformer/...`` names)."""
  try:
    f = np.load(path, allow_pickle=False)
    if not isinstance(f, np.lib.npyio.NpzFile):
      raise ValueError("a single .npy array, not an archive of named arrays")
    with f:
      return {name: np.asarray(f[name]) for name in f.files}
  except Exception as e:  # zipfile, zlib and the .npy reader raise several types on foreign bytes
    raise PretrainedError(f"init.checkpoint: {path} is not a NumPy .npz file ({type(e).__name__}: {e})") from None


# Hugging Face transformers ViT names -> ours. Linear weights are (out, in): transposed; attention projections
# are reshaped to (width, heads, head_dim) and the output projection to (heads, head_dim, width).
_HF = [
    (r"(?:vit\.)?embeddings\.patch_embeddings\.projection\.weight", "embed/kernel", "conv"),
    (r"(?:vit\.)?embeddings\.patch_embeddings\.projection\.bias", "embed/bias", None),
    (r"(?:vit\.)?embeddings\.cls_token", "cls", None),
    (r"(?:vit\.)?embeddings\.position_embeddings", "pos_embedding", None),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.layernorm_before\.weight", "block{}/norm1/scale", None),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.layernorm_before\.bias", "block{}/norm1/bias", None),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.weight", "block{}/attn/{}/kernel",
     "qkv"),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.bias", "block{}/attn/{}/bias",
     "qkv_bias"),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.attention\.output\.dense\.weight", "block{}/attn/out/kernel", "out"),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.attention\.output\.dense\.bias", "block{}/attn/out/bias", None),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.layernorm_after\.weight", "block{}/norm2/scale", None),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.layernorm_after\.bias", "block{}/norm2/bias", None),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.intermediate\.dense\.weight", "block{}/fc1/kernel", "linear"),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.intermediate\.dense\.bias", "block{}/fc1/bias", None),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.output\.dense\.weight", "block{}/fc2/kernel", "linear"),
    (r"(?:vit\.)?encoder\.layer\.(\d+)\.output\.dense\.bias", "block{}/fc2/bias", None),
    (r"(?:vit\.)?layernorm\.weight", "norm/scale", None),
    (r"(?:vit\.)?layernorm\.bias", "norm/bias", None),
    (r"classifier\.weight", "head/kernel", "linear"),
    (r"classifier\.bias", "head/bias", None),
    (r"(?:vit\.)?pooler\.dense\.(weight|bias)", None, None),  # the in21k checkpoints' pooler: unused, skipped
]

# The original Google ViT / big_vision Flax names -> ours (shapes already as ours).
_GOOGLE = [
    (r"embedding/(kernel|bias)", "embed/{}", None),
    (r"cls", "cls", None),
    (r"Transformer/posembed_input/pos_embedding", "pos_embedding", None),
    (r"Transformer/encoderblock_(\d+)/LayerNorm_0/(scale|bias)", "block{}/norm1/{}", None),
    (r"Transformer/encoderblock_(\d+)/MultiHeadDotProductAttention_1/(query|key|value|out)/(kernel|bias)",
     "block{}/attn/{}/{}", None),
    (r"Transformer/encoderblock_(\d+)/LayerNorm_2/(scale|bias)", "block{}/norm2/{}", None),
    (r"Transformer/encoderblock_(\d+)/MlpBlock_3/Dense_0/(kernel|bias)", "block{}/fc1/{}", None),
    (r"Transformer/encoderblock_(\d+)/MlpBlock_3/Dense_1/(kernel|bias)", "block{}/fc2/{}", None),
    (r"Transformer/encoder_norm/(scale|bias)", "norm/{}", None),
    (r"head/(kernel|bias)", "head/{}", None),
    (r"pre_logits/(kernel|bias)", None, None),  # the in21k checkpoints' representation layer: unused, skipped
]


_RESHAPES = {
    "conv": lambda x, heads: np.transpose(x, (2, 3, 1, 0)),        # (out, in, kh, kw) -> (kh, kw, in, out)
    "linear": lambda x, heads: x.T,                                  # (out, in) -> (in, out)
    "qkv": lambda x, heads: x.T.reshape(x.shape[1], heads, -1),      # (out, in) -> (in, heads, head_dim)
    "qkv_bias": lambda x, heads: x.reshape(heads, -1),
    "out": lambda x, heads: x.T.reshape(heads, -1, x.shape[0]),      # (out, in) -> (heads, head_dim, out)
}


def _rename(flat: dict, table, heads: int):
  """``flat`` under our names by ``table``'s first matching ``(pattern, target, reshape)`` (target None:
  skipped), and the names no pattern matches."""
  out, unknown = {}, []
  for name, x in flat.items():
    for pattern, target, how in table:
      m = re.fullmatch(pattern, name)
      if m is None:
        continue
      if target is not None:
        out[target.format(*m.groups())] = _RESHAPES[how](x, heads) if how else x
      break
    else:
      unknown.append(name)
  return out, unknown


def load_vit_weights(path, template, keep_head: bool = False) -> dict:
  """``template`` (a ViT's parameters, e.g. a fresh init) with every parameter replaced by the file's, except
  the head unless ``keep_head``. Raises PretrainedError listing every parameter that does not fit."""
  path = Path(path)
  if not path.exists():
    raise PretrainedError(f"init.checkpoint: {path} does not exist")
  ours = tree_math.flat_dict(template)
  heads = int(np.shape(ours["block0/attn/query/kernel"])[1]) if "block0/attn/query/kernel" in ours else 1
  if path.suffix == ".safetensors":
    loaded, unknown = _rename(read_safetensors(path), _HF, heads)
  elif path.suffix == ".npz":
    loaded, unknown = _rename(read_npz(path), _GOOGLE, heads)
  else:
    flat = read_flax(path)
    loaded, unknown = (flat, []) if "block0/attn/query/kernel" in flat or "embed/kernel" in flat else \
        _rename(flat, _GOOGLE, heads)
  problems = [f"{n}: not a ViT parameter this loader knows" for n in unknown]
  out = {}
  for name, x in ours.items():
    if name.startswith("head/") and not keep_head:
      out[name] = x
    elif name not in loaded:
      problems.append(f"{name}: missing from {path.name}")
    elif tuple(loaded[name].shape) != tuple(np.shape(x)):
      problems.append(f"{name}: file shape {tuple(loaded[name].shape)}, model shape {tuple(np.shape(x))}")
    else:
      out[name] = np.asarray(loaded[name], np.asarray(x).dtype)
  extra = sorted(n for n in loaded if n not in ours)
  problems += [f"{n}: in the file but not in the model" for n in extra]
  if problems:
    raise PretrainedError(f"init.checkpoint: {path} does not fit the model:\n  " + "\n  ".join(problems))
  return tree_math.unflatten_like(template, out)


# BERT and OLMo: Hugging Face checkpoints
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
_ALL_TABLES = {**TABLES, "vit": _HF}

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
                          f"it: butterfly_jax.io.pretrained.hf_model_kwargs):\n  " + "\n  ".join(problems))


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
  """``template`` with the checkpoint's parameters (:mod:`module docstring <butterfly_jax.io.pretrained>`);
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


VIT_MODELS = ("vit", "vit_b16")
WEIGHT_MODELS = VIT_MODELS + TEXT_MODELS  # the models whose init.checkpoint may be a weights file or folder


def load_weights(path, model_name: str, template, keep_head: bool = False, model_kwargs: dict | None = None,
                 read: bool = True):
  """``init.checkpoint``'s weights for model ``model_name``: a ViT weights file (:func:`load_vit_weights`) or a
  Hugging Face BERT / OLMo checkpoint folder or file (:func:`load_text_weights`), as ``template``'s
  parameters with a fresh head unless ``keep_head``. ``read=False`` (text models) checks the checkpoint from its
  headers alone, before any compute, and returns None."""
  if model_name in VIT_MODELS:
    return load_vit_weights(path, template, keep_head) if read else None
  if model_name in TEXT_MODELS:
    return load_text_weights(path, model_name, template, keep_head, model_kwargs, read)
  raise PretrainedError(f"init.checkpoint: a weights file is read for models {', '.join(WEIGHT_MODELS)} "
                        f"only; for model {model_name} give 'RUN_DIR:STEP' of a saved run")
