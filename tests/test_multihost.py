"""One run over two processes under ``jax.distributed`` (``python -m butterfly_jax.main --distributed``, 2 CPU
devices each): the family's members span both processes' devices, and the results equal the single-process,
single-device run bitwise."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from butterfly_jax.io import rundir as rundir_lib
from butterfly_jax.run import configs_embedded
import xla_flags

pytestmark = pytest.mark.slow  # the slow tier: two processes sharing one family


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _strip(results: dict) -> dict:
  return {k: v for k, v in results.items() if k not in ("timing", "provenance", "members_devices")}


def _one_device(workdir, *overrides) -> dict:
  """The smoke family on one device in a subprocess at XLA's default level (tests/xla_flags.py), as the
  two-process runs compile: the reference they must equal bitwise."""
  env = dict(os.environ, XLA_FLAGS=xla_flags.default_level(), JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-m", "butterfly_jax.main", f"--config={configs_embedded.__file__}:smoke",
                         f"--workdir={workdir}", *overrides], env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads((workdir / "results.json").read_text())


# Both tests' family: K = 4 members, one per device of the two processes, 80 steps perturbed at 30 with a
# checkpoint every 20 (the second test kills both processes at 60 and resumes from 40).
OVERRIDES = ("--config.perturb.scales=(0.0,0.01,1.0)", "--config.train.steps=80", "--config.perturb.time=30",
             "--config.checkpoint.every_steps=20", "--config.eval.cka_examples=100")


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  """(workdir, results) of the family on one device: the reference both tests must equal bitwise."""
  one_dir = tmp_path_factory.mktemp("one") / "run"
  return one_dir, _one_device(one_dir, *OVERRIDES)


def test_two_processes_share_one_family_and_match_one_device_bitwise(tmp_path, one_device):
  one_dir, one = one_device
  workdir = tmp_path / "two_hosts"
  # this process's XLA flags (tests/conftest.py: the run's flags) at XLA's default level, plus 2 CPU devices
  flags = xla_flags.default_level("--xla_force_host_platform_device_count=2")
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
  address = f"localhost:{_free_port()}"
  cmd = [sys.executable, "-m", "butterfly_jax.main", f"--config={configs_embedded.__file__}:smoke", *OVERRIDES,
         f"--workdir={workdir}", "--distributed", f"--coordinator={address}", "--num_processes=2"]
  procs = [subprocess.Popen(cmd + [f"--process_id={i}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f"process {i}:\n{out[-3000:]}"
  assert "results:" in outs[0] and "results:" not in outs[1]  # process 0 reports
  two = json.loads((workdir / "results.json").read_text())
  assert two["members_devices"] == 4 and len(two["provenance"]["devices"]) == 4
  assert _strip(two) == _strip(one)
  strip = lambda line: {k: v for k, v in json.loads(line).items() if k != "time_s"}
  assert [strip(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()] == \
      [strip(l) for l in (one_dir / "metrics.jsonl").read_text().splitlines()]
  a = rundir_lib.restore_checkpoint(one_dir / "checkpoints" / "children")["params"]
  b = rundir_lib.restore_checkpoint(workdir / "checkpoints" / "children")["params"]
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


KILLED = """
import os, signal, sys
import jax
from butterfly_jax.io import rundir, runtime
runtime.configure(True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from butterfly_jax.run.configs_embedded import smoke
from butterfly_jax.run.experiment import run
log = rundir.RunDir.log
def log_then_die(self, record):  # both processes reach this line at the same step, after the same gather
  log(self, record)
  if record["phase"] == "children" and record["step"] == 60:
    os.kill(os.getpid(), signal.SIGKILL)   # as a pre-empted job: no cleanup
rundir.RunDir.log = log_then_die
c = smoke()
c.perturb.scales = (0.0, 0.01, 1.0)
c.train.steps, c.perturb.time, c.checkpoint.every_steps, c.eval.cka_examples = "80", "30", "20", 100
run(c, sys.argv[3])
"""


def test_two_processes_killed_and_restarted_resume_exactly(tmp_path, one_device):
  one_dir, one = one_device
  workdir = tmp_path / "two_hosts"
  flags = xla_flags.default_level("--xla_force_host_platform_device_count=2")
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
  address = f"localhost:{_free_port()}"
  procs = [subprocess.Popen([sys.executable, "-c", KILLED, address, str(i), str(workdir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  # each kills itself at the same step; whichever goes second may instead be ended by JAX's distributed
  # runtime when it sees its peer die: either way both stop there, as when a pre-empted job loses its hosts
  assert all(p.returncode != 0 for p in procs) and -9 in [p.returncode for p in procs], \
      outs[0][-2000:] + outs[1][-2000:]
  assert not (workdir / "results.json").exists()
  cmd = [sys.executable, "-m", "butterfly_jax.main", f"--config={configs_embedded.__file__}:smoke", *OVERRIDES,
         f"--workdir={workdir}", "--distributed", f"--coordinator=localhost:{_free_port()}", "--num_processes=2"]
  procs = [subprocess.Popen(cmd + [f"--process_id={i}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:]
  two = json.loads((workdir / "results.json").read_text())
  assert two["timing"]["resumed_from"] == {"phase": "children", "step": 40}
  assert two["members_devices"] == 4  # the resumed family spans both processes' devices again
  assert _strip(two) == _strip(one)
  strip = lambda line: {k: v for k, v in json.loads(line).items() if k != "time_s"}
  assert [strip(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()] == \
      [strip(l) for l in (one_dir / "metrics.jsonl").read_text().splitlines()]
