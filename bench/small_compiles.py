"""How many XLA programs a smoke run compiles, by call site, and why arithmetic stays eager (BUILD_NOTES.md,
"Test suite").

    python bench/small_compiles.py            # at XLA's default level; XLA_FLAGS=... to choose another

Prints (1) the number of programs one smoke family (K = 4) compiles in this fresh process and the call sites
in butterfly_jax that compile most of them, and (2) whether a fused ``b + a**2`` and a fused mean equal the
same operations run eagerly, bitwise (at XLA's default level they do not: an FMA, a reordered reduction).
"""

import collections
import logging
import tempfile
import traceback

import jax
import jax.numpy as jnp

from butterfly_jax.io import runtime
from butterfly_jax.run.configs_embedded import smoke
from butterfly_jax.run.experiment import run


def count_compiles():
  sites = collections.Counter()

  class Handler(logging.Handler):
    def emit(self, record):
      if record.getMessage().startswith("Finished XLA compilation of"):
        frames = [f for f in traceback.extract_stack() if "butterfly_jax" in f.filename]
        sites[" < ".join(f"{f.filename.split('/')[-1]}:{f.lineno}" for f in frames[-2:][::-1])] += 1

  jax.config.update("jax_log_compiles", True)
  logger = logging.getLogger("jax")
  logger.addHandler(Handler())
  logger.setLevel(logging.DEBUG)
  logger.propagate = False
  c = smoke()
  c.perturb.scales = (0.0, 1e-2, 1.0)
  run(c, tempfile.mkdtemp())
  jax.config.update("jax_log_compiles", False)
  print(f"programs compiled by one smoke run: {sum(sites.values())}")
  for site, n in sites.most_common(12):
    print(f"  {n:4d}  {site}")


def fused_vs_eager():
  key = jax.random.key(0)
  a = jax.random.normal(key, (1_000_003,))
  b = 3 * jax.random.normal(jax.random.fold_in(key, 1), (1_000_003,))
  eager = b + jnp.square(a)
  fused = jax.jit(lambda a, b: b + jnp.square(a))(a, b)
  print(f"b + a**2: {int((eager != fused).sum())} of {a.size} elements differ between fused and eager")
  m_eager = float(jnp.mean(jnp.maximum(b - a * a / 7.0, 0.0)) / 6.0)
  m_fused = float(jax.jit(lambda a, b: jnp.mean(jnp.maximum(b - a * a / 7.0, 0.0)) / 6.0)(a, b))
  print(f"a mean: eager {m_eager!r}, fused {m_fused!r}, equal: {m_eager == m_fused}")


if __name__ == "__main__":
  runtime.configure(True)
  count_compiles()
  fused_vs_eager()
