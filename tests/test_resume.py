"""Exact resume: a run killed with SIGKILL (during training or inside a checkpoint save, under ``sequential`` and
``vmap``) resumes from its last intact checkpoint and ends bitwise identical; so does a run stopped by a stop signal
(SIGUSR1, SIGTERM: a checkpoint at the next step boundary, exit status 75); one process at a time; a resume checks
the code and the ``init.checkpoint`` source it continues."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from butterfly_jax.io import rundir as rundir_lib
from butterfly_jax.run import interrupt, setup as setup_lib
from butterfly_jax.run.experiment import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KILLER = textwrap.dedent("""
    import os, signal, sys
    from butterfly_jax.io import rundir
    from butterfly_jax.run.configs_embedded import smoke
    from butterfly_jax.run.experiment import run
    phase, step = sys.argv[2], int(sys.argv[3])
    log = rundir.RunDir.log
    def log_then_die(self, record):
      log(self, record)
      if record["phase"] == phase and record["step"] == step:
        os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, no atexit: as a pre-empted job
    rundir.RunDir.log = log_then_die
    {hooks}
    c = smoke()
    {edit}
    run(c, sys.argv[1])
""")

# Kills inside the save of the children's checkpoint at step 40 (which also deletes the trunk's at 20):
# after its files are written (before they are fsynced and before the manifest), after the manifest's
# temporary file (before the rename), and half-way through deleting the old checkpoint.
SAVE_KILLS = {
    "tree": """
      fsync_tree = rundir.fsync_tree
      def fsync_tree_then_die(root):
        if "1_0000000040" in str(root):
          os.kill(os.getpid(), signal.SIGKILL)
        fsync_tree(root)
      rundir.fsync_tree = fsync_tree_then_die""",
    "manifest": """
      replace = os.replace
      def replace_then_die(src, dst):
        if str(dst).endswith("1_0000000040/manifest.json"):
          os.kill(os.getpid(), signal.SIGKILL)
        replace(src, dst)
      rundir.os.replace = replace_then_die""",
    "delete": """
      import shutil
      def rmtree_half_then_die(path, ignore_errors=False):
        files = sorted(p for p in __import__("pathlib").Path(path).rglob("*") if p.is_file())
        for f in files[: len(files) // 2]:
          f.unlink()
        os.kill(os.getpid(), signal.SIGKILL)
      rundir.shutil.rmtree = rmtree_half_then_die""",
}

# A kill at the K-th write of the run (a log line, a rename, a checkpoint's fsync, a deletion), K drawn at random.
RANDOM_KILL = """
  import random, shutil
  events = [0]
  kill_at = random.Random(int(os.environ["KILL_SEED"])).randint(1, 40)
  def counted(f):
    def g(*a, **k):
      events[0] += 1
      if events[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
      return f(*a, **k)
    return g
  rundir.RunDir.log = counted(rundir.RunDir.log)
  rundir.os.replace = counted(os.replace)
  rundir.fsync_tree = counted(rundir.fsync_tree)
  rundir.shutil.rmtree = counted(shutil.rmtree)"""


def _config(c):
  c.train.steps = "80"
  c.perturb.time = "30"
  c.checkpoint.every_steps = "20"
  c.eval.every_steps = 20
  c.eval.cka_examples = 100
  return c


EDIT = 'c.train.steps = "80"; c.perturb.time = "30"; c.checkpoint.every_steps = "20"; c.eval.every_steps = 20; c.eval.cka_examples = 100'


def _killer(edit=EDIT, hooks=""):
  return KILLER.replace("{edit}", edit).replace("{hooks}", textwrap.dedent(hooks).strip())


def _killed_run(workdir, phase, step, edit=EDIT, hooks="", env=None):
  done = subprocess.run([sys.executable, "-c", _killer(edit, hooks), str(workdir), phase, str(step)],
                        capture_output=True, text=True, timeout=600, env=None if env is None else {**os.environ, **env})
  assert done.returncode == -9, done.stderr[-2000:]
  assert not (workdir / "results.json").exists()


def _resumed(res):
  """Where the run resumed (its notes aside: a commit made meanwhile adds one about the git revision)."""
  return {k: v for k, v in res["timing"]["resumed_from"].items() if k in ("phase", "step")}


def _strip(res):
  return {k: v for k, v in res.items() if k not in ("timing", "provenance")}


def _metrics(workdir):
  return [{k: v for k, v in json.loads(l).items() if k != "time_s"}
          for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def _params(workdir):
  return rundir_lib.restore_checkpoint(workdir / "checkpoints" / "children")["params"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  from butterfly_jax.run.configs_embedded import smoke
  workdir = tmp_path_factory.mktemp("uninterrupted")
  return workdir, run(_config(smoke()), workdir)


@pytest.fixture(scope="module")
def reference_vmap(tmp_path_factory):
  from butterfly_jax.run.configs_embedded import smoke
  workdir = tmp_path_factory.mktemp("uninterrupted_vmap")
  c = _config(smoke())
  c.members.strategy = "vmap"
  return workdir, run(c, workdir)


def _assert_same_run(workdir, res, reference):
  ref_dir, ref = reference
  assert _strip(res) == _strip(ref)
  assert _metrics(workdir) == _metrics(ref_dir)
  for a, b in zip(jax.tree_util.tree_leaves(_params(workdir)), jax.tree_util.tree_leaves(_params(ref_dir))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
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
  assert _resumed(res) == {"phase": "children", "step": 40}
  _assert_same_run(killed, res, reference)

  # A torn newest checkpoint (a file cut short) is detected; the run resumes from the previous one.
  victim = max((p for p in (torn / "checkpoints" / "state" / "1_0000000040" / "tree").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
  victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
  meta, _ = rundir_lib.RunDir(torn).latest_state()
  assert (meta["phase"], meta["step"]) == ("trunk", 30)
  res = run(_config(smoke_config), torn)
  assert _resumed(res) == {"phase": "trunk", "step": 30}
  _assert_same_run(torn, res, reference)


@pytest.mark.slow
def test_sigkill_during_trunk_resumes_bitwise(tmp_path, smoke_config, reference):
  killed = tmp_path / "killed"
  _killed_run(killed, "trunk", 30)  # after the log line at 30, before the checkpoint at 30
  assert sorted(p.name for p in (killed / "checkpoints" / "state").iterdir()) == ["0_0000000020"]
  res = run(_config(smoke_config), killed)
  assert _resumed(res) == {"phase": "trunk", "step": 20}
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
  assert _resumed(res) == {"phase": "children", "step": 40}
  _assert_same_run(tmp_path, res, reference)
  c.log.every_steps = 5                 # and a finished run stays finished
  assert run(c, tmp_path) == res

@pytest.mark.parametrize("strategy,point,resumes_at", [
    ("sequential", "tree", ("trunk", 30)),
    ("vmap", "manifest", ("trunk", 30)),
    ("vmap", "delete", ("children", 40)),
])
@pytest.mark.slow
def test_sigkill_inside_a_checkpoint_save_resumes_bitwise(tmp_path, smoke_config, reference, reference_vmap,
                                                          strategy, point, resumes_at):
  killed = tmp_path / "killed"
  _killed_run(killed, "none", -1, edit=EDIT + f"; c.members.strategy = {strategy!r}", hooks=SAVE_KILLS[point])
  meta, _ = rundir_lib.RunDir(killed).latest_state()
  assert (meta["phase"], meta["step"]) == resumes_at
  c = _config(smoke_config)
  c.members.strategy = strategy
  res = run(c, killed)
  assert _resumed(res) == {"phase": resumes_at[0], "step": resumes_at[1]}
  _assert_same_run(killed, res, reference if strategy == "sequential" else reference_vmap)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [3])
def test_sigkill_at_a_random_write_resumes_bitwise(tmp_path, smoke_config, reference, seed):
  import random
  kill_at = random.Random(seed).randint(1, 40)
  _killed_run(tmp_path, "none", -1, hooks=RANDOM_KILL, env={"KILL_SEED": str(seed)})
  res = run(_config(smoke_config), tmp_path)
  assert "resumed_from" in res["timing"] or kill_at <= 3, kill_at  # the first writes come before any checkpoint
  _assert_same_run(tmp_path, res, reference)


PAUSER_HOOK = """
  log_then_wait = rundir.RunDir.log
  def log_then_pause(self, record):
    log_then_wait(self, record)
    if record["phase"] == "children" and record["step"] == 50:
      open(sys.argv[1] + ".paused", "w").close()
      time.sleep(600)   # holds the workdir, as a live run does
  rundir.RunDir.log = log_then_pause"""


def _tree(workdir):
  return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_second_process_on_a_live_workdir_is_refused_and_touches_nothing(tmp_path, smoke_config, reference):
  workdir = tmp_path / "run"
  hooks = "import time\n" + textwrap.dedent(PAUSER_HOOK).strip()
  first = subprocess.Popen([sys.executable, "-c", _killer(hooks=hooks), str(workdir), "none", "-1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 300
    while not (tmp_path / "run.paused").exists():
      assert first.poll() is None and time.time() < deadline, first.stderr.read()[-2000:] if first.stderr else ""
      time.sleep(0.2)
    before = _tree(workdir)
    # the same config in this process, and any config from the command line: both refused, nothing touched
    with pytest.raises(rundir_lib.RunDirBusy, match=rf"in use by another process \(pid {first.pid} on "):
      run(_config(smoke_config), workdir)
    cli = subprocess.run([sys.executable, "-m", "butterfly_jax.main", "--config=configs/smoke.py",
                          f"--workdir={workdir}"], capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert cli.returncode == 3, cli.stderr[-2000:]
    assert "in use by another process" in cli.stderr and "Traceback" not in cli.stderr
    assert _tree(workdir) == before
  finally:
    first.send_signal(signal.SIGKILL)   # the kernel releases its lock
    first.wait()
  res = run(_config(smoke_config), workdir)
  assert _resumed(res) == {"phase": "children", "step": 40}
  _assert_same_run(workdir, res, reference)


def _with_code(monkeypatch, **changes):
  real = rundir_lib.code_identity()
  monkeypatch.setattr(rundir_lib, "code_identity", lambda: {**real, **changes})


def test_resume_refuses_other_package_source_unless_allowed(tmp_path, smoke_config, reference, monkeypatch):
  _killed_run(tmp_path, "children", 50)
  before = _tree(tmp_path / "checkpoints")
  _with_code(monkeypatch, source_sha256="0" * 64, git_revision="feedbeef")
  with pytest.raises(rundir_lib.RunDirError, match=r"package source changed .*revision .* now feedbeef.*"
                                                   r"--allow_code_change.*nothing was deleted"):
    run(_config(smoke_config), tmp_path)
  assert _tree(tmp_path / "checkpoints") == before
  res = run(_config(smoke_config), tmp_path, allow_code_change=True)
  resumed = res["timing"]["resumed_from"]
  assert (resumed["phase"], resumed["step"]) == ("children", 40)
  assert "package source changed" in resumed["notes"][0] and resumed["code"]["source_sha256"] != "0" * 64


def test_resume_across_a_revision_that_changed_no_package_file_is_noted_and_exact(tmp_path, smoke_config, reference,
                                                                                   monkeypatch):
  _killed_run(tmp_path, "children", 50)
  _with_code(monkeypatch, git_revision="feedbeef")
  res = run(_config(smoke_config), tmp_path)
  assert "git revision changed" in res["timing"]["resumed_from"]["notes"][0]
  _assert_same_run(tmp_path, res, reference)


def test_resume_refuses_a_changed_init_checkpoint_source(tmp_path, smoke_config):
  tree, cfg = {"w": np.arange(3.0)}, smoke_config.to_dict()
  ident = {"code": rundir_lib.code_identity(), "init_source": {"path": "/pre/keep/0", "sha256": "a" * 64}}
  rd = rundir_lib.RunDir(tmp_path)
  with rd.locked():
    assert rd.start(cfg, identity=ident) is None
    rd.save_state({"phase": "trunk", "step": 5}, tree)
  assert rd.latest_state()[0]["init_source"] == ident["init_source"]
  other = dict(ident, init_source={"path": "/pre/keep/0", "sha256": "b" * 64})
  with pytest.raises(rundir_lib.RunDirError, match="init.checkpoint: the weights this run started from changed"):
    rundir_lib.RunDir(tmp_path).start(cfg, identity=other)
  assert rd.latest_state() is not None
  assert rundir_lib.RunDir(tmp_path).start(cfg, identity=other, discard=True) is None
  assert rd.latest_state() is None


def test_init_source_fingerprint_follows_the_kept_weights(tmp_path, smoke_config):
  from butterfly_jax.run import spec as spec_lib
  from butterfly_jax.run.experiment import _init_source
  pre = rundir_lib.RunDir(tmp_path / "pre")
  pre.save_checkpoint("keep/0", {"params": {"w": np.ones(4, np.float32)}, "step": 0})
  c = smoke_config
  c.init.checkpoint = f"{tmp_path / 'pre'}:0"
  first = _init_source(spec_lib.init_source(c))
  assert first["path"].endswith("keep/0")
  pre.save_checkpoint("keep/0", {"params": {"w": np.zeros(4, np.float32)}, "step": 0})
  assert _init_source(spec_lib.init_source(c))["sha256"] != first["sha256"]


def test_checkpoint_commit_order_is_durable(tmp_path, monkeypatch):
  """Files fsynced, then the metrics log, then the manifest renamed and its directory fsynced; old checkpoints
  deleted only after that."""
  events = []
  real_fsync, real_replace, real_rmtree = os.fsync, os.replace, shutil.rmtree

  def fsync(fd):
    events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
    real_fsync(fd)

  def replace(src, dst):
    events.append(("replace", str(dst)))
    real_replace(src, dst)

  def rmtree(path, *a, **k):
    events.append(("rmtree", str(path)))
    real_rmtree(path, *a, **k)

  rd = rundir_lib.RunDir(tmp_path)
  rd.start({"seed": 0})
  rd.log({"phase": "trunk", "step": 1})
  rd.save_state({"phase": "trunk", "step": 1}, {"w": np.arange(3.0)}, keep=1)
  monkeypatch.setattr(os, "fsync", fsync)
  monkeypatch.setattr(os, "replace", replace)
  monkeypatch.setattr(shutil, "rmtree", rmtree)
  rd.log({"phase": "trunk", "step": 2})
  rd.save_state({"phase": "trunk", "step": 2}, {"w": np.arange(3.0) + 1}, keep=1)
  new = str(rd.states / "0_0000000002")
  pos = lambda pred: [i for i, e in enumerate(events) if pred(e)]
  tree_files = pos(lambda e: e[0] == "fsync" and e[1].startswith(new + "/tree/") and not os.path.isdir(e[1]))
  manifest_rename = pos(lambda e: e == ("replace", new + "/manifest.json"))
  manifest_fsync = pos(lambda e: e[0] == "fsync" and e[1].startswith(new + "/.manifest.json."))
  dir_fsync = pos(lambda e: e == ("fsync", new))
  metrics_fsync = pos(lambda e: e == ("fsync", str(rd.metrics)))
  states_fsync = pos(lambda e: e == ("fsync", str(rd.states)))
  deletion = pos(lambda e: e == ("rmtree", str(rd.states / "0_0000000001")))
  assert tree_files and manifest_rename and manifest_fsync and dir_fsync and metrics_fsync and states_fsync
  assert len(deletion) == 1
  assert max(tree_files) < min(metrics_fsync) < min(manifest_fsync) < manifest_rename[0]
  assert manifest_rename[0] < max(dir_fsync) < states_fsync[-1] < deletion[0]
  assert [p.name for p in rd.states.iterdir()] == ["0_0000000002"]


def test_resume_on_another_host_cpu_is_noted_and_old_checkpoints_without_the_record_are_not():
  ident = {"code": rundir_lib.code_identity(), "init_source": None}
  assert ident["code"]["host_cpu"] == rundir_lib.host_cpu() and "flags" in rundir_lib.host_cpu()
  moved = {"code": dict(ident["code"], host_cpu="Other CPU (flags 000000000000)"), "init_source": None}
  notes = rundir_lib.check_resume(moved, ident)
  assert len(notes) == 1 and "host_cpu Other CPU" in notes[0] and "not bitwise the uninterrupted one" in notes[0]
  older = {"code": {k: v for k, v in ident["code"].items() if k != "host_cpu"}, "init_source": None}
  assert rundir_lib.check_resume(older, ident) == []
  assert rundir_lib.provenance()["host_cpu"] == rundir_lib.host_cpu()


def test_runs_record_xla_flags_and_a_resume_under_other_flags_is_noted(monkeypatch):
  """XLA_FLAGS change CPU results in the last bits (runtime.py): provenance and checkpoints record them, and a
  resume under other flags goes on with a note, as on another CPU."""
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
  ident = {"code": rundir_lib.code_identity(), "init_source": None}
  assert ident["code"]["xla_flags"] == "--xla_cpu_experimental_ynn_fusion_type="
  assert rundir_lib.provenance()["xla_flags"] == "--xla_cpu_experimental_ynn_fusion_type="
  then = {"code": dict(ident["code"], xla_flags="--xla_cpu_experimental_ynn_fusion_type=individual_convolution"),
          "init_source": None}
  notes = rundir_lib.check_resume(then, ident)
  assert len(notes) == 1 and "xla_flags --xla_cpu_experimental_ynn_fusion_type=individual_convolution -> " \
      "--xla_cpu_experimental_ynn_fusion_type=" in notes[0] and "not bitwise" in notes[0]
  older = {"code": {k: v for k, v in ident["code"].items() if k != "xla_flags"}, "init_source": None}
  assert rundir_lib.check_resume(older, ident) == []  # checkpoints from before the record: not compared


def test_the_lock_holder_sweeps_temporary_files_of_killed_writes(tmp_path):
  """A write killed before its rename leaves ``.NAME.PID.tmp``; whoever next holds the run directory's lock
  removes every such file (no live writer can own one) and nothing else."""
  left = [tmp_path / ".results.json.4242.tmp", tmp_path / ".metrics.jsonl.17.tmp",
          tmp_path / "checkpoints" / "state" / "2_0000000040" / ".manifest.json.99.tmp"]
  kept = [tmp_path / "notes.tmp", tmp_path / ".hidden.tmp", tmp_path / "results.json"]
  for f in left + kept:
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("{")
  with rundir_lib.RunDir(tmp_path).locked():
    assert not any(f.exists() for f in left) and all(f.exists() for f in kept)


class _Interrupted(Exception):
  pass


def test_an_interrupted_run_resumes_bitwise_in_one_process(tmp_path, smoke_config, reference, monkeypatch):
  """The fast tier's exact-resume check: a run stopped mid-children (an exception at a log line, in this
  process) is resumed by the same call from its newest checkpoint and ends bitwise as the uninterrupted run:
  results, metrics log and the children's weights (the SIGKILL tests do the same across processes)."""
  log = rundir_lib.RunDir.log

  def log_then_stop(self, record):
    log(self, record)
    if record["phase"] == "children" and record["step"] == 60:
      raise _Interrupted

  monkeypatch.setattr(rundir_lib.RunDir, "log", log_then_stop)
  with pytest.raises(_Interrupted):
    run(_config(smoke_config), tmp_path)
  assert not (tmp_path / "results.json").exists()
  monkeypatch.setattr(rundir_lib.RunDir, "log", log)
  res = run(_config(smoke_config), tmp_path)
  assert _resumed(res)["phase"] == "children" and _resumed(res)["step"] >= 40
  _assert_same_run(tmp_path, res, reference)


def test_a_run_refused_while_setting_up_leaves_no_work_directory(tmp_path, smoke_config):
  """A bad input found after the lock is taken (a data folder that does not exist, a perturbation time after T)
  leaves no new work directory holding only its lock; an existing one keeps what it held."""
  from butterfly_jax.config import ConfigError
  from butterfly_jax.io.data import DataError
  c = _config(smoke_config)
  c.data.name, c.data.dir = "fashion_mnist", str(tmp_path / "nowhere")
  with pytest.raises(DataError):
    run(c, tmp_path / "new")
  assert not (tmp_path / "new").exists()
  from butterfly_jax.run.configs_embedded import smoke
  late = _config(smoke())
  late.perturb.time = "99999"
  with pytest.raises(ConfigError, match="perturb.time"):
    run(late, tmp_path / "late")
  assert not (tmp_path / "late").exists()
  (tmp_path / "kept").mkdir()
  (tmp_path / "kept" / "notes.txt").write_text("mine")
  with pytest.raises(ConfigError):
    run(late, tmp_path / "kept")
  assert (tmp_path / "kept" / "notes.txt").read_text() == "mine"


# --- a stop signal: a checkpoint at the next step boundary, exit status 75, an exact resume ---------------------

@pytest.fixture
def stop_signals():
  """SIGUSR1 and SIGTERM as stop requests in this process, as the command line makes them; put back after."""
  previous = interrupt.install(interrupt.DEFAULT_SIGNALS)
  try:
    yield
  finally:
    interrupt.restore(previous)
    interrupt.clear()


def _signal_during_step(monkeypatch, step, signum):
  """This process sends itself ``signum`` as training step ``step`` (of either phase) begins."""
  sgd_noise = setup_lib.Setup.sgd_noise

  def signal_then_noise(self, s, mesh):
    if s == step:
      os.kill(os.getpid(), signum)
    return sgd_noise(self, s, mesh)

  monkeypatch.setattr(setup_lib.Setup, "sgd_noise", signal_then_noise)


def _signal_during_evaluation(monkeypatch, signum):
  """This process sends itself ``signum`` as the final evaluation begins (the one with a progress bar)."""
  evaluate_family = setup_lib.Setup.evaluate_family

  def signal_then_evaluate(self, params, indices, alphas, bar=None):
    if bar is not None:
      os.kill(os.getpid(), signum)
    return evaluate_family(self, params, indices, alphas, bar)

  monkeypatch.setattr(setup_lib.Setup, "evaluate_family", signal_then_evaluate)


# _config: log lines every 10 steps, checkpoints every 20, t = 30, T = 80.
@pytest.mark.parametrize("when, signum, phase, step, last_line, chunk", [
    (53, signal.SIGUSR1, "children", 54, 50, [4, 4, 4]),   # mid-chunk: the chunk's sums go into the checkpoint
    (24, signal.SIGTERM, "trunk", 25, 20, [5]),             # the same in the trunk, on SIGTERM
    (19, signal.SIGUSR1, "trunk", 20, 20, None),            # the chunk's last step: its line and cadence checkpoint
    ("evaluation", signal.SIGUSR1, "children", 80, 80, None),  # the end of training's checkpoint serves
], ids=["children-mid-chunk", "trunk-mid-chunk-sigterm", "trunk-chunk-end", "evaluation"])
def test_a_stop_signal_checkpoints_at_the_next_step_boundary_and_the_resume_is_bitwise(
    tmp_path, smoke_config, reference, stop_signals, monkeypatch, when, signum, phase, step, last_line, chunk):
  """A stop signal during a step: the step finishes, the state at that boundary is checkpointed (with the sums of
  the chunk of steps under way, so that its log line comes out as an uninterrupted run's), Interrupted is raised
  and nothing else is written; the same call then resumes there and ends bitwise as the uninterrupted run:
  results, metrics log and weights."""
  if when == "evaluation":
    _signal_during_evaluation(monkeypatch, signum)
  else:
    _signal_during_step(monkeypatch, when, signum)
  with pytest.raises(interrupt.Interrupted) as stopped:
    run(_config(smoke_config), tmp_path)
  e = stopped.value
  assert (e.signum, e.phase, e.step) == (signum, phase, step)
  assert e.checkpoint == rundir_lib.RunDir(tmp_path).state_path(phase, step)
  assert f"stopped by {signal.Signals(signum).name}" in str(e) and "run the same command again" in str(e)
  assert not (tmp_path / "results.json").exists()
  meta, tree = rundir_lib.RunDir(tmp_path).latest_state()
  assert tree.parent == e.checkpoint and (meta["phase"], meta["step"]) == (phase, step)
  assert (meta.get("chunk") or {}).get("steps") == chunk
  assert _metrics(tmp_path)[-1]["step"] == last_line and _metrics(tmp_path)[-1]["phase"] == phase
  monkeypatch.undo()
  interrupt.clear()
  res = run(_config(smoke_config), tmp_path)
  assert _resumed(res) == {"phase": phase, "step": step}
  _assert_same_run(tmp_path, res, reference)


def test_stop_signals_are_named_checked_and_installed_only_by_the_processes_that_run_runs():
  """Importing the package, the command line's module and the launcher's leaves SIGUSR1 and SIGTERM alone (a
  notebook keeps its own handling); names are read in any spelling, and a signal no process can catch is refused."""
  import butterfly_jax.launch.__main__  # noqa: F401
  import butterfly_jax.launch.run_one  # noqa: F401
  import butterfly_jax.main  # noqa: F401
  assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
  assert interrupt.parse("USR1,SIGterm, 12") == (signal.SIGUSR1, signal.SIGTERM, signal.SIGUSR2)
  assert interrupt.parse("") == () and interrupt.parse(["usr1", "USR1"]) == (signal.SIGUSR1,)
  for bad, message in (("KILL", "cannot be caught"), ("USR3", "is not a signal")):
    with pytest.raises(ValueError, match=message):
      interrupt.parse(bad)


def _smoke_cli(workdir, *extra):
  """The command line on the smoke config, long enough (800 steps, t = 200) to be signalled while it trains."""
  return [sys.executable, "-m", "butterfly_jax.main", "--config=configs/smoke.py", f"--workdir={workdir}",
          "--config.train.steps=800", "--config.perturb.time=200", "--config.checkpoint.every_steps=100", *extra]


@pytest.mark.slow
def test_sigusr1_stops_the_command_line_at_a_step_boundary_and_the_same_command_resumes_bitwise(tmp_path):
  """The command line, signalled SIGUSR1 once it has trained some children steps: exit status 75 and one line
  naming the checkpoint it wrote at the step boundary; the same command then finishes the run, bitwise the
  uninterrupted run (results but their timing and provenance, and the metrics log)."""
  from butterfly_jax.run.configs_embedded import smoke
  workdir = tmp_path / "run"
  proc = subprocess.Popen(_smoke_cli(workdir), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 300
    while not any(r["phase"] == "children" for r in (_metrics(workdir) if (workdir / "metrics.jsonl").exists()
                                                     else [])):
      assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
      time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == interrupt.EXIT_STATUS, err[-3000:]
  assert "Traceback" not in err and not (workdir / "results.json").exists()
  (line,) = [l for l in err.splitlines() if l.startswith("interrupted: ")]
  meta, tree = rundir_lib.RunDir(workdir).latest_state()
  assert meta["phase"] == "children" and 200 < meta["step"] < 800, meta
  assert line == (f"interrupted: stopped by SIGUSR1 in the children's training; training state at children step "
                  f"{meta['step']} in {tree.parent}; run the same command again to resume")
  assert _metrics(workdir)[-1]["step"] <= meta["step"]  # no line past the checkpoint: the resume writes the rest

  again = subprocess.run(_smoke_cli(workdir), cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  res = json.loads((workdir / "results.json").read_text())
  assert _resumed(res) == {"phase": "children", "step": meta["step"]}
  c = smoke()
  c.train.steps, c.perturb.time, c.checkpoint.every_steps = "800", "200", "100"
  ref = run(c, tmp_path / "uninterrupted")
  assert _strip(res) == json.loads(json.dumps(_strip(ref)))
  assert _metrics(workdir) == _metrics(tmp_path / "uninterrupted")

  bad = subprocess.run(_smoke_cli(tmp_path / "bad", "--stop_signals=USR1,KILL"), cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
      "error: --stop_signals: SIGKILL cannot be caught; for example USR1, USR2, TERM, INT")
  assert not (tmp_path / "bad").exists()
