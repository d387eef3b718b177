"""Declared sweeps and the launcher (butterfly_jax/launch/): expansion, names, running, skipping, killing, failing,
SLURM."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from butterfly_jax.config import ConfigError, parse_init_checkpoint, resolve_steps
from butterfly_jax.launch import sweep as sweep_lib
from butterfly_jax.launch.__main__ import parse_args
from butterfly_jax.run import config_files as shipped

ROOT = Path(__file__).resolve().parents[1]
SMOKE = shipped.FOLDER / "smoke.py"
SAFE_NAME = re.compile(r"^[A-Za-z0-9._+=,~-]+$")


def _config_file(tmp_path, body, name="sweep_cfg.py"):
  path = tmp_path / name
  path.write_text("from butterfly_jax.run.configs_embedded import smoke\n\n\ndef get_config():\n  return smoke()\n\n\n"
                  + textwrap.dedent(body))
  return path


def _launch(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "butterfly_jax.launch", *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def _results(runs_dir):
  return sorted(Path(runs_dir).glob("*/results.json"))


def _workers_alive(runs_dir) -> list:
  """Processes whose command line names ``runs_dir`` (Linux /proc)."""
  alive = []
  for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
    try:
      text = cmdline.read_bytes().replace(b"\0", b" ").decode()
    except OSError:
      continue
    if "launch.run_one" in text and f"--runs={runs_dir}" in text:
      alive.append(text)
  return alive


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
  """One persistent compilation cache for every launcher call here (as a sweep's runs share one)."""
  return tmp_path_factory.mktemp("jax_cache")


# --- (a) expansion -------------------------------------------------------------------------------------

def test_smoke_sweep_expands_to_stable_unique_safe_names():
  runs = sweep_lib.expand(str(SMOKE))
  assert len(runs) == 20
  names = [r.name for r in runs]
  assert len(set(names)) == 20 and all(SAFE_NAME.match(n) for n in names)
  assert names == [r.name for r in sweep_lib.expand(str(SMOKE))]  # stable
  first = runs[0]
  assert first.name == "perturb.kind=batch,perturb.time=0,seed=0"
  for r in runs:
    assert (r.config.seed, r.config.perturb.time, r.config.perturb.kind) == (
        r.overrides["seed"], r.overrides["perturb.time"], r.overrides["perturb.kind"])
  assert {(r.config.seed, r.config.perturb.time, r.config.perturb.kind) for r in runs} == {
      (s, t, k) for s in range(5) for t in ("0", "10") for k in ("batch", "gaussian")}


def test_overrides_follow_config_dict_types_and_set_applies_to_every_run(tmp_path):
  path = _config_file(tmp_path, """
      def sweep(add):
        add(**{"config.seed": 1, "optim.lr": 1, "perturb.scales": [0.0, 0.5]})
        add(**{"model.kwargs.hidden": [16, 16], "perturb.time": "5"})
      """)
  runs = sweep_lib.expand(str(path), set_items=["eval.num_examples=50", "train.steps=30", "log.progress=false"])
  a, b = runs
  assert (a.config.seed, a.config.optim.lr, a.config.perturb.scales) == (1, 1.0, (0.0, 0.5))
  assert isinstance(a.config.optim.lr, float)
  assert a.name == "optim.lr=1.0,perturb.scales=0.0_0.5,seed=1"
  assert b.config.model.kwargs.hidden == (16, 16) and b.config.perturb.time == "5"
  for r in runs:
    assert (r.config.eval.num_examples, r.config.train.steps, r.config.log.progress) == (50, "30", False)
  with pytest.raises(sweep_lib.SweepError, match=r"--set seed: the sweep also sets it"):
    sweep_lib.expand(str(path), set_items=["seed=3"])


@pytest.mark.parametrize("body, message", [
    ('add(**{"perturb.tme": "5ep"})', r"perturb\.tme: no such field; perturb has: .*\btime\b"),
    ('add(**{"optim.adam.b1": 0.5})', r"optim\.adam\.b1: no such field; optim has: "),
    ('add(**{"optim.lr": "fast"})', r"optim\.lr: expected float .*got 'fast'"),
    ('add(**{"perturb.scales": 1e-3})', r"perturb\.scales: expected tuple"),
    ('add(**{"perturb.time": 5})', r"perturb\.time: expected str .*steps are text: '2000' or '5ep'"),
    ('add(**{"seed": True})', r"seed: expected int .*got True"),
    ('add(**{"perturb.mask": {"single": "random"}})', r"perturb\.mask: is a group of fields"),
    ('add(**{"optim.name": "lion"})', r"optim\.name: unknown value 'lion'"),
])
def test_bad_override_is_an_error_naming_the_field(tmp_path, body, message):
  path = _config_file(tmp_path, f"def sweep(add):\n  add(seed=1)\n  {body}\n")
  with pytest.raises((sweep_lib.SweepError, ConfigError), match=message) as e:
    sweep_lib.expand(str(path))
  assert "sweep run 1" in str(e.value)


def test_bad_set_value_names_the_field():
  with pytest.raises(sweep_lib.SweepError, match=r"train\.batch_size: cannot parse 'big' as int"):
    sweep_lib.expand(str(SMOKE), set_items=["train.batch_size=big"])
  with pytest.raises(sweep_lib.SweepError, match=r"log\.progress: cannot parse 'yes' as bool"):  # as main's does
    sweep_lib.expand(str(SMOKE), set_items=["log.progress=yes"])
  with pytest.raises(sweep_lib.SweepError, match=r"--set: expected FIELD=VALUE"):
    sweep_lib.expand(str(SMOKE), set_items=["seed"])


def test_identical_runs_are_kept_once(tmp_path):
  path = _config_file(tmp_path, """
      def sweep(add):
        add(seed=0)
        add(seed=1)
        add(seed=0)
        add()  # the default seed is 0: the same config as seed=0
      """)
  assert [r.name for r in sweep_lib.expand(str(path))] == ["seed=0", "seed=1"]


def test_inexact_or_long_names_get_a_hash_suffix():
  a = sweep_lib.run_name({"perturb.mask.single": "dense0/kernel[1,2]"})
  b = sweep_lib.run_name({"perturb.mask.single": "dense0/kernel[1_2]"})
  assert SAFE_NAME.match(a) and re.search(r"~[0-9a-f]{8}$", a) and a != b
  assert a == sweep_lib.run_name({"perturb.mask.single": "dense0/kernel[1,2]"})
  long = {f"model.kwargs.field{i}": "x" * 10 for i in range(12)}
  name = sweep_lib.run_name(long)
  assert len(name) <= sweep_lib.MAX_NAME and re.search(r"~[0-9a-f]{8}$", name)
  assert sweep_lib.run_name({}) == "base"
  assert sweep_lib.run_name({"perturb.scales": (0.0, 1e-05)}) == "perturb.scales=0.0_1e-05"


def test_product_declares_every_combination_last_key_fastest():
  calls = []
  sweep_lib.product(lambda **kw: calls.append(kw), {"seed": [0, 1], "perturb.kind": ["batch", "gaussian"]},
                    fixed={"perturb.time": "1ep"})
  assert [(c["seed"], c["perturb.kind"]) for c in calls] == [(0, "batch"), (0, "gaussian"), (1, "batch"),
                                                             (1, "gaussian")]
  assert all(c["perturb.time"] == "1ep" for c in calls)
  with pytest.raises(sweep_lib.SweepError, match="seed: expected a list"):
    sweep_lib.grid({"seed": 3})


@pytest.mark.parametrize("name, count", [("smoke", 20), ("quickstart", 36), ("fashion_mnist", 45),
                                         ("study_warmup", 9), ("study_batch_size", 9), ("study_width", 9),
                                         ("study_optimizer", 6), ("study_weight_decay", 9), ("study_rewind", 6),
                                         ("reproduce_fashion_mnist", 36), ("fashion_mnist_finetune", 30),
                                         ("reproduce_pretrain", 36),
                                         ("resnet50_c100_to_c10", 72), ("resnet50_c10_to_c100", 72),
                                         ("vit_finetune_c100", 24), ("multiberts_qnli", 18),
                                         ("olmo1b_qnli", 18)])
def test_shipped_sweeps_expand_and_document_their_command(name, count):
  path = shipped.FOLDER / f"{name}.py"
  runs = sweep_lib.expand(str(path))
  assert len(runs) == count and len({r.name for r in runs}) == count
  module, _ = sweep_lib.load_config_module(str(path))
  assert f"python -m butterfly_jax.launch --config=configs/{name}.py" in module.__doc__


@pytest.mark.parametrize("name", ["resnet50_c100_to_c10", "resnet50_c10_to_c100"])
def test_a_config_argument_reaches_the_sweep_so_a_phase_declares_its_own_runs(name):
  path = shipped.FOLDER / f"{name}.py"
  (pretrain,) = sweep_lib.expand(f"{path}:pretrain")
  module, _ = sweep_lib.load_config_module(str(path))
  assert pretrain.config == module.get_config("pretrain") and pretrain.config.perturb.scales == ()
  assert {r.config.init.checkpoint.rpartition(":")[0] for r in sweep_lib.expand(f"{path}:finetune")} == {
      module.PRETRAIN_DIR}


@pytest.mark.parametrize("name", ["reproduce_map", "reproduce_studies", "reproduce_pretrain"])
def test_a_phased_config_names_itself_and_its_phases_for_an_unknown_phase(name):
  module, _ = sweep_lib.load_config_module(str(shipped.FOLDER / f"{name}.py"))
  assert module.get_config() == module.get_config(module.PHASES[0])  # no argument: the first phase
  with pytest.raises(ConfigError, match=rf"configs/{name}.py: unknown phase 'mpl' .*choose one of mlp, "):
    module.get_config("mpl")


@pytest.mark.parametrize("phase", ["mlp_scale", "cnn_scale"])
def test_the_maps_scale_runs_keep_what_the_proxy_reads(phase):
  """``reproduce_map.py``'s scale phases exist for ``butterfly_jax.proxy``, which reads each run's children
  checkpoint at T: without it the runs are wasted."""
  runs = sweep_lib.expand(f"{shipped.FOLDER / 'reproduce_map.py'}:{phase}")
  assert len(runs) == 3 and all(r.config.checkpoint.children for r in runs)
  module, _ = sweep_lib.load_config_module(str(shipped.FOLDER / "reproduce_map.py"))
  assert "python -m butterfly_jax.proxy --run=DIR --fractions=0 --seeds=3" in module.__doc__


@pytest.mark.parametrize("phase, n", [("mlp_act", 12), ("cnn_act", 6)])
def test_the_maps_activation_matching_phases_are_the_maps_batch_runs_aligned_by_activations(phase, n):
  """``reproduce_map.py``'s ``*_act`` phases: the map's own batch-direction runs (its model, σ grid and seeds), each
  child aligned by activation matching, so the second alignment is measured on the same pairs as the first."""
  module, _ = sweep_lib.load_config_module(str(shipped.FOLDER / "reproduce_map.py"))
  base = module.get_config(phase.removesuffix("_act"))
  runs = sweep_lib.expand(f"{shipped.FOLDER / 'reproduce_map.py'}:{phase}")
  assert len(runs) == n and {r.config.seed for r in runs} == set(module.SEEDS)
  for r in runs:
    assert r.config.eval.align_method == "activations" and r.config.perturb.kind == "batch"
    assert r.config.model == base.model and r.config.perturb.scales == base.perturb.scales


@pytest.mark.parametrize("model, finetune_runs", [("mlp", 36), ("cnn", 15)])
def test_the_pretraining_study_fine_tunes_from_the_run_dirs_its_pretraining_phase_makes(model, finetune_runs):
  """``reproduce_pretrain.py``: the fine-tuning phase starts from steps its pre-training phase keeps, in the run
  directories ``launch`` gives the pre-training runs (``--runs`` as the docstring's command has it)."""
  path = shipped.FOLDER / "reproduce_pretrain.py"
  module, _ = sweep_lib.load_config_module(str(path))
  pre = sweep_lib.expand(f"{path}:pretrain_{model}")
  runs_dir = f"reproduction/pretrain/pretrain_{model}"
  assert f"--config=configs/reproduce_pretrain.py:pretrain_{model} --runs={runs_dir}" in module.__doc__
  kept = {f"{runs_dir}/{r.name}": set(resolve_steps(r.config, 30000)["keep"]) for r in pre}  # classes 0-4: 30,000
  fine = sweep_lib.expand(f"{path}:{model}")
  assert len(fine) == finetune_runs
  for r in fine:
    run_dir, step = parse_init_checkpoint(r.config.init.checkpoint)
    assert step in kept[run_dir], (r.name, step)
    assert r.config.seed == pre[[f"{runs_dir}/{p.name}" for p in pre].index(run_dir)].config.seed
    assert r.config.data.classes == (5, 6, 7, 8, 9) and pre[0].config.data.classes == (0, 1, 2, 3, 4)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_the_pretraining_scale_runs_keep_what_the_proxy_reads_and_start_from_the_rebuilt_pretraining(model):
  """``reproduce_pretrain.py``'s scale phases: per seed, child 0 alone fine-tuned from the control and the longest
  pre-training (kept by the rebuilt pre-training runs the docstring's command writes), its checkpoint kept."""
  path = shipped.FOLDER / "reproduce_pretrain.py"
  module, _ = sweep_lib.load_config_module(str(path))
  runs_dir = f"reproduction/pretrain/scale/pretrain_{model}"
  command = f"--config=configs/reproduce_pretrain.py:pretrain_$m \\\n          --runs={runs_dir[:-len(model)]}$m"
  assert command in module.__doc__
  kept = {f"{runs_dir}/{r.name}": set(resolve_steps(r.config, 30000)["keep"])
          for r in sweep_lib.expand(f"{path}:pretrain_{model}")}
  runs = sweep_lib.expand(f"{path}:{model}_scale")
  assert len(runs) == 6 and all(r.config.checkpoint.children and not r.config.perturb.scales for r in runs)
  starts = {parse_init_checkpoint(r.config.init.checkpoint) for r in runs}
  assert all(step in kept[d] for d, step in starts) and {s for _, s in starts} == {0, max(module.PRETRAIN_STEPS[model])}


@pytest.mark.parametrize("name, arg, task, metric", [("multiberts_qnli", "", "glue/qnli", "accuracy"),
                                                      ("multiberts_qnli", ":mrpc", "glue/mrpc", "f1"),
                                                      ("olmo1b_qnli", "", "glue/qnli", "accuracy")])
def test_the_language_sweeps_cross_checkpoints_times_and_seeds(name, arg, task, metric):
  """Every run of the language sweeps validates (expand validates each config) and fine-tunes a checkpoint folder
  on its GLUE task; the pre-training axis is read from the folders' names, as the report's figure reads it."""
  from butterfly_jax.io import text
  from butterfly_jax.report.finetune import pretraining_steps
  runs = sweep_lib.expand(f"{shipped.FOLDER / name}.py{arg}")
  module, _ = sweep_lib.load_config_module(str(shipped.FOLDER / f"{name}.py"))
  assert {r.config.data.name for r in runs} == {task} and text.dataset_task(task).metric == metric
  assert {r.config.init.checkpoint for r in runs} == set(module.CHECKPOINTS)
  assert len({pretraining_steps(r.config.init.checkpoint) for r in runs}) == len(module.CHECKPOINTS)
  assert len({r.config.perturb.time for r in runs}) == 2 and {r.config.seed for r in runs} == {0, 1, 2}
  assert all(r.config.perturb.scales[0] == 0.0 and r.config.model.name in ("bert", "olmo") for r in runs)
  assert f"python -m butterfly_jax.launch --config=configs/{name}.py{arg}" in module.__doc__


def test_config_dot_flags_are_set_items():
  args = parse_args(["--config=c.py", "--runs=d", "--config.seed=3", "--config.perturb.time", "5ep",
                     "--set", "eval.num_examples=10"])
  assert (args.config, args.runs) == ("c.py", "d")
  assert args.set == ["eval.num_examples=10", "seed=3", "perturb.time=5ep"]


# --- (b) a whole sweep, then nothing to do -------------------------------------------------------------

def _plain_progress(log: str) -> None:
  """A run's log.txt is a file, not a terminal: progress is a line every progress.EVERY_S seconds and one at the
  end of each bar, never tqdm's carriage-return frames."""
  from butterfly_jax.run import progress
  assert "\r" not in log
  seconds = float(re.search(r"launch: finished after ([\d.]+) s", log).group(1))
  for desc, total in (("train", 40), ("eval", 1000)):
    lines = [line for line in log.splitlines() if line.startswith(f"{desc} ")]
    assert 1 <= len(lines) <= 1 + seconds / progress.EVERY_S, log
    assert re.fullmatch(rf"{desc} {total}/{total} \(100%\) [\d.]+ \w+/s, took \d+s(; .*)?", lines[-1]), log
  assert "phase=children loss=" in log


@pytest.mark.slow
def test_smoke_sweep_runs_in_one_call_and_a_second_call_runs_nothing(tmp_path, jax_cache):
  runs_dir = tmp_path / "runs"
  out = _launch(f"--config={SMOKE}", f"--runs={runs_dir}", f"--jax-cache={jax_cache}", "--set", "log.progress=True")
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  state = json.loads((runs_dir / "sweep.json").read_text())
  assert len(state["runs"]) == 20 and {r["status"] for r in state["runs"]} == {"finished"}
  assert len(_results(runs_dir)) == 20
  for item in state["runs"]:
    stored = json.loads((runs_dir / item["name"] / "config.json").read_text())
    assert stored["seed"] == item["overrides"]["seed"]
    assert stored["perturb"]["kind"] == item["overrides"]["perturb.kind"]
    _plain_progress((runs_dir / item["name"] / "log.txt").read_text())
  assert re.search(r"ran\s+20\n\s+skipped\s+0\s+\(already finished\)\n\s+failed\s+0", out.stdout)
  mtimes = {p: p.stat().st_mtime_ns for p in _results(runs_dir)}

  again = _launch(f"--config={SMOKE}", f"--runs={runs_dir}", f"--jax-cache={jax_cache}", "--set", "log.progress=True")
  assert again.returncode == 0, again.stderr[-3000:]
  assert re.search(r"ran\s+0\n\s+skipped\s+20\s+\(already finished\)\n\s+failed\s+0", again.stdout)
  assert {p: p.stat().st_mtime_ns for p in _results(runs_dir)} == mtimes
  # the second call's sweep.json keeps each run's time: the wall time its results.json records
  kept = json.loads((runs_dir / "sweep.json").read_text())["runs"]
  assert [r["seconds"] for r in kept] == [json.loads((runs_dir / r["name"] / "results.json").read_text())
                                          ["timing"]["total_s"] for r in kept]
  assert all(r["status"] == "skipped" and r["seconds"] > 0 for r in kept)


# --- (c) killed half-way, finished by the next call ----------------------------------------------------

def _start_and_wait(args, runs_dir, at_least):
  proc = subprocess.Popen([sys.executable, "-m", "butterfly_jax.launch", *map(str, args)], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 240
  while len(_results(runs_dir)) < at_least:
    assert proc.poll() is None, proc.stdout.read()
    assert time.time() < deadline, "the launcher made no progress"
    time.sleep(0.05)
  return proc


@pytest.mark.slow
def test_sweep_killed_half_way_is_finished_by_the_next_call(tmp_path, jax_cache):
  runs_dir = tmp_path / "runs"
  path = _config_file(tmp_path, """
      def sweep(add):
        from butterfly_jax.launch.sweep import product
        product(add, {"seed": range(4), "perturb.time": ["0", "10"]})  # 8 runs: the smoke sweep's shape, smaller
      """)
  args = [f"--config={path}", f"--runs={runs_dir}", f"--jax-cache={jax_cache}"]
  proc = _start_and_wait(args, runs_dir, at_least=2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  proc.stdout.close()
  before = {p: p.read_bytes() for p in _results(runs_dir)}
  assert 2 <= len(before) < 8
  for _ in range(50):  # the worker dies with its launcher (parent-death signal)
    if not _workers_alive(runs_dir):
      break
    time.sleep(0.1)
  assert not _workers_alive(runs_dir)

  out = _launch(*args)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert re.search(rf"ran\s+{8 - len(before)}\n\s+skipped\s+{len(before)}\s", out.stdout)
  assert len(_results(runs_dir)) == 8
  assert {p: p.read_bytes() for p in before} == before  # finished runs are not rewritten
  restarted = [p for p in runs_dir.glob("*/log.txt") if p.read_text().count("launch: run ") == 2]
  assert len(restarted) <= 1  # the run in progress at the kill: its first attempt's log is kept


@pytest.mark.slow
def test_sigterm_stops_the_workers_and_reports_interrupted_runs(tmp_path, jax_cache):
  runs_dir = tmp_path / "runs"
  proc = _start_and_wait([f"--config={SMOKE}", f"--runs={runs_dir}", f"--jax-cache={jax_cache}"], runs_dir,
                         at_least=1)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signal.SIGTERM, out
  assert "SIGTERM: stopping the workers" in out and re.search(r"pending\s+\d+", out)
  assert not _workers_alive(runs_dir)
  runs = json.loads((runs_dir / "sweep.json").read_text())["runs"]
  statuses = [r["status"] for r in runs]
  assert "running" not in statuses and statuses.count("finished") == len(_results(runs_dir))
  # the worker stopped its run on the SIGTERM it was sent (a checkpoint at the step boundary), or before it began
  assert all("stopped by SIGTERM" in r["error"] for r in runs if r["status"] == "interrupted"), runs


# --- (d) a failing run ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_failing_run_is_reported_with_its_log_and_the_others_finish(tmp_path, jax_cache):
  path = _config_file(tmp_path, """
      def sweep(add):
        add(seed=0)
        add(**{"perturb.time": "100"})  # valid alone, but after T = 40: fails when the run starts
        add(seed=1)
      """)
  runs_dir = tmp_path / "runs"
  out = _launch(f"--config={path}", f"--runs={runs_dir}", f"--jax-cache={jax_cache}", "--workers=2")
  assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
  assert re.search(r"ran\s+2\n\s+skipped\s+0\s+\(already finished\)\n\s+failed\s+1", out.stdout)
  log = runs_dir / "perturb.time=100" / "log.txt"
  assert f"log: {log}" in out.stdout
  assert "| butterfly_jax.config.ConfigError: perturb.time: t = 100 steps" in out.stdout  # the log's last lines
  assert "Traceback" in log.read_text()
  assert {p.parent.name for p in _results(runs_dir)} == {"seed=0", "seed=1"}
  state = json.loads((runs_dir / "sweep.json").read_text())
  assert [r["status"] for r in state["runs"]] == ["finished", "failed", "finished"]


# --- (3) SLURM -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_slurm_script_is_written_and_a_task_runs_its_run(tmp_path, jax_cache):
  runs_dir, script = tmp_path / "runs", tmp_path / "job.sh"
  out = _launch(f"--config={SMOKE}", f"--runs={runs_dir}", f"--slurm={script}", "--slurm-args=--partition=debug",
                "--slurm-args=time=00:10:00", "--workers=4", f"--jax-cache={jax_cache}")
  assert out.returncode == 0, out.stderr[-3000:]
  text = script.read_text()
  for line in ("#SBATCH --array=0-19%4", "#SBATCH --partition=debug", "#SBATCH --time=00:10:00",
               f"#SBATCH --output={runs_dir}/slurm/%A_%a.out"):
    assert line + "\n" in text
  assert "launch.run_one" in text and not _results(runs_dir)  # written, nothing run
  (snapshot,) = (runs_dir / "slurm").glob("sweep-*.json")  # the job's own copy of the sweep
  assert f"--sweep={snapshot} " in text
  written = snapshot.stat().st_mtime_ns

  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  name = json.loads((runs_dir / "sweep.json").read_text())["runs"][3]["name"]
  from butterfly_jax.io.rundir import RunDir
  with RunDir(runs_dir / name).locked():  # another process runs it (a resubmitted task, a local launcher)
    busy = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": "3"}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
  assert busy.returncode == 3 and f"run 3 {name}: busy" in busy.stdout, busy.stdout + busy.stderr
  assert sorted(p.name for p in (runs_dir / name).iterdir()) == [".lock", "log.txt"]  # nothing else touched
  task = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": "3"}, cwd=tmp_path,
                        capture_output=True, text=True, timeout=300)
  assert task.returncode == 0, task.stdout + task.stderr
  assert [p.parent.name for p in _results(runs_dir)] == [name]
  assert f"run 3 {name}: finished" in task.stdout
  again = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": "3"}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
  assert again.returncode == 0 and f"run 3 {name}: skipped" in again.stdout

  out = _launch(f"--config={SMOKE}", f"--runs={runs_dir}", f"--slurm={script}")
  assert "#SBATCH --array=0-2,4-19\n" in script.read_text()  # only unfinished runs
  assert list((runs_dir / "slurm").glob("sweep-*.json")) == [snapshot]  # the same sweep: the same snapshot,
  assert snapshot.stat().st_mtime_ns == written                          # left as it was


def test_slurm_script_quotes_paths_so_the_shell_expands_nothing(tmp_path):
  from butterfly_jax.launch import slurm
  runs_dir = tmp_path / "sl$(touch INJECTED)x"
  runs_dir.mkdir()
  snapshot = runs_dir / "slurm" / "sweep-0123456789ab.json"
  path = slurm.write(tmp_path / "job.sh", runs_dir, [0, 1], jax_cache=str(runs_dir / "jax_cache"), sweep=snapshot,
                     sweep_sha256="0123456789ab" + "0" * 52)
  text = path.read_text()
  assert f'#SBATCH --output="{runs_dir}/slurm/%A_%a.out"' in text
  env = {k: v for k, v in os.environ.items() if k not in ("SLURM_ARRAY_TASK_ID", "JAX_COMPILATION_CACHE_DIR")}
  probe = text.replace("exec ", 'echo "cache=$JAX_COMPILATION_CACHE_DIR"; exit 0; exec ', 1)
  (tmp_path / "probe.sh").write_text(probe)
  done = subprocess.run(["bash", str(tmp_path / "probe.sh")], env=env, cwd=tmp_path, capture_output=True,
                        text=True, timeout=60)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == f"cache={runs_dir / 'jax_cache'}"   # the literal path, nothing run
  (tmp_path / "probe.sh").write_text(text.replace("exec ", 'printf "%s\\n" ', 1))  # the task's arguments
  done = subprocess.run(["bash", str(tmp_path / "probe.sh")], env={**env, "SLURM_ARRAY_TASK_ID": "1"},
                        cwd=tmp_path, capture_output=True, text=True, timeout=60)
  assert done.returncode == 0, done.stderr
  assert done.stdout.splitlines()[3:] == [f"--runs={runs_dir.resolve()}", f"--sweep={snapshot.resolve()}",
                                          "--sweep-sha256=0123456789ab" + "0" * 52, "--index=1"]
  assert not any(p.name == "INJECTED" for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("args, runs_name, match", [
    (["--partition=gpu\nrm -rf /"], "runs", "--slurm-args: .* line break"),
    ([], 'bad"quote', "--runs: .* cannot be written in an #SBATCH line"),
    ([], "pct%j", "--runs: .* cannot be written in an #SBATCH line"),
])
def test_slurm_values_that_cannot_be_quoted_are_rejected(tmp_path, args, runs_name, match):
  from butterfly_jax.launch import slurm
  with pytest.raises(slurm.SlurmError, match=match):
    slurm.script(tmp_path / runs_name, [0], sbatch_args=args)


def test_launcher_reports_an_unwritable_slurm_value_as_a_bad_command(tmp_path):
  out = _launch(f"--config={SMOKE}", f"--runs={tmp_path / 'runs'}", f"--slurm={tmp_path / 'job.sh'}",
                "--slurm-args=--time=1\n--wrap=id")
  assert out.returncode == 2 and "--slurm-args" in out.stderr and not (tmp_path / "job.sh").exists()


# --- SLURM: pre-emptible tasks (--requeue) ---------------------------------------------------------------

def test_requeue_adds_the_directives_and_a_trap_that_forwards_the_warning_and_requeues_the_task(tmp_path):
  """``--requeue=USR2@600``: ``#SBATCH --requeue``, ``--signal=B:USR2@600`` and appended output; the task runs in
  the background with USR2 and TERM as its stop signals, both forwarded by traps, and is requeued as
  ``ARRAYJOB_TASK`` after an exit status of 75 that followed the warning. Without ``--requeue`` the task is
  exec'd as before; a warning signal scancel also sends, a time SLURM cannot take and a second ``--signal`` are
  refused."""
  from butterfly_jax.launch import slurm
  text = slurm.script(tmp_path / "runs", [0, 1, 2], sbatch_args=["--time=04:00:00"], requeue="USR2@600")
  lines = text.splitlines()
  for line in ("#SBATCH --requeue", "#SBATCH --signal=B:USR2@600", "#SBATCH --open-mode=append",
               "#SBATCH --time=04:00:00", "trap 'forward USR2' USR2", "trap 'forward TERM' TERM",
               '  if [ "$1" = USR2 ]; then warned=1; fi',
               '  if [ -n "$run_pid" ]; then kill -s "$1" "$run_pid" 2>/dev/null || true; fi',
               '  if [ -n "${SLURM_ARRAY_JOB_ID:-}" ]; then job="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; fi',
               '  elif scontrol requeue "$job"; then',
               'if [ -n "$warned" ] && { [ "$status" = 75 ] || [ "$status" -gt 128 ]; }; then', 'exit "$status"'):
    assert line in lines, line
  assert lines.index("#SBATCH --signal=B:USR2@600") < lines.index("set -euo pipefail")  # sbatch reads them
  (task,) = [l for l in lines if "launch.run_one" in l]
  assert task.endswith(' --stop-signals=USR2,TERM --index="$task" &') and not task.startswith("exec ")
  assert lines.index("trap 'forward USR2' USR2") < lines.index(task) < lines.index("run_pid=$!")
  assert "exec " not in text

  plain = slurm.script(tmp_path / "runs", [0, 1, 2])
  assert not any(w in plain for w in ("--requeue", "--signal", "trap ", "scontrol", "--open-mode"))
  assert plain.splitlines()[-1].startswith("exec ")
  assert slurm.script(tmp_path / "runs", [0], requeue=slurm.DEFAULT_REQUEUE).count("#SBATCH --signal=B:USR1@300\n") == 1
  mine = slurm.script(tmp_path / "runs", [0], requeue="120", sbatch_args=["--open-mode=truncate", "requeue"])
  assert "#SBATCH --signal=B:USR1@120\n" in mine and "--open-mode=append" not in mine
  assert mine.count("#SBATCH --requeue\n") == 1
  for requeue, args, match in (("TERM@300", (), "must be one of USR1, USR2"), ("USR1@0", (), "1 to 65535"),
                               ("soon", (), r"expected \[SIGNAL@\]SECONDS"), ("USR3@60", (), "is not a signal"),
                               ("300", ("--signal=B:USR1@60",), "--signal with --requeue"),
                               ("300", ("--no-requeue",), "contradicts")):
    with pytest.raises(slurm.SlurmError, match=match):
      slurm.script(tmp_path / "runs", [0], sbatch_args=args, requeue=requeue)
  assert parse_args(["--config=c.py", "--runs=r", "--slurm=j.sh", "--requeue"]).requeue == "USR1@300"
  assert parse_args(["--config=c.py", "--runs=r", "--slurm=j.sh", "--requeue=USR2@90"]).requeue == "USR2@90"
  with pytest.raises(SystemExit):
    parse_args(["--config=c.py", "--runs=r", "--requeue"])  # a local launcher: no job to requeue


# A stand-in for the task's Python: "checkpoint" stops on USR1 or TERM with exit status 75 (as a run does), "die"
# has no handler yet (killed by the signal), "finish" ends at once.
FAKE_RUN = """#!/bin/bash
echo "run: $*"
case "$FAKE_MODE" in
  finish) exit 0 ;;
  checkpoint) trap 'echo "run: stopped by USR1"; exit 75' USR1
              trap 'echo "run: stopped by TERM"; exit 75' TERM ;;
esac
touch "$FAKE_READY"
while :; do sleep 0.02; done
"""


@pytest.mark.parametrize("mode, signals, slurm, status, requeued", [
    ("checkpoint", ["USR1"], True, 75, "77_3"),          # the warning: checkpointed, requeued as its array task
    ("checkpoint", ["USR1", "TERM"], True, 75, "77_3"),  # then the time limit's SIGTERM: requeued once
    ("checkpoint", ["TERM"], True, 75, None),            # a pre-emption or scancel alone: SLURM decides
    ("die", ["USR1"], True, 128 + 10, "77_3"),           # killed by the warning before its handler: resumes as well
    ("finish", [], True, 0, None),
    ("checkpoint", ["USR1"], False, 75, None),           # by hand, not under SLURM: nothing to requeue
], ids=["warning", "warning-then-term", "term-alone", "no-handler-yet", "finished", "by-hand"])
def test_the_requeue_trap_forwards_signals_and_requeues_only_after_the_warning(tmp_path, mode, signals, slurm,
                                                                                status, requeued):
  """The job script run by bash (no SLURM here): a stand-in run and a stand-in scontrol that records its
  arguments. The script's exit status is the run's; the task is requeued only when the run stopped after the
  warning signal."""
  from butterfly_jax.launch import slurm as slurm_lib
  fake = tmp_path / "python"
  fake.write_text(FAKE_RUN)
  fake.chmod(0o755)
  (tmp_path / "bin").mkdir()
  (tmp_path / "bin" / "scontrol").write_text('#!/bin/bash\necho "$*" >> "$SCONTROL_LOG"\n')
  (tmp_path / "bin" / "scontrol").chmod(0o755)
  script = slurm_lib.write(tmp_path / "job.sh", tmp_path / "runs", [3], python=str(fake), requeue="USR1@300")
  env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  env.update(PATH=f"{tmp_path / 'bin'}:{env['PATH']}", FAKE_MODE=mode, FAKE_READY=str(tmp_path / "ready"),
             SCONTROL_LOG=str(tmp_path / "scontrol.log"), SLURM_ARRAY_TASK_ID="3")
  if slurm:
    env.update(SLURM_ARRAY_JOB_ID="77", SLURM_JOB_ID="81")
  proc = subprocess.Popen(["bash", str(script)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 30
    while signals and not (tmp_path / "ready").exists():
      assert proc.poll() is None and time.time() < deadline, proc.communicate()
      time.sleep(0.02)
    for name in signals:
      proc.send_signal(getattr(signal, "SIG" + name))
      time.sleep(0.2)
    out, err = proc.communicate(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == status, out + err
  assert f"run: -m butterfly_jax.launch.run_one --runs={(tmp_path / 'runs').resolve()} " in out
  assert "--stop-signals=USR1,TERM --index=3" in out
  log = tmp_path / "scontrol.log"
  assert (log.read_text().splitlines() if log.exists() else []) == ([f"requeue {requeued}"] if requeued else [])
  if requeued:
    assert f"requeued {requeued}, it resumes from its checkpoint" in out
  if mode == "checkpoint" and not slurm:
    assert "not a SLURM job: run it again to resume" in out


FAKE_WORKER = """
import json, sys
for line in sys.stdin:
  index = int(line)
  if index == 0:  # stopped by a signal of its own: answers, then exits 75 (as run_one --serve does)
    print(json.dumps({"index": index, "status": "interrupted", "seconds": 1.0,
                      "error": "stopped by SIGTERM in the children's training; ..."}), flush=True)
    sys.exit(75)
  if index == 1:  # exits 75 without an answer
    sys.exit(75)
  print(json.dumps({"index": index, "status": "finished", "error": None, "seconds": 1.0}), flush=True)
"""


def test_a_worker_stopped_by_a_signal_leaves_its_run_interrupted_not_failed(tmp_path, monkeypatch):
  """Stand-in workers that exit 75 (interrupted, resumable), with run_one's answer and without one: their runs are
  ``interrupted`` in sweep.json and the summary, never ``failed``; a fresh worker runs the rest, and the launcher
  exits 75 so that a script can tell a resumable stop from a failure."""
  import types
  from butterfly_jax.launch import __main__ as launcher, local

  def spawn(self):
    proc = subprocess.Popen([sys.executable, "-c", FAKE_WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, bufsize=1)
    with self.lock:
      self.procs.add(proc)
    return proc

  monkeypatch.setattr(local.Pool, "_spawn", spawn)
  runs = [{"index": i, "name": f"seed={i}", "overrides": {}, "status": "pending", "error": None, "seconds": None,
           "config": {"seed": i}} for i in range(3)]
  state = {"config": "c.py", "set": [], "runs": runs}
  for run in runs:
    (tmp_path / run["name"]).mkdir()  # as run_one makes it
  args = types.SimpleNamespace(config="c.py", workers=1, runs_per_worker=0, allow_code_change=False)
  out = io.StringIO()
  assert launcher._run_here(args, tmp_path, state, [0, 1, 2], None, out) == 75
  saved = json.loads((tmp_path / "sweep.json").read_text())["runs"]
  assert [r["status"] for r in saved] == ["interrupted", "interrupted", "finished"]
  assert saved[0]["error"].startswith("stopped by SIGTERM")
  assert saved[1]["error"] == ("the worker was stopped by a stop signal (exit code 75) during this run; the same "
                               "command resumes it from its newest checkpoint")
  assert re.search(r"interrupted\s+2\s+\(the same command resumes them\)", out.getvalue())
  assert "failed runs:" not in out.getvalue() and re.search(r"failed\s+0\n", out.getvalue())
  assert "launch: the worker was stopped by a stop signal" in (tmp_path / "seed=1" / "log.txt").read_text()


@pytest.mark.slow
def test_a_requeue_task_warned_before_its_time_limit_checkpoints_is_requeued_and_resumes(tmp_path, jax_cache):
  """A ``--requeue`` job's task run by bash as sbatch would (a stand-in scontrol on the PATH), sent the warning
  once its run has trained some children steps: the run checkpoints at the next step boundary, run_one reports
  it interrupted and exits 75, and the task is requeued as its array task. The requeued attempt resumes from that
  checkpoint and finishes."""
  runs_dir, script = tmp_path / "runs", tmp_path / "job.sh"
  path = _config_file(tmp_path, "def sweep(add):\n  add(seed=0)\n")
  out = _launch(f"--config={path}", f"--runs={runs_dir}", f"--slurm={script}", "--requeue=USR1@120",
                "--set=train.steps=800", "--set=perturb.time=200", "--set=checkpoint.every_steps=100",
                f"--jax-cache={jax_cache}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "#SBATCH --signal=B:USR1@120\n" in script.read_text()
  (tmp_path / "bin").mkdir()
  (tmp_path / "bin" / "scontrol").write_text('#!/bin/bash\necho "$*" >> "$SCONTROL_LOG"\n')
  (tmp_path / "bin" / "scontrol").chmod(0o755)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("SLURM_")}
  env.update(PATH=f"{tmp_path / 'bin'}:{env['PATH']}", SCONTROL_LOG=str(tmp_path / "scontrol.log"),
             SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_JOB_ID="77", SLURM_JOB_ID="78")
  run = runs_dir / "seed=0"
  task = subprocess.Popen(["bash", str(script)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 300
    while '"phase": "children"' not in ((run / "metrics.jsonl").read_text() if (run / "metrics.jsonl").exists()
                                        else ""):
      assert task.poll() is None and time.time() < deadline, task.communicate()
      time.sleep(0.05)
    task.send_signal(signal.SIGUSR1)  # to the job's shell, as --signal=B: sends it
    stdout, stderr = task.communicate(timeout=300)
  finally:
    if task.poll() is None:
      task.kill()
      task.wait()
  assert task.returncode == 75, stdout + stderr
  assert (tmp_path / "scontrol.log").read_text() == "requeue 77_0\n"
  assert "run 0 seed=0: interrupted" in stdout and "requeued 77_0, it resumes from its checkpoint" in stdout
  from butterfly_jax.io.rundir import RunDir
  meta, _ = RunDir(run).latest_state()
  assert meta["phase"] == "children" and 200 < meta["step"] < 800 and not (run / "results.json").exists()
  assert "launch: stopped by SIGUSR1 in the children's training" in (run / "log.txt").read_text()

  again = subprocess.run(["bash", str(script)], env={**env, "SLURM_RESTART_COUNT": "1"}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stdout + again.stderr
  assert "task 0 requeued (restart 1)" in again.stdout and "run 0 seed=0: finished" in again.stdout
  res = json.loads((run / "results.json").read_text())
  assert res["timing"]["resumed_from"] == {"phase": "children", "step": meta["step"]}
  assert (tmp_path / "scontrol.log").read_text() == "requeue 77_0\n"  # not again


# --- SLURM: a job runs the sweep it was written for ------------------------------------------------------

def _task(script, index, cwd):
  """Task ``index`` of an array-job script, run as sbatch would (without the caller's PYTHONPATH)."""
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  return subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": str(index)}, cwd=cwd,
                        capture_output=True, text=True, timeout=300)


def _two_jobs(tmp_path, jax_cache):
  """Job A (``--set eval.num_examples=100``), then job B (``=60``) written on the same DIR: B's launcher call
  rewrites DIR/sweep.json under the same run names. Returns DIR and B's launcher output."""
  runs_dir = tmp_path / "runs"
  for job, examples in (("a", 100), ("b", 60)):
    out = _launch(f"--config={SMOKE}", f"--runs={runs_dir}", f"--slurm={tmp_path / f'job_{job}.sh'}",
                  f"--set=eval.num_examples={examples}", f"--jax-cache={jax_cache}")
    assert out.returncode == 0, out.stderr[-3000:]
  return runs_dir, out


@pytest.mark.slow
def test_a_queued_task_runs_its_jobs_config_after_another_launch_rewrites_the_sweep(tmp_path, jax_cache):
  runs_dir, out = _two_jobs(tmp_path, jax_cache)
  runs = json.loads((runs_dir / "sweep.json").read_text())["runs"]
  assert {r["config"]["eval"]["num_examples"] for r in runs} == {60}  # sweep.json now holds sweep B
  name = runs[3]["name"]

  task = _task(tmp_path / "job_a.sh", 3, tmp_path)  # still queued from job A
  assert task.returncode == 0, task.stdout + task.stderr
  assert f"run 3 {name}: finished" in task.stdout
  assert json.loads((runs_dir / name / "config.json").read_text())["eval"]["num_examples"] == 100  # sweep A's
  results = (runs_dir / name / "results.json").read_bytes()

  other = _task(tmp_path / "job_b.sh", 3, tmp_path)  # job B's task of that run: refused, nothing overwritten
  assert other.returncode == 1, other.stdout + other.stderr
  assert f"run 3 {name}: failed" in other.stdout and "holds the finished results of a different config" in other.stdout
  assert (runs_dir / name / "results.json").read_bytes() == results
  assert "--set values are not part of run names" in (runs_dir / name / "log.txt").read_text()

  assert (tmp_path / "job_a.sh").read_text() != (tmp_path / "job_b.sh").read_text()
  assert re.search(r"^warning: .*sweep\.json was written for another sweep \(--config=\S+ --set "
                   r"eval\.num_examples=100; now --config=\S+ --set eval\.num_examples=60\).* 20 of this sweep's "
                   r"20 run names are also in that one: a run directory .* is refused, not overwritten", out.stdout,
                   re.M)


def test_a_task_refuses_a_snapshot_modified_after_its_job_was_written(tmp_path, capsys):
  from butterfly_jax.launch import run_one, state as state_lib
  runs_dir, script = tmp_path / "runs", tmp_path / "job.sh"
  out = _launch(f"--config={SMOKE}", f"--runs={runs_dir}", f"--slurm={script}")
  assert out.returncode == 0, out.stderr[-3000:]
  (snapshot,) = (runs_dir / "slurm").glob("sweep-*.json")
  content = json.loads(snapshot.read_text())
  item = content["runs"][3]
  item["config"]["eval"]["num_examples"] = 60
  item["config_sha256"] = state_lib.sha256_json(item["config"])  # consistent in itself: only the job's hash tells
  snapshot.write_text(json.dumps(content))

  task = _task(script, 3, tmp_path)
  assert task.returncode == 2, task.stdout + task.stderr
  assert f"--sweep: {snapshot} was modified after the job script was written" in task.stderr
  assert not (runs_dir / item["name"]).exists()  # nothing ran

  sweep = runs_dir / "sweep.json"  # by hand, without a snapshot: a run whose config was edited is refused too
  state = json.loads(sweep.read_text())
  state["runs"][3]["config"]["eval"]["num_examples"] = 60
  sweep.write_text(json.dumps(state))
  assert run_one.main([f"--runs={runs_dir}", "--index=3"]) == 2
  assert f"the config of run 3 ({item['name']}) was edited after the sweep was expanded" in capsys.readouterr().err
  assert not (runs_dir / item["name"]).exists()


@pytest.mark.slow
def test_a_task_whose_run_directory_holds_the_other_sweeps_run_is_refused(tmp_path, jax_cache):
  runs_dir, _ = _two_jobs(tmp_path, jax_cache)
  runs = json.loads((runs_dir / "sweep.json").read_text())["runs"]  # sweep B
  for index, files in ((5, {"results.json": "{}"}), (6, {"metrics.jsonl": '{"phase": "trunk", "step": 0}\n'})):
    d = runs_dir / runs[index]["name"]  # sweep B's run of that name, finished (5) or not (6)
    d.mkdir()
    (d / "config.json").write_text(json.dumps(runs[index]["config"]))
    for file, text in files.items():
      (d / file).write_text(text)
  before = {p: p.read_bytes() for p in runs_dir.glob("*/*")}

  for index, message in ((5, "holds the finished results of a different config"),
                         (6, "holds an unfinished run of another config (it differs in eval.num_examples)")):
    task = _task(tmp_path / "job_a.sh", index, tmp_path)  # job A's task: refused, not run as sweep B's
    assert task.returncode == 1, task.stdout + task.stderr
    assert f"run {index} {runs[index]['name']}: failed" in task.stdout and message in task.stdout
  assert {p: p.read_bytes() for p in runs_dir.glob("*/*") if p.name not in ("log.txt", ".lock")} == before


def test_allow_code_change_reaches_every_way_a_run_is_started(tmp_path, monkeypatch):
  """--allow-code-change (resume across a package-source change) goes to the local workers, the SLURM tasks and
  run_one's call of the experiment; without it none of them passes it."""
  from butterfly_jax.launch import local, run_one, slurm, state as state_lib
  for allow in (True, False):
    text = slurm.script(tmp_path, [0], sweep=tmp_path / "slurm" / "sweep-x.json", sweep_sha256="a" * 64,
                        allow_code_change=allow)
    assert ("--allow-code-change" in text.splitlines()[-1]) == allow
    spawned = []
    monkeypatch.setattr(local.subprocess, "Popen", lambda cmd, **kw: spawned.append(cmd) or (_ for _ in ()).throw(
        OSError("not started")))
    pool = local.Pool(tmp_path, {"runs": []}, [0], allow_code_change=allow)
    with pytest.raises(OSError):
      pool._spawn()
    assert ("--allow-code-change" in spawned[0]) == allow
    seen = []
    monkeypatch.setattr(state_lib, "read", lambda runs: {"runs": [{"index": 0, "name": "r", "config": {}}]})
    monkeypatch.setattr(run_one, "execute", lambda runs, item, allow_code_change=False: seen.append(
        allow_code_change) or {"status": "finished", "error": None, "seconds": 0.0})
    assert run_one.main(["--runs", str(tmp_path), "--index", "0"] + (["--allow-code-change"] if allow else [])) == 0
    assert seen == [allow]


@pytest.mark.slow
def test_a_second_launcher_on_the_same_runs_is_refused(tmp_path):
  from butterfly_jax.io.rundir import try_lock
  runs_dir = tmp_path / "runs"
  handle, _ = try_lock(runs_dir / ".launch.lock")  # a launcher holding DIR
  try:
    out = _launch(f"--config={SMOKE}", f"--runs={runs_dir}", f"--slurm={tmp_path / 'job.sh'}")
  finally:
    handle.close()
  assert out.returncode == 3 and f"another launcher is running on {runs_dir} (pid {os.getpid()} on " in out.stderr
  assert not (tmp_path / "job.sh").exists()


def test_load_config_applies_set_items_by_field_type():
  """The bench scripts' --config and --set: items parsed as the launcher parses --set, bad fields named."""
  c = sweep_lib.load_config(f"{SMOKE}", ["train.steps=7", "perturb.scales=(0.0, 0.5)"])
  assert c.train.steps == "7" and tuple(c.perturb.scales) == (0.0, 0.5)
  with pytest.raises(sweep_lib.SweepError, match="nosuch"):
    sweep_lib.load_config(f"{SMOKE}", ["train.nosuch=1"])


def test_writing_a_job_script_prunes_snapshots_whose_runs_all_finished(tmp_path):
  """A SLURM snapshot (``DIR/slurm/sweep-<hash>.json``) stays while one of its runs is unfinished and is removed
  once all are (or hold another config's results); the current job's snapshot is always kept."""
  from butterfly_jax.launch import state as state_lib
  from butterfly_jax.io.rundir import write_json_atomic
  config = {"seed": 0, "train": {"steps": "10"}}

  def snap(name, runs):
    path = tmp_path / "slurm" / f"sweep-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": "c.py", "set": [], "runs": [
        {"index": i, "name": r, "overrides": {}, "config": config, "config_sha256": ""} for i, r in enumerate(runs)]}))
    return path

  for name in ("a", "b"):  # finished runs of this config
    (tmp_path / name).mkdir()
    write_json_atomic(tmp_path / name / "config.json", config)
    write_json_atomic(tmp_path / name / "results.json", {"children": []})
  done, open_, current = snap("done", ["a", "b"]), snap("open", ["a", "c"]), snap("current", ["a"])
  assert state_lib.prune_snapshots(tmp_path, keep=current) == [done]
  assert open_.exists() and current.exists() and not done.exists()
  (tmp_path / "c").mkdir()
  write_json_atomic(tmp_path / "c" / "config.json", config)
  write_json_atomic(tmp_path / "c" / "results.json", {"children": []})
  assert state_lib.prune_snapshots(tmp_path) == [current, open_]


def test_the_resnet20_map_is_two_seeds_four_times_and_five_sigmas_under_the_current_definitions():
  from butterfly_jax.report.table import definitions_label
  runs = sweep_lib.expand(f"{shipped.FOLDER / 'reproduce_map.py'}:resnet20_map")
  assert len(runs) == 8 and {r.config.seed for r in runs} == {0, 1}
  assert {r.config.perturb.time for r in runs} == {"0", "100", "1ep", "3ep"}
  assert all(r.config.model.name == "resnet20" and r.config.model.resnet_padding == "symmetric" for r in runs)
  assert all(len([s for s in r.config.perturb.scales if s > 0]) >= 5 for r in runs)
  assert {definitions_label(r.config.to_dict()) for r in runs} == {"v3"}
