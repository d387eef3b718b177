"""Permutation specs, weight matching and fixed points: the properties alignment results rest on."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import butterfly_jax as bj
from butterfly_jax.core import activations, batches, permutations, tree_math
from butterfly_jax.models.layers import max_pool_2x2

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


# Activation matching: the models that sow their units' activations (bj.models.ACTIVATION_MODELS); of MODELS, the
# basic-block ResNet without norms and the bottleneck one with LayerNorm stand for the ResNets
ACTIVATION = [m for m in MODELS if m[0] in ("mlp", "cnn") or (m[0], m[2].get("norm")) in (("resnet", "none"),
                                                                                       ("resnet50", None))]


@functools.lru_cache(maxsize=None)
def _activations_fn(name, shape, items):
  return jax.jit(bj.models.make_activations(name, shape, 10, **dict(items)))


def _activations(name, shape, kwargs, params, x):
  """The activations each permutation of ``name``'s spec acts on, one compilation per model and module."""
  return _activations_fn(name, shape, tuple(sorted(kwargs.items())))(params, x)


@pytest.mark.parametrize("name,shape,kwargs", ACTIVATION, ids=[_ids(m) for m in ACTIVATION])
def test_activation_matching_recovers_a_known_permutation_exactly(name, shape, kwargs):
  """A network against a randomly permuted copy of itself (the same function), both run on the same 64 inputs:
  every unit's activations correlate 1 with its own copy's and less with any other unit's, so the assignment
  puts every unit back. Units that are 0 on every input (dead ReLUs) carry no signal: they are matched among
  themselves, in any order (the function is the same either way). At init the CNN's dense layer has 5 of its 20
  units dead (their inputs are >= 0, and for those units the weights sum to a large negative input on every
  example), so the test gives each dense unit the bias that centres it on these inputs; ResNet-50's deeper stages
  keep dozens. So: every live unit exactly, dead units to dead units and,
  where no permutation has two dead units (every network here but ResNet-50), the whole permutation, at L2
  distance 0."""
  apply_fn, params, spec = _model(name, shape, kwargs)
  params = _perturb_norms(params, jax.random.key(1))
  x = _inputs(name, shape, 64)
  if name == "cnn":  # the dense units' biases centre their inputs on these examples: none is dead (at init 5 of 20)
    conv = _activations(name, shape, kwargs, params, x)[f"P_conv{len(kwargs['channels']) - 1}"][0]
    pre = max_pool_2x2(conv).reshape(len(x), -1) @ params["dense"]["kernel"]
    params = {**params, "dense": {**params["dense"], "bias": -jnp.mean(pre, 0)}}
  acts = _activations(name, shape, kwargs, params, x)
  assert set(acts) == set(spec.names)
  for n, tensors in acts.items():  # the units each permutation acts on, last axis, one tensor per layer output
    assert tensors and all(t.shape[0] == 64 and t.shape[-1] == spec.sizes[n] for t in tensors), n
    assert all(float(jnp.min(t)) >= 0.0 for t in tensors), n  # after the ReLU
  # the last permutation's units are the head's input: the penultimate features (a ResNet's, pooled)
  last = {"mlp": f"P_dense{len(kwargs.get('hidden', ())) - 1}", "cnn": "P_dense"}.get(name) or max(
      n for n in spec.names if n.startswith("P_stage") and "block" not in n)
  out = acts[last][-1]
  np.testing.assert_allclose(out.mean((1, 2)) if out.ndim == 4 else out, apply_fn(params, x)[1]["penultimate"],
                             rtol=1e-5, atol=1e-5)
  hidden_perm = bj.random_permutation(jax.random.key(2), spec, 0.0)
  hidden = bj.apply_permutation(spec, hidden_perm, params)
  perm = permutations.activation_matching(spec, acts, _activations(name, shape, kwargs, hidden, x))
  dead = {n: np.all(np.stack([np.asarray(t).reshape(-1, spec.sizes[n]).std(0) for t in acts[n]]) == 0, 0)
          for n in spec.names}
  for n in spec.names:
    truth = np.argsort(hidden_perm[n])
    np.testing.assert_array_equal(perm[n][~dead[n]], truth[~dead[n]], err_msg=n)
    assert set(perm[n][dead[n]]) == set(truth[dead[n]]), n  # dead units go to dead units
  unique = all(d.sum() <= 1 for d in dead.values())  # one dead unit has only one place to go
  assert unique == (name != "resnet50"), {n: int(d.sum()) for n, d in dead.items()}
  if unique:
    assert bj.l2_distance(params, bj.apply_permutation(spec, perm, hidden)) == 0.0


def test_activation_matching_recovers_a_known_permutation_of_a_trained_mlp():
  """Trained units are not the random ones of init: still every unit of the trained MLP (none dead on these
  inputs) is found again, with either kernel."""
  params, spec = _train_mlp(0)
  x = jax.random.normal(jax.random.key(100), (256, 8, 8, 1))
  acts_fn = jax.jit(bj.models.make_activations("mlp", (8, 8, 1), 4, hidden=(32, 32)))
  acts = acts_fn(params, x)
  assert all(np.all(np.asarray(acts[n][0]).std(0) > 0) for n in spec.names)  # no dead unit
  hidden = bj.apply_permutation(spec, bj.random_permutation(jax.random.key(7), spec, 0.0), params)
  for kernel in permutations.ACTIVATION_KERNELS:
    perm = permutations.activation_matching(spec, acts, acts_fn(hidden, x), kernel=kernel)
    assert bj.fixed_point_fraction(perm) < 0.2
    assert bj.l2_distance(params, bj.apply_permutation(spec, perm, hidden)) == 0.0, kernel


def test_activation_matching_of_twins_is_the_identity_even_with_dead_units():
  """Identical networks match by the identity. Units dead on every example (here 5 of the first layer's 32, their
  bias -1000) correlate 0 with every unit, a tie that any assignment among them solves; the tie goes to the
  identity (``permutations.TIE_BREAK``)."""
  params, spec = _train_mlp(0)
  params["dense0"]["bias"] = params["dense0"]["bias"].at[jnp.array([0, 3, 4, 17, 31])].set(-1000.0)
  x = jax.random.normal(jax.random.key(100), (256, 8, 8, 1))
  acts = bj.models.make_activations("mlp", (8, 8, 1), 4, hidden=(32, 32))(params, x)
  assert int(np.sum(np.asarray(acts["P_dense0"][0]).std(0) == 0)) == 5
  scores = permutations.ActivationSums()
  scores.update(acts, acts)
  dead = scores.scores()["P_dense0"][[0, 3, 4, 17, 31]]
  assert np.all(dead == 0.0)  # no signal: 0 against every unit, itself included
  for kernel in permutations.ACTIVATION_KERNELS:
    perm = permutations.activation_matching(spec, acts, acts, kernel=kernel)
    assert bj.fixed_point_fraction(perm) == 1.0, kernel


def _brute_force_best(score):
  import itertools
  return max(itertools.permutations(range(len(score))), key=lambda p: sum(score[i, p[i]] for i in range(len(p))))


def test_activation_matching_is_the_brute_force_best_of_a_three_unit_layer():
  """One hidden layer of 3 units: of the 6 permutations, the one found has the largest total correlation, computed
  independently (``np.corrcoef`` per tensor, averaged over the two tensors the permutation acts on here: one of
  examples and one of examples x positions), and for the ``inner_product`` kernel the largest total mean
  product. B's units are A's, shuffled, scaled and mixed with noise, so the best is neither the identity nor
  exact."""
  _, _, spec = bj.create_model("mlp", jax.random.key(0), (2, 2, 1), 3, hidden=(3,))
  (name,) = spec.names
  rng = np.random.default_rng(0)
  for trial in range(5):
    a = (rng.normal(size=(40, 3)), rng.normal(size=(10, 4, 3)))
    mix = rng.permutation(3)
    b = tuple(2.0 * t[..., mix] + 0.8 * rng.normal(size=t.shape) + 1.0 for t in a)
    flat = [(ta.reshape(-1, 3), tb.reshape(-1, 3)) for ta, tb in zip(a, b)]
    corr = sum(np.corrcoef(ta.T, tb.T)[:3, 3:] for ta, tb in flat) / 2
    inner = sum(ta.T @ tb / len(ta) for ta, tb in flat) / 2
    for kernel, score in (("correlation", corr), ("inner_product", inner)):
      sums = permutations.ActivationSums()
      sums.update({name: a}, {name: b})
      np.testing.assert_allclose(sums.scores(kernel)[name], score, rtol=1e-12, atol=1e-12)
      perm = permutations.activation_matching(spec, {name: a}, {name: b}, kernel=kernel)
      best = _brute_force_best(score)
      assert tuple(int(i) for i in perm[name]) == best, (trial, kernel)
      assert best != (0, 1, 2) or trial, (trial, kernel)  # the first trial's optimum moves units


def test_activation_sums_stream_over_batches_and_reject_mismatched_activations():
  """Batches streamed one by one give the scores of all examples at once (float64 sums, shifted by each unit's
  first value); a constant unit scores 0; mismatched names, shapes and the ViT's head blocks are errors."""
  rng = np.random.default_rng(1)
  a = {"P": rng.normal(size=(300, 5, 4)) + 50.0, "Q": rng.normal(size=(300, 6))}
  b = {"P": a["P"][..., ::-1] * 3.0 + rng.normal(size=(300, 5, 4)), "Q": rng.normal(size=(300, 6))}
  b["Q"][:, 2] = 7.0
  whole, streamed = permutations.ActivationSums(), permutations.ActivationSums()
  whole.update(a, b)
  for start in range(0, 300, 64):
    streamed.update({k: v[start:start + 64] for k, v in a.items()}, {k: v[start:start + 64] for k, v in b.items()})
  assert streamed.n == whole.n == {"P": [1500], "Q": [300]}
  for kernel in permutations.ACTIVATION_KERNELS:
    for n in ("P", "Q"):
      np.testing.assert_allclose(streamed.scores(kernel)[n], whole.scores(kernel)[n], rtol=1e-10, atol=1e-12)
  assert np.all(whole.scores()["Q"][:, 2] == 0.0)
  assert np.argmax(whole.scores()["P"], 1).tolist() == [3, 2, 1, 0]
  with pytest.raises(permutations.PermutationError, match="different permutations"):
    whole.update({"P": a["P"]}, b)
  with pytest.raises(permutations.PermutationError, match="differ in shape"):
    whole.update({"P": a["P"], "Q": a["Q"][:, :5]}, b)
  with pytest.raises(permutations.PermutationError, match="unknown kernel"):
    whole.scores("cosine")
  _, _, spec = bj.create_model("mlp", jax.random.key(0), (2, 2, 1), 3, hidden=(4,))
  with pytest.raises(permutations.PermutationError, match=r"missing \['P_dense0'\]"):
    permutations.assign_units(spec, whole.scores())
  _, _, vit = _model("vit", (16, 16, 3), {"patch": 4, "depth": 2, "width": 24, "heads": 3, "mlp_dim": 40})
  with pytest.raises(permutations.PermutationError, match="blocks"):
    permutations.assign_units(vit, {})


def test_models_without_activations_say_so():
  assert set(bj.models.ACTIVATION_MODELS) == {"mlp", "cnn", "resnet20", "resnet", "resnet34", "resnet50"}
  for name in ("vit", "bert", "olmo"):
    assert bj.models.make_activations(name, (3, 10), 2) is None


def test_pair_activation_sums_stream_padded_batches_with_each_childs_batchnorm_statistics():
  """The run's path (:func:`butterfly_jax.core.activations.pair_activation_sums`): uint8 images normalised,
  batches of 16 over 40 examples (the last one padded: its padding is left out), each child with its own
  BatchNorm statistics. The sums are those of the 40 examples at once, and child 1, a permuted copy of child 0
  with its statistics permuted alike, is matched back exactly."""
  kwargs = {"hidden": (12, 10), "norm": "batchnorm"}
  apply_fn, params, spec = bj.create_model("mlp", jax.random.key(0), (4, 4, 1), 3, **kwargs)
  params = _perturb_norms(params, jax.random.key(1))
  moments = bj.models.make_moments("mlp", (4, 4, 1), 3, **kwargs)
  acts_fn = bj.models.make_activations("mlp", (4, 4, 1), 3, **kwargs)
  images = jax.random.randint(jax.random.key(2), (50, 4, 4, 1), 0, 256).astype(jnp.uint8)
  mean, std = jnp.array([0.4]), jnp.array([0.25])
  x = batches.normalize(images, mean, std)
  hidden_perm = bj.random_permutation(jax.random.key(3), spec, 0.0)
  children = [params, bj.apply_permutation(spec, hidden_perm, params)]
  stats = [moments(p, x) for p in children]  # child 1's are child 0's, permuted
  indices = np.arange(3, 43)
  sums = activations.pair_activation_sums(activations.make_activation_batch(acts_fn), children, stats, images,
                                          indices, 16, mean, std, [1])
  ref = permutations.ActivationSums()
  ref.update(*(acts_fn(p, x[indices], s) for p, s in zip(children, stats)))
  assert sums[1].n == ref.n == {"P_dense0": [40], "P_dense1": [40]}
  for n in spec.names:
    np.testing.assert_allclose(sums[1].scores()[n], ref.scores()[n], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(acts_fn(params, x, stats[0])["P_dense1"][0],
                             apply_fn(params, x, stats[0])[1]["penultimate"], rtol=1e-6, atol=1e-6)
  perm = permutations.assign_units(spec, sums[1].scores())
  assert bj.l2_distance(params, bj.apply_permutation(spec, perm, children[1])) == 0.0
