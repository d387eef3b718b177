"""XLA flags: GPU determinism (added by default, off on request) and CPU speed, never overriding a user's XLA_FLAGS."""

import os
import subprocess
import sys

from butterfly_jax import runtime


def test_flags_are_added_without_overriding_the_user():
  assert runtime.xla_flags("", True, {}) == "--xla_gpu_deterministic_ops=true --xla_gpu_autotune_level=0"
  assert runtime.xla_flags("--xla_gpu_autotune_level=4", True, {}) == (
      "--xla_gpu_autotune_level=4 --xla_gpu_deterministic_ops=true")
  assert runtime.xla_flags("--foo=1", False, {}) == "--foo=1"
  cpu = {"--xla_cpu_experimental_ynn_fusion_type": "individual_convolution"}
  assert runtime.xla_flags("--foo=1", False, cpu) == (
      "--foo=1 --xla_cpu_experimental_ynn_fusion_type=individual_convolution")
  assert runtime.xla_flags("--xla_cpu_experimental_ynn_fusion_type=", False, cpu) == (
      "--xla_cpu_experimental_ynn_fusion_type=")  # the user's choice (here: YNNPACK off) is kept


def test_cpu_flags_only_for_the_measured_jaxlib(monkeypatch):
  from jaxlib import version
  monkeypatch.setattr(version, "__version__", "0.10.2")
  assert runtime.default_cpu_flags() == runtime.CPU_FLAGS
  monkeypatch.setattr(version, "__version__", "0.11.0")
  assert runtime.default_cpu_flags() == {}
  assert runtime.xla_flags("", False) == ""


def test_configure_sets_xla_flags_before_backends_start():
  code = ("import os; from butterfly_jax import runtime; ok = runtime.configure(True); import jax; "
          "jax.numpy.zeros(1).block_until_ready(); print(ok, os.environ['XLA_FLAGS'])")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  cpu = [f"{k}={v}" for k, v in runtime.default_cpu_flags().items()]
  assert out.stdout.split() == ["True", "--xla_gpu_deterministic_ops=true", "--xla_gpu_autotune_level=0", *cpu]
