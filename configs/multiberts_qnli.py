"""The pre-training paradox in language (the paper's Figure 5, right, and Appendix D.3): butterfly families
fine-tuning MultiBERTs checkpoints of increasing pre-training on QNLI (and, with ``:mrpc``, on MRPC).

    # 1. the checkpoints (BERT-base, pre-training seed 0, after 20k, 200k and 2000k steps) and BERT's tokenizer
    for s in 20k 200k 2000k; do
      huggingface-cli download google/multiberts-seed_0-step_$s --local-dir weights/multiberts-seed_0-step_$s
    done
    huggingface-cli download bert-base-uncased vocab.txt tokenizer.json tokenizer_config.json \\
        --local-dir weights/bert-base-uncased
    # one family (from the 20k checkpoint, perturbed at step 1)
    python -m butterfly_jax.main --config=configs/multiberts_qnli.py --workdir=runs/multiberts_qnli_one
    # 2. QNLI: 3 checkpoints x perturbation at step 1 / 4910 x 3 seeds = 18 runs, each one family (child 0, the
    #    twin and batch perturbations of sigma = 1e-5, 1e-3, 1e-2; norms, biases and embeddings not perturbed)
    python -m butterfly_jax.launch --config=configs/multiberts_qnli.py --runs=runs/multiberts_qnli
    # the same on MRPC (F1; perturbation at step 1 / 250): 18 runs
    python -m butterfly_jax.launch --config=configs/multiberts_qnli.py:mrpc --runs=runs/multiberts_mrpc
    # 3. table (with the task metric) and figures, barrier against pre-training steps among them
    python -m butterfly_jax.report --runs=runs/multiberts_qnli

Files: each checkpoint folder needs ``config.json`` and ``model.safetensors``. Only safetensors are read (PyTorch
pickles can run code); where a MultiBERTs repository holds ``pytorch_model.bin`` only, convert it once, in an
environment that has PyTorch (the package itself does not need it)::

    python -c "import torch, safetensors.torch as st; d = 'weights/multiberts-seed_0-step_20k'; \\
      st.save_file({k: v.clone().contiguous() for k, v in torch.load(d + '/pytorch_model.bin', \\
      weights_only=True).items()}, d + '/model.safetensors', metadata={'format': 'pt'})"

The pre-training heads it holds (``cls.*``) are skipped; the classifier is new (a MultiBERTs checkpoint has
none). The tokenizer is ``bert-base-uncased``'s, as in the authors' scripts (the MultiBERTs share its
vocabulary); GLUE comes from tensorflow-datasets (``glue/qnli``), or from the official TSV files with
``--set data.dir=GLUE_DIR``.

The authors' recipe (``scripts/pretrain-stability/train-multibert.sh`` and ``multibert-all-jobs.sh`` of
``gsaltintas/lmc``; BUILD_NOTES.md, "Definitions and recipes"): AdamW at 2e-5 with weight decay 0.01 on a
one-cycle schedule with 10% warm-up (β1 cycled, as torch's ``OneCycleLR``), batch 32, 128 tokens; QNLI 3 epochs
(9,819 steps) perturbed at steps 1 and 4,910, MRPC 500 steps perturbed at 1 and 250; batch perturbations of
σ = 1e-5, 1e-3 and 1e-2, normalised, measured against the MultiBERTs' init standard deviation 0.01759 (their
``get_init_stds``: TensorFlow's truncated normal of 0.02) for every weight; norms, biases and embeddings left out
(their ``dont_perturb_module_patterns``); the classifier initialised as transformers' (normal 0.02, bias 0:
``init.head="model"``). Differences: dropout 0.1 as transformers' in training, but its masks are shared by the
family (a key per step, like the batch; theirs: each model its own torch RNG stream), every sequence padded to 128 tokens (theirs to the batch's longest, a multiple of 8: the same function),
three seeds here of the training data order (theirs: one training seed per task), barriers on 5,000 train and
5,000 validation examples (QNLI; MRPC: all), CKA on the pooled ``[CLS]`` vector (theirs: the last token of five
encoder layers).

GPU cost (estimated, not measured): XLA counts 22.7 GFLOP per example forward and 67.5 GFLOP per training
example (BERT-base, 128 tokens). One QNLI run (5 networks x 9,819 steps of 32, then 41 networks on 10,000
examples, aligned and not) is about 1.3e17 FLOP: about 21 minutes at an assumed 100 TFLOP/s sustained on one
H100, so about 6 GPU-hours for the QNLI sweep; an MRPC run (5 x 500 steps, all 4,076 examples) about 1.3e16
FLOP, 2 minutes. The family's state (parameters, AdamW moments, gradients) is about 9 GB. Weight matching
(``eval.align``) runs on the host and is not in the estimate.

Expected (the poster's Figure 5, right, "QNLI - Batch"; the paper's numbers are not reproduced here): on QNLI,
fine-tuning from later checkpoints is less stable, the barrier between child 0 and a perturbed child growing
with pre-training at the same σ and t, opposite to the ResNet transfer runs (``configs/resnet50_c100_to_c10.py``);
the σ = 0 twin stays exactly 0; and, unlike in vision, barriers do not follow the L2 distance between the
children (the poster's "QNLI Barriers vs. L2 Distance"). The paper says this holds on "some" GLUE tasks: MRPC
is one more to check. A tiny version that runs on a CPU: ``configs/glue_tiny.py``.
"""

from butterfly_jax.config import default_config

SEED = 0  # the MultiBERTs pre-training seed
PRETRAIN_STEPS = ("20k", "200k", "2000k")  # the authors' checkpoints
CHECKPOINTS = tuple(f"weights/multiberts-seed_{SEED}-step_{s}" for s in PRETRAIN_STEPS)
TOKENIZER = "weights/bert-base-uncased"
SCALES = (0.0, 1e-5, 1e-3, 1e-2)  # the twin and the authors' batch sigmas
# Per task: the authors' training length and perturbation steps (the first step, and half way), and the examples
# per split the barriers are measured on (0 = all).
TASKS = {
    "qnli": dict(steps="3ep", warmup="0.3ep", times=("1", "4910"), eval_examples=5000),
    "mrpc": dict(steps="500", warmup="50", times=("1", "250"), eval_examples=0),
}


def _task(task: str) -> dict:
  if task not in TASKS:
    raise ValueError(f"config argument: expected one of {', '.join(TASKS)}, got {task!r}")
  return TASKS[task]


def get_config(task: str = "qnli"):
  spec = _task(task)
  c = default_config()
  c.data.name = f"glue/{task}"
  c.data.tokenizer = TOKENIZER
  c.data.max_length = 128
  c.model.name = "bert"  # BERT-base, the model's defaults: the checkpoints' config.json is checked against them
  c.init.checkpoint = CHECKPOINTS[0]
  c.init.head = "model"
  c.train.batch_size = 32
  c.train.steps = spec["steps"]
  c.optim.name = "adamw"
  c.optim.lr = 2e-5
  c.optim.weight_decay = 0.01
  c.schedule.name = "onecycle"
  c.schedule.warmup = spec["warmup"]
  c.perturb.kind = "batch"
  c.perturb.time = spec["times"][0]
  c.perturb.scales = SCALES
  c.perturb.init_std = 0.01759
  c.perturb.mask.exclude_finetune = ".*norm.*|.*bias.*|.*embed.*"
  c.eval.num_examples = spec["eval_examples"]
  c.eval.batch_size = 256
  c.log.every_steps = 100
  c.checkpoint.every_steps = "1000"
  return c


def sweep(add, task: str = "qnli"):
  from butterfly_jax.launch.sweep import product  # only the launcher calls sweep()
  product(add, {"init.checkpoint": CHECKPOINTS, "perturb.time": _task(task)["times"], "seed": (0, 1, 2)})
