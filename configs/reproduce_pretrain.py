"""Pre-training and fine-tuning stability on Fashion-MNIST, redone (REPRODUCTION.md, second edition, section 4).

The question is the paper's: does fine-tuning get more stable with more pre-training? Each network is
pre-trained on classes 0-4 with checkpoints kept along the way; fine-tuning families start from them on
classes 5-9 with a fresh head. The first edition rested on one pre-training run of an MLP. Here there are
three pre-training seeds per network, and a convolutional network as a second subject. The CNN's
from-scratch control (pre-training step 0) shows clear barriers at t = 0; the MLP's barely does.

Phases (``:ARG``), run in this order:

* ``pretrain_mlp``: MLP 512-512 on classes 0-4 for 10 epochs (2,340 steps), seeds 0-2 (3 runs). Kept steps:
  0, 28, 1, 2, 5 and 10 epochs (and the log-spaced ones).
* ``pretrain_cnn``: the map's CNN (16 and 32 channels, dense 128) on classes 0-4 for 5 epochs (1,170 steps),
  seeds 0-2 (3 runs). Kept steps: 0, 28, 1, 2 and 5 epochs (and the log-spaced ones).
* ``mlp`` (default): MLP fine-tuning families, as the first edition's: 5 epochs at peak lr 0.05 with half an
  epoch of warm-up, σ in (0, 1e-4, 1e-3, 1e-2, 1e-1), batch direction, t in {0, 1 epoch}. One run per
  pre-training seed s, pre-training step and t; the run's own seed is s too, so each seed is one replicate
  (pre-training and fine-tuning both redrawn): 3 x 5 x 2 = 30 runs.
* ``cnn``: CNN fine-tuning families. They are sized to the machine: 2 epochs at peak lr 0.05 with half an
  epoch of warm-up, σ in (0, 1e-4, 1e-2), t = 0, 2,000 evaluation examples. That is 3 seeds x 5
  pre-training steps = 15 runs.

Norm and bias parameters are left out of the mask, as in the paper's fine-tuning runs
(``perturb.mask.exclude_finetune``). Every fine-tuning run records the pre-trained weights it started from
in ``results.json`` (``init.weights_sha256``), so runs that share a pre-training can be checked to do so.

The sweep, its report and its numbers (from the repository root)::

    python -m butterfly_jax.launch --config=configs/reproduce_pretrain.py:pretrain_mlp --runs=reproduction/pretrain/pretrain_mlp
    python -m butterfly_jax.launch --config=configs/reproduce_pretrain.py:pretrain_cnn --runs=reproduction/pretrain/pretrain_cnn
    python -m butterfly_jax.launch --config=configs/reproduce_pretrain.py:mlp --runs=reproduction/pretrain/mlp --workers=2
    python -m butterfly_jax.launch --config=configs/reproduce_pretrain.py:cnn --runs=reproduction/pretrain/cnn --workers=2
    python -m butterfly_jax.report --runs=reproduction/pretrain/mlp --out=reproduction/pretrain/mlp_report
    python -m butterfly_jax.report --runs=reproduction/pretrain/cnn --out=reproduction/pretrain/cnn_report
    python -m reproduction.claims pretrain --mlp=reproduction/pretrain/mlp_report/table.parquet \\
        --cnn=reproduction/pretrain/cnn_report/table.parquet > reproduction/pretrain/claims.md

The scale a fine-tuning barrier is read against (``mlp_scale``, ``cnn_scale``): per seed, the network
fine-tuned from the control (step 0) and from the longest pre-training, alone (no children), its weights kept;
``proxy --fractions=0 --align`` on each gives the barrier between it and a fully permuted copy of itself. Their
pre-training is rebuilt into ``reproduction/pretrain/scale`` (the checkpoints of the study's own pre-training
runs are not committed), so these are the same recipes, not necessarily the same bits::

    for m in mlp cnn; do
      python -m butterfly_jax.launch --config=configs/reproduce_pretrain.py:pretrain_$m \\
          --runs=reproduction/pretrain/scale/pretrain_$m
      python -m butterfly_jax.launch --config=configs/reproduce_pretrain.py:${m}_scale \\
          --runs=reproduction/pretrain/scale/$m --workers=2
      for r in reproduction/pretrain/scale/$m/*/results.json; do
        python -m butterfly_jax.proxy --run=$(dirname $r) --fractions=0 --align
      done
    done

The pre-training checkpoints are not committed (the run directories' JSON is).
On a fresh checkout, rebuild them before resuming a fine-tuning sweep. Delete
``reproduction/pretrain/pretrain_*/*/results.json`` so that ``launch`` reruns them, or run one with
``python -m butterfly_jax.main --config=configs/reproduce_pretrain.py:pretrain_cnn --config.seed=S
--workdir=reproduction/pretrain/pretrain_cnn/seed=S``. On another host CPU the rebuilt weights may differ in
their last bits; ``init.weights_sha256`` shows whether they do.
"""

from butterfly_jax.config import config_file, config_phase

fashion_mnist = config_file("fashion_mnist.py", beside=__file__)

PHASES = ("mlp", "cnn", "pretrain_mlp", "pretrain_cnn", "mlp_scale", "cnn_scale")
SEEDS = (0, 1, 2)
PRETRAIN_DIR = "reproduction/pretrain/pretrain_{model}/seed={seed}"
# the scale phases fine-tune from pre-training rebuilt here (``pretrain_*`` run into these directories)
SCALE_PRETRAIN_DIR = "reproduction/pretrain/scale/pretrain_{model}/seed={seed}"
# Kept by the pre-training runs (234 steps per epoch on 30,000 images): none, 28 steps, 1, 2 and 5 epochs (MLP:
# also 10 epochs).
PRETRAIN_STEPS = {"mlp": (0, 28, 234, 468, 1170, 2340), "cnn": (0, 28, 234, 468, 1170)}
CNN = {"channels": (16, 32), "dense": 128}


def _phase(arg):
  return config_phase(arg, PHASES, "configs/reproduce_pretrain.py")


def get_config(arg=None):
  phase = _phase(arg)
  model = phase.removeprefix("pretrain_").removesuffix("_scale")
  c = fashion_mnist.get_config()
  if model == "cnn":
    c.model.name = "cnn"
    c.model.kwargs = CNN
  c.eval.num_examples = 5000
  c.log.every_steps = 117
  c.log.progress = False
  if phase.startswith("pretrain_"):
    c.data.classes = (0, 1, 2, 3, 4)
    c.train.steps = "10ep" if model == "mlp" else "5ep"
    c.perturb.scales = ()     # no children: one network
    c.checkpoint.keep = ("0", "28", "1ep", "2ep", "5ep") + (("10ep",) if model == "mlp" else ())
    c.checkpoint.keep_log = 8
    return c
  c.data.classes = (5, 6, 7, 8, 9)
  c.init.checkpoint = PRETRAIN_DIR.format(model=model, seed=0) + f":{PRETRAIN_STEPS[model][-1]}"
  c.optim.lr = 0.05
  c.schedule.warmup = "0.5ep"
  c.perturb.mask.exclude = ".*norm.*|.*bias.*"
  c.eval.every_steps = 0
  c.checkpoint.trunk = False
  if model == "mlp":
    c.train.steps = "5ep"
    c.perturb.scales = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
  else:
    c.train.steps = "2ep"
    c.perturb.scales = (0.0, 1e-4, 1e-2)
    c.eval.num_examples = 2000
    c.eval.cka_examples = 1000
  if phase.endswith("_scale"):
    c.init.checkpoint = SCALE_PRETRAIN_DIR.format(model=model, seed=0) + f":{PRETRAIN_STEPS[model][-1]}"
    c.perturb.scales = ()            # child 0 alone, the fine-tuned network the proxy permutes
    c.checkpoint.children = True     # the proxy reads the children checkpoint
    c.checkpoint.every_steps = "0"
  return c


def sweep(add, arg=None):
  phase = _phase(arg)
  if phase.startswith("pretrain_"):
    for seed in SEEDS:
      add(seed=seed)
    return
  if phase.endswith("_scale"):
    model = phase.removesuffix("_scale")
    for seed in SEEDS:
      for step in (0, PRETRAIN_STEPS[model][-1]):  # the control and the longest pre-training
        add(**{"init.checkpoint": SCALE_PRETRAIN_DIR.format(model=model, seed=seed) + f":{step}", "seed": seed})
    return
  times = ("0", "1ep") if phase == "mlp" else ("0",)
  for seed in SEEDS:
    for step in PRETRAIN_STEPS[phase]:
      for t in times:
        add(**{"init.checkpoint": PRETRAIN_DIR.format(model=phase, seed=seed) + f":{step}", "perturb.time": t,
               "seed": seed})
