"""Tiny real text files for tests: a BERT WordPiece checkpoint's ``vocab.txt`` (and a ``tokenizer.json`` saved
from it), a decoder's byte-level BPE ``tokenizer.json``, and GLUE folders in the official TSV layout, so tests go
through the real loaders and the real tokenizers.

The QNLI task is learnable: a question ``where is the A?`` is entailed by a sentence ``the B sat on the mat.``
exactly when A is B.
"""

import json
import random
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ANIMALS = ["cat", "dog", "bird", "fish", "cow", "horse"]
WORDS = ["the", "a", "is", "where", "what", "who", "sat", "on", "mat", "ran", "to", "house", "under", "tree",
         "good", "bad", "movie", "it", "was", "not"] + ANIMALS
LETTERS = "abcdefghijklmnopqrstuvwxyz"
PUNCTUATION = list(".,?!'\"")


def vocab() -> list[str]:
  """The WordPiece vocabulary: special tokens, punctuation, whole words, letters and ``##`` continuations,
  so that every lower-case word tokenizes (``cats`` -> ``cat ##s``) and upper-case letters are ``[UNK]``."""
  return SPECIALS + PUNCTUATION + WORDS + list(LETTERS) + ["##" + c for c in LETTERS] + ["##ing"]


def write_bert_checkpoint(folder, lowercase: bool | None = True, tokenizer_json: bool = False) -> Path:
  """A BERT checkpoint's tokenizer files in ``folder``: ``vocab.txt``, ``tokenizer_config.json`` with
  ``do_lower_case`` (none when ``lowercase`` is None) and, with ``tokenizer_json``, a ``tokenizer.json``
  saved from the same vocabulary by the tokenizers library."""
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "vocab.txt").write_text("\n".join(vocab()) + "\n", encoding="utf-8")
  if lowercase is not None:
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lowercase}), encoding="utf-8")
  if tokenizer_json:
    from tokenizers.implementations import BertWordPieceTokenizer
    BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=True if lowercase is None else lowercase).save(
        str(folder / "tokenizer.json"))
  return folder


def write_decoder_checkpoint(folder, tokenizer_config: bool = True, model_config: bool = True) -> Path:
  """A decoder's tokenizer in ``folder``, built as GPT-NeoX's (OLMo's): byte-level BPE with a byte-level
  post-processor that adds nothing to a pair, ``<|endoftext|>`` (id 0) and ``<|padding|>`` (id 1), trained on
  the fixture's sentences; ``tokenizer_config.json`` names eos and pad tokens, ``config.json`` their ids."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=True)
  trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|padding|>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  corpus = [" ".join(q_s[:2]) for q_s in qnli_rows(40, seed=1)]
  tok.train_from_iterator(corpus, trainer)
  tok.save(str(folder / "tokenizer.json"))
  if tokenizer_config:
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<|endoftext|>", "pad_token": {"content": "<|padding|>", "special": True}}),
        encoding="utf-8")
  if model_config:
    (folder / "config.json").write_text(json.dumps({"eos_token_id": 0, "pad_token_id": 1, "vocab_size": 384}),
                                        encoding="utf-8")
  return folder


def qnli_rows(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
  """``n`` (question, sentence, label) rows, half of them entailed, in a fixed random order."""
  rng = random.Random(seed)
  rows = []
  for i in range(n):
    a = rng.choice(ANIMALS)
    b = a if i % 2 == 0 else rng.choice([x for x in ANIMALS if x != a])
    place = rng.choice(["mat", "tree", "house"])
    rows.append((f"Where is the {a}?", f"The {b} sat on the {place}.", "entailment" if a == b else "not_entailment"))
  rng.shuffle(rows)
  return rows


def write_tsv(path, header, rows) -> Path:
  """``rows`` (and ``header`` unless None) as GLUE writes them: tab-separated, no quoting, ``\\n`` line ends."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = ([] if header is None else ["\t".join(header)]) + ["\t".join(str(v) for v in row) for row in rows]
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


def write_qnli(root, n_train: int = 48, n_dev: int = 16, seed: int = 0) -> dict:
  """A GLUE root folder ``root`` holding ``QNLI/train.tsv`` and ``QNLI/dev.tsv`` (``index question sentence
  label``); returns ``{"train": rows, "dev": rows}``."""
  rows = qnli_rows(n_train + n_dev, seed)
  splits = {"train": rows[:n_train], "dev": rows[n_train:]}
  for split, part in splits.items():
    write_tsv(Path(root) / "QNLI" / f"{split}.tsv", ("index", "question", "sentence", "label"),
              [(i, *row) for i, row in enumerate(part)])
  return splits


MRPC_HEADER = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")


def write_mrpc(root, n_train: int = 48, n_dev: int = 16, seed: int = 0) -> dict:
  """A GLUE root folder ``root`` holding ``MRPC/train.tsv`` and ``MRPC/dev.tsv`` in MRPC's layout (a byte-order
  mark before ``Quality``, as the official files have), the pairs of :func:`qnli_rows`: equivalent (1) when the
  question's animal is the sentence's. Returns ``{"train": rows, "dev": rows}`` as (sentence1, sentence2, label)."""
  rows = [(q, s, int(label == "entailment")) for q, s, label in qnli_rows(n_train + n_dev, seed)]
  splits = {"train": rows[:n_train], "dev": rows[n_train:]}
  for split, part in splits.items():
    write_tsv(Path(root) / "MRPC" / f"{split}.tsv", ("\ufeff" + MRPC_HEADER[0],) + MRPC_HEADER[1:],
              [(label, 2 * i, 2 * i + 1, a, b) for i, (a, b, label) in enumerate(part)])
  return splits
