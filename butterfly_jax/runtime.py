"""XLA settings that must be chosen before JAX starts its backends: determinism on GPU, speed on CPU.

On GPUs, XLA may pick reduction strategies (atomics in scatter/reduction kernels) and convolution
algorithms (autotuning by timing) that differ from run to run, so the same config could give different
bits. ``runtime.deterministic`` (the default) sets ``--xla_gpu_deterministic_ops=true`` (deterministic
reductions) and ``--xla_gpu_autotune_level=0`` (no timing-dependent algorithm choice) in ``XLA_FLAGS``;
``runtime.deterministic=False`` trades them for speed. The flags are ignored on CPU and TPU. Flags already
in ``XLA_FLAGS`` win: a user's explicit choice is kept.

CPU (always, with the jaxlib versions in ``CPU_FLAGS_JAXLIB``): ``--xla_cpu_experimental_ynn_fusion_type=
individual_convolution`` hands only convolutions to YNNPACK. jaxlib 0.10.2's default also hands it dots,
elementwise chains and reductions, and its reductions of the per-pixel LayerNorm statistics (with the
broadcasts feeding them) are slower than XLA's own fused loops; a network without norms whose max-pooling
reductions suit YNNPACK (the small CNN) is slower with the flag, MLPs are unaffected. The project's configs
train MLPs and LayerNorm networks, hence the default (the measurements: BUILD_NOTES.md, "XLA:CPU flags").
CPU results change in their last bits (reductions sum in another order). A flag already in ``XLA_FLAGS``
wins: ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution`` restores jaxlib's default.
The flag is experimental and an unknown flag aborts XLA, so it is only added for jaxlib versions where it was
measured.
"""

import logging
import os

DETERMINISTIC_FLAGS = {"--xla_gpu_deterministic_ops": "true", "--xla_gpu_autotune_level": "0"}
CPU_FLAGS = {"--xla_cpu_experimental_ynn_fusion_type": "individual_convolution"}
CPU_FLAGS_JAXLIB = ("0.10.",)  # version prefixes of jaxlib where CPU_FLAGS exist and were measured


def default_cpu_flags() -> dict:
  """``CPU_FLAGS`` if the installed jaxlib is one they were measured with, else none."""
  try:
    from jaxlib import version
  except ImportError:
    return {}
  return dict(CPU_FLAGS) if version.__version__.startswith(CPU_FLAGS_JAXLIB) else {}


def xla_flags(current: str, deterministic: bool, cpu_flags: dict | None = None) -> str:
  """``current`` (an XLA_FLAGS string) with the determinism flags (if ``deterministic``) and the CPU flags
  (``cpu_flags``; ``None``: :func:`default_cpu_flags`) added where not already set."""
  wanted = {**(DETERMINISTIC_FLAGS if deterministic else {}),
            **(default_cpu_flags() if cpu_flags is None else cpu_flags)}
  present = {f.split("=", 1)[0] for f in current.split()}
  extra = [f"{k}={v}" for k, v in wanted.items() if k not in present]
  return " ".join([current.strip(), *extra]).strip()


def configure(deterministic: bool) -> bool:
  """Sets ``XLA_FLAGS`` for ``deterministic`` (and the CPU flags) before JAX's backends start. Returns whether
  the setting took effect (False, with a warning, if the backends were already running, e.g. in a notebook: restart it, or
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
