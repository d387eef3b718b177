"""The language half end to end: a tiny BERT checkpoint written by transformers, fine-tuned as a family on a tiny
MRPC task in the official TSV layout through the real loader and the checkpoint's own tokenizer; the task metric
(F1) beside the loss and error, its barriers, the report's columns and figures, the permutation proxy; the
inputs that must fail before any compute; the shipped tiny task and config."""

import shutil

import ml_collections
import numpy as np
import pytest

import text_fixtures as fx
from butterfly_jax import config as config_lib
from butterfly_jax.config import ConfigError
from butterfly_jax.core import evaluate, metrics
from butterfly_jax.io import text
from butterfly_jax.io.data import DataError
from butterfly_jax.io.pretrained import PretrainedError
from butterfly_jax.run import setup as run_setup
from butterfly_jax.run import spec as spec_lib
from butterfly_jax.run.experiment import run

TINY_BERT = dict(vocab_size=len(fx.vocab()), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=32, max_position_embeddings=16, type_vocab_size=2)
EXCLUDE = ".*norm.*|.*bias.*|.*embed.*"  # the authors' fine-tuning mask: no norms, biases or embeddings


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """A GLUE folder with MRPC, a MultiBERTs-like checkpoint folder (``BertForPreTraining`` in safetensors: no
  classifier, pre-training heads to skip; ``vocab.txt`` beside it), and an OLMo checkpoint: written once."""
  import transformers as tr
  root = tmp_path_factory.mktemp("glue_files")
  fx.write_mrpc(root / "glue", n_train=48, n_dev=24)
  bert = tr.BertForPreTraining(tr.BertConfig(**TINY_BERT))
  bert.save_pretrained(root / "bert", safe_serialization=True)
  fx.write_bert_checkpoint(root / "bert")
  olmo = tr.OlmoForCausalLM(tr.OlmoConfig(vocab_size=len(fx.vocab()), hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32, max_position_embeddings=16))
  olmo.save_pretrained(root / "olmo", safe_serialization=True)
  fx.write_bert_checkpoint(root / "olmo")  # a tokenizer that fits: the architecture alone is wrong
  return root


def _config(files) -> ml_collections.ConfigDict:
  """Fine-tuning the checkpoint on MRPC: a twin and one perturbed child, a few steps; the model's arguments read
  from the checkpoint's config.json, the tokenizer the checkpoint folder's."""
  from butterfly_jax.io.pretrained import hf_model_kwargs
  name, kwargs = hf_model_kwargs(files / "bert")
  c = config_lib.default_config()
  c.data.name = "glue/mrpc"
  c.data.dir = str(files / "glue")
  c.data.max_length = 16
  c.model.name = name
  c.model.kwargs = ml_collections.ConfigDict(kwargs)
  c.init.checkpoint = str(files / "bert")
  c.train.batch_size = 8
  c.train.steps = "12"
  c.optim.name = "adamw"
  c.optim.lr = 1e-3
  c.optim.weight_decay = 0.01
  c.schedule.warmup = "2"
  c.perturb.time = "4"
  c.perturb.kind = "gaussian"  # the batch direction's gradient is the training step's: one compilation fewer
  c.perturb.scales = (0.0, 1e-2)
  c.perturb.init_std = 0.02
  c.perturb.mask.exclude_finetune = EXCLUDE
  c.eval.num_alphas = 3
  c.eval.batch_size = 32
  c.eval.cka_examples = 16
  c.log.every_steps = 6
  c.log.progress = False
  c.checkpoint.trunk = False
  c.checkpoint.every_steps = "0"
  return c


@pytest.fixture(scope="module")
def glue_run(files, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("runs") / "mrpc"
  return workdir, run(_config(files), workdir)


def test_the_twin_barrier_is_exactly_zero_and_the_task_metric_stands_beside_loss_and_error(glue_run):
  _, res = glue_run
  assert res["data"]["metric"] == "f1" and res["data"]["input_shape"] == [3, 16]
  assert res["init"]["head"] == "fresh" and res["children"][2]["perturb"]["num_perturbed"] > 0
  child0, twin, perturbed = res["children"]
  for child in res["children"]:
    for split in ("train", "test"):
      metric = child[split]["metric"]
      assert metric["name"] == "f1" and 0.0 <= metric["value"] <= 1.0
  assert res["members_strategy"] == "map"  # auto on a CPU for a text model: one compiled step for every member
  assert res["model"]["dropout_in_training"]  # the checkpoint's config.json: 0.1, shared masks keep the twin exact
  v = twin["vs_child0"]
  assert v["l2"] == 0.0 and v["cka"] == pytest.approx(0.0, abs=1e-6)
  for which in (v["barrier"], v["aligned"]["barrier"]):  # exactly 0: the twin is bitwise child 0
    assert which == {split: {"loss": 0.0, "error": 0.0, "metric": 0.0} for split in ("train", "test")}
  assert twin["test"] == child0["test"]
  p = perturbed["vs_child0"]
  assert p["l2"] > 0 and set(p["barrier"]["test"]) == {"loss", "error", "metric"}
  curve = p["curves"]["test"]
  assert len(curve["metric"]) == 3 and curve["metric"][0] == child0["test"]["metric"]["value"]
  # the metric's barrier is Eq. 1 on 1 - F1 along the same path
  assert p["barrier"]["test"]["metric"] == pytest.approx(
      evaluate.barrier_from_curve(res["alphas"], 1.0 - np.asarray(curve["metric"])))


def test_evaluation_counts_each_networks_confusion_and_its_metric_and_barrier():
  """The evaluation's confusion matrices are those of each network's argmax predictions; the metric and its
  barrier follow from them (Matthews correlation here), and for accuracy the barrier is the error's."""
  import jax
  import jax.numpy as jnp

  from butterfly_jax.models import make_model
  rng = np.random.default_rng(0)
  x = rng.normal(size=(50, 6)).astype(np.float32)
  y = rng.integers(0, 3, 50).astype(np.int32)
  apply_fn, init_fn = make_model("mlp", (6,), 3, hidden=(8,))
  children = jax.tree_util.tree_map(lambda *a: jnp.stack(a), init_fn(jax.random.key(0)), init_fn(jax.random.key(1)))
  alphas = evaluate.alpha_grid(4)
  table = evaluate.network_table(2, alphas)
  eval_batch = evaluate.make_eval_batch(apply_fn, 1, num_classes=3)
  loss, err, confusion = evaluate.evaluate_networks(eval_batch, children, table, jnp.asarray(x), jnp.asarray(y),
                                                    np.arange(50), 16, None, None)
  assert confusion.shape == (4, 3, 3) and confusion.dtype == np.int64
  from butterfly_jax.core import tree_math
  for i, (a, b, alpha) in enumerate(zip(*table)):
    params = tree_math.interpolate(tree_math.unstack(children, a), tree_math.unstack(children, b), alpha)
    predicted = np.asarray(apply_fn(params, x)[0]).argmax(-1)
    np.testing.assert_array_equal(confusion[i], metrics.confusion_matrix(predicted, y, 3))
    assert err[i] == pytest.approx(np.mean(predicted != y))
  curves = {}
  for metric in ("matthews", "accuracy"):
    curves[metric] = evaluate.add_metric_curves(evaluate.family_curves(loss, err, 2, alphas), metric, confusion, 2,
                                                alphas)
  mcc = curves["matthews"]["curves"][0]["metric"]
  assert curves["matthews"]["child_metric"][1] == pytest.approx(
      metrics.metric_from_confusion("matthews", confusion[1]))
  barriers, _ = evaluate.pair_barriers({"train": curves["matthews"], "test": curves["accuracy"]}, alphas, 2)
  assert barriers[0]["train"]["metric"] == pytest.approx(evaluate.barrier_from_curve(alphas, -mcc))
  assert barriers[0]["test"]["metric"] == pytest.approx(barriers[0]["test"]["error"])


def test_the_report_summary_and_proxy_take_the_language_run(glue_run, tmp_path):
  from butterfly_jax import main, report
  from butterfly_jax.proxy import run_proxy
  workdir, res = glue_run
  table = report.load_table(workdir.parent)
  for col in ("metric", "train.metric", "test.metric", "child0.test.metric", "vs_child0.barrier.train.metric",
              "vs_child0.barrier.test.metric", "vs_child0.aligned.barrier.test.metric"):
    assert col in table.columns, col
  assert set(table["metric"]) == {"f1"}
  twin = table[table["child"] == 1].iloc[0]
  assert twin["vs_child0.barrier.test.metric"] == 0.0
  assert twin["test.metric"] == res["children"][1]["test"]["metric"]["value"]
  paths = report.make_figures(table, tmp_path / "figures", only=("barrier_vs_sigma",))
  assert (tmp_path / "figures" / "barrier_vs_sigma_gaussian.png") in paths
  captions = (tmp_path / "figures" / "figures.md").read_text()
  assert "rows: loss, error, f1 (on 1 − metric)" in captions
  (line,) = [l for l in main.summary(res).splitlines() if l.startswith("child 1 ")]
  assert "test f1=" in line and "f1 train/test=0.0000/0.0000" in line
  # the proxy's permuted copies of child 0, with the metric's barrier: none for the identity (every unit in place)
  out = run_proxy(workdir, fractions=(1.0, 0.0), seeds=1)
  identity, moved = out["rows"]
  assert identity["l2"] == 0.0 and identity["barrier"]["test"] == {"loss": 0.0, "error": 0.0, "metric": 0.0}
  assert moved["fixed_point_fraction"] < 1 and moved["l2"] > 0
  assert np.isfinite(moved["barrier"]["train"]["metric"])


def _no_training(monkeypatch):
  """Training or writing a run directory is a test failure: the errors below must come before either."""
  def trained(*args, **kwargs):
    raise AssertionError("reached training")
  monkeypatch.setattr(run_setup.Setup, "trainer", trained)


@pytest.mark.parametrize("case, error, message", [
    ("olmo checkpoint", PretrainedError, r"is an OLMo checkpoint \(config.json: model_type 'olmo'\), not a BERT one"),
    ("olmo tensors", PretrainedError, r"is an OLMo checkpoint \(\d+ of its \d+ tensors have OLMo names"),
    ("decoder tokenizer", DataError, r"tokens do not match the model's vocab_size 90"),
    ("missing split", DataError, r"MRPC/dev.tsv: missing; GLUE mrpc's validation split"),
    ("too long", DataError, r"data.max_length: 32 tokens exceed the model's max_position_embeddings 16"),
])
def test_bad_language_inputs_fail_before_any_compute(files, tmp_path, monkeypatch, case, error, message):
  c = _config(files)
  if case == "olmo checkpoint":
    c.init.checkpoint = str(files / "olmo")
  elif case == "olmo tensors":  # no config.json: the tensors' names tell, before the task is tokenized
    shutil.copytree(files / "olmo", tmp_path / "olmo")
    (tmp_path / "olmo" / "config.json").unlink()
    c.init.checkpoint = str(tmp_path / "olmo")

    def tokenized(*args, **kwargs):
      raise AssertionError("tokenized the task before checking the checkpoint")
    monkeypatch.setattr(text, "load_glue_tsv", tokenized)
  elif case == "decoder tokenizer":
    c.data.tokenizer = str(fx.write_decoder_checkpoint(tmp_path / "decoder"))
  elif case == "missing split":
    shutil.copytree(files / "glue", tmp_path / "glue")
    (tmp_path / "glue" / "MRPC" / "dev.tsv").unlink()
    c.data.dir = str(tmp_path / "glue")
  else:
    c.data.max_length = 32
  _no_training(monkeypatch)
  workdir = tmp_path / "run"
  with pytest.raises(error, match=message):
    run(c, workdir)
  assert not (workdir / "metrics.jsonl").exists() and not (workdir / "checkpoints").exists()


@pytest.mark.parametrize("field, value, message", [
    ("data.augment.flip", True, "data.augment: image augmentations do nothing to token ids"),
    ("data.augment.rotate", 10.0, r"turn off data.augment.rotate=10.0"),
    ("data.classes", (0, 1), r"data.classes: a GLUE task keeps its own labels"),
    ("data.synthetic.num_train", 8, "data.synthetic: read by data.name=synthetic only"),
    ("data.name", "glue/stsb", r"data.name: GLUE task 'stsb' \(a regression task"),
    ("data.max_length", -1, r"data.max_length: expected an integer >= 0"),
    ("init.checkpoint", "", "data.tokenizer: data.name=glue/mrpc is tokenized with a checkpoint's own tokenizer"),
    ("model.name", "mlp", "model.name: data.name=glue/mrpc holds token ids, which only the text models read"),
])
def test_text_config_errors_name_the_field(files, field, value, message):
  c = _config(files)
  if field == "model.name":
    c.model.kwargs = ml_collections.ConfigDict()
  section, _, leaf = field.rpartition(".")
  node = c
  for part in section.split("."):
    node = node[part]
  node[leaf] = value
  with pytest.raises(ConfigError, match=message):
    spec_lib.check(c)


@pytest.mark.parametrize("field, value, message", [
    ("data.max_length", 16, r"data.max_length: only text data \(glue/<task>\) has sequences"),
    ("data.tokenizer", "somewhere", "data.tokenizer: only text data"),
    ("model.name", "bert", "model.name: bert reads token ids, but data.name=digits holds images"),
])
def test_text_fields_are_refused_for_images(smoke_config, field, value, message):
  section, leaf = field.split(".")
  smoke_config[section][leaf] = value
  if field == "model.name":
    smoke_config.model.kwargs = ml_collections.ConfigDict()
  with pytest.raises(ConfigError, match=message):
    spec_lib.check(smoke_config)


def test_the_shipped_tiny_task_is_the_fixtures_and_its_config_loads_it(tmp_path):
  """configs/glue_tiny.py reads the package's tiny QNLI folder (the test fixtures' files, byte for byte) with its
  vocab.txt, for a random BERT whose tables fit it."""
  from butterfly_jax.run.config_files import FOLDER
  module = config_lib.config_file(FOLDER / "glue_tiny.py")
  c = module.get_config()
  spec_lib.check(c)
  shipped = module.TINY_GLUE
  fx.write_bert_checkpoint(tmp_path)
  fx.write_qnli(tmp_path, n_train=512, n_dev=128)
  for name in ("vocab.txt", "tokenizer_config.json", "QNLI/train.tsv", "QNLI/dev.tsv"):
    assert (shipped / name).read_bytes() == (tmp_path / name).read_bytes(), name
  data = spec_lib.load_data(c)
  assert (data.num_train, data.num_test, data.metric, data.input_shape) == (512, 128, "accuracy", (3, 16))
  assert data.train_inputs[:, 2].sum(1).max() < 16  # no example is cut
  assert not c.init.checkpoint and "glue_tiny.py" in module.__doc__


def test_the_threshold_search_takes_the_metric_barrier_of_text_runs_only(smoke_config, tmp_path):
  from butterfly_jax import threshold
  with pytest.raises(threshold.ThresholdError, match=r"--metric: train.metric is a text task's metric barrier"):
    threshold.search(smoke_config, tmp_path, ["0"], [0], metric="train.metric")
  assert {"train.metric", "test.metric"} <= set(threshold.METRICS)


def test_the_pretraining_step_is_read_from_checkpoint_folder_names():
  from butterfly_jax.report.finetune import pretraining_steps
  assert pretraining_steps("weights/multiberts-seed_0-step_20k") == 20_000
  assert pretraining_steps("weights/multiberts-seed_0-step_2000k/") == 2_000_000
  assert pretraining_steps("weights/olmo-1b/step10000-tokens41B") == 10_000
  assert pretraining_steps("runs/pretrain:234") == 234
  assert np.isnan(pretraining_steps("weights/vit-b16-in21k/model.safetensors"))
  assert np.isnan(pretraining_steps(""))


def test_a_checkpoint_file_takes_its_tokenizer_from_the_folder_beside_it(files):
  """init.checkpoint may name the weights file itself: the tokenizer is then the one in that file's folder, the same
  ids as through the folder (not the weights file read as a tokenizer)."""
  c = _config(files)
  by_folder = spec_lib.load_text_task(c)
  c.init.checkpoint = str(files / "bert" / "model.safetensors")
  assert spec_lib.tokenizer_folder(c) == str(files / "bert")
  by_file = spec_lib.load_text_task(c)
  np.testing.assert_array_equal(by_file.train_inputs, by_folder.train_inputs)
