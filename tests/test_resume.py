"""Exact resume: a run killed with SIGKILL resumes from its last intact checkpoint and ends bitwise identical."""

import json
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from butterfly_jax import rundir as rundir_lib
from butterfly_jax.experiment import run

KILLER = textwrap.dedent("""
    import os, signal, sys
    from butterfly_jax import rundir
    from butterfly_jax.configs_embedded import smoke
    from butterfly_jax.experiment import run
    phase, step = sys.argv[2], int(sys.argv[3])
    log = rundir.RunDir.log
    def log_then_die(self, record):
      log(self, record)
      if record["phase"] == phase and record["step"] == step:
        os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, no atexit: as a pre-empted job
    rundir.RunDir.log = log_then_die
    c = smoke()
    {edit}
    run(c, sys.argv[1])
""")


def _config(c):
  c.train.steps = "80"
  c.perturb.time = "30"
  c.checkpoint.every_steps = "20"
  c.eval.every_steps = 20
  c.eval.cka_examples = 100
  return c


EDIT = 'c.train.steps = "80"; c.perturb.time = "30"; c.checkpoint.every_steps = "20"; c.eval.every_steps = 20; c.eval.cka_examples = 100'


def _killed_run(workdir, phase, step):
  done = subprocess.run([sys.executable, "-c", KILLER.replace("{edit}", EDIT), str(workdir), phase, str(step)],
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == -9, done.stderr[-2000:]
  assert not (workdir / "results.json").exists()


def _strip(res):
  return {k: v for k, v in res.items() if k not in ("timing", "provenance")}


def _metrics(workdir):
  return [{k: v for k, v in json.loads(l).items() if k != "time_s"}
          for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def _params(workdir):
  return rundir_lib.restore_checkpoint(workdir / "checkpoints" / "children")["params"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  from butterfly_jax.configs_embedded import smoke
  workdir = tmp_path_factory.mktemp("uninterrupted")
  return workdir, run(_config(smoke()), workdir)


def _assert_same_run(workdir, res, reference):
  ref_dir, ref = reference
  assert _strip(res) == _strip(ref)
  assert _metrics(workdir) == _metrics(ref_dir)
  for a, b in zip(jax.tree_util.tree_leaves(_params(workdir)), jax.tree_util.tree_leaves(_params(ref_dir))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sigkill_during_children_resumes_bitwise_and_torn_checkpoint_falls_back(tmp_path, smoke_config, reference):
  killed = tmp_path / "killed"
  _killed_run(killed, "children", 50)  # checkpoints at 20 and 30 (trunk), 40 (children); killed after step 50
  states = sorted(p.name for p in (killed / "checkpoints" / "state").iterdir())
  assert states == ["0_0000000030", "1_0000000040"]
  torn = tmp_path / "torn"
  shutil.copytree(killed, torn)

  meta, _ = rundir_lib.RunDir(killed).latest_state()
  assert (meta["phase"], meta["step"]) == ("children", 40)
  res = run(_config(smoke_config), killed)
  assert res["timing"]["resumed_from"] == {"phase": "children", "step": 40}
  _assert_same_run(killed, res, reference)

  # A torn newest checkpoint (a file cut short) is detected; the run resumes from the previous one.
  victim = max((p for p in (torn / "checkpoints" / "state" / "1_0000000040" / "tree").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
  victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
  meta, _ = rundir_lib.RunDir(torn).latest_state()
  assert (meta["phase"], meta["step"]) == ("trunk", 30)
  res = run(_config(smoke_config), torn)
  assert res["timing"]["resumed_from"] == {"phase": "trunk", "step": 30}
  _assert_same_run(torn, res, reference)


def test_sigkill_during_trunk_resumes_bitwise(tmp_path, smoke_config, reference):
  killed = tmp_path / "killed"
  _killed_run(killed, "trunk", 30)  # after the log line at 30, before the checkpoint at 30
  assert sorted(p.name for p in (killed / "checkpoints" / "state").iterdir()) == ["0_0000000020"]
  res = run(_config(smoke_config), killed)
  assert res["timing"]["resumed_from"] == {"phase": "trunk", "step": 20}
  _assert_same_run(killed, res, reference)


def test_a_checkpoint_without_manifest_is_ignored(tmp_path, smoke_config):
  c = _config(smoke_config)
  c.train.steps = "40"
  res = run(c, tmp_path)
  rd = rundir_lib.RunDir(tmp_path)
  (tmp_path / "results.json").unlink()  # pretend the run stopped after its last checkpoint
  newest = sorted((tmp_path / "checkpoints" / "state").iterdir())[-1]
  (newest / "manifest.json").unlink()
  meta, _ = rd.latest_state()
  assert (meta["phase"], meta["step"]) != ("children", 40)
  again = run(c, tmp_path)
  assert _strip(again) == _strip(res)


def test_other_config_in_an_unfinished_workdir_is_refused_unless_discarded(tmp_path, smoke_config):
  c = _config(smoke_config)
  _killed_run(tmp_path, "children", 50)
  before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "checkpoints").rglob("*"))
  c.seed = 3  # not the config the checkpoints belong to
  with pytest.raises(rundir_lib.RunDirError, match=r"unfinished run of another config \(it differs in seed\); "
                                                   r"nothing was deleted"):
    run(c, tmp_path)
  assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "checkpoints").rglob("*")) == before
  res = run(c, tmp_path, discard_unfinished=True)
  assert "resumed_from" not in res["timing"]
  assert json.loads((tmp_path / "config.json").read_text())["seed"] == 3


def test_fields_that_cannot_change_results_do_not_make_another_config(tmp_path, smoke_config, reference):
  c = _config(smoke_config)
  _killed_run(tmp_path, "children", 50)
  c.log.progress = not c.log.progress   # logging only: the same run, which resumes
  res = run(c, tmp_path)
  assert res["timing"]["resumed_from"] == {"phase": "children", "step": 40}
  _assert_same_run(tmp_path, res, reference)
  c.log.every_steps = 5                 # and a finished run stays finished
  assert run(c, tmp_path) == res