"""Permutation specs, weight matching and fixed points: the properties alignment results rest on."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import butterfly_jax as bj
from butterfly_jax.core import permutations, tree_math

MODELS = [
    ("resnet20", (32, 32, 3), {"width": 1}),
    ("resnet", (16, 16, 3), {"depth": 8, "width": 1, "norm": "none"}),
    ("mlp", (8, 8, 1), {"hidden": (24, 16)}),
    ("mlp", (8, 8, 1), {"hidden": (24, 16), "norm": "layernorm"}),
    ("cnn", (12, 12, 1), {"channels": (8, 12), "dense": 20}),
    ("cnn", (12, 12, 1), {"channels": (8,), "dense": 20, "norm": "layernorm"}),
    ("resnet50", (8, 8, 3), {"width": 0.125}),
    ("resnet50", (8, 8, 3), {"width": 0.125, "norm": "batchnorm"}),
    ("resnet34", (8, 8, 3), {"width": 0.125}),
    ("vit", (16, 16, 3), {"patch": 4, "depth": 2, "width": 24, "heads": 3, "mlp_dim": 40}),
    ("bert", (3, 10), {"vocab_size": 40, "hidden": 24, "layers": 2, "heads": 3, "intermediate": 40,
                       "max_positions": 12}),
    ("olmo", (3, 10), {"vocab_size": 40, "hidden": 24, "layers": 2, "heads": 3, "intermediate": 40,
                       "max_positions": 12, "clip_qkv": 0.5}),
]
RECOVER = MODELS


def _ids(m):
  return f"{m[0]}-{'-'.join(f'{k}{v}' for k, v in m[2].items())}"


@functools.lru_cache(maxsize=None)
def _cached_model(name, shape, items):
  return bj.create_model(name, jax.random.key(0), shape, 10, **dict(items))


def _model(name, shape, kwargs):
  """create_model once per model and module (initialising ResNet-50 compiles for ~20 s on 2 cores)."""
  return _cached_model(name, shape, tuple(sorted(kwargs.items())))


def _inputs(name, shape, n):
  """``n`` inputs: images from N(0, 1), or for a text model random token ids and token types, padded on the
  right to lengths from ``L`` down to 1."""
  if bj.models.input_dtype(name) == jnp.float32:
    return jax.random.normal(jax.random.key(3), (n, *shape))
  length = shape[1]
  ids = jax.random.randint(jax.random.key(3), (n, length), 0, 40)
  types = jax.random.randint(jax.random.key(4), (n, length), 0, 2)
  mask = jnp.arange(length)[None] < jnp.linspace(length, 1, n).round()[:, None]
  return jnp.stack([ids, types, mask], 1).astype(jnp.int32)


def _perturb_norms(params, key):
  """Norm scales, biases (and a ViT's head and class token) are constants at init; randomise them so that a
  wrong permutation of them shows."""
  flat, tree = jax.tree_util.tree_flatten_with_path(params)
  keys = jax.random.split(key, len(flat))
  out = [x + 0.3 * jax.random.normal(k, x.shape) if x.ndim == 1 or not jnp.any(x != x.ravel()[0]) else x
         for (_, x), k in zip(flat, keys)]  # also constant-initialised leaves (a ViT's zero head and class token)
  return jax.tree_util.tree_unflatten(tree, out)


@pytest.mark.parametrize("name,shape,kwargs", MODELS, ids=[_ids(m) for m in MODELS])
def test_spec_covers_every_parameter_and_a_random_permutation_keeps_the_function(name, shape, kwargs):
  apply_fn, params, spec = _model(name, shape, kwargs)
  params = _perturb_norms(params, jax.random.key(1))
  assert set(spec.axes_to_perm) == set(tree_math.flat_paths(params))
  flat = tree_math.flat_dict(params)
  for path, per_axis in spec.axes_to_perm.items():  # each permutation's size fits every axis it acts on
    for axis, entry in enumerate(per_axis):
      if entry is not None:
        size = entry[1] or flat[path].shape[axis]
        assert spec.sizes[entry[0]] == size
  perm = bj.random_permutation(jax.random.key(2), spec, 0.0)
  assert bj.fixed_point_fraction(perm) == 0.0
  permuted = bj.apply_permutation(spec, perm, params)
  assert bj.l2_distance(params, permuted) > 0.1
  # BatchNorm normalises with the batch's moments here: over 4 examples at the last stage's 1x1 resolution
  # these are near-degenerate and amplify rounding (1e-3), so it gets 32 examples; even so, the permuted
  # network's logits (of size ~3) differ by up to 2e-4 under jaxlib 0.10.2's CPU kernels, against O(1) for a
  # wrong permutation
  bn = kwargs.get("norm") == "batchnorm"
  x = _inputs(name, shape, 32 if bn else 4)
  apply_fn = jax.jit(apply_fn)  # one compilation for both calls
  logits, feats = apply_fn(params, x)
  logits_p, feats_p = apply_fn(permuted, x)
  np.testing.assert_allclose(logits_p, logits, rtol=1e-3 if bn else 1e-4, atol=1e-3 if bn else 1e-4)
  # the penultimate units are permuted, not changed: same values, another order
  np.testing.assert_allclose(np.sort(feats_p["penultimate"], -1), np.sort(feats["penultimate"], -1),
                             atol=3e-4 if bn else 1e-4)


def test_resnet20_spec_names_stream_and_inner_permutations():
  _, params, spec = bj.create_model("resnet20", jax.random.key(0), (32, 32, 3), 10, width=2)
  stream = {n for n in spec.names if n.startswith("P_stage") and "block" not in n}
  inner = {n for n in spec.names if n.endswith("_inner")}
  assert stream == {"P_stage1", "P_stage2", "P_stage3"}
  assert len(inner) == 9 and len(spec.names) == 12
  assert spec.sizes["P_stage3"] == 128 and spec.sizes["P_stage1_block0_inner"] == 32
  assert spec.axes_to_perm["stage2_block0/shortcut_conv/kernel"] == (None, None, ("P_stage1", None),
                                                                     ("P_stage2", None))
  assert spec.axes_to_perm["head/kernel"] == (("P_stage3", None), None)


def test_cnn_dense_reads_the_flattened_feature_map_by_channel():
  _, params, spec = bj.create_model("cnn", jax.random.key(0), (12, 12, 1), 10, channels=(8, 12), dense=20)
  assert spec.axes_to_perm["dense/kernel"] == (("P_conv1", 12), ("P_dense", None))


def test_apply_permutation_then_its_inverse_is_the_identity():
  _, params, spec = bj.create_model("cnn", jax.random.key(0), (12, 12, 1), 10, channels=(8, 12), dense=20)
  perm = bj.random_permutation(jax.random.key(5), spec, 0.25)
  back = bj.apply_permutation(spec, permutations.invert_permutation(perm), bj.apply_permutation(spec, perm, params))
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(back)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_random_permutation_keeps_the_requested_fraction_fixed(fraction):
  _, params, spec = bj.create_model("mlp", jax.random.key(0), (8, 8, 1), 10, hidden=(40, 80))
  perm = bj.random_permutation(jax.random.key(1), spec, fraction)
  for name, p in perm.items():
    assert sorted(p.tolist()) == list(range(spec.sizes[name]))  # a permutation
    assert np.sum(p == np.arange(len(p))) == round(fraction * len(p))
  assert bj.fixed_point_fraction(perm) == pytest.approx(fraction)
  again = bj.random_permutation(jax.random.key(1), spec, fraction)
  assert all(np.array_equal(perm[n], again[n]) for n in perm)  # keyed: same key, same permutation


def test_fixed_point_fractions_per_permutation_and_overall():
  perm = {"a": np.array([0, 1, 2, 3]), "b": np.array([1, 0, 2, 3, 4, 5])}
  assert permutations.fixed_point_fractions(perm) == {"a": 1.0, "b": 4 / 6}
  assert bj.fixed_point_fraction(perm) == 8 / 10
  with pytest.raises(ValueError, match="fixed_fraction"):
    bj.random_permutation(jax.random.key(0), permutations.PermutationSpec({}, {}, {"a": 3}), 1.5)


@pytest.mark.parametrize("name,shape,kwargs", RECOVER, ids=[_ids(m) for m in RECOVER])
def test_weight_matching_recovers_a_known_permutation_exactly(name, shape, kwargs):
  _, params, spec = _model(name, shape, kwargs)
  params = _perturb_norms(params, jax.random.key(1))
  hidden = bj.apply_permutation(spec, bj.random_permutation(jax.random.key(2), spec, 0.0), params)
  perm = bj.weight_matching(jax.random.key(3), spec, params, hidden)
  aligned = bj.apply_permutation(spec, perm, hidden)
  assert bj.l2_distance(params, aligned) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_weight_matching_recovers_vit_heads_from_any_visiting_order(seed):
  """Heads and the units inside them are coupled: matched one permutation at a time from the identity, 5 of
  these 8 (hidden permutation, visiting order) pairs stalled at a wrong assignment; the joint block move
  recovers every one."""
  _, params, spec = _model("vit", (16, 16, 3), {"patch": 4, "depth": 2, "width": 24, "heads": 3, "mlp_dim": 40})
  params = _perturb_norms(params, jax.random.key(1))
  assert spec.blocks == {f"P_block{i}_heads": (f"P_block{i}_qk", f"P_block{i}_v") for i in range(2)}
  for order_key in range(2):
    hidden = bj.apply_permutation(spec, bj.random_permutation(jax.random.key(10 + seed), spec, 0.0), params)
    perm = bj.weight_matching(jax.random.key(order_key + 4 * seed), spec, params, hidden)
    assert bj.l2_distance(params, bj.apply_permutation(spec, perm, hidden)) == 0.0


def _within_head_permutation(params, layer, names, perm):
  """``params`` with units ``perm`` applied inside every head of ``layer``'s attention projections ``names``."""
  attn = params[layer]["attn"]
  new = dict(attn)
  for n in names:
    new[n] = {k: jnp.take(v, perm, axis=-1 if n != "out" else 1) if not (n == "out" and k == "bias") else v
              for k, v in attn[n].items()}
  return {**params, layer: {**params[layer], "attn": new}}


@pytest.mark.parametrize("name", ["bert", "olmo"])
def test_query_key_units_permute_within_heads_unless_rotary(name):
  """Why OLMo's spec holds query/key units in place: a shared permutation of them inside each head keeps BERT's
  attention scores (a dot product), but rotary embeddings rotate unit u with u + head_dim/2 at a frequency set by
  u, so OLMo's change; its value/output units, which rotary leaves alone, permute freely."""
  _, shape, kwargs = next(m for m in MODELS if m[0] == name)
  apply_fn, params, spec = _model(name, shape, kwargs)
  apply_fn = jax.jit(apply_fn)
  # sharper attention than at init (queries and keys x10), so that changed scores show in the logits
  params = {**params, "layer0": {**params["layer0"], "attn": {
      n: ({"kernel": 10 * w["kernel"], **({"bias": w["bias"]} if "bias" in w else {})} if n in ("query", "key")
          else w) for n, w in params["layer0"]["attn"].items()}}}
  x = _inputs(name, shape, 4)
  logits = apply_fn(params, x)[0]
  perm = jnp.array([1, 0, 3, 2, 5, 4, 7, 6])  # head_dim 8
  qk = apply_fn(_within_head_permutation(params, "layer0", ("query", "key"), perm), x)[0]
  vo = apply_fn(_within_head_permutation(params, "layer0", ("value", "out"), perm), x)[0]
  np.testing.assert_allclose(vo, logits, atol=1e-5)
  if name == "bert":
    np.testing.assert_allclose(qk, logits, atol=1e-5)
    assert "P_layer0_qk" in spec.names
  else:
    assert float(jnp.max(jnp.abs(qk - logits))) > 1e-3  # 100x the tolerance of the invariant cases
    assert spec.blocks["P_layer0_heads"] == (None, "P_layer0_v") and "P_layer0_qk" not in spec.names


def test_weight_matching_of_identical_networks_is_the_identity():
  _, params, spec = bj.create_model("resnet20", jax.random.key(0), (32, 32, 3), 10, width=1)
  perm = bj.weight_matching(jax.random.key(0), spec, params, params)
  assert bj.fixed_point_fraction(perm) == 1.0


def _train_mlp(seed, steps=150):
  """A small MLP trained on a fixed synthetic task from its own init."""
  apply_fn, params, spec = bj.create_model("mlp", jax.random.key(seed), (8, 8, 1), 4, hidden=(32, 32))
  x = jax.random.normal(jax.random.key(100), (256, 8, 8, 1))
  y = jnp.argmax(x.reshape(256, -1)[:, :4], -1)
  opt = optax.sgd(0.1, momentum=0.9)

  @jax.jit
  def step(params, state):
    def loss(p):
      return optax.softmax_cross_entropy_with_integer_labels(apply_fn(p, x)[0], y).mean()
    g = jax.grad(loss)(params)
    upd, state = opt.update(g, state, params)
    return optax.apply_updates(params, upd), state

  state = opt.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return params, spec


def test_weight_matching_lowers_the_distance_of_independently_trained_networks():
  a, spec = _train_mlp(0)
  b, _ = _train_mlp(1)
  before = bj.l2_distance(a, b)
  for seed in range(3):  # any visiting order: never above the unaligned distance
    perm = bj.weight_matching(jax.random.key(seed), spec, a, b)
    after = bj.l2_distance(a, bj.apply_permutation(spec, perm, b))
    assert after < 0.95 * before
    assert bj.fixed_point_fraction(perm) < 0.5
  # one round only is still no worse than the start (each accepted move strictly improves)
  perm1 = bj.weight_matching(jax.random.key(0), spec, a, b, max_iter=1)
  assert bj.l2_distance(a, bj.apply_permutation(spec, perm1, b)) <= before


def test_spec_for_unknown_model_names_the_field():
  with pytest.raises(ValueError, match="model.name"):
    permutations.spec_for("transformer", {})


def test_a_block_permutation_must_be_followed_by_its_inner_one():
  params = {"attn": {"kernel": np.zeros((4, 2, 3)), "bias": np.zeros((2, 3))}}
  b = permutations._Builder(params)
  b.set("attn/kernel", None, "P_heads", "P_inner")
  b.set("attn/bias", "P_heads", None)
  b.blocks["P_heads"] = ("P_inner",)
  with pytest.raises(permutations.PermutationError, match="axis 1 of attn/bias holds no permutation"):
    b.build()
  b.set("attn/bias", "P_heads", "P_inner")
  assert b.build().blocks == {"P_heads": ("P_inner",)}


def test_weight_matching_leaves_biases_out_of_its_cost_unless_asked():
  """The authors' weight matching skips every parameter named ``bias`` in its cost (``bias=False``, the default
  and ``eval.align_bias=False``): with one hidden layer of 3 units, the permutation found is the brute-force
  best of the weights alone; with ``bias=True`` the best of weights and biases. Biases 100x larger than the
  weights make the two optima differ."""
  import itertools
  _, a, spec = bj.create_model("mlp", jax.random.key(0), (2, 2, 1), 3, hidden=(3,))
  _, b, _ = bj.create_model("mlp", jax.random.key(1), (2, 2, 1), 3, hidden=(3,))
  (name,) = spec.names
  for params, key in ((a, 2), (b, 3)):
    params["dense0"]["bias"] = 100.0 * jax.random.normal(jax.random.key(key), (3,))
  flat_a = tree_math.flat_dict(a)

  def best(with_bias):
    def score(p):
      permuted = tree_math.flat_dict(bj.apply_permutation(spec, {name: np.asarray(p)}, b))
      return sum(float(jnp.vdot(flat_a[k], permuted[k])) for k in flat_a if with_bias or "bias" not in k)
    return max(itertools.permutations(range(3)), key=score)

  assert best(False) != best(True)
  for bias in (False, True):
    for seed in range(3):
      perm = bj.weight_matching(jax.random.key(seed), spec, a, b, bias=bias)
      assert tuple(int(i) for i in perm[name]) == best(bias)
