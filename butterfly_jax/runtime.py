"""Accelerator settings that must be chosen before JAX starts its backends: determinism on GPU.

On GPUs, XLA may pick reduction strategies (atomics in scatter/reduction kernels) and convolution
algorithms (autotuning by timing) that differ from run to run, so the same config could give different
bits. ``runtime.deterministic`` (the default) sets ``--xla_gpu_deterministic_ops=true`` (deterministic
reductions) and ``--xla_gpu_autotune_level=0`` (no timing-dependent algorithm choice) in ``XLA_FLAGS``;
``runtime.deterministic=False`` trades them for speed. The flags are ignored on CPU and TPU. Flags already
in ``XLA_FLAGS`` win: a user's explicit choice is kept.
"""

import logging
import os

DETERMINISTIC_FLAGS = {"--xla_gpu_deterministic_ops": "true", "--xla_gpu_autotune_level": "0"}


def xla_flags(current: str, deterministic: bool) -> str:
  """``current`` (an XLA_FLAGS string) with the determinism flags added where not already set."""
  if not deterministic:
    return current
  present = {f.split("=", 1)[0] for f in current.split()}
  extra = [f"{k}={v}" for k, v in DETERMINISTIC_FLAGS.items() if k not in present]
  return " ".join([current.strip(), *extra]).strip()


def configure(deterministic: bool) -> bool:
  """Sets ``XLA_FLAGS`` for ``deterministic`` before JAX's backends start. Returns whether the setting took
  effect (False, with a warning, if the backends were already running, e.g. in a notebook: restart it, or
  set XLA_FLAGS yourself before importing JAX)."""
  from jax._src import xla_bridge
  wanted = xla_flags(os.environ.get("XLA_FLAGS", ""), deterministic)
  if wanted == os.environ.get("XLA_FLAGS", ""):
    return True
  if xla_bridge.backends_are_initialized():
    import jax
    if jax.default_backend() == "gpu":
      logging.warning("runtime.deterministic: JAX's backends are already running, so XLA_FLAGS cannot change; "
                      "set XLA_FLAGS=%r before JAX starts for bitwise reproducible GPU runs", wanted)
    return False
  os.environ["XLA_FLAGS"] = wanted
  return True
