"""Pre-trained ViT weights from outside: safetensors (Hugging Face names), Flax msgpack and orbax checkpoints
(this project's names or the original Google ViT / big_vision names) and the original Google ``.npz`` files,
mapped onto :class:`~butterfly_jax.models.vit.ViT`. Layers the ViT does not have and fine-tuning never uses
(the ImageNet-21k checkpoints' ``pooler`` / ``pre_logits``) are skipped.

``load_vit_weights(path, template)`` returns parameters shaped like ``template`` (a ViT's parameters), or raises
:class:`PretrainedError` listing every parameter that is missing, unknown or misshapen. The safetensors reader
is a few lines of this module (the format is a JSON header and raw little-endian arrays), so no extra
dependency is needed.
"""

import json
import re
import struct
from pathlib import Path

import numpy as np

from butterfly_jax import tree_math


class PretrainedError(ValueError):
  """A weights file that cannot be read or does not fit the model; the message names the parameters."""


_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path) -> dict:
  """``{name: array}`` of a ``.safetensors`` file (BF16 is widened to float32)."""
  raw = Path(path).read_bytes()
  try:
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
  except (struct.error, ValueError) as e:
    raise PretrainedError(f"init.checkpoint: {path} is not a safetensors file ({e})") from None
  data, out = raw[8 + n:], {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    begin, end = info["data_offsets"]
    if info["dtype"] == "BF16":
      bits = np.frombuffer(data[begin:end], "<u2").astype(np.uint32) << 16
      out[name] = bits.view(np.float32).reshape(info["shape"])
    elif info["dtype"] in _ST_DTYPES:
      out[name] = np.frombuffer(data[begin:end], np.dtype(_ST_DTYPES[info["dtype"]]).newbyteorder("<")).reshape(
          info["shape"])
    else:
      raise PretrainedError(f"init.checkpoint: {path}: tensor {name} has unsupported dtype {info['dtype']}")
  return out


def read_flax(path) -> dict:
  """Flat ``{'a/b/c': array}`` of a Flax msgpack file or an orbax checkpoint directory."""
  path = Path(path)
  if path.is_dir():
    from butterfly_jax.rundir import restore_checkpoint
    tree = restore_checkpoint(path)
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
    with np.load(path, allow_pickle=False) as f:
      return {name: np.asarray(f[name]) for name in f.files}
  except (OSError, ValueError) as e:
    raise PretrainedError(f"init.checkpoint: {path} is not a NumPy .npz file ({e})") from None


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
