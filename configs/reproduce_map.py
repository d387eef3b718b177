"""The instability map on Fashion-MNIST (REPRODUCTION.md, second edition): barrier over (t, sigma).

For each perturbation time t (several inside the first epoch) and seed, one family per direction holds the
sigma = 0 twin and seven perturbed children on a log grid, so one run measures a whole sigma column of the
map. Definitions version 2 (the defaults). The phases (``:ARG``):

* ``mlp`` (default): MLP 784-512-512-10, 6 epochs (2,808 steps), t in {0, 10, 50, 100, 250 steps, 1, 2, 4
  epochs}, seeds 0-2, batch and Gaussian directions (48 runs), then one random kernel weight at the three
  earliest times (9 runs).
* ``mlp_extra``: the same map with ``perturb.extra_steps`` (every perturbed child trains 2,808 steps after
  t, its learning rate decaying linearly from lr(t) to 0): "perturbed later" told apart from "less
  training left". Batch direction (24 runs).
* ``mlp_scale``: per seed, the unperturbed network trained to T with its children's checkpoint kept, for the
  random-permutation proxy at fraction 0 (the barrier between the network and a fully permuted copy of
  itself: the scale a barrier is read against). Child 0 of every ``mlp`` run of a seed is this same network
  (the trunk and child 0 share every step's batch). 3 runs of a few minutes; then, per run,
  ``python -m butterfly_jax.proxy --run=DIR --fractions=0 --seeds=3``.

One run, and the sweep with its report (from the repository root)::

    python -m butterfly_jax.main --config=configs/reproduce_map.py --workdir=runs/map_t0 --config.perturb.time=0
    python -m launch --config=configs/reproduce_map.py:mlp --runs=reproduction/map/mlp
    python -m butterfly_jax.report --runs=reproduction/map/mlp --out=reproduction/map/mlp_report

Runs are declared seed by seed, so a partial sweep covers every time and direction for the first seeds.
"""

from butterfly_jax.config import config_file

fashion_mnist = config_file("fashion_mnist.py", beside=__file__)

PHASES = ("mlp", "mlp_extra", "mlp_scale")
TIMES = ["0", "10", "50", "100", "250", "1ep", "2ep", "4ep"]
SEEDS = [0, 1, 2]
SCALES = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
SINGLE_WEIGHT = {"perturb.kind": "gaussian", "perturb.mask.single": "random", "perturb.mask.exclude": ".*bias",
                 "perturb.scales": (0.0, 0.1, 1.0, 10.0, 100.0)}


def _phase(arg):
  phase = arg or "mlp"
  if phase not in PHASES:
    raise ValueError(f"configs/reproduce_map.py: unknown phase {phase!r}; choose one of {', '.join(PHASES)}")
  return phase


def get_config(arg=None):
  phase = _phase(arg)
  c = fashion_mnist.get_config()
  c.train.steps = "6ep"
  c.perturb.scales = SCALES
  c.perturb.extra_steps = phase == "mlp_extra"
  c.eval.num_examples = 5000
  c.eval.cka_examples = 2000
  c.log.every_steps = 117
  c.eval.every_steps = 0            # the map needs the end points only
  c.log.progress = False
  c.checkpoint.every_steps = "1ep"
  c.checkpoint.trunk = False
  c.checkpoint.children = phase == "mlp_scale"
  if phase == "mlp_scale":
    c.perturb.time = "4ep"
    c.perturb.scales = (0.0, 1e-5)
  return c


def sweep(add, arg=None):
  phase = _phase(arg)
  if phase == "mlp_scale":
    for seed in SEEDS:
      add(seed=seed)
    return
  for seed in SEEDS:
    for t in TIMES:
      for kind in (("batch", "gaussian") if phase == "mlp" else ("batch",)):
        add(**{"perturb.time": t, "seed": seed, "perturb.kind": kind})
  if phase == "mlp":
    for seed in SEEDS:
      for t in TIMES[:3]:
        add(**{"perturb.time": t, "seed": seed, **SINGLE_WEIGHT})
