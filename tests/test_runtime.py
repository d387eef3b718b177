"""XLA flags: GPU determinism (added by default, off on request) and CPU speed, never overriding a user's XLA_FLAGS."""

import os
import subprocess
import sys
import textwrap

import pytest

from butterfly_jax.io import runtime
import xla_flags


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
  monkeypatch.setattr(runtime, "cpu_has_avx512", lambda: True)
  monkeypatch.setattr(version, "__version__", "0.10.2")
  assert runtime.default_cpu_flags() == runtime.CPU_FLAGS_X86
  monkeypatch.setattr(version, "__version__", "0.11.0")
  assert runtime.default_cpu_flags() == {}
  assert runtime.xla_flags("", False) == ""


@pytest.mark.parametrize("avx512, expected", [(True, ""), (False, ""), (None, "individual_convolution")])
def test_cpu_flags_follow_the_instruction_set(avx512, expected, monkeypatch):
  """YNNPACK off on x86 (with AVX-512 or without), for convolutions only elsewhere (ARM, unknown); XLA's loop
  emitters everywhere (the unrolled members' copies compile alike)."""
  from jaxlib import version
  monkeypatch.setattr(version, "__version__", "0.10.2")
  monkeypatch.setattr(runtime, "cpu_has_avx512", lambda: avx512)
  assert runtime.default_cpu_flags() == {"--xla_cpu_experimental_ynn_fusion_type": expected,
                                         "--xla_cpu_use_fusion_emitters": "false"}
  assert runtime.xla_flags("", False) == (f"--xla_cpu_experimental_ynn_fusion_type={expected} "
                                          "--xla_cpu_use_fusion_emitters=false")


def test_avx512_is_read_from_the_cpu_flags():
  zen4 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse sse2 avx avx2 avx512f avx512bw\n"
  zen3 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
  arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\n"
  assert runtime.cpu_has_avx512(zen4) is True
  assert runtime.cpu_has_avx512(zen3) is False
  assert runtime.cpu_has_avx512(arm) is None
  assert runtime.cpu_has_avx512("") is None
  assert runtime.cpu_has_avx512() in (True, False, None)  # this machine's /proc/cpuinfo, or none
  two = zen3 + "\nprocessor\t: 1\nmodel name\t: Other\nflags\t\t: avx512f\n"
  assert runtime.cpu_info(two)["model name"] == "AMD EPYC" and runtime.cpu_has_avx512(two) is False  # the first


TOO_LATE = "JAX's backends started before butterfly_jax could set XLA_FLAGS"


def _python(code: str, timeout: int = 120, xla_flags: str | None = None):
  """``python -c code`` in an environment without XLA_FLAGS (as a fresh notebook kernel has), or with only
  ``xla_flags``."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if xla_flags is not None:
    env["XLA_FLAGS"] = xla_flags
  out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                       timeout=timeout)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def test_configure_sets_xla_flags_before_backends_start():
  """The notebook's first-cell call: the flags are set, in effect, and nothing is said."""
  out = _python("""
      import os
      from butterfly_jax.io import runtime
      ok = runtime.configure()
      import jax
      jax.numpy.zeros(1).block_until_ready()
      print(ok, runtime.configure(True), os.environ['XLA_FLAGS'])  # a run's own call then finds them set
      """)
  cpu = [f"{k}={v}" for k, v in runtime.default_cpu_flags().items()]
  assert out.stdout.split() == ["True", "True", "--xla_gpu_deterministic_ops=true", "--xla_gpu_autotune_level=0",
                                *cpu]
  assert TOO_LATE not in out.stderr


@pytest.mark.slow
def test_a_run_after_jax_started_warns_once_what_it_cannot_set(tmp_path):
  """A notebook that used JAX before its first run: one warning naming the CPU flag and its consequence. (The
  user's only flag here is the suite's XLA level, which compiles the run faster and is not a flag the run sets.)"""
  if not runtime.default_cpu_flags():
    pytest.skip("no CPU flags for this jaxlib: nothing that changes CPU results is missing")
  level = f"{xla_flags.LEVEL}=0"
  out = _python(f"""
      import os
      import jax
      jax.numpy.zeros(1).block_until_ready()
      import butterfly_jax
      from butterfly_jax.io import runtime
      from butterfly_jax.run.configs_embedded import smoke
      butterfly_jax.run_experiment(smoke(), {str(tmp_path / "run")!r})
      print(runtime.configure(True), os.environ.get('XLA_FLAGS'))
      """, timeout=600, xla_flags=level)
  assert out.stdout.split() == ["False", level]  # left as the user set them
  assert out.stderr.count(TOO_LATE) == 1, out.stderr[-3000:]
  line = next(l for l in out.stderr.splitlines() if TOO_LATE in l)
  flags = runtime.default_cpu_flags()  # this machine's choice
  cpu = " ".join(f"{k}={v}" for k, v in flags.items())
  assert f"{cpu} {'is' if len(flags) == 1 else 'are'} not in effect: CPU results may differ from command-line runs in their last bits" in line
  # the suggested XLA_FLAGS keep the user's own first
  assert "butterfly_jax.io.runtime.configure()" in line and f"XLA_FLAGS='{level} --xla_gpu_deterministic_ops=true" in line
  assert (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize("backend, warned", [
    ("gpu", "so --xla_gpu_deterministic_ops=true is not in effect: GPU runs may not be bitwise reproducible"),
    ("cpu", "so --xla_cpu_experimental_ynn_fusion_type=individual_convolution --xla_cpu_use_fusion_emitters=false "
            "are not in effect: CPU results may differ from command-line runs in their last bits"),
    ("tpu", None)])
def test_too_late_warns_once_about_what_matters_on_the_backend(backend, warned, monkeypatch, caplog):
  import jax
  monkeypatch.setattr(runtime, "backends_started", lambda: True)
  monkeypatch.setattr(runtime, "default_cpu_flags", lambda: dict(runtime.CPU_FLAGS))
  monkeypatch.setattr(runtime, "_warned", False)
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_autotune_level=4")  # the user's own choice is not missing
  with caplog.at_level("WARNING"):
    assert not runtime.configure(True) and not runtime.configure(True) and not runtime.configure(False)
  assert os.environ["XLA_FLAGS"] == "--xla_gpu_autotune_level=4"  # left as it is: it can no longer act
  messages = [r.getMessage() for r in caplog.records if TOO_LATE in r.getMessage()]
  assert len(messages) == (0 if warned is None else 1), messages
  assert warned is None or warned in messages[0], messages
