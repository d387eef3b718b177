"""The paper's main setting: ResNet-20 (width 32 = 16*2 base channels), LayerNorm, CIFAR-10.

    python -m butterfly_jax.main --config=configs/resnet20.py --workdir=runs/resnet20 \
        --config.perturb.time=5ep --config.perturb.scales='(0.0,1e-4,1e-3,1e-2)'

He-normal init, SGD momentum 0.9, no weight decay, triangular learning rate (1 epoch linear warm-up to
0.1, then linear decay to 0), batch 128, 50 epochs (19,500 steps), random flips and rotation by up to 10
degrees (the authors' ResNet-20 scripts; the workshop text also names translation and cutout, which those
scripts do not use). The perturbed children train 50 epochs after t (``perturb.extra_steps``, workshop
appendix A and the authors' ``same_steps_pperturb``), their learning rate decaying linearly from its value
at t to 0. ``:same_steps`` instead ends every child at T on child 0's schedule, as the authors' later ResNet-20
scripts do (``--same_steps_pperturb=false`` from 2025-01-02 on: their ε-search, Lyapunov, logistic-regression and
``small_butterfly`` scripts; the earlier ``butterfly.sh``, ``butterfly_batch_new_sampling.sh`` and
``not_perturb_some.sh`` leave it true). Which of the two the ICML figures used is not known::

    python -m butterfly_jax.main --config=configs/resnet20.py:same_steps --workdir=runs/resnet20_same_steps Data: tensorflow-datasets ``cifar10``, or ``--config.data.dir=`` a folder with the
official ``cifar-10-python.tar.gz`` (or its extracted ``cifar-10-batches-py``) on machines without internet.

Cost: a GPU job. On 2 CPU cores a 50-epoch family would take days (measured step times: BUILD_NOTES.md,
"Speed against PyTorch"). GPU cost (estimated, not measured): XLA counts 0.92 GFLOP per training image and 0.30
GFLOP per evaluated image; this family (5 networks x 19,500 steps after a 1,950-step trunk, then 77 evaluated
networks on 60k images) is about 1.3e16 FLOP: 2 minutes at an assumed 100 TFLOP/s (an H100), 1.8 hours at an
assumed 2 TFLOP/s (a T4, a quarter of its float32 peak).
"""

from butterfly_jax.config import default_config


VARIANTS = ("extra_steps", "same_steps")


def get_config(arg: str | None = None):
  """``extra_steps`` (the default: perturbed children train T steps after t) or ``same_steps`` (every child ends
  at T)."""
  variant = arg or VARIANTS[0]
  if variant not in VARIANTS:
    raise ValueError(f"config argument: expected one of {', '.join(VARIANTS)}, got {variant!r}")
  c = default_config()
  c.data.name = "cifar10"
  c.data.augment.flip = True
  c.data.augment.rotate = 10.0
  c.model.name = "resnet20"
  c.model.kwargs.width = 2
  c.model.kwargs.norm = "layernorm"
  c.train.batch_size = 128
  c.train.steps = "50ep"          # 50 * 390 = 19,500 steps
  c.optim.name = "sgd"
  c.optim.lr = 0.1
  c.optim.momentum = 0.9
  c.optim.weight_decay = 0.0
  c.schedule.name = "triangular"
  c.schedule.warmup = "1ep"
  c.perturb.time = "5ep"          # t = 1950
  c.perturb.kind = "batch"
  c.perturb.extra_steps = variant == "extra_steps"  # children end at t + T (extra_lr "decay"), or all at T
  c.perturb.scales = (0.0, 1e-4, 1e-3, 1e-2)
  c.eval.num_alphas = 11
  c.eval.num_examples = 0         # full splits
  c.eval.batch_size = 1000
  c.log.every_steps = 390
  return c
