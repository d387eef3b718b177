"""Pre-trained ViT weights from outside: safetensors (Hugging Face names), Flax msgpack and orbax checkpoints
(this project's names or the original Google ViT / big_vision names) and the original Google ``.npz`` files,
mapped onto :class:`~butterfly_jax.models.vit.ViT`. Layers the ViT does not have and fine-tuning never uses
(the ImageNet-21k checkpoints' ``pooler`` / ``pre_logits``) are skipped.

``load_vit_weights(path, template)`` returns parameters shaped like ``template`` (a ViT's parameters), or raises
:class:`PretrainedError` listing every parameter that is missing, unknown or misshapen. The safetensors reader
is a few lines of this module (the format is a JSON header and raw little-endian arrays), so no extra
dependency is needed; it checks every header entry (dtype, shape, offsets inside the data, size, no overlaps)
before reading, and every reader turns a damaged file into a PretrainedError naming it.
"""

import json
import math
import re
import struct
from pathlib import Path

import numpy as np

from butterfly_jax import tree_math


class PretrainedError(ValueError):
  """A weights file that cannot be read or does not fit the model; the message names the parameters."""


_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
_ST_ITEMSIZE = {"BF16": 2, **{name: np.dtype(t).itemsize for name, t in _ST_DTYPES.items()}}


def _unique_keys(pairs):
  keys = [k for k, _ in pairs]
  if len(set(keys)) != len(keys):
    raise ValueError(f"duplicate keys {sorted({k for k in keys if keys.count(k) > 1})}")
  return dict(pairs)


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _safetensors_entry(name, info, data_len: int):
  """(dtype, shape, begin, end) of one header entry; ValueError saying what is wrong with it."""
  if not isinstance(info, dict):
    raise ValueError(f"tensor {name!r}: expected an object, got {type(info).__name__}")
  missing = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
  if missing:
    raise ValueError(f"tensor {name!r}: missing {', '.join(missing)}")
  dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
  if not isinstance(dtype, str) or dtype not in _ST_ITEMSIZE:
    raise ValueError(f"tensor {name!r}: unsupported dtype {dtype!r} (supported: {', '.join(_ST_ITEMSIZE)})")
  if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
    raise ValueError(f"tensor {name!r}: shape must be a list of non-negative integers, got {shape!r}")
  if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))
          and 0 <= offsets[0] <= offsets[1] <= data_len):
    raise ValueError(f"tensor {name!r}: data_offsets must be [begin, end] with 0 <= begin <= end <= {data_len} "
                     f"(the data's length), got {offsets!r}")
  begin, end = offsets
  if end - begin != _ST_ITEMSIZE[dtype] * math.prod(shape):
    raise ValueError(f"tensor {name!r}: {end - begin} bytes, but {dtype} {shape} takes "
                     f"{_ST_ITEMSIZE[dtype] * math.prod(shape)}")
  return dtype, shape, begin, end


def read_safetensors(path) -> dict:
  """``{name: array}`` of a ``.safetensors`` file (BF16 is widened to float32). The header is checked before
  any array is read: PretrainedError names the file and the entry at fault."""
  try:
    raw = Path(path).read_bytes()
  except OSError as e:
    raise PretrainedError(f"init.checkpoint: {path}: cannot read ({type(e).__name__}: {e})") from None
  try:
    if len(raw) < 8:
      raise ValueError(f"{len(raw)} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
      raise ValueError(f"header length {n} exceeds the {len(raw) - 8} bytes after it")
    try:
      header = json.loads(raw[8:8 + n], object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
      raise ValueError(f"the header is not JSON ({e})") from None
    if not isinstance(header, dict):
      raise ValueError(f"the header is a JSON {type(header).__name__}, not an object")
    meta = header.pop("__metadata__", {})
    if not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
      raise ValueError("__metadata__ must be an object of strings")
    data = memoryview(raw)[8 + n:]
    entries = {name: _safetensors_entry(name, info, len(data)) for name, info in header.items()}
    spans = sorted((begin, end, name) for name, (_, _, begin, end) in entries.items() if end > begin)
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
      if begin < end:
        raise ValueError(f"tensors {a!r} and {b!r} overlap")
  except ValueError as e:
    raise PretrainedError(f"init.checkpoint: {path} is not a valid safetensors file: {e}") from None
  out = {}
  for name, (dtype, shape, begin, end) in entries.items():
    if dtype == "BF16":
      bits = np.frombuffer(data[begin:end], "<u2").astype(np.uint32) << 16
      out[name] = bits.view(np.float32).reshape(shape)
    else:
      out[name] = np.frombuffer(data[begin:end], np.dtype(_ST_DTYPES[dtype]).newbyteorder("<")).reshape(shape)
  return out


def read_flax(path) -> dict:
  """Flat ``{'a/b/c': array}`` of a Flax msgpack file or an orbax checkpoint directory."""
  path = Path(path)
  if path.is_dir():
    from butterfly_jax.rundir import restore_checkpoint
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
