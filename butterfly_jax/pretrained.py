"""Pre-trained weights from outside, and the readers of their files.

ViT weights: safetensors (Hugging Face names), Flax msgpack and orbax checkpoints (this project's names or the
original Google ViT / big_vision names) and the original Google ``.npz`` files, mapped onto
:class:`~butterfly_jax.models.vit.ViT` by :func:`load_vit_weights`. Layers the ViT does not have and fine-tuning
never uses (the ImageNet-21k checkpoints' ``pooler`` / ``pre_logits``) are skipped. BERT and OLMo weights (Hugging
Face checkpoints, one file or shards with an index): :mod:`butterfly_jax.pretrained_text`. :func:`load_weights`
reads ``init.checkpoint`` for any of them.

Every loader returns parameters shaped like a template (the model's parameters, e.g. a fresh init), or raises
:class:`PretrainedError` listing every parameter that is missing, unknown or misshapen. Safetensors files are read
by the ``safetensors`` library, which checks each header (dtypes, shapes, offsets inside the file, no overlaps)
before reading; every reader turns a damaged file into a PretrainedError naming it.
"""

import json
import re
from pathlib import Path

import numpy as np
import safetensors
from safetensors import safe_open

from butterfly_jax import tree_math
from butterfly_jax.models.registry import TEXT_MODELS


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


VIT_MODELS = ("vit", "vit_b16")
WEIGHT_MODELS = VIT_MODELS + TEXT_MODELS  # the models whose init.checkpoint may be a weights file or folder


def load_weights(path, model_name: str, template, keep_head: bool = False, model_kwargs: dict | None = None,
                 read: bool = True):
  """``init.checkpoint``'s weights for model ``model_name``: a ViT weights file (:func:`load_vit_weights`) or a
  Hugging Face BERT / OLMo checkpoint folder or file (:mod:`butterfly_jax.pretrained_text`), as ``template``'s
  parameters with a fresh head unless ``keep_head``. ``read=False`` (text models) checks the checkpoint from its
  headers alone, before any compute, and returns None."""
  if model_name in VIT_MODELS:
    return load_vit_weights(path, template, keep_head) if read else None
  if model_name in TEXT_MODELS:
    from butterfly_jax.pretrained_text import load_text_weights
    return load_text_weights(path, model_name, template, keep_head, model_kwargs, read)
  raise PretrainedError(f"init.checkpoint: a weights file is read for models {', '.join(WEIGHT_MODELS)} "
                        f"only; for model {model_name} give 'RUN_DIR:STEP' of a saved run")
