"""BERT and OLMo: exact ports of transformers' models, proven on tiny random models that transformers (PyTorch,
CPU) builds and saves here; their checkpoints loaded by name, and bad checkpoints and inputs refused before compute.

torch and transformers come with the test extra (``pip install -e '.[test]'``); the package never imports them.
They are imported inside the fixtures, so that collecting the suite does not pay for them.
"""

import functools
import json
import shutil
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from butterfly_jax import config as config_lib
from butterfly_jax.core import members, rng
from butterfly_jax.io.pretrained import PretrainedError
from butterfly_jax.io.pretrained import check_hf_config, hf_model_kwargs, load_bert_weights, load_olmo_weights
from butterfly_jax.models import make_model
from butterfly_jax.models.text import check_token_ids
from butterfly_jax.run import experiment
from butterfly_jax.run import spec as spec_lib
from butterfly_jax.run.configs_embedded import smoke

L = 12  # tokens per sequence; the position tables hold 16
BERT_HF = dict(vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40,
               max_position_embeddings=16, type_vocab_size=2, num_labels=5)
BERT_KW = dict(vocab_size=50, hidden=24, layers=2, heads=3, intermediate=40, max_positions=16)
OLMO_HF = dict(vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40,
               max_position_embeddings=16, num_labels=5, pad_token_id=1, eos_token_id=None, clip_qkv=0.5,
               rope_parameters={"rope_type": "default", "rope_theta": 500.0})
OLMO_KW = dict(vocab_size=50, hidden=24, layers=2, heads=3, intermediate=40, max_positions=16, rope_theta=500.0,
               clip_qkv=0.5)
LENGTHS = np.array([12, 9, 5, 1])
PAD = 1  # OLMo's pad_token_id; BERT pads with 0
TOL = 5e-6  # float32 against transformers' float32 (largest difference seen: 2.6e-6, OLMo's hidden states
           # with XLA's own CPU kernels, YNNPACK off)


def _randomise(model):
  """Every weight of a transformers model drawn at a scale where a wrong mapping shows (its init has zero
  biases and unit norm scales, which would hide a swapped or missing one)."""
  import torch
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      p.copy_(1.0 + 0.1 * noise if "LayerNorm.weight" in name else 0.2 * noise)
  return model.eval()


def _batch(pad: int, left_row: bool = False):
  """``[4, 3, L]`` int32: token ids, token types (BERT's second segment in the back half) and the attention
  mask, right-padded to ``LENGTHS`` with ``pad``; ``left_row``: the last row left-padded instead."""
  ids = np.random.default_rng(0).integers(2, 50, (4, L))
  mask = (np.arange(L)[None] < LENGTHS[:, None]).astype(np.int64)
  if left_row:
    mask[3] = mask[1][::-1]
  ids = np.where(mask == 1, ids, pad)
  types = ((np.arange(L)[None] >= LENGTHS[:, None] // 2) & (mask == 1)).astype(np.int64)
  return np.stack([ids, types, mask], 1).astype(np.int32)


def _torch_inputs(x):
  import torch
  t = torch.from_numpy(x.astype(np.int64))
  return dict(input_ids=t[:, 0], token_type_ids=t[:, 1], attention_mask=t[:, 2])


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
  """Tiny random transformers models saved as safetensors (one file, and sharded with an index), with their
  outputs on a padded batch: BertForSequenceClassification, OlmoForSequenceClassification and OlmoForCausalLM
  with untied and with tied word embeddings."""
  import torch
  import transformers as tr
  root = tmp_path_factory.mktemp("hf")
  out = {}
  torch.manual_seed(0)
  with torch.no_grad():
    bert = _randomise(tr.BertForSequenceClassification(tr.BertConfig(**BERT_HF)))
    x = _batch(pad=0)
    t = _torch_inputs(x)
    out["bert"] = dict(x=x, logits=bert(**t).logits.numpy(), hidden=bert.bert(**t).last_hidden_state.numpy(),
                       pooled=bert.bert(**t).pooler_output.numpy())
    bert.save_pretrained(root / "bert", safe_serialization=True)
    bert.save_pretrained(root / "bert_sharded", safe_serialization=True, max_shard_size="20KB")

    olmo = _randomise(tr.OlmoForSequenceClassification(tr.OlmoConfig(**OLMO_HF)))
    x = _batch(pad=PAD, left_row=True)
    t = _torch_inputs(x)
    del t["token_type_ids"]
    out["olmo"] = dict(x=x, logits=olmo(**t).logits.numpy(), hidden=olmo.model(**t).last_hidden_state.numpy())
    olmo.save_pretrained(root / "olmo", safe_serialization=True)
    olmo.save_pretrained(root / "olmo_sharded", safe_serialization=True, max_shard_size="20KB")

    for tied in (False, True):
      lm = _randomise(tr.OlmoForCausalLM(tr.OlmoConfig(**OLMO_HF, tie_word_embeddings=tied)))
      name = f"olmo_lm_{'tied' if tied else 'untied'}"
      out[name] = dict(x=x, logits=lm(**t).logits.numpy(), lm_head=lm.lm_head.weight.numpy().copy())
      lm.save_pretrained(root / name, safe_serialization=True)
  assert len(list((root / "bert_sharded").glob("*.safetensors"))) > 1  # the index really splits it
  assert len(list((root / "olmo_sharded").glob("*.safetensors"))) > 1
  out["root"] = root
  return out


@functools.lru_cache(maxsize=None)
def _cached_model(name, items):
  apply_fn, init_fn = make_model(name, (3, L), 5, **dict(items))
  return jax.jit(apply_fn), init_fn(jax.random.key(0))


def _model(name, kwargs):
  """``(jitted apply_fn, params)`` of a 5-class model, made once per model and arguments in this module."""
  return _cached_model(name, tuple(sorted(kwargs.items())))


def _real(hidden, x):
  """The hidden states of real tokens (attention mask 1) only: padding positions are not compared."""
  return hidden[x[:, 2] == 1]


@pytest.mark.parametrize("folder", ["bert", "bert_sharded"])
def test_bert_logits_equal_transformers_bert_for_sequence_classification(hf, folder):
  apply_fn, template = _model("bert", BERT_KW)
  params = load_bert_weights(hf["root"] / folder, template, keep_head=True, model_kwargs=BERT_KW)
  ref = hf["bert"]
  logits, features = apply_fn(params, ref["x"])
  np.testing.assert_allclose(logits, ref["logits"], atol=TOL, rtol=TOL)
  np.testing.assert_allclose(features["penultimate"], ref["pooled"], atol=TOL, rtol=TOL)
  np.testing.assert_allclose(_real(features["last_hidden_state"], ref["x"]), _real(ref["hidden"], ref["x"]),
                             atol=TOL, rtol=TOL)
  assert np.abs(ref["logits"]).max() > 0.1  # not a degenerate comparison


@pytest.mark.parametrize("folder", ["olmo", "olmo_sharded"])
def test_olmo_logits_equal_transformers_olmo_for_sequence_classification(hf, folder):
  """Right-padded rows and one left-padded row: the head reads each sequence's last real token."""
  apply_fn, template = _model("olmo", OLMO_KW)
  params = load_olmo_weights(hf["root"] / folder, template, keep_head=True, model_kwargs=OLMO_KW)
  ref = hf["olmo"]
  logits, features = apply_fn(params, ref["x"])
  np.testing.assert_allclose(logits, ref["logits"], atol=TOL, rtol=TOL)
  np.testing.assert_allclose(_real(features["last_hidden_state"], ref["x"]), _real(ref["hidden"], ref["x"]),
                             atol=TOL, rtol=TOL)
  assert np.abs(ref["logits"]).max() > 0.1


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_olmo_backbone_equals_transformers_causal_lm_with_tied_or_untied_embeddings(hf, tied):
  """A causal-LM checkpoint loads into the classifier (its lm_head, present only when untied, is skipped): the
  last hidden states times the LM head are OlmoForCausalLM's logits."""
  name = f"olmo_lm_{'tied' if tied else 'untied'}"
  apply_fn, template = _model("olmo", OLMO_KW)
  params = load_olmo_weights(hf["root"] / name, template, model_kwargs=OLMO_KW)
  np.testing.assert_array_equal(params["head"]["kernel"], template["head"]["kernel"])  # a fresh head
  ref = hf[name]
  head = params["embed"] if tied else ref["lm_head"]
  np.testing.assert_array_equal(np.asarray(params["embed"]) == ref["lm_head"], np.full(head.shape, tied))
  hidden = apply_fn(params, ref["x"])[1]["last_hidden_state"]
  np.testing.assert_allclose(_real(hidden @ np.asarray(head).T, ref["x"]), _real(ref["logits"], ref["x"]),
                             atol=TOL, rtol=TOL)  # the LM head's product is this test's own


def test_config_json_reads_into_model_kwargs(hf):
  name, kwargs = hf_model_kwargs(hf["root"] / "bert")
  assert name == "bert" and kwargs == {**BERT_KW, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
                                       "hidden_act": "gelu", "dropout": 0.1, "attention_dropout": 0.1}
  name, kwargs = hf_model_kwargs(hf["root"] / "olmo_sharded")
  assert name == "olmo" and kwargs == {**OLMO_KW, "hidden_act": "silu"}
  spec_lib.check_model_kwargs(name, kwargs)  # valid model.kwargs as they are


def test_init_checkpoint_takes_a_checkpoint_folder_with_a_fresh_or_kept_head(hf, tmp_path):
  """init.checkpoint set to a transformers folder: the experiment's initial parameters are the checkpoint's, the
  head fresh from the init key (init.head) or kept; a checkpoint of the wrong architecture is refused by the check
  that runs before anything is written or trained."""
  c = smoke()
  c.model.name, c.model.kwargs = "bert", BERT_KW
  c.init.checkpoint = str(hf["root"] / "bert_sharded")
  apply_fn, init_fn = make_model("bert", (3, L), 5, **BERT_KW)
  keys = rng.role_keys(c.seed, c.perturb.seed)
  setup = SimpleNamespace(c=c, init_fn=init_fn, apply_fn=apply_fn, keys=keys,
                          spec=SimpleNamespace(init=spec_lib.init_source(c)))
  shapes = jax.eval_shape(init_fn, keys["init"])
  spec_lib.check_weights(c, setup.spec.init, shapes)
  params, info = experiment._initial_params(setup)
  assert info["head"] == "fresh"
  fresh = init_fn(keys["init"])
  np.testing.assert_array_equal(params["head"]["kernel"], fresh["head"]["kernel"])
  kept = load_file(hf["root"] / "bert" / "model.safetensors")
  np.testing.assert_array_equal(params["layer1"]["fc1"]["kernel"],
                                kept["bert.encoder.layer.1.intermediate.dense.weight"].T)
  c.init.keep_head = True
  params, info = experiment._initial_params(setup)
  assert info["head"] == "kept"
  np.testing.assert_array_equal(params["head"]["kernel"], kept["classifier.weight"].T)
  c.init.checkpoint = str(hf["root"] / "olmo")
  with pytest.raises(PretrainedError, match=r"is an OLMo checkpoint \(config.json: model_type 'olmo'\), not a BERT"):
    spec_lib.check_weights(c, spec_lib.init_source(c), shapes)


@pytest.mark.parametrize("name,count", [("bert", 109_482_240 + 768 * 2 + 2), ("olmo", 1_176_764_416 + 2048 * 2)])
def test_the_defaults_have_the_published_parameter_counts(name, count):
  """From shapes alone: BERT-base (bert-base-uncased's BertModel, 109,482,240, plus a 2-class classifier) and
  OLMo-1B (allenai/OLMo-1B-hf's OlmoModel, 1,176,764,416, plus a 2-class score head without bias)."""
  from butterfly_jax.models.registry import param_order
  shapes = param_order(name, (3, 8), 2)
  assert sum(int(np.prod(s)) for s in shapes.values()) == count


# ------------------------------------------------------------------------------------------------ bad input


def _copy(hf, folder, tmp_path, config=True):
  dst = tmp_path / folder
  shutil.copytree(hf["root"] / folder, dst)
  if not config:
    (dst / "config.json").unlink()
  return dst


def test_a_checkpoint_of_the_other_architecture_is_named_before_compute(hf, tmp_path):
  _, bert_template = _model("bert", BERT_KW)
  _, olmo_template = _model("olmo", OLMO_KW)
  with pytest.raises(PretrainedError, match=r"OLMo checkpoint \(config.json: model_type 'olmo'\), not a BERT one"):
    load_bert_weights(hf["root"] / "olmo", bert_template)
  bare = _copy(hf, "olmo", tmp_path, config=False)  # no config.json: told by its tensors' names
  with pytest.raises(PretrainedError, match=r"is an OLMo checkpoint \(16 of its 16 tensors have OLMo names, such "
                                            r"as model.embed_tokens.weight\), not a BERT one \(model.name=bert\)"):
    load_bert_weights(bare, bert_template)
  bare = _copy(hf, "bert", tmp_path, config=False)
  with pytest.raises(PretrainedError, match=r"is a BERT checkpoint .* not an OLMo one \(model.name=olmo\)"):
    load_olmo_weights(bare / "model.safetensors", olmo_template)


def test_a_config_json_that_disagrees_with_model_kwargs_names_each_argument(hf):
  with pytest.raises(PretrainedError) as info:
    check_hf_config(hf["root"] / "olmo", "olmo", {**OLMO_KW, "layers": 3, "rope_theta": 10000.0})
  msg = str(info.value)
  assert "model.kwargs.layers = 3, but num_hidden_layers = 2 in config.json" in msg
  assert "model.kwargs.rope_theta = 10000.0, but rope_theta = 500.0 in config.json" in msg
  with pytest.raises(PretrainedError, match="model.kwargs.hidden_act = 'relu', but hidden_act = 'gelu'"):
    _, template = _model("bert", BERT_KW)  # the same shapes
    load_bert_weights(hf["root"] / "bert", template, model_kwargs={**BERT_KW, "hidden_act": "relu"})


def test_missing_unknown_and_misshapen_parameters_are_each_named(hf, tmp_path):
  folder = _copy(hf, "bert", tmp_path, config=False)
  tensors = load_file(folder / "model.safetensors")
  del tensors["bert.pooler.dense.bias"]
  tensors["bert.encoder.layer.0.attention.self.rotary.weight"] = np.zeros((24, 24), np.float32)
  tensors["bert.encoder.layer.1.intermediate.dense.weight"] = np.zeros((41, 24), np.float32)
  tensors["bert.encoder.layer.2.output.dense.bias"] = np.zeros(24, np.float32)
  del tensors["classifier.weight"], tensors["classifier.bias"]
  save_file(tensors, folder / "model.safetensors")
  _, template = _model("bert", BERT_KW)
  with pytest.raises(PretrainedError) as info:
    load_bert_weights(folder, template, keep_head=True)
  msg = str(info.value)
  assert "pooler/bias: missing from model.safetensors" in msg
  assert "bert.encoder.layer.0.attention.self.rotary.weight: not a BERT parameter this loader knows" in msg
  assert ("layer1/fc1/kernel (bert.encoder.layer.1.intermediate.dense.weight): file shape (41, 24), the model "
          "needs (40, 24) (its parameter is (24, 40))") in msg
  assert "bert.encoder.layer.2.output.dense.bias: in the file, but the model has no layer2/fc2/bias" in msg
  assert "head/kernel: missing from model.safetensors (a checkpoint without a classifier needs " \
         "init.keep_head=False)" in msg


def test_a_checkpoint_without_classifier_loads_with_a_fresh_head(hf, tmp_path):
  """What a MultiBERTs checkpoint is (BertForPreTraining: pre-training heads, no classifier)."""
  folder = _copy(hf, "bert", tmp_path)
  tensors = load_file(folder / "model.safetensors")
  del tensors["classifier.weight"], tensors["classifier.bias"]
  tensors["cls.predictions.bias"] = np.zeros(50, np.float32)
  tensors["cls.seq_relationship.weight"] = np.zeros((2, 24), np.float32)
  save_file(tensors, folder / "model.safetensors")
  _, template = _model("bert", BERT_KW)
  params = load_bert_weights(folder, template, model_kwargs=BERT_KW)
  np.testing.assert_array_equal(params["head"]["bias"], template["head"]["bias"])
  np.testing.assert_array_equal(params["embed"]["word"], tensors["bert.embeddings.word_embeddings.weight"])


def test_sequences_longer_than_the_position_table_are_an_error_before_compute():
  apply_fn, params = _model("bert", BERT_KW)
  x = jax.ShapeDtypeStruct((2, 3, 17), jnp.int32)
  with pytest.raises(ValueError, match="model.kwargs.max_positions: sequences of 17 tokens do not fit the "
                                       "model's 16 positions"):
    jax.eval_shape(apply_fn, params, x)
  c = smoke()
  c.model.name, c.model.kwargs = "olmo", OLMO_KW
  with pytest.raises(config_lib.ConfigError, match="model.kwargs.max_positions: .*17 tokens.* 16 positions"):
    spec_lib.check_model_input(c, (3, 17))
  spec_lib.check_model_input(c, (3, 16))
  with pytest.raises(config_lib.ConfigError, match=r"a text model's input is \(3, L\)"):
    spec_lib.check_model_input(c, (32, 32, 3))
  with pytest.raises(ValueError, match=r"input is \[B, 3, L\]"):
    jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((2, L), jnp.int32))
  with pytest.raises(ValueError, match="integer token ids"):
    jax.eval_shape(apply_fn, params, jax.ShapeDtypeStruct((2, 3, L), jnp.float32))


def test_token_ids_outside_the_tables_are_named():
  x = _batch(pad=0)
  check_token_ids(x, 50, 2)
  bad = x.copy()
  bad[1, 0, 3] = 50
  with pytest.raises(ValueError, match=r"token ids range over \[0, 50\], outside \[0, 50\) "
                                       r"\(model.kwargs.vocab_size = 50\)"):
    check_token_ids(bad, 50, 2)
  bad = x.copy()
  bad[0, 1, 0] = 2
  check_token_ids(bad, 50)  # OLMo reads no token types
  with pytest.raises(ValueError, match="token type ids range over"):
    check_token_ids(bad, 50, 2)
  bad = x.copy()
  bad[0, 2, 0] = 3
  with pytest.raises(ValueError, match=r"attention mask .* \(0 or 1\)"):
    check_token_ids(bad, 50)


def test_bad_model_arguments_of_the_text_models_fail_before_compute():
  bad = [("bert", {"hidden": 24, "heads": 5}, "model.kwargs.hidden: 24 is not divisible"),
         ("olmo", {"hidden": 24, "heads": 8}, "model.kwargs.hidden: 24 is not divisible into 8 heads of an even"),
         ("bert", {"hidden_act": "gelu_10"}, "model.kwargs.hidden_act: unknown value 'gelu_10'"),
         ("bert", {"layer_norm_eps": 0.0}, "model.kwargs.layer_norm_eps: must be a finite number in"),
         ("bert", {"dropout": 1.0}, "model.kwargs.dropout: must be a finite number in"),
         ("olmo", {"rope_theta": -1.0}, "model.kwargs.rope_theta"),
         ("olmo", {"clip_qkv": float("nan")}, "model.kwargs.clip_qkv"),
         ("olmo", {"vocab_size": 0}, "model.kwargs.vocab_size: expected an integer >= 1"),
         ("olmo", {"type_vocab_size": 2}, "model olmo takes no type_vocab_size")]
  for name, kwargs, message in bad:
    with pytest.raises(config_lib.ConfigError, match=message):
      spec_lib.check_model_kwargs(name, kwargs)
  spec_lib.check_model_kwargs("olmo", OLMO_KW)


def test_a_folder_without_safetensors_or_with_a_broken_index_is_named(hf, tmp_path):
  torch_only = tmp_path / "torch_only"
  torch_only.mkdir()
  (torch_only / "pytorch_model.bin").write_bytes(b"not read")
  _, template = _model("olmo", OLMO_KW)
  with pytest.raises(PretrainedError, match="holds no model.safetensors .* pytorch_model.bin: only safetensors"):
    load_olmo_weights(torch_only, template)
  sharded = _copy(hf, "olmo_sharded", tmp_path)
  index = json.loads((sharded / "model.safetensors.index.json").read_text())
  shards = sorted(set(index["weight_map"].values()))
  edits = {
      "a shard that is not there": (lambda m: {**m, "score.weight": "model-00009-of-00009.safetensors"},
                                    "lists shards that are not in"),
      "a shard outside the folder": (lambda m: {**m, "score.weight": "../olmo/model.safetensors"},
                                     "shards must be .safetensors files beside the index"),
      "a tensor its shard lacks": (lambda m: {**m, "model.norm.weight": shards[0]},
                                   f"model.norm.weight: listed in model.safetensors.index.json for {shards[0]}"),
      "no weight map": (lambda m: [], "expected an object with a non-empty \"weight_map\""),
  }
  for case, (edit, message) in edits.items():
    changed = {**index, "weight_map": edit(index["weight_map"])} if case != "no weight map" else []
    (sharded / "model.safetensors.index.json").write_text(json.dumps(changed))
    with pytest.raises(PretrainedError, match=message):
      load_olmo_weights(sharded, template)


@pytest.mark.parametrize("change,message", [
    ({"num_key_value_heads": 1}, "num_key_value_heads = 1 \\(one key/value head per query head\\)"),
    ({"attention_bias": True}, "attention_bias = True \\(no biases\\)"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}},
     "rotary scaling .* is not implemented"),
    ({"model_type": "olmo2"}, "model_type 'olmo2' is not read here; allowed: 'bert'"),
])
def test_a_variant_the_models_do_not_implement_is_named(hf, tmp_path, change, message):
  folder = _copy(hf, "olmo", tmp_path)
  cfg = json.loads((folder / "config.json").read_text())
  (folder / "config.json").write_text(json.dumps({**cfg, **change}))
  _, template = _model("olmo", OLMO_KW)
  with pytest.raises(PretrainedError, match=message):
    load_olmo_weights(folder, template, model_kwargs=OLMO_KW)


def test_token_ids_stay_integers_under_bfloat16_compute():
  """Mixed precision casts the parameters and float inputs, never token ids (ids above 256 are not bfloat16)."""
  apply_fn, params = _model("bert", BERT_KW)
  seen = []

  def spy(p, x):
    seen.append((x.dtype, jax.tree_util.tree_leaves(p)[0].dtype))
    return apply_fn(p, x)

  x = _batch(pad=0)
  loss = jax.jit(members.cross_entropy(spy, "bfloat16"))(params, x, jnp.array([0, 1, 2, 3]))
  assert seen == [(jnp.int32, jnp.bfloat16)] and np.isfinite(float(loss))


def test_text_models_run_their_members_through_one_compiled_step_on_a_cpu():
  """``auto`` picks ``map`` for BERT and OLMo on a CPU (``vmap`` on an accelerator, ``sequential`` for images); under
  ``map`` identical BERT members stay bitwise equal, and a member's trajectory does not depend on its siblings or
  on K (K >= 2; unrolled copies of the step were measured to part: BUILD_NOTES.md)."""
  from butterfly_jax.run.spec import member_strategy
  c = smoke()
  assert member_strategy(c, "cpu") == "sequential" and member_strategy(c, "gpu") == "vmap"
  c.model.name = "bert"
  assert member_strategy(c, "cpu") == "map" and member_strategy(c, "tpu") == "vmap"
  c.members.strategy = "vmap"
  assert member_strategy(c, "cpu") == "vmap"

  import optax
  apply_fn, params = _model("bert", dict(BERT_KW, layers=1))
  other = jax.tree_util.tree_map(lambda p: p * 0.9, params)
  transform = optax.adamw(1e-3, weight_decay=0.01)
  x, y = _batch(pad=0), jnp.array([0, 1, 2, 3])

  class Batcher:  # the same batch at every step
    step_batch = staticmethod(lambda data, perm, key, step: (x, y))

  step_fns = {d: members.make_train_step(apply_fn, transform, lambda s: jnp.float32(1.0), Batcher, "map", dropout=d)
              for d in (False, True)}  # one jit each: a compilation per family size

  def train(plist, steps=3, dropout=False, key=jax.random.key(0)):
    fam = members.new_family(plist, [transform.init(p) for p in plist], [0] * len(plist), [steps] * len(plist))
    step = step_fns[dropout]
    for s in range(steps):
      fam, _, _ = step(fam, None, None, key, jnp.int32(s))
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(fam.params)]

  pair, family = train([params, other]), train([params, other, params])
  assert all(np.array_equal(a[0], b[0]) and np.array_equal(b[0], b[2]) for a, b in zip(pair, family))
  assert not all(np.array_equal(b[0], b[1]) for b in family)
  # with dropout (BERT's 0.1): the step's key is every member's, so twins still drop the same units
  dropped = train([params, other, params], dropout=True)
  assert all(np.array_equal(b[0], b[2]) for b in dropped)
  assert not all(np.array_equal(a[0], b[0]) for a, b in zip(family, dropped))  # dropout did act
  assert all(np.array_equal(a[0], b[0]) for a, b in zip(dropped, train([params, other], dropout=True)))
  assert not all(np.array_equal(a[0], b[0])  # another key, other masks
                 for a, b in zip(dropped, train([params, other], dropout=True, key=jax.random.key(1))))


def test_bert_dropout_acts_in_training_only_where_transformers_puts_it():
  """Without a key (evaluation) the output is deterministic; with one, dropout at the rates given, the same masks
  for the same key; rates of 0 switch it off entirely (then a key changes nothing)."""
  from butterfly_jax.models.registry import has_dropout
  x = _batch(pad=2)
  apply_fn, params = _model("bert", BERT_KW)
  assert has_dropout("bert", **BERT_KW) and not has_dropout("olmo", **OLMO_KW)
  key = jax.random.key(3)
  plain, again = apply_fn(params, x)[0], apply_fn(params, x)[0]
  train_a, train_b = apply_fn(params, x, dropout_key=key)[0], apply_fn(params, x, dropout_key=key)[0]
  np.testing.assert_array_equal(plain, again)
  np.testing.assert_array_equal(train_a, train_b)
  assert np.abs(np.asarray(train_a) - np.asarray(plain)).max() > 1e-3
  off = dict(BERT_KW, dropout=0.0, attention_dropout=0.0)
  assert not has_dropout("bert", **off)
  apply_off = jax.jit(make_model("bert", (3, L), 5, **off)[0])  # jitted, as the compared calls are
  np.testing.assert_array_equal(apply_off(params, x, dropout_key=key)[0], plain)
  only_head = dict(BERT_KW, dropout=0.5, attention_dropout=0.0)  # hidden dropout alone still acts
  apply_head = jax.jit(make_model("bert", (3, L), 5, **only_head)[0])
  assert np.abs(np.asarray(apply_head(params, x, dropout_key=key)[0]) - np.asarray(plain)).max() > 1e-3
