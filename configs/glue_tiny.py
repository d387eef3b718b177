"""A tiny random BERT fine-tuned on a tiny QNLI-format task shipped with the package (no download): the language
half of the experiment, end to end, on a CPU.

    python -m butterfly_jax.main --config=configs/glue_tiny.py --workdir=runs/glue_tiny
    python -m butterfly_jax.report --runs=runs/glue_tiny

The task is in the official GLUE layout (``butterfly_jax/tiny_glue/QNLI/{train,dev}.tsv``: 512 training and 128
validation pairs) and is read, tokenized and scored as QNLI is: a question "Where is the cat?" is entailed by "The
dog sat on the mat." exactly when the two animals are the same. Its tokenizer is the BERT WordPiece
``vocab.txt`` beside it (90 tokens, lower-cased), 16 tokens per pair. The model is a BERT of one layer of width 32
(2 heads, MLP 64) initialised from the run's init key, no checkpoint, without dropout (with BERT's 0.1 it
stayed at chance, 45% validation accuracy, after the 16 epochs: measured 2026-12-01): AdamW at 1e-3 with weight decay 0.01 on the
triangular schedule (10% warm-up), batch 16, 16 epochs (512 steps). Perturbed at t = 0: the σ = 0 twin and batch
perturbations of σ = 1e-4 and 1e-2, measured against an init standard deviation of 0.02 for every weight and
leaving embeddings, norms and biases out (the authors' pattern read case-insensitively; their case-sensitive
match also perturbs BERT's LayerNorm scales, as ``configs/multiberts_qnli.py`` does).

48 s on 2 idle CPU cores, most of it XLA compiling (measured: BUILD_NOTES.md, "Language models on a CPU").
Expected: child 0 at about 80% validation accuracy; σ = 1e-4 stays in child 0's basin (loss barriers about
1e-4), σ = 1e-2 ends in another one (train loss barrier about 0.3, error barrier about 0.18); the twin exactly
0. The GPU versions: ``configs/multiberts_qnli.py``, ``configs/olmo1b_qnli.py``.
"""

from pathlib import Path

import butterfly_jax
from butterfly_jax.config import default_config

# A GLUE folder (QNLI/train.tsv, QNLI/dev.tsv, in the official layout) and a BERT WordPiece vocab.txt of 90 tokens,
# written by tests/text_fixtures.py (tests/test_glue_runs.py checks the two agree)
TINY_GLUE = Path(butterfly_jax.__file__).resolve().parent / "tiny_glue"


def get_config():
  c = default_config()
  c.data.name = "glue/qnli"
  c.data.dir = str(TINY_GLUE)
  c.data.tokenizer = str(TINY_GLUE)
  c.data.max_length = 16
  c.model.name = "bert"
  c.model.kwargs.vocab_size = 90
  c.model.kwargs.hidden = 32
  c.model.kwargs.layers = 1
  c.model.kwargs.heads = 2
  c.model.kwargs.intermediate = 64
  c.model.kwargs.max_positions = 16
  c.model.kwargs.dropout = 0.0            # BERT's 0.1 keeps this tiny model at chance (docstring)
  c.model.kwargs.attention_dropout = 0.0
  c.train.batch_size = 16
  c.train.steps = "16ep"
  c.optim.name = "adamw"
  c.optim.lr = 1e-3
  c.optim.weight_decay = 0.01
  c.schedule.name = "triangular"
  c.schedule.warmup = "1.6ep"
  c.perturb.kind = "batch"
  c.perturb.time = "0"
  c.perturb.scales = (0.0, 1e-4, 1e-2)
  c.perturb.init_std = 0.02
  c.perturb.mask.exclude = ".*norm.*|.*bias.*|.*embed.*"
  c.eval.num_alphas = 5
  c.eval.batch_size = 128
  c.eval.cka_examples = 128
  c.log.every_steps = 32
  return c
