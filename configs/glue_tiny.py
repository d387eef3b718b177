"""A tiny random BERT fine-tuned on a tiny QNLI-format task shipped with the package (no download): the language
half of the experiment end to end on a CPU.

    python -m butterfly_jax.main --config=configs/glue_tiny.py --workdir=runs/glue_tiny
"""

from pathlib import Path

import butterfly_jax
from butterfly_jax.config import default_config

# A GLUE folder (QNLI/train.tsv, QNLI/dev.tsv, in the official layout) and a BERT WordPiece vocab.txt of 90 tokens
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
  c.model.kwargs.layers = 2
  c.model.kwargs.heads = 2
  c.model.kwargs.intermediate = 64
  c.model.kwargs.max_positions = 16
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
