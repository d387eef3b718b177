"""Smoke test: 40 steps of a 64-32-10 MLP on digits, two children, 5-point barrier curves on 200 examples.

    python -m butterfly_jax.main --config=configs/smoke.py --workdir=/tmp/smoke

Seconds on CPU; used by the end-to-end tests. Not a scientific setting.

Its sweep (the launcher's end-to-end test) is 20 runs, 5 seeds x perturbation at step 0 or 10 x batch or
gaussian direction: about 30 s on 2 busy CPU cores with one worker and a cold compilation cache (the first
run compiles for ~10 s, the others take ~1 s), 15 s with the cache warm:

    python -m butterfly_jax.launch --config=configs/smoke.py --runs=/tmp/smoke_sweep
"""

from butterfly_jax.run.configs_embedded import smoke


def get_config():
  return smoke()


def sweep(add):
  from butterfly_jax.launch.sweep import product  # only the launcher calls sweep()
  product(add, {"seed": range(5), "perturb.time": ["0", "10"], "perturb.kind": ["batch", "gaussian"]})
