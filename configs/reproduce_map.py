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
  ``python -m butterfly_jax.proxy --run=DIR --fractions=0 --seeds=3 --align`` (``--align``: weight matching's
  positive control, does it undo a known permutation?).

One run, and the sweep with its report (from the repository root)::

    python -m butterfly_jax.main --config=configs/reproduce_map.py --workdir=runs/map_t0 --config.perturb.time=0
    python -m butterfly_jax.launch --config=configs/reproduce_map.py:mlp --runs=reproduction/map/mlp
    python -m butterfly_jax.report --runs=reproduction/map/mlp --out=reproduction/map/mlp_report

* ``cnn``: the small CNN (conv 16 and 32 channels, 3x3, ReLU, 2x2 max-pool; dense 128; no norm), 4 epochs
  (1,872 steps), t in {0, 10, 50, 100, 250 steps, 1, 2, 3 epochs}, σ in (0, 1e-5 ... 1e-1) (K = 7),
  seeds 0-2, batch and Gaussian directions (48 runs), then one random kernel weight at the three earliest
  times (9 runs). Sized first from the bench's step times (2-3 minutes a run): wrong by an order of
  magnitude. Measured (2026-12-01, two workers, the machine also running tests): the t = 0 runs took 1,509 s
  each, two at a time (children 1,224 s, 0.65 s per family step; evaluation 271 s). On the idle machine, two
  at a time: 1,036-1,040 s at t = 100, 924-931 s at t = 250, 487-852 s at 1-3 epochs (REPRODUCTION.md), so
  the phase is about 8 hours of two workers, several sessions of ``launch`` resuming it.
* ``cnn_scale``: ``mlp_scale`` for the CNN (3 runs of ~5 minutes alone); its proxy runs also with ``--align``,
  the positive control for weight matching on the CNN (does it undo a known permutation?).
* ``resnet20``: the paper's network (ResNet-20, LayerNorm, width 1) on Fashion-MNIST, a reduced map: 2
  epochs (936 steps), t in {0, 50, 250 steps, 1 epoch}, σ in (0, 1e-4, 1e-2) (K = 4), seed 0, batch
  direction (4 runs). Sized at ~0.4 s per network step (about 25 minutes for the t = 0 run, 1.2 hours for the
  phase): too low. Measured (2026-12-02, one worker, the other core busy with other work): 4.4-4.6 s per step
  of the 4-member family, so ~75 minutes for the t = 0 run and about 4 hours of one worker for the phase;
  on 2026-12-02, an AVX2-only machine (one network's step 1.7 s; BUILD_NOTES "Machine variance"), the t = 0
  run took 1.57 h (``results.json`` timing: 5.0-6.1 s per family step, evaluation 7.6 minutes). The runs are
  declared in the order 0, 1 epoch, 250, 50 steps, so the first two already span the map; each fits a
  session when started at its beginning (the later the t, the shorter the run: its trunk is one network).
  With YNNPACK off (the runtime's CPU flags on x86 since 2026-12-02) the t = 250 run took 33 minutes (2.1 s a
  family step); the t = 1 epoch run, with YNNPACK's convolutions, 66; the t = 50 run, on an AVX-512 Intel
  Xeon without YNNPACK, 29.5 (1.67 s a family step). All 4 are committed.

* ``resnet20_map``: the paper's network on Fashion-MNIST under definitions' version 3 (torch's padding): ResNet-20,
  width 1, LayerNorm, SGD momentum 0.9 on the triangular schedule to a peak of 0.02 (0.05 and 0.1 blew up in
  the warm-up: BUILD_NOTES.md, "A ResNet-20 setting on Fashion-MNIST"), 12 epochs (5,616 steps; one network
  trained 10 epochs reached 95.05% train accuracy, 12 leave a margin, not measured), σ in (0, 1e-5 ... 1e-1)
  (K = 7), batch direction, t in {0, 1 epoch, 100 steps, 3 epochs}, seeds 0 and 1 (8 runs). Measured first
  (this machine's AMD EPYC, 2 cores, alone): 2.1 s per step of the 7-member family, so about 3.3 hours of
  children for the t = 0 run and about 24 hours for the phase, many sessions of the launcher resuming it
  (checkpoints every 117 steps; the run directories outside the checkout, finished ones copied in)::

    python -m butterfly_jax.launch --config=configs/reproduce_map.py:resnet20_map --runs=reproduction/map/resnet20_v3

* ``mlp_floor``: below the map's plateau, at t in {0, 1, 2, 4 epochs} and per seed (0-2): the batch direction at
  σ in (0, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6), down through float32's resolution (a weight's spacing is about 1.2e-7
  of its value, so ``num_changed`` says how many weights each σ still moves); one random kernel weight (the map's
  single-weight runs' weight at the same seed) moved 1, 16 and 256 units in the last place
  (``perturb.kind="ulp"``); and every kernel weight moved one unit in the last place. Every number compares with the ``mlp`` runs of the same seed
  (the same trunk, direction and weight). 36 runs, t = 0 first.
* ``mlp_act`` and ``cnn_act``: the ``mlp`` and ``cnn`` maps' batch direction with each child aligned by activation
  matching (``eval.align_method="activations"``) instead of weight matching, so a verdict on the paper's
  Conjecture 1 (barriers come from permutation) does not rest on one heuristic: seeds 0-2 at t in {0, 250 steps,
  1, 2 epochs} (MLP, 12 runs) and {0, 1 epoch} (CNN, 6 runs). Each run compares its own unaligned and aligned
  barriers, and keeps its children's checkpoint for activation matching's positive control, ``python -m
  butterfly_jax.proxy --run=DIR --fractions=0 --seeds=3 --align`` (the run's method: does it undo a known
  permutation of child 0?).
* σ* by search (``butterfly_jax.threshold --per_seed --prior=reproduction/map/mlp``, REPRODUCTION.md): the
  ``mlp`` config is the map's, so its finished runs are the search's first round.

Every phase but ``resnet20_map`` pins definitions' version 2's weight-matching cost (``eval.align_bias=True``;
``resnet20`` also its padding): the committed maps were measured under it, and so stay this config's runs.

Runs are declared seed by seed, so a partial sweep covers every time and direction for the first seeds.
"""

from butterfly_jax.config import config_file, config_phase

fashion_mnist = config_file("fashion_mnist.py", beside=__file__)

PHASES = ("mlp", "mlp_extra", "mlp_scale", "mlp_floor", "mlp_act", "cnn", "cnn_scale", "cnn_act", "resnet20",
          "resnet20_map")
TIMES = ["0", "10", "50", "100", "250", "1ep", "2ep", "4ep"]
SEEDS = [0, 1, 2]
SCALES = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
CNN_TIMES = ["0", "10", "50", "100", "250", "1ep", "2ep", "3ep"]
CNN_SCALES = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
RESNET_TIMES = ["0", "1ep", "250", "50"]  # the two ends first: a partial sweep already spans the map
# resnet20_map: definitions' version 3 (torch's padding), a peak learning rate the network survives (BUILD_NOTES.md,
# "A ResNet-20 setting on Fashion-MNIST"), seeds 0 and 1, t at 0, one epoch, inside the first epoch and later
RESNET_MAP_TIMES = ["0", "1ep", "100", "3ep"]
RESNET_MAP_SEEDS = [0, 1]
RESNET_MAP_SCALES = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
FLOOR_SCALES = (0.0, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6)
FLOOR_TIMES = ("0", "1ep", "2ep", "4ep")
ACT_TIMES = {"mlp_act": ("0", "250", "1ep", "2ep"), "cnn_act": ("0", "1ep")}  # where the barriers are
FLOOR_ULPS = ({"perturb.kind": "ulp", "perturb.mask.single": "random", "perturb.mask.exclude": ".*bias",
               "perturb.scales": (0.0, 1.0, 16.0, 256.0)},
              {"perturb.kind": "ulp", "perturb.mask.exclude": ".*bias", "perturb.scales": (0.0, 1.0)})
SINGLE_WEIGHT = {"perturb.kind": "gaussian", "perturb.mask.single": "random", "perturb.mask.exclude": ".*bias",
                 "perturb.scales": (0.0, 0.1, 1.0, 10.0, 100.0)}


def _phase(arg):
  return config_phase(arg, PHASES, "configs/reproduce_map.py")


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
  c.checkpoint.children = phase.endswith(("_scale", "_act"))  # the proxy reads the children checkpoint
  if phase.endswith("_scale"):
    c.perturb.time = "4ep" if phase == "mlp_scale" else "3ep"
    c.perturb.scales = (0.0, 1e-5)
  if phase != "resnet20_map":
    # The committed maps were measured under definitions' version 2: pinned to its weight-matching cost (and the
    # ResNet's padding), so they are this config's runs (a launch finds them finished), new runs (mlp_floor, the
    # σ* search, more seeds) compare with them; reports label them all v2.
    c.eval.align_bias = True
  if phase.endswith("_act"):
    c.eval.align_method = "activations"
  if phase == "mlp_floor":
    c.perturb.time = "0"
    c.perturb.scales = FLOOR_SCALES
  if phase.startswith("cnn"):
    c.model.name = "cnn"
    c.model.kwargs = {"channels": (16, 32), "dense": 128}
    c.train.steps = "4ep"
    if phase in ("cnn", "cnn_act"):
      c.perturb.scales = CNN_SCALES
  if phase == "resnet20":
    c.model.name = "resnet20"
    c.model.resnet_padding = "same"  # version 2's padding (above)
    c.model.kwargs = {"width": 1, "norm": "layernorm"}
    c.train.steps = "2ep"
    c.perturb.scales = (0.0, 1e-4, 1e-2)
    c.eval.num_examples = 2000
    c.eval.cka_examples = 1000
    c.checkpoint.every_steps = "117"  # a ResNet-20 run is long: lose at most a quarter epoch
  if phase == "resnet20_map":
    c.model.name = "resnet20"
    c.model.kwargs = {"width": 1, "norm": "layernorm"}
    c.optim.lr = 0.02            # 0.05 and 0.1 blew up in the warm-up
    c.train.steps = "12ep"       # 10 epochs reached 95.05% train accuracy (seed 0, alone): 12 for a margin
    c.perturb.scales = RESNET_MAP_SCALES
    c.eval.num_examples = 2000
    c.eval.cka_examples = 1000
    c.checkpoint.every_steps = "117"
  return c


def sweep(add, arg=None):
  phase = _phase(arg)
  if phase.endswith("_scale"):
    for seed in SEEDS:
      add(seed=seed)
    return
  if phase == "resnet20":
    for t in RESNET_TIMES:
      add(**{"perturb.time": t, "seed": 0})
    return
  if phase == "resnet20_map":
    for seed in RESNET_MAP_SEEDS:
      for t in RESNET_MAP_TIMES:
        add(**{"perturb.time": t, "seed": seed})
    return
  if phase == "mlp_floor":
    for t in FLOOR_TIMES:
      at = {} if t == "0" else {"perturb.time": t}  # t = 0 is the config's own (the first 9 runs' names)
      for seed in SEEDS:
        add(seed=seed, **at)
        for ulp in FLOOR_ULPS:
          add(seed=seed, **at, **ulp)
    return
  if phase.endswith("_act"):
    for seed in SEEDS:
      for t in ACT_TIMES[phase]:
        add(**{"perturb.time": t, "seed": seed})
    return
  times = CNN_TIMES if phase == "cnn" else TIMES
  for seed in SEEDS:
    for t in times:
      for kind in (("batch", "gaussian") if phase in ("mlp", "cnn") else ("batch",)):
        add(**{"perturb.time": t, "seed": seed, "perturb.kind": kind})
  if phase in ("mlp", "cnn"):
    for seed in SEEDS:
      for t in times[:3]:
        add(**{"perturb.time": t, "seed": seed, **SINGLE_WEIGHT})
