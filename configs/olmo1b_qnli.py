"""The pre-training paradox with OLMo (the paper's Appendix D.4): butterfly families fine-tuning OLMo-1B
checkpoints from across its pre-training (Hub revisions) as a sequence classifier on QNLI.

    # 1. the revisions (each a branch of allenai/OLMo-1B-hf; list them all with
    #    python -c "from huggingface_hub import list_repo_refs; print(list_repo_refs('allenai/OLMo-1B-hf'))")
    for r in step1000-tokens4B step10000-tokens41B step738000-tokens3094B; do
      huggingface-cli download allenai/OLMo-1B-hf --revision $r --local-dir weights/olmo-1b-hf/$r
    done
    # one family (from the last revision, perturbed at step 1)
    python -m butterfly_jax.main --config=configs/olmo1b_qnli.py --workdir=runs/olmo1b_qnli_one
    # 2. 3 revisions x perturbation at step 1 / 1636 x 3 seeds = 18 runs, each one family (child 0, the twin and
    #    batch perturbations of sigma = 1e-5, 1e-3; embeddings not perturbed)
    python -m butterfly_jax.launch --config=configs/olmo1b_qnli.py --runs=runs/olmo1b_qnli
    # 3. table and figures, barrier against pre-training steps (read from the revisions' names) among them
    python -m butterfly_jax.report --runs=runs/olmo1b_qnli

Files: each revision's folder needs ``config.json``, ``model.safetensors`` (or its shards and
``model.safetensors.index.json``) and its tokenizer (``tokenizer.json``, ``tokenizer_config.json``), which
tokenizes the task (``data.tokenizer`` defaults to the ``init.checkpoint`` folder). A revision with
``pytorch_model.bin`` only must be converted first (``configs/multiberts_qnli.py`` shows how). The model is
transformers' ``OlmoForSequenceClassification`` (OLMo-1: ``model_type="olmo"``); its head reads the last real token
of ``question <eos> sentence`` (a decoder tokenizer without a pair template in its ``tokenizer.json`` joins a pair
with its end-of-text token; unverified on OLMo-1B-hf's own files); the causal-LM head
(tied embeddings) is skipped. Another revision: add its name to ``REVISIONS``.

Recipe: the authors fine-tune OLMo-1B with ``scripts/olmo/finetune_olmo.sh`` of ``gsaltintas/lmc`` as a
language model on math word problems; there is no GLUE script for it, so this one takes from it what is not
task-specific (AdamW at 2e-5 with weight decay 0.01, one-cycle with 10% warm-up, bfloat16 compute, batch
perturbations normalised against an init standard deviation of 0.02 for every weight, every parameter
perturbed: their pattern ``'.*norm.*|.*bias.*|.*embeddings.*'`` matches no name of OLMo-1B-hf, whose LayerNorms
have no weights, whose layers no biases, and whose tied embedding is ``embed_tokens``) and from the MultiBERTs QNLI recipe the task's settings (batch 32, 128
tokens, the perturbation at step 1 and half way), over one epoch of QNLI (3,273 steps) rather than their three
(BUILD_NOTES.md, "Definitions and recipes"). The classifier is new (normal 0.02, transformers' init). Weight
matching is off (``eval.align``; the authors' ``lmc_check_perms=false`` too): matching 16 layers of 8,192 MLP
units on the host would take longer than the run. Barriers on 2,000 train and 2,000 validation examples.

GPU cost (estimated, not measured): XLA counts 277 GFLOP per example forward and 832 GFLOP per training
example (OLMo-1B, 1.18B parameters, 128 tokens). One run (4 networks x 3,273 steps of 32, then 31 networks on
4,000 examples) is about 3.9e17 FLOP: about 65 minutes at an assumed 100 TFLOP/s sustained on one H100, so about
20 GPU-hours for the sweep (bfloat16 compute should shorten it). Memory: each member holds about 9.5 GB of
bf16 parameters, AdamW moments and gradients (19 GB in float32), so the family of 4 needs about 38 GB before
activations (75 GB in float32: one H200, or the members spread over two or more GPUs of 80 GB, ``members.devices``).

Precision: the authors hold OLMo's weights in bf16, so AdamW (its moments bf16 too) and the perturbation
θ' = round_bf16(θ + σε) run in bf16; so does this config (``train.param_dtype="bfloat16"``, with bf16 compute;
``--config.train.param_dtype=float32`` keeps float32 weights). Much of a small perturbation then rounds away:
on a random OLMo (weights N(0, 0.02), ε normalised to σ·E_init; ``bench/bf16_perturbation.py``), a gaussian
perturbation at σ = 1e-3 changes 22% of the weights and 52% of σε is realised along its own direction; at
σ ≤ 1e-4 at most 2% of the weights change (6% along); from σ = 1e-2 on it survives whole. A batch gradient
survives better (84% along at σ = 1e-3, 34% at 1e-4, 1.5% at 1e-5), its norm held by fewer, larger entries.
These fractions depend on σ and the weights' own sizes, not on the model's size; pre-trained weights have
other sizes, so they shift layer by layer. The σ = 1e-5 child is therefore close to a second twin here.

Expected (the poster: "on some fine-tuning tasks, BERT & OLMo become less stable with more pre-training", its
Figure 5 and the paper's Appendix D.4; no numbers are reproduced here): larger barriers between child 0 and a
perturbed child when fine-tuning from later revisions, at the same σ and t; the σ = 0 twin exactly 0.
"""

from butterfly_jax.config import default_config

# Branches of allenai/OLMo-1B-hf: early, after 41B tokens, and the last one of the authors' OLMo script.
REVISIONS = ("step1000-tokens4B", "step10000-tokens41B", "step738000-tokens3094B")
CHECKPOINTS = tuple(f"weights/olmo-1b-hf/{r}" for r in REVISIONS)
SCALES = (0.0, 1e-5, 1e-3)  # the twin, and the smallest batch sigma and the default of the authors' OLMo script
TIMES = ("1", "1636")  # the first step, and half of the epoch


def get_config():
  c = default_config()
  c.data.name = "glue/qnli"
  c.data.max_length = 128
  c.model.name = "olmo"  # OLMo-1B, the model's defaults: the revisions' config.json is checked against them
  c.init.checkpoint = CHECKPOINTS[-1]
  c.init.head = "model"
  c.train.batch_size = 32
  c.train.steps = "1ep"
  c.train.compute_dtype = "bfloat16"
  c.train.param_dtype = "bfloat16"  # the authors' bf16 weights (docstring: how much of a perturbation survives)
  c.optim.name = "adamw"
  c.optim.lr = 2e-5
  c.optim.weight_decay = 0.01
  c.schedule.name = "onecycle"
  c.schedule.warmup = "0.1ep"
  c.perturb.kind = "batch"
  c.perturb.time = TIMES[0]
  c.perturb.scales = SCALES
  c.perturb.init_std = 0.02
  c.perturb.mask.exclude_finetune = ""  # the authors' pattern excludes nothing of OLMo-1B (docstring)
  c.eval.num_examples = 2000
  c.eval.batch_size = 128
  c.eval.align = False
  c.log.every_steps = 100
  c.checkpoint.every_steps = "500"
  return c


def sweep(add):
  from butterfly_jax.launch.sweep import product  # only the launcher calls sweep()
  product(add, {"init.checkpoint": CHECKPOINTS, "perturb.time": TIMES, "seed": (0, 1, 2)})
