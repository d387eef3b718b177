"""Published ViT weights: safetensors (Hugging Face names) and Flax msgpack (Google names), written here."""

import json
import struct

import jax
import numpy as np
import pytest
from flax import serialization

import butterfly_jax as bj
from butterfly_jax.core import tree_math
from butterfly_jax.io.pretrained import PretrainedError, load_vit_weights, read_safetensors
from butterfly_jax.models import make_model
from butterfly_jax.run.configs_embedded import smoke
from butterfly_jax.run.experiment import run, weights_sha256

KW = dict(patch=4, depth=2, width=24, heads=3, mlp_dim=40)


def _write_safetensors(path, tensors):
  header, blobs, offset = {}, [], 0
  for name, x in tensors.items():
    x = np.ascontiguousarray(x, np.float32)
    header[name] = {"dtype": "F32", "shape": list(x.shape), "data_offsets": [offset, offset + x.nbytes]}
    blobs.append(x.tobytes())
    offset += x.nbytes
  raw = json.dumps(header).encode()
  path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def _as_hf(params, heads):
  """Our ViT parameters under Hugging Face transformers' names and layouts."""
  f = {k: np.asarray(v) for k, v in tree_math.flat_dict(params).items()}
  out = {"vit.embeddings.patch_embeddings.projection.weight": f["embed/kernel"].transpose(3, 2, 0, 1),
         "vit.embeddings.patch_embeddings.projection.bias": f["embed/bias"],
         "vit.embeddings.cls_token": f["cls"], "vit.embeddings.position_embeddings": f["pos_embedding"],
         "vit.layernorm.weight": f["norm/scale"], "vit.layernorm.bias": f["norm/bias"],
         "classifier.weight": f["head/kernel"].T, "classifier.bias": f["head/bias"]}
  for i in range(KW["depth"]):
    p, h = f"vit.encoder.layer.{i}.", f"block{i}/"
    for ours, theirs in (("norm1", "layernorm_before"), ("norm2", "layernorm_after")):
      out[p + theirs + ".weight"], out[p + theirs + ".bias"] = f[h + ours + "/scale"], f[h + ours + "/bias"]
    for n in ("query", "key", "value"):
      k = f[h + f"attn/{n}/kernel"]
      out[p + f"attention.attention.{n}.weight"] = k.reshape(k.shape[0], -1).T
      out[p + f"attention.attention.{n}.bias"] = f[h + f"attn/{n}/bias"].reshape(-1)
    o = f[h + "attn/out/kernel"]
    out[p + "attention.output.dense.weight"] = o.reshape(-1, o.shape[-1]).T
    out[p + "attention.output.dense.bias"] = f[h + "attn/out/bias"]
    out[p + "intermediate.dense.weight"], out[p + "intermediate.dense.bias"] = f[h + "fc1/kernel"].T, f[h + "fc1/bias"]
    out[p + "output.dense.weight"], out[p + "output.dense.bias"] = f[h + "fc2/kernel"].T, f[h + "fc2/bias"]
  return out


def _as_google(params):
  f = {k: np.asarray(v) for k, v in tree_math.flat_dict(params).items()}
  tree = {"embedding": {"kernel": f["embed/kernel"], "bias": f["embed/bias"]}, "cls": f["cls"],
          "head": {"kernel": f["head/kernel"], "bias": f["head/bias"]}, "Transformer": {
              "posembed_input": {"pos_embedding": f["pos_embedding"]},
              "encoder_norm": {"scale": f["norm/scale"], "bias": f["norm/bias"]}}}
  for i in range(KW["depth"]):
    h = f"block{i}/"
    tree["Transformer"][f"encoderblock_{i}"] = {
        "LayerNorm_0": {"scale": f[h + "norm1/scale"], "bias": f[h + "norm1/bias"]},
        "LayerNorm_2": {"scale": f[h + "norm2/scale"], "bias": f[h + "norm2/bias"]},
        "MultiHeadDotProductAttention_1": {n: {"kernel": f[h + f"attn/{n}/kernel"], "bias": f[h + f"attn/{n}/bias"]}
                                           for n in ("query", "key", "value", "out")},
        "MlpBlock_3": {"Dense_0": {"kernel": f[h + "fc1/kernel"], "bias": f[h + "fc1/bias"]},
                       "Dense_1": {"kernel": f[h + "fc2/kernel"], "bias": f[h + "fc2/bias"]}}}
  return tree


@pytest.fixture(scope="module")
def vit():
  apply_fn, params, _ = bj.create_model("vit", jax.random.key(0), (16, 16, 3), 10, **KW)
  params = jax.tree_util.tree_map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(x.size), x.shape), params)
  _, fresh, _ = bj.create_model("vit", jax.random.key(1), (16, 16, 3), 10, **KW)
  return jax.jit(apply_fn), params, fresh


@pytest.mark.parametrize("fmt", ["safetensors", "msgpack", "npz"])
def test_published_formats_load_to_the_same_network(vit, tmp_path, fmt):
  apply_fn, params, fresh = vit
  if fmt == "safetensors":
    path = tmp_path / "model.safetensors"
    hf = _as_hf(params, KW["heads"])
    hf["vit.pooler.dense.weight"] = np.zeros((24, 24), np.float32)  # the in21k checkpoints' unused pooler
    _write_safetensors(path, hf)
    assert read_safetensors(path)["vit.embeddings.cls_token"].shape == (1, 1, 24)
  elif fmt == "npz":  # the original Google checkpoints: flat "Transformer/..." names
    path = tmp_path / "model.npz"
    flat = tree_math.flat_dict(_as_google(params))
    flat["pre_logits/kernel"] = np.zeros((24, 24), np.float32)  # in21k's unused representation layer
    np.savez(path, **flat)
  else:
    path = tmp_path / "model.msgpack"
    path.write_bytes(serialization.msgpack_serialize(_as_google(params)))
  loaded = load_vit_weights(path, fresh, keep_head=True)
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  x = jax.random.normal(jax.random.key(5), (2, 16, 16, 3))
  np.testing.assert_allclose(apply_fn(loaded, x)[0], apply_fn(params, x)[0], rtol=1e-6, atol=1e-6)
  fresh_head = load_vit_weights(path, fresh)  # default: the head is the template's (fresh) one
  np.testing.assert_array_equal(fresh_head["head"]["kernel"], fresh["head"]["kernel"])
  np.testing.assert_array_equal(fresh_head["block1"]["fc1"]["kernel"], params["block1"]["fc1"]["kernel"])


def test_a_wrong_shape_or_a_missing_parameter_is_named(vit, tmp_path):
  _, params, fresh = vit
  hf = _as_hf(params, KW["heads"])
  hf["vit.encoder.layer.1.intermediate.dense.weight"] = np.zeros((41, 24), np.float32)
  del hf["vit.layernorm.bias"]
  hf["vit.encoder.layer.0.attention.attention.rotary.weight"] = np.zeros((24, 24), np.float32)
  path = tmp_path / "bad.safetensors"
  _write_safetensors(path, hf)
  with pytest.raises(PretrainedError) as e:
    load_vit_weights(path, fresh)
  msg = str(e.value)
  assert "block1/fc1/kernel: file shape (24, 41), model shape (24, 40)" in msg
  assert "norm/bias: missing from bad.safetensors" in msg
  assert "vit.encoder.layer.0.attention.attention.rotary.weight: not a ViT parameter this loader knows" in msg


def test_vit_image_size_resizes_the_input_inside_the_model(vit):
  apply_fn, params, _ = vit
  resizing, _ = make_model("vit", (8, 8, 3), 10, image_size=16, **KW)
  x = jax.random.normal(jax.random.key(6), (2, 8, 8, 3))
  up = jax.image.resize(x, (2, 16, 16, 3), "bilinear")
  np.testing.assert_allclose(resizing(params, x)[0], apply_fn(params, up)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_vit_family_fine_tunes_from_a_weights_file(vit, tmp_path):
  _, params, _ = vit
  path = tmp_path / "model.safetensors"
  _write_safetensors(path, _as_hf(params, KW["heads"]))
  c = smoke()
  c.data.name = "synthetic"
  c.data.synthetic.num_train, c.data.synthetic.num_test, c.data.synthetic.shape = 256, 64, (16, 16, 3)
  c.model.name = "vit"
  c.model.kwargs = KW
  c.init.checkpoint = str(path)
  c.checkpoint.keep = ("0",)
  c.train.steps, c.perturb.time = "6", "2"
  c.eval.cka_examples = 0
  res = run(c, tmp_path / "run")
  assert res["init"]["head"] == "fresh"
  from butterfly_jax.io.rundir import restore_checkpoint
  start = tree_math.flat_dict(restore_checkpoint(tmp_path / "run" / "checkpoints" / "keep" / "0")["params"])
  for name, x in tree_math.flat_dict(params).items():
    if not name.startswith("head/"):
      np.testing.assert_array_equal(start[name], np.asarray(x))
  # the fingerprint of the weights read (the fresh head left out), as for a saved run's kept step
  body = [n for n in start if not n.startswith("head/")]
  assert res["init"]["weights_sha256"] == weights_sha256(start, body)
