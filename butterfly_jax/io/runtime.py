"""XLA settings that must be chosen before JAX starts its backends: determinism on GPU, speed on CPU.

On GPUs, XLA may pick reduction strategies (atomics in scatter/reduction kernels) and convolution
algorithms (autotuning by timing) that differ from run to run, so the same config could give different
bits. ``runtime.deterministic`` (the default) sets ``--xla_gpu_deterministic_ops=true`` (deterministic
reductions) and ``--xla_gpu_autotune_level=0`` (no timing-dependent algorithm choice) in ``XLA_FLAGS``;
``runtime.deterministic=False`` trades them for speed. The flags are ignored on CPU and TPU. Flags already
in ``XLA_FLAGS`` win: a user's explicit choice is kept.

CPU (always, with the jaxlib versions in ``CPU_FLAGS_JAXLIB``), by the CPU:

* x86-64 (``CPU_FLAGS_X86``): ``--xla_cpu_experimental_ynn_fusion_type=`` (YNNPACK off). jaxlib 0.10.2 hands
  YNNPACK convolutions, dots, elementwise chains and reductions; on two of the three x86 machines measured its
  convolutions were much slower than XLA's own: without YNNPACK a ResNet-20 pair's step was 2.4x faster on an
  AVX2-only AMD EPYC and 1.56x on an AVX-512 Intel Xeon, the small CNN's 1.35x and 1.46x, an MLP's not clearly
  changed (``bench/cpu_flags.py``). On the third, an AVX-512 AMD Zen 4, YNNPACK for convolutions only was
  about 8% faster than YNNPACK off (one reading under load), so off is the better bet on an unknown x86 CPU.
* elsewhere (ARM, or a CPU whose flags cannot be read; ``CPU_FLAGS``, not measured there):
  ``--xla_cpu_experimental_ynn_fusion_type=individual_convolution`` hands only convolutions to YNNPACK, whose
  reductions of the per-pixel LayerNorm statistics were slower than XLA's fused loops wherever measured.

Everywhere: ``--xla_cpu_use_fusion_emitters=false`` (XLA's loop emitters): with the fusion emitters, the K copies
of a step that the members' ``sequential`` strategy unrolls into one program were compiled differently for one
network (a ResNet whose LayerNorms have 8 channels), so a σ = 0 twin parted from child 0 at the first step; without
them it keeps its twin bitwise, at a step cost of 0.5-4% (MLP, CNN, ResNet-20; BUILD_NOTES.md).

The measurements: BUILD_NOTES.md, "XLA:CPU flags", "Machine variance" and "Twins under the sequential strategy". CPU results change in their last
bits (reductions sum in another order), so runs record ``XLA_FLAGS`` in their provenance. A flag already in
``XLA_FLAGS`` wins: ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution`` restores
jaxlib's default. The flag is experimental and an unknown flag aborts XLA, so it is only added for jaxlib
versions where it was measured.

The flags reach XLA only if ``XLA_FLAGS`` holds them when JAX starts its backends (its first computation);
XLA reads them once per process. The command line and ``experiment.run`` call :func:`configure` before that.
A notebook that used JAX before starting a run is too late: the run goes on with jaxlib's defaults and one
warning per process says which flags are missing and what that changes. For the command line's bits in a
notebook, call ``butterfly_jax.io.runtime.configure()`` in its first cell, before anything uses JAX, or start
it with ``XLA_FLAGS`` set (the warning names the value).
"""

import logging
import os
import sys

DETERMINISTIC_FLAGS = {"--xla_gpu_deterministic_ops": "true", "--xla_gpu_autotune_level": "0"}
# XLA's older loop emitters, not its fusion emitters: under the members' sequential strategy (K copies of the step in
# one program) a ResNet with 8-channel LayerNorms compiled its copies differently with the fusion emitters, and a
# σ = 0 twin parted from child 0 at step 0 (BUILD_NOTES.md, "Twins under the sequential strategy")
TWIN_FLAGS = {"--xla_cpu_use_fusion_emitters": "false"}
CPU_FLAGS = {"--xla_cpu_experimental_ynn_fusion_type": "individual_convolution", **TWIN_FLAGS}
CPU_FLAGS_X86 = {"--xla_cpu_experimental_ynn_fusion_type": "", **TWIN_FLAGS}  # YNNPACK off
CPU_FLAGS_JAXLIB = ("0.10.",)  # version prefixes of jaxlib where CPU_FLAGS exist and were measured


def cpu_info(cpuinfo: str | None = None) -> dict | None:
  """The first processor's fields in Linux's ``/proc/cpuinfo`` (or in the text ``cpuinfo``), e.g. ``model name``
  and ``flags``; None where there is no such file."""
  if cpuinfo is None:
    try:
      with open("/proc/cpuinfo", errors="replace") as f:
        cpuinfo = f.read(1 << 16)
    except OSError:
      return None
  fields = {}
  for line in cpuinfo.splitlines():
    if not line.strip() and fields:
      break  # the end of the first processor's block
    if ":" in line:
      key, value = line.split(":", 1)
      fields.setdefault(key.strip(), value.strip())
  return fields


def cpu_has_avx512(cpuinfo: str | None = None) -> bool | None:
  """Whether this x86 CPU has AVX-512 (``avx512f`` among :func:`cpu_info`'s flags); None where that cannot be
  told (no ``/proc/cpuinfo``, or a CPU without x86 flags)."""
  flags = (cpu_info(cpuinfo) or {}).get("flags", "").split()
  if "sse2" not in flags:
    return None
  return "avx512f" in flags


def default_cpu_flags() -> dict:
  """The CPU flags for this jaxlib and CPU: none for a jaxlib they were not measured with; ``CPU_FLAGS_X86`` on
  an x86 CPU (one whose flags :func:`cpu_has_avx512` can read, with or without AVX-512); ``CPU_FLAGS``
  otherwise."""
  try:
    from jaxlib import version
  except ImportError:
    return {}
  if not version.__version__.startswith(CPU_FLAGS_JAXLIB):
    return {}
  return dict(CPU_FLAGS if cpu_has_avx512() is None else CPU_FLAGS_X86)


def xla_flags(current: str, deterministic: bool, cpu_flags: dict | None = None) -> str:
  """``current`` (an XLA_FLAGS string) with the determinism flags (if ``deterministic``) and the CPU flags
  (``cpu_flags``; ``None``: :func:`default_cpu_flags`) added where not already set."""
  wanted = {**(DETERMINISTIC_FLAGS if deterministic else {}),
            **(default_cpu_flags() if cpu_flags is None else cpu_flags)}
  present = {f.split("=", 1)[0] for f in current.split()}
  extra = [f"{k}={v}" for k, v in wanted.items() if k not in present]
  return " ".join([current.strip(), *extra]).strip()


def backends_started() -> bool:
  """Whether JAX's backends already run, so that ``XLA_FLAGS`` can no longer change what XLA does."""
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # no public API for this (JAX 0.10)
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):  # a JAX without it: set the flags as if in time (harmless if late)
    return False


_CONSEQUENCES = {
    "cpu": (CPU_FLAGS, "CPU results may differ from command-line runs in their last bits"),
    "gpu": (DETERMINISTIC_FLAGS, "GPU runs may not be bitwise reproducible (reductions and autotuning may vary "
                                 "from run to run)"),
}
_warned = False  # the too-late warning, once per process


def _warn_too_late(current: str, wanted: str) -> None:
  """The one warning per process that the backends started without flags that change results on the backend
  in use (none on TPU, none when only the other platform's flags are missing)."""
  global _warned
  import jax
  present = {f.split("=", 1)[0] for f in current.split()}
  flags, consequence = _CONSEQUENCES.get(jax.default_backend(), ({}, ""))
  missing = [f for f in wanted.split() if f.split("=", 1)[0] in flags and f.split("=", 1)[0] not in present]
  if _warned or not missing:
    return
  _warned = True
  logging.warning(
      "JAX's backends started before butterfly_jax could set XLA_FLAGS, so %s %s not in effect: %s. For the "
      "command line's bits, restart, then call butterfly_jax.io.runtime.configure() before anything uses JAX (a "
      "notebook's first cell), or set XLA_FLAGS=%r in the environment Python starts in",
      " ".join(missing), "is" if len(missing) == 1 else "are", consequence, wanted)


def configure(deterministic: bool = True) -> bool:
  """Adds the flags for ``deterministic`` (``runtime.deterministic``; True by default, as in the configs) and
  the CPU flags to ``XLA_FLAGS``, which must happen before JAX's backends start. Returns whether
  ``XLA_FLAGS`` holds them. Too late (the backends already run, e.g. in a notebook that used JAX): False, and
  XLA_FLAGS is left as it is, with one warning per process naming the flags that would change results on
  this backend and how.

  In a notebook, for the same bits as the command line::

    from butterfly_jax.io import runtime
    runtime.configure()   # first cell, before anything uses JAX
  """
  current = os.environ.get("XLA_FLAGS", "")
  wanted = xla_flags(current, deterministic)
  if wanted == current:
    return True
  if backends_started():
    _warn_too_late(current, wanted)
    return False
  os.environ["XLA_FLAGS"] = wanted
  return True
