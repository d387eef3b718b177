"""Models: shapes, named features, explicit layer names, pinned parameter counts."""

import jax
import jax.numpy as jnp
import pytest

import butterfly_jax as bj
from butterfly_jax.core import tree_math


def _resnet20_count(w, classes=10):
  """ResNet-20 with LayerNorm (scale+bias), bias-free convs, 1x1 conv + norm shortcuts, dense head."""
  c = 16 * w
  n = 9 * 3 * c + 2 * c                                   # conv_in + norm_in
  n += 3 * (2 * 9 * c * c + 2 * 2 * c)                    # stage 1
  for cin, cout in ((c, 2 * c), (2 * c, 4 * c)):          # stages 2 and 3
    n += 9 * cin * cout + 9 * cout * cout + 2 * 2 * cout  # block 0 convs + norms
    n += cin * cout + 2 * cout                            # shortcut conv + norm
    n += 2 * (2 * 9 * cout * cout + 2 * 2 * cout)         # blocks 1, 2
  return n + 4 * c * classes + classes


def _count(params):
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


def test_resnet20_width1_parameter_count_is_pinned():
  _, params, _ = bj.create_model("resnet20", jax.random.key(0), (32, 32, 3), 10, width=1)
  assert _count(params) == 272_474 == _resnet20_count(1)


def test_resnet20_width2_matches_formula_and_paths_are_named():
  _, params, _ = bj.create_model("resnet20", jax.random.key(0), (32, 32, 3), 10, width=2)
  assert _count(params) == _resnet20_count(2)
  paths = tree_math.flat_paths(params)
  assert "stage2_block0/shortcut_conv/kernel" in paths
  assert "stage1_block0/norm1/scale" in paths
  assert "head/kernel" in paths and "conv_in/kernel" in paths
  assert not any("bias" in p and "conv" in p for p in paths)  # convolutions carry no bias


@pytest.mark.parametrize("name,kwargs,shape,feat", [
    ("resnet20", {"width": 1}, (32, 32, 3), 64),
    ("mlp", {"hidden": (32, 16)}, (8, 8, 1), 16),
    ("cnn", {"channels": (8, 16), "dense": 24}, (28, 28, 1), 24),
    ("cnn", {"channels": (8,), "dense": 12, "norm": "layernorm"}, (8, 8, 1), 12),
])
def test_models_return_logits_and_penultimate_features(name, kwargs, shape, feat):
  apply_fn, params, _ = bj.create_model(name, jax.random.key(1), shape, 7, **kwargs)
  logits, features = apply_fn(params, jnp.ones((3, *shape)))
  assert logits.shape == (3, 7)
  assert features["penultimate"].shape == (3, feat)
  # the head is a linear map of the penultimate features
  head = params["head"]
  manual = features["penultimate"] @ head["kernel"] + head["bias"]
  assert jnp.allclose(manual, logits, atol=1e-5)


def test_he_normal_init_scale():
  _, params, _ = bj.create_model("mlp", jax.random.key(0), (32, 32, 1), 10, hidden=(2048,))
  k = params["dense0"]["kernel"]   # fan_in 1024 -> std sqrt(2/1024)
  assert float(jnp.std(k)) == pytest.approx((2 / 1024) ** 0.5, rel=0.02)
  assert float(jnp.max(jnp.abs(k))) > 3 * (2 / 1024) ** 0.5  # plain normal, not truncated at 2 std


def test_unknown_model_and_bad_kwargs_name_the_field():
  with pytest.raises(ValueError, match="model.name.*allowed: resnet20"):
    bj.create_model("vgg", jax.random.key(0), (8, 8, 1), 10)
  with pytest.raises(ValueError, match="model: bad arguments"):
    bj.create_model("mlp", jax.random.key(0), (8, 8, 1), 10, depth=3)
  with pytest.raises(ValueError, match="model.norm"):
    bj.create_model("mlp", jax.random.key(0), (8, 8, 1), 10, norm="groupnorm")


def test_vit_b16_has_the_published_parameter_count():
  """ViT-B/16 at 224x224 with 1000 classes: 86,567,656 parameters (Dosovitskiy et al.), from shapes only."""
  from butterfly_jax.models.registry import build_module
  module = build_module("vit_b16", 1000)
  shapes = jax.eval_shape(lambda k: module.init(k, jnp.zeros((1, 224, 224, 3)))["params"], jax.random.key(0))
  assert _count(shapes) == 86_567_656
  assert {"embed", "cls", "pos_embedding", "block11", "norm", "head"} <= set(shapes)


def test_vit_returns_logits_and_penultimate_features():
  apply_fn, params, spec = bj.create_model("vit", jax.random.key(0), (32, 32, 3), 10, patch=8, depth=1, width=32,
                                           heads=4, mlp_dim=64)
  logits, feats = apply_fn(params, jnp.zeros((2, 32, 32, 3)))
  assert logits.shape == (2, 10) and feats["penultimate"].shape == (2, 32)
  assert spec.sizes["P_stream"] == 32 and spec.sizes["P_block0_heads"] == 4
  with pytest.raises(ValueError, match="model.patch"):
    bj.create_model("vit", jax.random.key(0), (30, 30, 3), 10, patch=8, depth=1, width=32, heads=4, mlp_dim=64)


def test_resnet50_has_the_cifar_parameter_count_and_bottleneck_names():
  """ResNet-50 for 32x32 inputs with 100 classes: 23,705,252 parameters (norms with scale and bias)."""
  from butterfly_jax.models.registry import build_module
  module = build_module("resnet50", 100)
  shapes = jax.eval_shape(lambda k: module.init(k, jnp.zeros((1, 32, 32, 3)))["params"], jax.random.key(0))
  assert _count(shapes) == 23_705_252
  assert shapes["stage1_block0"]["shortcut_conv"]["kernel"].shape == (1, 1, 64, 256)
  assert shapes["stage4_block2"]["conv3"]["kernel"].shape == (1, 1, 512, 2048)
  assert shapes["head"]["kernel"].shape == (2048, 100)


def test_resnet34_is_the_authors_resnet50_64_layout():
  """The authors' "resnet50-64": basic blocks (3, 4, 6, 3), 64/128/256/512 channels, bias-free convolutions,
  a 1x1 projection shortcut with its norm where the shape changes; counted here layer by layer."""
  from butterfly_jax.models.registry import build_module
  module = build_module("resnet34", 10, norm="layernorm")
  shapes = jax.eval_shape(lambda k: module.init(k, jnp.zeros((1, 32, 32, 3)))["params"], jax.random.key(0))
  count, cin = 3 * 64 * 9 + 2 * 64, 64
  for s, blocks in enumerate((3, 4, 6, 3)):
    c = 64 * 2 ** s
    for b in range(blocks):
      count += cin * c * 9 + 2 * c + c * c * 9 + 2 * c
      if cin != c:
        count += cin * c + 2 * c
      cin = c
  count += 512 * 10 + 10
  assert _count(shapes) == count
  assert shapes["stage4_block2"]["conv2"]["kernel"].shape == (3, 3, 512, 512)
  assert "stage4_block3" not in shapes and "conv3" not in shapes["stage1_block0"]
