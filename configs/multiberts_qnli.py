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
    # the authors' launcher presets, any of their GLUE tasks (qnli, qqp, mnli, sst2, cola, mrpc, rte; STS-B is
    # regression, not run here): "batch" fine-tunes the 2000k checkpoint, "gaussian" (their default preset,
    # gaussian_full) all three, each perturbed at steps 1 and 100 with warm-up 10% and none (4 or 12 runs a task);
    # seed=1 takes the MultiBERTs of pre-training seed 1
    python -m butterfly_jax.launch --config=configs/multiberts_qnli.py:sst2,batch --runs=runs/multiberts_sst2_batch
    python -m butterfly_jax.launch --config=configs/multiberts_qnli.py:cola,gaussian,seed=1 --runs=runs/mb_cola_g1
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
``get_init_stds``: TensorFlow's truncated normal of 0.02) for every parameter, norm scales included; biases and
the embeddings (their LayerNorm too) left out, the layers' LayerNorm weights, the pooler and the classifier
perturbed: their ``dont_perturb_module_patterns`` ``'.*norm.*|.*bias.*|.*embeddings.*'`` under a case-sensitive
``re.match`` on transformers' names (``LayerNorm`` escapes ``.*norm.*``); the gradient with dropout on (their
model is in train mode at step 1 and later: ``perturb.batch_dropout="authors"``); the classifier initialised as transformers' (normal 0.02, bias 0:
``init.head="model"``). Differences: dropout 0.1 as transformers' in training, but its masks are shared by the
family (a key per step, like the batch; theirs: each model its own torch RNG stream), every sequence padded to 128 tokens (theirs to the batch's longest: ``DataCollatorWithPadding`` without ``pad_to_multiple_of``; the same function),
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

PRETRAIN_STEPS = ("20k", "200k", "2000k")  # the authors' checkpoints
TOKENIZER = "weights/bert-base-uncased"
SCALES = (0.0, 1e-5, 1e-3, 1e-2)  # the twin and the authors' sigmas (batch and, by a bug of their launcher, gaussian)
# Per task (train-multibert.sh): batch size, training length and the examples per split the barriers are measured
# on (0 = all). STS-B, a regression task, is not run here (the classification heads only).
TASKS = {
    "qnli": dict(batch=32, steps="3ep", eval_examples=5000),
    "qqp": dict(batch=32, steps="3ep", eval_examples=5000),
    "mnli": dict(batch=32, steps="3ep", eval_examples=5000),
    "sst2": dict(batch=128, steps="2500", eval_examples=0),
    "cola": dict(batch=32, steps="1500", eval_examples=0),
    "mrpc": dict(batch=32, steps="500", eval_examples=0),
    "rte": dict(batch=32, steps="500", eval_examples=0),
}
# The authors' Figure 5 runs (the header of multibert-all-jobs.sh): perturbed at the first step and half way
FIGURE_TIMES = {"qnli": ("1", "4910"), "mrpc": ("1", "250")}
PRESET_TIMES = ("1", "100")  # their launcher presets (batch, gaussian_full, gaussian_small)
CHECKPOINTS = tuple(f"weights/multiberts-seed_0-step_{s}" for s in PRETRAIN_STEPS)  # the Figure 5 runs' three
WARMUPS = (0.1, 0.0)         # their presets' warm-up ratios: the one-cycle's 10%, and none
OPTIONS = ("figure", "batch", "gaussian")


def _parse(arg) -> dict:
  """``TASK[,OPTION][,seed=N]``: the task (default ``qnli``), the preset (``figure``: the Figure 5 runs, the
  default; ``batch``, ``gaussian``: the authors' launcher presets of those names) and the MultiBERTs pre-training
  seed (0, or 1 as their launcher's ``--base_model_seed``)."""
  words = [w.strip() for w in (arg or "qnli").split(",") if w.strip()]
  out = dict(task=words[0] if words else "qnli", preset="figure", seed=0)
  if out["task"] not in TASKS:
    raise ValueError(f"config argument: expected a task of {', '.join(TASKS)} (STS-B is regression: not run "
                     f"here), got {out['task']!r}")
  for word in words[1:]:
    if word in OPTIONS:
      out["preset"] = word
    elif word in ("seed=0", "seed=1"):
      out["seed"] = int(word[-1])
    else:
      raise ValueError(f"config argument: after the task, one of {', '.join(OPTIONS)} or seed=0 / seed=1, got "
                       f"{word!r}")
  if out["preset"] == "figure" and out["task"] not in FIGURE_TIMES:
    raise ValueError(f"config argument: the Figure 5 runs are {', '.join(FIGURE_TIMES)}; for {out['task']} "
                     f"choose the preset 'batch' or 'gaussian' ({out['task']},batch)")
  return out


def checkpoints(seed: int, preset: str) -> tuple:
  """The MultiBERTs checkpoints a preset fine-tunes: all three, or the last only (the authors' batch preset)."""
  steps = PRETRAIN_STEPS[-1:] if preset == "batch" else PRETRAIN_STEPS
  return tuple(f"weights/multiberts-seed_{seed}-step_{s}" for s in steps)


def _times(task: str, preset: str) -> tuple:
  return FIGURE_TIMES[task] if preset == "figure" else PRESET_TIMES


def get_config(arg: str = "qnli"):
  opts = _parse(arg)
  task, spec = opts["task"], TASKS[opts["task"]]
  c = default_config()
  c.data.name = f"glue/{task}"
  c.data.tokenizer = TOKENIZER
  c.data.max_length = 128
  c.model.name = "bert"  # BERT-base, the model's defaults: the checkpoints' config.json is checked against them
  c.init.checkpoint = checkpoints(opts["seed"], opts["preset"])[0]
  c.init.head = "model"
  c.train.batch_size = spec["batch"]
  c.train.steps = spec["steps"]
  c.optim.name = "adamw"
  c.optim.lr = 2e-5
  c.optim.weight_decay = 0.01
  c.schedule.name = "onecycle"
  c.schedule.warmup = _warmup(spec["steps"], WARMUPS[0])
  c.perturb.kind = "gaussian" if opts["preset"] == "gaussian" else "batch"
  c.perturb.time = _times(task, opts["preset"])[0]
  c.perturb.scales = SCALES
  # their get_init_stds for "multiberts": 0.01759 for every parameter, norm scales too (constant_params: a
  # constant-initialised parameter takes the next random layer's std, which init_std fixes at 0.01759)
  c.perturb.init_std = 0.01759
  c.perturb.constant_params = True
  # their pattern '.*norm.*|.*bias.*|.*embeddings.*' under re.match, case-sensitive, on transformers' names leaves
  # out the embeddings (their LayerNorm too) and every bias, and perturbs the layers' LayerNorm weights, the
  # pooler and the classifier: the same parameters under our names
  c.perturb.mask.exclude_finetune = ".*bias|embed.*"
  c.eval.num_examples = spec["eval_examples"]
  c.eval.batch_size = 256
  c.log.every_steps = 100
  c.checkpoint.every_steps = "1000"
  return c


def _warmup(steps: str, ratio: float) -> str:
  """The one-cycle warm-up of ``ratio`` of ``steps`` (text: steps or epochs, as ``train.steps``)."""
  if steps.endswith("ep"):
    return f"{float(steps[:-2]) * ratio:g}ep"
  return str(int(round(int(steps) * ratio)))


def sweep(add, arg: str = "qnli"):
  """Figure 5 (the default): every checkpoint x the two perturbation times x seeds 0-2 of the data order. The
  authors' presets: every checkpoint of the preset x perturbation times 1 and 100 x warm-up 10% and none, one
  seed (theirs: one training seed per task)."""
  from butterfly_jax.launch.sweep import product  # only the launcher calls sweep()
  opts = _parse(arg)
  grid = {"init.checkpoint": checkpoints(opts["seed"], opts["preset"]), "perturb.time": _times(opts["task"],
                                                                                                opts["preset"])}
  if opts["preset"] == "figure":
    product(add, {**grid, "seed": (0, 1, 2)})
  else:
    steps = TASKS[opts["task"]]["steps"]
    product(add, {**grid, "schedule.warmup": tuple(_warmup(steps, r) for r in WARMUPS)})
