"""The poster's hyperparameter claims on Fashion-MNIST (REPRODUCTION.md, second edition): one setting changed at a time.

The poster: a longer warm-up, larger batches and larger width make training more stable; Adam and weight decay
make it less stable; even the most stable combination does not remove the instability at initialisation.
Each setting below changes the instability map's setting (``configs/reproduce_map.py``) in one place, and
``combined`` takes the three said to stabilise together. Stability is read as the map reads it: the barrier
between child 0 and a child perturbed at t, at perturbation times t in {0, 1 epoch, 2 epochs} (MLP) or
{0, 1 epoch} (CNN), with sigma in (0, 1e-4, 1e-2) in the batch direction, seeds 0-2. A setting is more
stable where its barrier at t is smaller than the base's (the base is run here too, on the same grid).

Settings (``setting=`` in each run's sweep entry; the overrides it stands for are in ``SETTINGS``):

* ``base``: the map's setting (SGD momentum 0.9, peak lr 0.1, triangular schedule with 1 epoch of warm-up,
  batch 128, no weight decay; MLP 512-512 for 6 epochs, or the CNN (16, 32 channels; dense 128) for 4).
* ``warmup0``, ``warmup2ep``: no warm-up; 2 epochs of warm-up.
* ``batch512``: batch 512 at the same peak lr (steps counted in epochs, so every run sees the same data and
  perturbation times are the same epochs).
* ``width2x``: twice the hidden width (MLP 1024-1024; CNN 32 and 64 channels, dense 256).
* ``adam``, ``adam3e-4``, ``adam3e-3``: Adam (b1 0.9, b2 0.999), peak lr 1e-3, 3e-4 and 3e-3, the same schedule
  (one learning rate would leave "Adam" and "that learning rate" confounded).
* ``wd5e-4``, ``wd5e-3``: coupled L2 weight decay (torch's ``weight_decay``).
* ``combined``: ``warmup2ep`` + ``batch512`` + ``width2x``.

Phases (``:ARG``): ``mlp`` (default; 11 settings x 3 times x 3 seeds = 99 runs) and ``cnn`` (11 x 2 x 3 = 66
runs). Seed 2 and the two other Adam learning rates were added to the first 54 and 36 (seeds 0 and 1): a
setting with no effect lands wholly above or below the base with probability 1/3 on 2 seeds a side, 1/10 on 3. One run, the sweep and its report (from the repository root)::

    python -m butterfly_jax.main --config=configs/reproduce_studies.py --workdir=runs/study_one \\
        --config.schedule.warmup=0
    python -m butterfly_jax.launch --config=configs/reproduce_studies.py:mlp --runs=reproduction/studies/mlp \\
        --workers=2
    python -m butterfly_jax.report --runs=reproduction/studies/mlp --out=reproduction/studies/mlp_report
    python -m reproduction.claims studies --table=reproduction/studies/mlp_report/table.parquet

Cost, measured for ``:mlp`` (2026-12-01, two workers, the machine shared with the test suite part of the
time; each run's ``seconds`` in ``reproduction/studies/mlp/sweep.json``): a 4-network family took 110-234 s
(median 168 s; one that spanned a 15-minute pause 984 s), one at width 1024 488-908 s: about 2 hours of two
workers for the 54 runs. ``:cnn`` (2026-12-02; ``reproduction/studies/cnn_cost.md``): its first two runs (the
base setting, seed 0, on an AVX2-only machine with YNNPACK's convolutions, two workers, about 7 minutes of
pauses included) took 1,214 s and 1,090 s; with YNNPACK off (BUILD_NOTES.md, "XLA:CPU flags") the no-warm-up
pair took 698 s and 590 s there. The other 32 runs, on an AVX-512 Xeon with YNNPACK off and two workers, took
2.98 hours of wall time: 399-1,073 s a run (median 474 s), 806-1,311 s for width 2x and the combination.

The report's table carries each run's config as columns; ``claims.py studies`` tells the settings apart by
the fields ``settings()`` changes (``reproduction/studies.py``).
"""

from butterfly_jax.config import config_file, config_phase

reproduce_map = config_file("reproduce_map.py", beside=__file__)

PHASES = ("mlp", "cnn")
SEEDS = [0, 1, 2]
TIMES = {"mlp": ["0", "1ep", "2ep"], "cnn": ["0", "1ep"]}
SCALES = (0.0, 1e-4, 1e-2)
WIDE = {"mlp": {"model.kwargs.hidden": (1024, 1024)},
        "cnn": {"model.kwargs.channels": (32, 64), "model.kwargs.dense": 256}}


def settings(phase):
  """Name -> the overrides of the base setting it stands for (dotted config fields)."""
  wide = WIDE[phase]
  return {
      "base": {},
      "warmup0": {"schedule.warmup": "0"},
      "warmup2ep": {"schedule.warmup": "2ep"},
      "batch512": {"train.batch_size": 512},
      "width2x": dict(wide),
      "adam": {"optim.name": "adam", "optim.lr": 1e-3},
      "adam3e-4": {"optim.name": "adam", "optim.lr": 3e-4},
      "adam3e-3": {"optim.name": "adam", "optim.lr": 3e-3},
      "wd5e-4": {"optim.weight_decay": 5e-4},
      "wd5e-3": {"optim.weight_decay": 5e-3},
      "combined": {"schedule.warmup": "2ep", "train.batch_size": 512, **wide},
  }


def _phase(arg):
  return config_phase(arg, PHASES, "configs/reproduce_studies.py")


def get_config(arg=None):
  phase = _phase(arg)
  c = reproduce_map.get_config(phase)
  c.perturb.kind = "batch"
  c.perturb.scales = SCALES
  return c


def sweep(add, arg=None):
  phase = _phase(arg)
  for seed in SEEDS:
    for fields in settings(phase).values():
      for t in TIMES[phase]:
        add(**{"perturb.time": t, "seed": seed, **fields})
