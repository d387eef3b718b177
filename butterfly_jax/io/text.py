"""Text classification data (GLUE) as host numpy arrays of token ids, and the GLUE tasks' metrics.

A text example is one int32 array ``[3, L]`` whose rows are (input_ids, token_type_ids, attention_mask)
(:data:`ROWS`); a :class:`TextDataset` holds int32 ``[N, 3, L]`` inputs and int32 ``[N]`` labels per split,
ready for the device as they are. The batch at step ``s`` is drawn from them exactly as for images
(:class:`butterfly_jax.core.batches.Batcher` with no normalisation and no augmentation): a pure function of the data
key and ``s``.

* :func:`load_tokenizer` reads a checkpoint's own tokenizer: its ``tokenizer.json`` (the ``tokenizers``
  library, whose post-processor adds BERT's ``[CLS] a [SEP] b [SEP]`` and token types), else its ``vocab.txt``
  (a BERT WordPiece tokenizer, lower-casing as ``tokenizer_config.json``'s ``do_lower_case`` says, BERT's
  default of True without one). A decoder's tokenizer (OLMo's GPT-NeoX-style byte-level BPE), whose
  post-processor adds nothing to a pair, joins a pair as ``a <eos> b``.
* :func:`load_glue_tfds` reads ``glue/<task>`` through tensorflow-datasets, :func:`load_glue_tsv` a local
  folder in the official GLUE TSV layout (machines without internet). GLUE's test labels are hidden, so a
  task's evaluation split (the dataset's ``test_*`` arrays) is its ``validation`` split, ``dev.tsv``.
* :func:`butterfly_jax.core.metrics.task_metric`: accuracy, binary F1 (positive class 1, as GLUE) or Matthews correlation, computed from
  a confusion matrix (:func:`butterfly_jax.core.metrics.confusion_matrix`), which sums over batches as the evaluation's other sums do.

Every problem with the data or the tokenizer raises :class:`~butterfly_jax.io.data.DataError`, whose message names
the file, split or field at fault and what was expected.
"""

import csv
import dataclasses
import json
import logging
import os

import numpy as np

from butterfly_jax.core.metrics import METRICS
from butterfly_jax.io.data import DataError, check_label_range

log = logging.getLogger(__name__)

ROWS = ("input_ids", "token_type_ids", "attention_mask")  # the rows of one example [3, L], in this order

# ----------------------------------------------------------------------------------------------- tokenizer

_BERT_SPECIALS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "cls_token": "[CLS]", "pad_token": "[PAD]",
                  "mask_token": "[MASK]"}


@dataclasses.dataclass(frozen=True, eq=False)
class TextTokenizer:
  """A checkpoint's tokenizer, ready to encode sentences and pairs into int32 ``[N, 3, L]`` examples.

  ``backend`` is a ``tokenizers.Tokenizer`` whose post-processor adds the special tokens and token types of a
  pair; :meth:`encode` sets its truncation and padding for each call. ``pair_join`` says how a pair is joined:
  ``"post-processor"`` (the tokenizer's own, e.g. BERT's ``[CLS] a [SEP] b [SEP]``) or ``"eos"`` (``a <eos> b``,
  for a decoder tokenizer whose post-processor adds nothing).
  """

  backend: object
  pad_id: int
  pair_join: str
  source: str

  @property
  def vocab_size(self) -> int:
    """The number of ids the tokenizer can produce: its largest id + 1 (added tokens included)."""
    ids = self.backend.get_vocab(with_added_tokens=True).values()
    return max(self.backend.get_vocab_size(with_added_tokens=True), max(ids, default=-1) + 1)

  def num_special_tokens(self, pair: bool) -> int:
    return int(self.backend.num_special_tokens_to_add(pair))

  def encode(self, first, second=None, max_length: int = 128) -> np.ndarray:
    """int32 ``[N, 3, max_length]``: the sentences ``first`` (and the pairs' second sentences ``second``)
    with the special tokens, truncated "longest_first" (as Hugging Face: tokens come off the longer sentence
    of a pair, one at a time) and padded on the right with ``pad_id`` (token type 0, attention mask 0)."""
    first = list(first)
    if second is not None:
      second = list(second)
      if len(second) != len(first):
        raise DataError(f"{self.source}: {len(first)} first sentences but {len(second)} second sentences")
    check_max_length(max_length, self.num_special_tokens(second is not None), self.source)
    tok = self.backend
    tok.enable_truncation(max_length=max_length, strategy="longest_first")
    tok.enable_padding(direction="right", pad_id=self.pad_id, pad_type_id=0,
                       pad_token=tok.id_to_token(self.pad_id), length=max_length)
    try:
      encodings = tok.encode_batch(first if second is None else list(zip(first, second)))
    finally:
      tok.no_truncation()
      tok.no_padding()
    out = np.zeros((len(encodings), len(ROWS), max_length), np.int32)
    for row, field in enumerate(("ids", "type_ids", "attention_mask")):  # the order of ROWS
      if encodings:
        out[:, row] = [getattr(e, field) for e in encodings]
    truncated = sum(bool(e.overflowing) for e in encodings)
    if truncated:
      log.info("%s: %d of %d examples truncated to %d tokens", self.source, truncated, len(encodings), max_length)
    return out


def load_tokenizer(path) -> TextTokenizer:
  """The tokenizer of a checkpoint folder (or one of its files): ``tokenizer.json`` where there is one, else
  ``vocab.txt``; the folder's ``tokenizer_config.json``, ``special_tokens_map.json`` and ``config.json``, where
  present, name the special tokens (pad, eos) and, for ``vocab.txt``, the lower-casing."""
  path = os.path.expanduser(os.fspath(path))
  if os.path.isdir(path):
    folder = path
    found = [os.path.join(path, f) for f in ("tokenizer.json", "vocab.txt") if os.path.isfile(os.path.join(path, f))]
    if not found:
      raise DataError(f"tokenizer: {path} holds neither tokenizer.json nor vocab.txt")
    file = found[0]
  elif os.path.isfile(path):
    folder, file = os.path.dirname(path) or ".", path
  else:
    raise DataError(f"tokenizer: {path} does not exist; expected a checkpoint folder with tokenizer.json or "
                    f"vocab.txt, or one of those files")
  settings = {}
  for name in ("config.json", "special_tokens_map.json", "tokenizer_config.json"):  # later files win
    settings.update(_read_json(os.path.join(folder, name)))
  if file.endswith(".json"):
    backend = _read_tokenizer_json(file)
  else:
    backend = _read_vocab_txt(file, settings)
  pad_id = _pad_id(backend, settings, file)
  pair_join = "post-processor"
  if backend.num_special_tokens_to_add(True) == 0:  # a decoder's tokenizer: mark the pair's boundary
    backend = _join_pairs_with_eos(backend, _eos(backend, settings, file))
    pair_join = "eos"
  return TextTokenizer(backend, pad_id, pair_join, source=file)


def _read_json(path) -> dict:
  if not os.path.isfile(path):
    return {}
  try:
    with open(path, encoding="utf-8") as fh:
      value = json.load(fh)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataError(f"{path}: not readable JSON: {e}") from e
  if not isinstance(value, dict):
    raise DataError(f"{path}: expected a JSON object, got {type(value).__name__}")
  return value


def _read_tokenizer_json(file):
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
  try:
    return Tokenizer.from_file(file)
  except Exception as e:  # the Rust library raises its own Exception type for every malformed file
    raise DataError(f"{file}: not a tokenizers tokenizer.json: {e}") from e


def _token(settings: dict, name: str):
  """A special token's text from tokenizer_config.json / special_tokens_map.json: a string or an AddedToken dict."""
  value = settings.get(name)
  if isinstance(value, dict):
    value = value.get("content")
  return value if isinstance(value, str) else None


def _read_vocab_txt(file, settings):
  """BERT's WordPiece tokenizer from ``vocab.txt``, as ``transformers``' BertTokenizerFast builds it."""
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
  from tokenizers.implementations import BertWordPieceTokenizer  # pylint: disable=import-outside-toplevel
  try:
    with open(file, encoding="utf-8") as fh:
      vocab = {line.rstrip("\n") for line in fh}
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{file}: not a readable vocab.txt: {e}") from e
  specials = {name: _token(settings, name) or default for name, default in _BERT_SPECIALS.items()}
  missing = [specials[n] for n in ("unk_token", "sep_token", "cls_token") if specials[n] not in vocab]
  if missing:
    raise DataError(f"{file}: a BERT vocab.txt needs the special tokens {', '.join(missing)} (one token a line)")
  lowercase = settings.get("do_lower_case", True)
  if not isinstance(lowercase, bool):
    raise DataError(f"tokenizer_config.json do_lower_case: expected true or false, got {lowercase!r}")
  wordpiece = BertWordPieceTokenizer(file, lowercase=lowercase, strip_accents=settings.get("strip_accents"),
                                     handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
                                     **specials)
  return Tokenizer.from_str(wordpiece.to_str())


def _special_id(backend, settings, name: str, id_field: str, file):
  """The id of special token ``name`` (``pad_token``, ``eos_token``) from the tokenizer settings, else the
  model config's ``id_field``; None when neither names one."""
  text = _token(settings, name)
  if text is not None:
    token_id = backend.token_to_id(text)
    if token_id is None:
      raise DataError(f"{file}: the {name} {text!r} of the tokenizer settings is not in the vocabulary")
    return int(token_id)
  token_id = settings.get(id_field)
  if isinstance(token_id, list) and token_id:
    token_id = token_id[0]
  if isinstance(token_id, int) and not isinstance(token_id, bool):
    return token_id
  return None


def _pad_id(backend, settings, file) -> int:
  """The padding id: the tokenizer.json's own padding, the settings' ``pad_token`` / ``pad_token_id``, else
  BERT's ``[PAD]``."""
  padding = backend.padding
  if padding is not None:
    return int(padding["pad_id"])
  pad = _special_id(backend, settings, "pad_token", "pad_token_id", file)
  if pad is None:
    pad = backend.token_to_id(_BERT_SPECIALS["pad_token"])
  if pad is None:
    raise DataError(f"{file}: no padding token: set pad_token in tokenizer_config.json (or pad_token_id in "
                    f"config.json) beside it")
  return int(pad)


def _eos(backend, settings, file) -> tuple[str, int]:
  eos = _special_id(backend, settings, "eos_token", "eos_token_id", file)
  if eos is None:
    raise DataError(f"{file}: its post-processor adds no separator to a sentence pair and no end-of-sequence "
                    f"token is known to join them: set eos_token in tokenizer_config.json (or eos_token_id in "
                    f"config.json) beside it")
  token = backend.id_to_token(eos)
  if token is None:
    raise DataError(f"{file}: eos_token_id {eos} is not in the vocabulary")
  return token, eos


def _join_pairs_with_eos(backend, eos):
  """``backend`` with a post-processor that joins a pair as ``a <eos> b`` (b of token type 1) after the
  existing one (e.g. byte-level offset trimming, which changes no id)."""
  from tokenizers import processors  # pylint: disable=import-outside-toplevel
  template = processors.TemplateProcessing(single="$A:0", pair=f"$A:0 {eos[0]}:0 $B:1", special_tokens=[eos])
  existing = backend.post_processor
  backend.post_processor = template if existing is None else processors.Sequence([existing, template])
  return backend


def check_max_length(max_length, num_special: int = 0, tokenizer_source: str = "") -> None:
  """Refuses a ``max_length`` that is not an int or leaves no room beside the ``num_special`` tokens the
  tokenizer adds to an example."""
  if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length <= num_special:
    room = f" above the {num_special} special tokens {tokenizer_source} adds" if num_special else " >= 1"
    raise DataError(f"data.max_length: expected an int{room}, got {max_length!r}")


def check_vocab(tokenizer: TextTokenizer, vocab_size: int, max_unused: int = 128) -> None:
  """Refuses a tokenizer that does not fit the model's embedding table of ``vocab_size`` rows: one that can
  produce an id at or past the table's end, or one whose vocabulary is more than ``max_unused`` rows smaller
  (checkpoints pad their tables to a multiple of 64 or 128, as OLMo's 50,280 tokens in 50,304 rows; a larger
  gap is another model's tokenizer, as a cased BERT's 28,996 for an uncased 30,522)."""
  n = tokenizer.vocab_size
  if n > vocab_size or vocab_size - n > max_unused:
    raise DataError(f"tokenizer {tokenizer.source}: {n} tokens do not match the model's vocab_size {vocab_size} "
                    f"(allowed: {max(1, vocab_size - max_unused)} to {vocab_size}, the embedding table padded by at "
                    f"most {max_unused} rows); use the checkpoint's own tokenizer")


def check_positions(max_length: int, max_positions: int) -> None:
  """Refuses sequences longer than the model's position table (``max_position_embeddings``)."""
  check_max_length(max_length)
  if max_length > max_positions:
    raise DataError(f"data.max_length: {max_length} tokens exceed the model's max_position_embeddings "
                    f"{max_positions}; allowed: 1 to {max_positions}")


# ----------------------------------------------------------------------------------------------- GLUE tasks


@dataclasses.dataclass(frozen=True)
class GlueTask:
  """One GLUE classification task: where its sentences and labels are in tensorflow-datasets and in the
  official TSV files, its labels (``label_names`` in id order, as tfds' ClassLabel; ``tsv_labels`` the
  TSV's strings in the same order), its metric and its evaluation split (``validation``: GLUE's test labels
  are hidden)."""

  name: str
  tfds_name: str          # glue/<tfds_name>
  eval_split: str         # the tfds split evaluated
  sentences: tuple        # tfds feature names of the sentence(s)
  label_names: tuple
  metric: str
  folder: str             # the official GLUE folder
  eval_file: str          # dev.tsv, dev_matched.tsv, ...
  tsv_sentences: tuple    # header names of the sentence columns (or column indices without a header)
  tsv_label: object       # header name of the label column (or its index)
  tsv_labels: tuple = ("0", "1")
  header: bool = True

  @property
  def num_classes(self) -> int:
    return len(self.label_names)


_NLI = ("entailment", "not_entailment")
GLUE_TASKS = {t.name: t for t in (
    GlueTask("cola", "cola", "validation", ("sentence",), ("unacceptable", "acceptable"), "matthews", "CoLA",
             "dev.tsv", (3,), 1, header=False),
    GlueTask("sst2", "sst2", "validation", ("sentence",), ("negative", "positive"), "accuracy", "SST-2",
             "dev.tsv", ("sentence",), "label"),
    GlueTask("mrpc", "mrpc", "validation", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), "f1",
             "MRPC", "dev.tsv", ("#1 String", "#2 String"), "Quality"),
    GlueTask("qqp", "qqp", "validation", ("question1", "question2"), ("not_duplicate", "duplicate"), "f1", "QQP",
             "dev.tsv", ("question1", "question2"), "is_duplicate"),
    GlueTask("mnli", "mnli", "validation_matched", ("premise", "hypothesis"),
             ("entailment", "neutral", "contradiction"), "accuracy", "MNLI", "dev_matched.tsv",
             ("sentence1", "sentence2"), "gold_label", ("entailment", "neutral", "contradiction")),
    GlueTask("mnli_mismatched", "mnli", "validation_mismatched", ("premise", "hypothesis"),
             ("entailment", "neutral", "contradiction"), "accuracy", "MNLI", "dev_mismatched.tsv",
             ("sentence1", "sentence2"), "gold_label", ("entailment", "neutral", "contradiction")),
    GlueTask("qnli", "qnli", "validation", ("question", "sentence"), _NLI, "accuracy", "QNLI", "dev.tsv",
             ("question", "sentence"), "label", _NLI),
    GlueTask("rte", "rte", "validation", ("sentence1", "sentence2"), _NLI, "accuracy", "RTE", "dev.tsv",
             ("sentence1", "sentence2"), "label", _NLI),
    GlueTask("wnli", "wnli", "validation", ("sentence1", "sentence2"), ("not_entailment", "entailment"),
             "accuracy", "WNLI", "dev.tsv", ("sentence1", "sentence2"), "label"),
)}

GLUE_PREFIX = "glue/"
# data.name of each task: "glue/<task>" (config validation, run setup)
DATASETS = tuple(GLUE_PREFIX + name for name in GLUE_TASKS)
DEFAULT_MAX_LENGTH = 128  # data.max_length = 0: the authors' length for every GLUE task (their MAX_SEQ_LENGTH_DICT)

_REFUSED = {
    "stsb": "a regression task (a similarity score from 0 to 5), not classification",
    "ax": "GLUE's diagnostic set, a test set only (no training split, hidden labels)",
}


def glue_task(name: str) -> GlueTask:
  """The task ``name`` of :data:`GLUE_TASKS`, or a DataError naming the allowed ones."""
  if name in GLUE_TASKS:
    return GLUE_TASKS[name]
  why = f" ({_REFUSED[name]})" if name in _REFUSED else ""
  raise DataError(f"data.name: GLUE task {name!r}{why} is not supported; expected one of "
                  f"{', '.join(GLUE_TASKS)}")


def is_text_dataset(name) -> bool:
  """Whether ``data.name`` names a text task (``glue/<task>``)."""
  return isinstance(name, str) and name.startswith(GLUE_PREFIX)


def dataset_task(name: str) -> GlueTask:
  """The GLUE task of ``data.name`` ``glue/<task>``, or a DataError naming the allowed ones."""
  if not is_text_dataset(name):
    raise DataError(f"data.name: {name!r} is not a text task; expected one of {', '.join(DATASETS)}")
  return glue_task(name[len(GLUE_PREFIX):])


@dataclasses.dataclass(frozen=True)
class TextDataset:
  """A whole text classification task in host memory: int32 ``[N, 3, L]`` examples (:data:`ROWS`) and int32
  ``[N]`` labels per split; ``test_*`` is the split evaluated (GLUE's validation split); ``metric`` is the
  task's (:data:`METRICS`)."""

  name: str
  train_inputs: np.ndarray
  train_labels: np.ndarray
  test_inputs: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  source: str
  metric: str
  max_length: int

  def __post_init__(self):
    if self.metric not in METRICS:
      raise DataError(f"TextDataset.metric ({self.source}): unknown metric {self.metric!r}; expected one of "
                      f"{', '.join(METRICS)}")
    for split in ("train", "test"):
      inputs, labels = getattr(self, f"{split}_inputs"), getattr(self, f"{split}_labels")
      shape = (len(ROWS), self.max_length)
      if not (isinstance(inputs, np.ndarray) and inputs.dtype == np.int32 and inputs.ndim == 3
              and inputs.shape[1:] == shape):
        raise DataError(f"TextDataset.{split}_inputs ({self.source}): expected an int32 [N, {shape[0]}, "
                        f"{shape[1]}] array, got {getattr(inputs, 'dtype', type(inputs))} "
                        f"{getattr(inputs, 'shape', '')}")
      if not inputs.shape[0]:
        raise DataError(f"TextDataset.{split}_inputs ({self.source}): the split is empty")
      if inputs[:, 0].min() < 0 or not np.isin(inputs[:, 2], (0, 1)).all():
        raise DataError(f"TextDataset.{split}_inputs ({self.source}): token ids must be >= 0 and the attention "
                        f"mask 0 or 1")
      if not (isinstance(labels, np.ndarray) and labels.dtype == np.int32 and labels.shape == inputs.shape[:1]):
        raise DataError(f"TextDataset.{split}_labels ({self.source}): expected an int32 [{inputs.shape[0]}] "
                        f"array, got {getattr(labels, 'dtype', type(labels))} {getattr(labels, 'shape', '')}")
      check_label_range(labels, self.num_classes, f"TextDataset.{split}_labels ({self.source})")

  @property
  def input_shape(self) -> tuple:
    """(3, L) of one example."""
    return tuple(int(d) for d in self.train_inputs.shape[1:])

  @property
  def num_train(self) -> int:
    return int(self.train_inputs.shape[0])

  @property
  def num_test(self) -> int:
    return int(self.test_inputs.shape[0])


def _make(task: GlueTask, tokenizer: TextTokenizer, max_length, splits: dict, source: str) -> TextDataset:
  """A TextDataset from ``{"train" | "test": (list of sentence columns, labels)}``."""
  arrays = []
  for split in ("train", "test"):
    columns, labels = splits[split]
    arrays += [tokenizer.encode(*columns, max_length=max_length), np.asarray(labels, np.int32)]
  return TextDataset(task.name, *arrays, num_classes=task.num_classes, source=source, metric=task.metric,
                     max_length=int(max_length))


# ----------------------------------------------------------------------------------------------- tfds


def load_glue_tfds(task: str, tokenizer: TextTokenizer, max_length: int, tfds_data_dir: str | None = None,
                   chunk_size: int = 1024) -> TextDataset:
  """GLUE task ``task`` through tensorflow-datasets (``glue/<task>``; downloads and prepares once): its train
  split and its validation split (``test_*``), tokenized to ``max_length``."""
  spec = glue_task(task)
  check_max_length(max_length, tokenizer.num_special_tokens(len(spec.sentences) == 2), tokenizer.source)
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  # registers the glue builder: tensorflow-datasets without TensorFlow does not import its text datasets itself
  import tensorflow_datasets.text.glue  # pylint: disable=import-outside-toplevel,unused-import
  name = f"glue/{spec.tfds_name}"
  splits = {}
  for ours, split in (("train", "train"), ("test", spec.eval_split)):
    where = f"tfds:{name}[{split}]"
    try:
      source = tfds.data_source(name, split=split, data_dir=tfds_data_dir, download=True)
      names = tuple(source.dataset_info.features["label"].names)
      records = _read_records(source, chunk_size, where)
    except DataError:
      raise
    except Exception as e:  # no internet, an unknown split, a dataset not prepared: all end here
      raise DataError(f"{where}: could not load the {split!r} split with tensorflow-datasets "
                      f"(data_dir={tfds_data_dir!r}): {type(e).__name__}: {e}. Without internet, pass data.dir "
                      f"with the GLUE TSV folder") from e
    if names != spec.label_names:
      raise DataError(f"{where}: labels {names}, expected {spec.label_names}")
    columns = [[_text(r[key], where, key) for r in records] for key in spec.sentences]
    splits[ours] = columns, [int(r["label"]) for r in records]
  return _make(spec, tokenizer, max_length, splits, f"tfds:{name}")


def _read_records(source, chunk_size: int, where: str) -> list:
  n = len(source)
  if n == 0:
    raise DataError(f"{where}: the split is empty")
  records, batched = [], hasattr(source, "__getitems__")
  for start in range(0, n, chunk_size):
    keys = list(range(start, min(n, start + chunk_size)))
    chunk = None
    if batched:
      try:
        chunk = source.__getitems__(keys)
      except (TypeError, NotImplementedError, AttributeError) as e:  # e.g. tfds' mocked sources
        log.debug("%s: batched __getitems__ failed (%r), reading one record at a time", where, e)
        batched = False
    records += chunk if chunk is not None else [source[k] for k in keys]
  return records


def _text(value, where: str, key: str) -> str:
  value = value.item() if isinstance(value, np.ndarray) else value
  if isinstance(value, bytes):
    try:
      return value.decode("utf-8")
    except UnicodeDecodeError as e:
      raise DataError(f"{where}: feature {key!r} is not UTF-8: {e}") from e
  if not isinstance(value, str):
    raise DataError(f"{where}: feature {key!r} is {type(value).__name__}, expected text")
  return value


# ----------------------------------------------------------------------------------------------- GLUE TSV


def load_glue_tsv(task: str, folder, tokenizer: TextTokenizer, max_length: int) -> TextDataset:
  """GLUE task ``task`` from the official TSV files: ``folder`` is the GLUE root (holding ``QNLI/``, ``CoLA/``,
  ...) or the task's own folder. Reads ``train.tsv`` and the evaluation file (``dev.tsv``; MNLI's
  ``dev_matched.tsv`` or ``dev_mismatched.tsv``) in the task's column layout."""
  spec = glue_task(task)
  check_max_length(max_length, tokenizer.num_special_tokens(len(spec.sentences) == 2), tokenizer.source)
  root = os.path.expanduser(os.fspath(folder))
  task_dir = os.path.join(root, spec.folder)
  if not os.path.isdir(task_dir):
    if not os.path.isdir(root):
      raise DataError(f"data.dir {root!r} does not exist; expected the GLUE folder holding {spec.folder}/ "
                      f"(train.tsv, {spec.eval_file}) or that task folder itself")
    task_dir = root
  splits = {}
  for ours, file, split in (("train", "train.tsv", "train"), ("test", spec.eval_file, "validation")):
    path = os.path.join(task_dir, file)
    if not os.path.isfile(path):
      raise DataError(f"{path}: missing; GLUE {spec.name}'s {split} split is read from {spec.folder}/{file}")
    splits[ours] = read_glue_tsv(spec, path)
  return _make(spec, tokenizer, max_length, splits, f"glue-tsv:{task_dir}")


def read_glue_tsv(spec: GlueTask, path: str):
  """``(list of sentence columns, labels)`` of one GLUE TSV file in ``spec``'s layout. GLUE's files are read
  with ``csv.QUOTE_NONE`` (their sentences hold unbalanced quotes) and a byte-order mark, as MRPC's, is
  dropped."""
  columns, labels = [[] for _ in spec.tsv_sentences], []
  label_of = {text: i for i, text in enumerate(spec.tsv_labels)}
  try:
    with open(path, encoding="utf-8-sig", newline="") as fh:
      reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
      if spec.header:
        header = next(reader, None) or []
        wanted = (*spec.tsv_sentences, spec.tsv_label)
        absent = [c for c in wanted if c not in header]
        if absent:
          raise DataError(f"{path}: header {header} lacks the columns {absent}; GLUE {spec.name} has "
                          f"{', '.join(wanted)}")
        index = [header.index(c) for c in wanted]
        width = len(header)
      else:
        index, width = [*spec.tsv_sentences, spec.tsv_label], None
      for row in reader:
        line = reader.line_num
        if not row:
          continue
        if (width is not None and len(row) != width) or len(row) <= max(index):
          raise DataError(f"{path}:{line}: {len(row)} columns, expected "
                          f"{width if width is not None else max(index) + 1} (GLUE {spec.name}'s layout)")
        label = row[index[-1]].strip()
        if label not in label_of:
          raise DataError(f"{path}:{line}: label {label!r}, expected one of {', '.join(spec.tsv_labels)}")
        for column, i in zip(columns, index):
          column.append(row[i])
        labels.append(label_of[label])
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise DataError(f"{path}: not readable as a GLUE TSV file: {e}") from e
  if not labels:
    raise DataError(f"{path}: no examples")
  return columns, labels
