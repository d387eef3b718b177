"""Text data: checkpoint tokenizers (against transformers), GLUE from TSV folders and tfds (mocked), metrics."""

import json
import os

import numpy as np
import pytest

import text_fixtures as fx
from butterfly_jax.core.metrics import confusion_matrix, task_metric
from butterfly_jax.io import text
from butterfly_jax.io.data import DataError
from butterfly_jax.io.text import TextDataset, load_glue_tfds, load_glue_tsv, load_tokenizer

@pytest.fixture(scope="module")
def bert(tmp_path_factory):
  """The fixture's lower-casing BERT tokenizer (from its vocab.txt)."""
  return load_tokenizer(fx.write_bert_checkpoint(tmp_path_factory.mktemp("bert")))


PAIRS = [("The cats sat on the mat.", "Where is the dog running?"),
         ("Who ran to the house under the tree in the good movie?", "It was not."),
         ("a", "b"),
         ("Where is the horse?", "The HORSE sat under the tree and the cow ran to the house on the mat.")]


def _hf(folder, first, second, max_length):
  from transformers import BertTokenizerFast
  hf = BertTokenizerFast.from_pretrained(str(folder))
  out = hf(first, second, truncation="longest_first", max_length=max_length, padding="max_length")
  return np.stack([np.asarray(out[k], np.int32) for k in text.ROWS], axis=1)


# ----------------------------------------------------------------------------------------------- tokenizers

@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("tokenizer_json", [False, True])
def test_bert_tokenizer_gives_transformers_ids(tmp_path, lowercase, tokenizer_json):
  folder = fx.write_bert_checkpoint(tmp_path, lowercase=lowercase, tokenizer_json=tokenizer_json)
  tok = load_tokenizer(folder)
  assert tok.pair_join == "post-processor" and tok.pad_id == 0 and tok.vocab_size == len(fx.vocab())
  assert tok.source.endswith("tokenizer.json" if tokenizer_json else "vocab.txt")
  first, second = zip(*PAIRS)
  for max_length in (8, 12, 40):  # truncation of the longer sentence, of both, and padding
    pairs = tok.encode(first, second, max_length=max_length)
    assert pairs.dtype == np.int32 and pairs.shape == (len(PAIRS), 3, max_length)
    np.testing.assert_array_equal(pairs, _hf(folder, list(first), list(second), max_length))
    np.testing.assert_array_equal(tok.encode(first, max_length=max_length),
                                  _hf(folder, list(first), None, max_length))
  cats = tok.encode(["Cats"], max_length=5)[0]
  unk, cls, sep = (fx.vocab().index(t) for t in ("[UNK]", "[CLS]", "[SEP]"))
  # lower-cased "cats" is cat ##s; cased "Cats" starts with an upper-case letter the vocabulary lacks
  expected = [cls, fx.vocab().index("cat"), fx.vocab().index("##s"), sep, 0] if lowercase else [cls, unk, sep, 0, 0]
  assert cats[0].tolist() == expected


def test_bert_pair_layout_and_longest_first_truncation(tmp_path):
  tok = load_tokenizer(fx.write_bert_checkpoint(tmp_path))
  cls, sep = fx.vocab().index("[CLS]"), fx.vocab().index("[SEP]")
  x = tok.encode(["the cat sat on the mat"], ["the dog"], max_length=9)[0]
  ids, types, mask = x
  # [CLS] a [SEP] b [SEP], a cut to fit: longest_first takes tokens off the longer sentence only
  assert ids.tolist() == [cls] + [fx.vocab().index(w) for w in ("the", "cat", "sat", "on")] + [sep] + \
      [fx.vocab().index(w) for w in ("the", "dog")] + [sep]
  assert types.tolist() == [0] * 6 + [1] * 3 and mask.tolist() == [1] * 9
  padded = tok.encode(["the cat"], ["dog"], max_length=9)[0]
  assert padded[2].tolist() == [1] * 6 + [0] * 3 and padded[0, 6:].tolist() == [0] * 3
  assert padded[1].tolist() == [0] * 4 + [1] * 2 + [0] * 3  # padding has token type 0
  with pytest.raises(DataError, match="data.max_length.*3 special tokens"):
    tok.encode(["a"], ["b"], max_length=3)


def test_vocab_txt_without_config_lowercases_as_bert(tmp_path):
  tok = load_tokenizer(fx.write_bert_checkpoint(tmp_path, lowercase=None) / "vocab.txt")
  np.testing.assert_array_equal(tok.encode(["The CAT"], max_length=6), tok.encode(["the cat"], max_length=6))


def test_decoder_tokenizer_joins_a_pair_with_eos_and_pads_with_its_pad_id(tmp_path):
  from tokenizers import Tokenizer
  folder = fx.write_decoder_checkpoint(tmp_path)
  tok = load_tokenizer(folder)
  assert (tok.pair_join, tok.pad_id) == ("eos", 1)
  raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
  a, b = raw.encode("The cat sat.").ids, raw.encode("Where is the dog?").ids
  x = tok.encode(["The cat sat."], ["Where is the dog?"], max_length=len(a) + len(b) + 4)[0]
  assert x[0].tolist() == a + [0] + b + [1] * 3
  assert x[1].tolist() == [0] * (len(a) + 1) + [1] * len(b) + [0] * 3
  assert x[2].tolist() == [1] * (len(a) + 1 + len(b)) + [0] * 3
  single = tok.encode(["The cat sat."], max_length=len(a) + 2)[0]
  assert single[0].tolist() == a + [1, 1]  # a single sentence gets no special token
  # the same ids as transformers' fast tokenizer on the same file, for single sentences
  from transformers import PreTrainedTokenizerFast
  sentence = "Where is the horse under the tree?"
  ids = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))(sentence)["input_ids"]
  assert tok.encode([sentence], max_length=len(ids))[0, 0].tolist() == ids
  # ids from config.json alone
  os.remove(folder / "tokenizer_config.json")
  tok = load_tokenizer(folder / "tokenizer.json")
  assert tok.pad_id == 1 and tok.encode(["a"], ["b"], max_length=4)[0, 0, 1] == 0


def test_tokenizer_errors_name_the_file_and_field(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    load_tokenizer(tmp_path / "absent")
  with pytest.raises(DataError, match="neither tokenizer.json nor vocab.txt"):
    load_tokenizer(tmp_path)
  (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nthe\n")
  with pytest.raises(DataError, match=r"vocab.txt.*\[SEP\], \[CLS\]"):
    load_tokenizer(tmp_path)
  (tmp_path / "tokenizer.json").write_text("{not json")
  with pytest.raises(DataError, match="tokenizer.json: not a tokenizers tokenizer.json"):
    load_tokenizer(tmp_path)
  bert = fx.write_bert_checkpoint(tmp_path / "bert")
  (bert / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": "yes"}))
  with pytest.raises(DataError, match="do_lower_case"):
    load_tokenizer(bert)
  (bert / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<pad>"}))
  with pytest.raises(DataError, match="pad_token '<pad>'.*not in the vocabulary"):
    load_tokenizer(bert)
  (bert / "tokenizer_config.json").write_text("[1, 2]")
  with pytest.raises(DataError, match="tokenizer_config.json: expected a JSON object"):
    load_tokenizer(bert)
  dec = fx.write_decoder_checkpoint(tmp_path / "dec", tokenizer_config=False, model_config=False)
  (dec / "config.json").write_text(json.dumps({"pad_token_id": 1}))
  with pytest.raises(DataError, match="no end-of-sequence token.*eos_token"):
    load_tokenizer(dec)
  (dec / "config.json").write_text(json.dumps({"eos_token_id": 0}))
  with pytest.raises(DataError, match="no padding token.*pad_token"):
    load_tokenizer(dec)


def test_check_vocab_and_positions(bert):
  tok = bert
  n = tok.vocab_size
  text.check_vocab(tok, n)
  text.check_vocab(tok, n + 24)  # an embedding table padded to a multiple, as OLMo's
  with pytest.raises(DataError, match=f"{n} tokens do not match the model's vocab_size {n - 1}"):
    text.check_vocab(tok, n - 1)
  with pytest.raises(DataError, match="vocab_size 30522"):
    text.check_vocab(tok, 30522)
  text.check_positions(512, 512)
  with pytest.raises(DataError, match="data.max_length: 513 tokens exceed the model's max_position_embeddings 512"):
    text.check_positions(513, 512)
  with pytest.raises(DataError, match="data.max_length"):
    text.check_positions(0, 512)


# ----------------------------------------------------------------------------------------------- GLUE TSV

def test_qnli_tsv_through_the_real_loader_and_tokenizer(tmp_path, bert):
  rows = fx.write_qnli(tmp_path / "glue")
  tok = bert
  d = load_glue_tsv("qnli", tmp_path / "glue", tok, 16)
  assert (d.name, d.num_train, d.num_test, d.input_shape, d.num_classes, d.metric, d.max_length) == \
      ("qnli", 48, 16, (3, 16), 2, "accuracy", 16)
  assert d.source == f"glue-tsv:{tmp_path / 'glue' / 'QNLI'}"
  for split, inputs, labels in (("train", d.train_inputs, d.train_labels), ("dev", d.test_inputs, d.test_labels)):
    q, s, lab = zip(*rows[split])
    np.testing.assert_array_equal(inputs, tok.encode(q, s, max_length=16))
    np.testing.assert_array_equal(labels, [0 if x == "entailment" else 1 for x in lab])
  assert 0 < d.train_labels.mean() < 1
  again = load_glue_tsv("qnli", tmp_path / "glue" / "QNLI", tok, 16)  # the task folder itself
  np.testing.assert_array_equal(again.train_inputs, d.train_inputs)


# (task, file header or None, rows as GLUE writes them, expected (sentences..., label id) per row)
_LAYOUTS = {
    "cola": (None, [("gj04", "1", "", "The cat sat."), ("gj04", "0", "*", "Cat the sat.")],
             [("The cat sat.", 1), ("Cat the sat.", 0)]),
    "sst2": (("sentence", "label"), [("a good movie ", "1"), ("it was bad ", "0")],
             [("a good movie ", 1), ("it was bad ", 0)]),
    "mrpc": (("\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
             [("1", "7", "8", "The cat sat.", "A cat sat."), ("0", "9", "10", "The dog ran.", "The cow sat.")],
             [("The cat sat.", "A cat sat.", 1), ("The dog ran.", "The cow sat.", 0)]),
    "qqp": (("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
            [("0", "1", "2", "Where is it?", "Where is the cat?", "0"), ("1", "3", "4", "Who ran?", "Who ran?", "1")],
            [("Where is it?", "Where is the cat?", 0), ("Who ran?", "Who ran?", 1)]),
    "rte": (("index", "sentence1", "sentence2", "label"),
            [("0", "The cat sat.", "A cat sat.", "entailment"), ("1", "The dog ran.", "It sat.", "not_entailment")],
            [("The cat sat.", "A cat sat.", 0), ("The dog ran.", "It sat.", 1)]),
    "wnli": (("index", "sentence1", "sentence2", "label"), [("0", "The cat sat.", "It sat.", "1")],
             [("The cat sat.", "It sat.", 1)]),
}
_MNLI_TRAIN = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label")
_MNLI_DEV = _MNLI_TRAIN[:-1] + ("label2", "label3", "label4", "label5", "gold_label")


@pytest.mark.parametrize("task", sorted(_LAYOUTS))
def test_each_task_reads_its_own_tsv_layout(tmp_path, task, bert):
  header, rows, expected = _LAYOUTS[task]
  spec = text.glue_task(task)
  for file in ("train.tsv", spec.eval_file):
    fx.write_tsv(tmp_path / spec.folder / file, header, rows)
  tok = bert
  d = load_glue_tsv(task, tmp_path, tok, 12)
  columns = list(zip(*expected))
  np.testing.assert_array_equal(d.train_labels, columns[-1])
  np.testing.assert_array_equal(d.test_inputs, tok.encode(*columns[:-1], max_length=12))
  assert d.metric == {"cola": "matthews", "mrpc": "f1", "qqp": "f1"}.get(task, "accuracy")


@pytest.mark.parametrize("task,dev", [("mnli", "dev_matched.tsv"), ("mnli_mismatched", "dev_mismatched.tsv")])
def test_mnli_matched_and_mismatched(tmp_path, task, dev, bert):
  def row(header, s1, s2, gold):
    values = dict.fromkeys(header, "x")
    values.update(sentence1=s1, sentence2=s2, gold_label=gold)
    return [values[h] for h in header]

  fx.write_tsv(tmp_path / "MNLI" / "train.tsv", _MNLI_TRAIN,
               [row(_MNLI_TRAIN, "The cat sat.", "It sat.", g) for g in ("entailment", "neutral", "contradiction")])
  for name, s1 in (("dev_matched.tsv", "matched"), ("dev_mismatched.tsv", "mismatched")):
    fx.write_tsv(tmp_path / "MNLI" / name, _MNLI_DEV, [row(_MNLI_DEV, s1, "b", "neutral")])
  tok = bert
  d = load_glue_tsv(task, tmp_path, tok, 10)
  assert d.num_classes == 3 and d.train_labels.tolist() == [0, 1, 2] and d.test_labels.tolist() == [1]
  np.testing.assert_array_equal(d.test_inputs, tok.encode([dev[4:-4]], ["b"], max_length=10))


def test_tsv_quotes_are_text_not_quoting(tmp_path, bert):
  # An unbalanced quote in a GLUE sentence: with the csv module's default quoting the row would swallow the
  # rest of the file; with QUOTE_NONE it is one character of one sentence.
  rows = [("0", '"Where is the cat?', "The cat sat.", "entailment"), ("1", "Who ran?", 'It was "bad', "entailment"),
          ("2", "Where?", "Here.", "not_entailment")]
  for file in ("train.tsv", "dev.tsv"):
    fx.write_tsv(tmp_path / "RTE" / file, ("index", "sentence1", "sentence2", "label"), rows)
  tok = bert
  d = load_glue_tsv("rte", tmp_path, tok, 12)
  assert d.num_train == 3 and d.train_labels.tolist() == [0, 0, 1]
  quote = fx.vocab().index('"')
  assert d.train_inputs[0, 0, 1] == quote and quote in d.train_inputs[1, 0]


def test_tsv_errors_name_the_file_split_and_line(tmp_path, bert):
  tok = bert
  fx.write_qnli(tmp_path)
  dev = tmp_path / "QNLI" / "dev.tsv"
  os.remove(dev)
  with pytest.raises(DataError, match="validation split") as info:
    load_glue_tsv("qnli", tmp_path, tok, 16)
  assert str(dev) in str(info.value)
  with pytest.raises(DataError, match="does not exist"):
    load_glue_tsv("qnli", tmp_path / "absent", tok, 16)
  header = ("index", "question", "sentence", "label")
  fx.write_tsv(dev, header, [("0", "a", "b", "entailment"), ("1", "a", "b", "maybe")])
  with pytest.raises(DataError, match=r"dev.tsv:3: label 'maybe', expected one of entailment, not_entailment"):
    load_glue_tsv("qnli", tmp_path, tok, 16)
  fx.write_tsv(dev, header, [("0", "a", "b", "entailment"), ("1", "a", "entailment")])
  with pytest.raises(DataError, match=r"dev.tsv:3: 3 columns, expected 4"):
    load_glue_tsv("qnli", tmp_path, tok, 16)
  fx.write_tsv(dev, ("index", "question", "text", "label"), [("0", "a", "b", "entailment")])
  with pytest.raises(DataError, match=r"lacks the columns \['sentence'\]"):
    load_glue_tsv("qnli", tmp_path, tok, 16)
  fx.write_tsv(dev, header, [])
  with pytest.raises(DataError, match="dev.tsv: no examples"):
    load_glue_tsv("qnli", tmp_path, tok, 16)
  dev.write_bytes(b"index\tquestion\tsentence\tlabel\n0\t\xff\tb\tentailment\n")
  with pytest.raises(DataError, match="dev.tsv: not readable"):
    load_glue_tsv("qnli", tmp_path, tok, 16)


def test_unsupported_tasks_are_refused_with_the_reason():
  with pytest.raises(DataError, match="'stsb' \\(a regression task"):
    text.glue_task("stsb")
  with pytest.raises(DataError, match="'ax' \\(GLUE's diagnostic set") as info:
    text.glue_task("ax")
  assert all(t in str(info.value) for t in text.GLUE_TASKS)
  with pytest.raises(DataError, match="'imdb' is not supported"):
    text.glue_task("imdb")


# ----------------------------------------------------------------------------------------------- tfds

@pytest.mark.parametrize("task", ["qnli", "cola", "mnli_mismatched"])
def test_glue_tfds_mocked(task, tmp_path, bert):
  tfds = pytest.importorskip("tensorflow_datasets")
  tok = bert
  spec = text.glue_task(task)
  with tfds.testing.mock_data(num_examples=6):
    d = load_glue_tfds(task, tok, 20, tfds_data_dir=str(tmp_path))
    records = tfds.data_source(f"glue/{spec.tfds_name}", split=spec.eval_split, data_dir=str(tmp_path))
    records = [records[i] for i in range(len(records))]
  assert (d.num_train, d.num_test, d.input_shape, d.num_classes) == (6, 6, (3, 20), spec.num_classes)
  assert d.source == f"tfds:glue/{spec.tfds_name}" and d.metric == spec.metric
  # the mocked records' own strings, through the same tokenizer
  columns = [[r[k] for r in records] for k in spec.sentences]
  np.testing.assert_array_equal(d.test_inputs, tok.encode(*columns, max_length=20))
  np.testing.assert_array_equal(d.test_labels, [int(r["label"]) for r in records])


def test_glue_tfds_missing_split_names_it(monkeypatch, bert):
  tfds = pytest.importorskip("tensorflow_datasets")
  real = tfds.data_source

  def without_validation(name, split, **kwargs):
    if split != "train":
      raise ValueError(f"Unknown split {split!r}. Should be one of ['train'].")
    return real(name, split=split, **kwargs)

  monkeypatch.setattr(tfds, "data_source", without_validation)
  with tfds.testing.mock_data(num_examples=3):
    with pytest.raises(DataError, match=r"tfds:glue/rte\[validation\]: could not load the 'validation' split.*"
                                        r"data.dir") as info:
      load_glue_tfds("rte", bert, 8)
  assert isinstance(info.value.__cause__, ValueError)


class _PreparedGlue:
  """A prepared tfds source as ArrayRecord gives it: text as UTF-8 bytes in numpy scalars, batched reads."""

  def __init__(self, n, label_names=("entailment", "not_entailment")):
    label = type("ClassLabel", (), {"names": list(label_names)})()
    self.dataset_info = type("Info", (), {"features": {"label": label}})()
    self.records = [{"sentence1": np.array(f"café {i}".encode()), "sentence2": b"the cat", "label": np.int64(i % 2),
                     "idx": np.int32(i)} for i in range(n)]
    self.calls = []

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    raise AssertionError("should read in batches")

  def __getitems__(self, keys):
    self.calls.append(len(keys))
    return [self.records[k] for k in keys]


def test_glue_tfds_reads_utf8_bytes_in_chunks(monkeypatch, bert):
  tfds = pytest.importorskip("tensorflow_datasets")
  sources = {}
  monkeypatch.setattr(tfds, "data_source", lambda name, split, **kw: sources.setdefault(split, _PreparedGlue(5)))
  d = load_glue_tfds("rte", bert, 10, chunk_size=2)
  assert sources["train"].calls == [2, 2, 1] and set(sources) == {"train", "validation"}
  np.testing.assert_array_equal(d.train_inputs, bert.encode([f"café {i}" for i in range(5)], ["the cat"] * 5,
                                                             max_length=10))
  assert d.train_labels.tolist() == [0, 1, 0, 1, 0]
  monkeypatch.setattr(tfds, "data_source", lambda name, split, **kw: _PreparedGlue(2, ("yes", "no")))
  with pytest.raises(DataError, match=r"tfds:glue/rte\[train\]: labels \('yes', 'no'\)"):
    load_glue_tfds("rte", bert, 10)


# ----------------------------------------------------------------------------------------------- TextDataset

def test_text_dataset_rejects_bad_arrays():
  x = np.zeros((2, 3, 4), np.int32)
  y = np.zeros(2, np.int32)

  def make(**kw):
    fields = dict(name="t", train_inputs=x, train_labels=y, test_inputs=x, test_labels=y, num_classes=2,
                  source="test", metric="accuracy", max_length=4)
    return TextDataset(**{**fields, **kw})

  assert make().input_shape == (3, 4) and make().num_train == 2
  with pytest.raises(DataError, match=r"train_inputs .*int32 \[N, 3, 4\]"):
    make(train_inputs=x.astype(np.int64))
  with pytest.raises(DataError, match=r"train_inputs .*int32 \[N, 3, 5\] array, got int32 \(2, 3, 4\)"):
    make(max_length=5)
  with pytest.raises(DataError, match="attention mask"):
    make(train_inputs=x + 2)
  with pytest.raises(DataError, match=r"train_labels.*\[0, 2\)"):
    make(train_labels=np.array([0, 2], np.int32))
  with pytest.raises(DataError, match="test_inputs .*empty"):
    make(test_inputs=x[:0], test_labels=y[:0])
  with pytest.raises(DataError, match="unknown metric 'bleu'"):
    make(metric="bleu")


# ----------------------------------------------------------------------------------------------- metrics

def test_metrics_match_sklearn():
  from sklearn import metrics
  rng = np.random.default_rng(0)
  for num_classes in (2, 3):
    labels = rng.integers(0, num_classes, 200)
    predictions = np.where(rng.random(200) < 0.7, labels, rng.integers(0, num_classes, 200))
    assert task_metric("accuracy", predictions, labels) == pytest.approx(metrics.accuracy_score(labels,
                                                                                                     predictions))
    assert task_metric("matthews", predictions, labels) == pytest.approx(
        metrics.matthews_corrcoef(labels, predictions), abs=1e-12)
    # confusion matrices of disjoint batches add up to the split's
    cm = sum(confusion_matrix(predictions[i:i + 64], labels[i:i + 64], num_classes) for i in range(0, 200, 64))
    np.testing.assert_array_equal(cm, metrics.confusion_matrix(labels, predictions))
  assert task_metric("f1", predictions[labels < 2] % 2, labels[labels < 2]) == pytest.approx(
      metrics.f1_score(labels[labels < 2], predictions[labels < 2] % 2))
  # degenerate cases as sklearn: constant predictions have Matthews 0; no positive anywhere has F1 0
  y = np.array([0, 1, 1, 0, 1])
  assert task_metric("matthews", np.ones(5, int), y) == metrics.matthews_corrcoef(y, np.ones(5, int)) == 0
  assert task_metric("f1", np.zeros(4, int), np.zeros(4, int)) == metrics.f1_score(
      np.zeros(4, int), np.zeros(4, int), zero_division=0.0) == 0
  assert task_metric("matthews", y, y) == 1.0 and task_metric("f1", 1 - y, y) == 0.0


def test_metric_errors():
  with pytest.raises(ValueError, match="f1 is binary"):
    task_metric("f1", [0, 2], [1, 2])
  with pytest.raises(ValueError, match="unknown metric 'bleu'"):
    task_metric("bleu", [0, 1], [1, 1])
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
    confusion_matrix([0, 1], [0, 2], 2)
