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

from butterfly_jax import configs_embedded, rundir as rundir_lib



def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _strip(results: dict) -> dict:
  return {k: v for k, v in results.items() if k not in ("timing", "provenance", "members_devices")}


def test_two_processes_share_one_family_and_match_one_device_bitwise(smoke_run, tmp_path):
  _, one_dir, one = smoke_run
  workdir = tmp_path / "two_hosts"
  # this process's XLA flags (tests/conftest.py: the run's flags), plus 2 CPU devices
  flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
  env = dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")
  address = f"localhost:{_free_port()}"
  cmd = [sys.executable, "-m", "butterfly_jax.main", f"--config={configs_embedded.__file__}:smoke",
         "--config.perturb.scales=(0.0,0.01,1.0)", f"--workdir={workdir}", "--distributed",
         f"--coordinator={address}", "--num_processes=2"]
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
