"""The command line and the shipped configs."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from butterfly_jax import config as config_lib
from butterfly_jax.run import config_files as shipped
from butterfly_jax.run import spec as spec_lib
import xla_flags

CONFIGS = [shipped.FOLDER / f"{name}.py" for name in shipped.names()]


def _load(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_validates_and_documents_its_command(path):
  module = _load(path)
  c = module.get_config()
  spec_lib.check(c)
  for field in (c.train.steps, c.perturb.time, c.schedule.warmup):  # so "--config.perturb.time=5ep" parses
    assert isinstance(field, str)
  assert "python -m butterfly_jax.main --config=configs/" + path.name in module.__doc__


def test_paper_config_matches_the_paper():
  c = _load(shipped.FOLDER / "resnet20.py").get_config()
  assert (c.model.name, c.model.kwargs.width, c.model.kwargs.norm) == ("resnet20", 2, "layernorm")
  assert (c.optim.name, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == ("sgd", 0.1, 0.9, 0.0)
  assert (c.schedule.name, c.schedule.warmup, c.train.batch_size) == ("triangular", "1ep", 128)
  assert config_lib.to_steps(c.train.steps, 50_000 // 128, "train.steps") == 19_500
  # the authors' ResNet-20 scripts: flips and RandomRotation(10), no translation or cutout; T steps after t
  assert (c.data.augment.flip, c.data.augment.rotate, c.data.augment.translate, c.data.augment.cutout) == (
      True, 10.0, 0, 0)
  assert c.perturb.extra_steps and c.perturb.extra_lr == "decay" and not c.perturb.rewind_lr


@pytest.mark.parametrize("name", ["resnet50_c100_to_c10", "resnet50_c10_to_c100"])
def test_resnet50_transfer_sweeps_start_from_steps_their_pretraining_keeps(name):
  module = _load(shipped.FOLDER / f"{name}.py")
  pre, fine = module.get_config("pretrain"), module.get_config()
  spec_lib.check(pre)
  assert pre.perturb.scales == () and pre.data.name != fine.data.name
  assert (pre.model.name, pre.model.kwargs.norm) == (fine.model.name, fine.model.kwargs.norm) == ("resnet34",
                                                                                                   "layernorm")
  assert (fine.schedule.name, fine.optim.weight_decay, fine.data.augment.rotate) == ("onecycle", 1e-4, 10.0)
  kept = set(config_lib.resolve_steps(pre, 50_000)["keep"])
  declared = []
  module.sweep(lambda **kw: declared.append(kw["init.checkpoint"]))
  starts = {int(ck.rpartition(":")[2]) for ck in declared}
  assert len(starts) == 8 and starts <= kept
  assert {ck.rpartition(":")[0] for ck in declared} == {module.PRETRAIN_DIR}
  with pytest.raises(ValueError, match="pretrain"):
    module.get_config("pre-train")


def _cli(*args, cwd):
  return subprocess.run([sys.executable, "-m", "butterfly_jax.main", *args], cwd=cwd, capture_output=True,
                        text=True, timeout=600)


def test_cli_runs_a_config_with_overrides(tmp_path):
  out = _cli(f"--config={shipped.FOLDER / 'smoke.py'}", f"--workdir={tmp_path / 'run'}",
             "--config.perturb.scales=(0.0,0.05)", "--config.perturb.kind=gaussian", "--config.seed=3",
             "--config.perturb.time=20", "--allow-code-change", "--no-discard-unfinished",  # either spelling
             cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-2000:]
  res = json.loads((tmp_path / "run" / "results.json").read_text())
  assert [ch["perturb"]["scale"] for ch in res["children"]] == [0.0, 0.0, 0.05]
  assert res["children"][2]["perturb"]["kind"] == "gaussian"
  twin = res["children"][1]["vs_child0"]  # the sigma = 0 twin through the command line: bitwise child 0
  assert twin["l2"] == 0.0 and twin["disagreement"] == 0.0
  assert all(twin["barrier"][s][m] == 0.0 for s in ("train", "test") for m in ("loss", "error"))
  assert res["steps"]["t"] == 20
  assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 3
  assert "child 2  sigma=0.05" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("model", [
    ["--config.model.name=cnn", "--config.model.kwargs={'channels': (4, 8), 'dense': 16}"],
    # 8-channel LayerNorms: with XLA's fusion emitters its unrolled copies compiled differently and the twin parted
    # at step 0 (butterfly_jax/io/runtime.py, TWIN_FLAGS); a slow test, as runs at the default level are
    pytest.param(["--config.model.name=resnet", "--config.model.kwargs={'depth': 8, 'width': 0.5}",
                  "--config.data.name=synthetic", "--config.data.synthetic.shape=(8,8,3)"],
                 marks=pytest.mark.slow, id="resnet8-w0.5")], ids=lambda m: m[0].rsplit("=", 1)[1])
def test_main_at_xla_default_optimisation_keeps_twins_bitwise(tmp_path, model):
  """The suite compiles at XLA:CPU's optimisation level 0 (tests/conftest.py), at which XLA compiles the unrolled
  members' copies alike; a convolutional family here runs at XLA's default level, as runs outside the tests do, under
  the CPU's default (sequential) members strategy: its sigma = 0 twin ends bitwise equal to child 0."""
  flags = xla_flags.default_level()
  out = subprocess.run([sys.executable, "-m", "butterfly_jax.main", f"--config={shipped.FOLDER / 'smoke.py'}",
                        f"--workdir={tmp_path / 'run'}", *model, "--config.perturb.scales=(0.0,1e-2)"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "XLA_FLAGS": flags})
  assert out.returncode == 0, out.stderr[-2000:]
  res = json.loads((tmp_path / "run" / "results.json").read_text())
  assert res["members_strategy"] == "sequential"
  twin, perturbed = res["children"][1]["vs_child0"], res["children"][2]["vs_child0"]
  assert twin["l2"] == 0.0 and twin["disagreement"] == 0.0
  assert all(twin["barrier"][s][m] == 0.0 for s in ("train", "test") for m in ("loss", "error"))
  assert perturbed["l2"] > 0


def test_cli_bad_config_exits_with_the_field_named(tmp_path):
  out = _cli(f"--config={shipped.FOLDER / 'smoke.py'}", f"--workdir={tmp_path / 'run'}",
             "--config.optim.name=lion", cwd=tmp_path)
  assert out.returncode == 2
  assert "optim.name: unknown value 'lion'" in out.stderr


@pytest.mark.slow
def test_cli_default_is_the_embedded_quickstart_and_takes_overrides(tmp_path):
  out = _cli(f"--workdir={tmp_path / 'run'}", "--config.train.steps=30", "--config.log.every_steps=10",
             "--config.eval.num_examples=100", "--config.log.progress=False", "--config.schedule.warmup=5",
             cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-2000:]
  res = json.loads((tmp_path / "run" / "results.json").read_text())
  assert res["data"]["name"] == "digits" and res["steps"]["T"] == 30
  assert [ch["perturb"]["scale"] for ch in res["children"]] == [0.0, 0.0, 1e-6, 1e-4, 1e-2]
  assert "The smallest perturbation (sigma = 1e-06)" in out.stdout  # the summary's reading


def _script(code, *args, cwd):
  """``python -c CODE ARGS``: the command line with a fault injected by ``code`` (which calls main.cli())."""
  return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=cwd, capture_output=True, text=True,
                        timeout=600)


def _one_error_line(out):
  assert "Traceback" not in out.stderr, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1, out.stderr[-2000:]
  return lines[0]


@pytest.mark.slow
def test_cli_unknown_fields_are_one_line_naming_the_field(tmp_path):
  out = _cli("--config.nosuch=1", f"--workdir={tmp_path / 'run'}", cwd=tmp_path)  # the embedded default config
  assert out.returncode == 2
  line = _one_error_line(out)
  assert line.startswith("error: --config.nosuch: the config has no field 'nosuch'; its sections and fields: ")
  assert "perturb" in line and "seed" in line
  out = _cli(f"--config={shipped.FOLDER / 'smoke.py'}", "--config.perturb.nosuch=1", f"--workdir={tmp_path / 'r'}",
             cwd=tmp_path)
  assert out.returncode == 2
  line = _one_error_line(out)
  assert line.startswith("error: --config.perturb.nosuch: perturb has no field 'nosuch'; its fields: batch_dropout, batch_sign, ")
  out = _cli(f"--config={shipped.FOLDER / 'smoke.py'}", "--config.model.kwargs.width=2",
             f"--workdir={tmp_path / 'r'}", cwd=tmp_path)
  assert out.returncode == 2
  assert "model.kwargs has no field 'width'; its fields: hidden (model mlp takes hidden, norm;" in _one_error_line(out)
  out = _cli(f"--config={shipped.FOLDER / 'smoke.py'}", "--config.train.batch_size=abc",
             f"--workdir={tmp_path / 'r'}", cwd=tmp_path)
  assert out.returncode == 2 and "--config.train.batch_size=abc" in _one_error_line(out)
  assert not (tmp_path / "r").exists() and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_threshold_unknown_fields_and_flags_are_one_line(tmp_path):
  """The threshold search takes the same config overrides: a field the config lacks is named in one line."""
  def threshold(*args):
    return subprocess.run([sys.executable, "-m", "butterfly_jax.threshold", f"--config={shipped.FOLDER / 'smoke.py'}",
                           f"--runs={tmp_path / 'thr'}", "--times=0", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
  out = threshold("--config.perturb.nosuch=1")
  assert out.returncode == 2
  assert _one_error_line(out).startswith("error: --config.perturb.nosuch: perturb has no field 'nosuch'; its fields: ")
  out = threshold("--bogus=1")
  assert out.returncode == 2 and "bogus" in _one_error_line(out)
  assert not (tmp_path / "thr").exists()
  # a valid override is parsed once (parsing twice defined its flag twice) and reaches the runs
  out = threshold("--config.perturb.kind=gaussian", "--seeds=0", "--rounds=1", "--points=2", "--per_seed")
  assert out.returncode == 0, out.stderr
  assert "t=0 seed=0" in out.stdout
  (run,) = [d for d in (tmp_path / "thr").iterdir() if d.is_dir()]
  assert json.loads((run / "config.json").read_text())["perturb"]["kind"] == "gaussian"


def test_cli_bad_model_argument_is_a_config_error(tmp_path):
  out = _cli(f"--config={shipped.FOLDER / 'smoke.py'}", "--config.model.kwargs.hidden=(0,)",
             f"--workdir={tmp_path / 'run'}", cwd=tmp_path)
  assert out.returncode == 2
  assert _one_error_line(out) == ("error: model.kwargs.hidden: expected a tuple of hidden-layer widths, integers >= 1, "
                                  "got (0,)")


@pytest.mark.slow
def test_cli_os_errors_are_one_line_naming_the_path(tmp_path):
  (tmp_path / "a_file").write_text("")
  out = _cli(f"--config={shipped.FOLDER / 'smoke.py'}", f"--workdir={tmp_path / 'a_file' / 'run'}", cwd=tmp_path)
  assert out.returncode == 1
  assert _one_error_line(out).startswith(f"error: {tmp_path / 'a_file' / 'run'}: Not a directory; the files written "
                                         "so far are kept")
  # a full disk: the write that fails names no file; the run directory's writer names it
  full_disk = """
      import errno, os
      from butterfly_jax import main
      def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
      os.fsync = fsync
      main.cli()
  """
  run = tmp_path / "run"
  out = _script(full_disk, f"--config={shipped.FOLDER / 'smoke.py'}", f"--workdir={run}", cwd=tmp_path)
  assert out.returncode == 1
  assert _one_error_line(out) == (f"error: {run / 'config.json'}: No space left on device; the files written so far "
                                  "are kept: free space and run the same command again to resume from the newest "
                                  "checkpoint")
  assert not run.exists()  # no torn config.json, no temporary file, and a folder it made holding nothing: gone


@pytest.mark.slow
def test_cli_unexpected_error_is_one_line_with_the_traceback_in_the_workdir(tmp_path):
  bug = """
      from butterfly_jax import main
      from butterfly_jax.run import spec
      def broken(*args):
        raise ValueError("an impossible shape")
      spec.check_shapes = broken
      main.cli()
  """
  run = tmp_path / "run"
  out = _script(bug, f"--config={shipped.FOLDER / 'smoke.py'}", f"--workdir={run}", cwd=tmp_path)
  assert out.returncode == 1
  assert _one_error_line(out) == (f"error: unexpected ValueError: an impossible shape (a bug, not a bad input: "
                                  f"traceback in {run / 'error_traceback.txt'})")
  text = (run / "error_traceback.txt").read_text()
  assert text.startswith("Traceback") and "in broken" in text and text.endswith("ValueError: an impossible shape\n")


def test_the_summary_says_what_is_compared_and_reads_the_smallest_sigma():
  from butterfly_jax.main import summary

  def child(i, scale, l2, barrier):
    c = {"index": i, "perturb": {"scale": scale, "kind": "batch"}, "diverged": False,
         "test": {"accuracy": 0.9}, "train": {"loss": 0.1}}
    if i:
      c["vs_child0"] = {"l2": l2, "barrier": {s: {"loss": barrier, "error": 0.0} for s in ("train", "test")}}
    return c

  far = summary({"steps": {"t": 0, "T": 100}, "children": [child(0, 0.0, 0, 0), child(1, 0.0, 0.0, 0.0),
                                                            child(2, 1e-6, 40.0, 0.34), child(3, 1e-2, 50.0, 0.5)]})
  assert "t = 0 of T = 100 (batch direction)" in far and "control: exactly 0" in far
  assert far.splitlines()[-1].startswith("The smallest perturbation (sigma = 1e-06) ended 40.0000")
  assert "different basins (barrier >= 0.01)" in far
  near = summary({"steps": {"t": 50, "T": 100}, "children": [child(0, 0.0, 0, 0), child(1, 1e-6, 7.0, 0.0037)]})
  assert "still linearly connected (barrier < 0.01)" in near and "control" not in near
  extra = [child(0, 0.0, 0, 0), child(1, 0.0, 3.0, 0.02), child(2, 1e-6, 7.0, 0.03)]  # perturb.extra_steps, t > 0
  extra[0]["end_step"], extra[1]["end_step"], extra[2]["end_step"] = 100, 150, 150
  extra = summary({"steps": {"t": 50, "T": 100}, "children": extra})
  assert "control" not in extra and "twin trains on to step 150" in extra and "extra training alone" in extra


def test_every_command_takes_hyphens_or_underscores():
  """One convention: a flag of several words is accepted spelled with hyphens or underscores by the absl commands
  (run, proxy, threshold) and the argparse ones (launch, report); overrides and values are left alone."""
  from butterfly_jax.run.commands import absl_argv, spellings
  from butterfly_jax.launch.__main__ import parse_args
  from butterfly_jax.report.__main__ import main as report_main
  assert absl_argv(["prog", "--allow-code-change", "--no-discard-unfinished", "--num-examples=5",
                    "--config.perturb.mask.exclude=a-b", "--workdir=my-dir", "x-y", "--", "--keep-me"]) == [
      "prog", "--allow_code_change", "--nodiscard_unfinished", "--num_examples=5", "--config.perturb.mask.exclude=a-b",
      "--workdir=my-dir", "x-y", "--", "--keep-me"]
  assert spellings("--dry-run") == ("--dry-run", "--dry_run") and spellings("--runs") == ("--runs",)
  for flag in ("--allow-code-change", "--allow_code_change"):
    assert parse_args(["--config=c.py", "--runs=d", flag, "--dry_run", "--jax_cache=", "--runs_per_worker=2"]
                      ).allow_code_change
  from pathlib import Path
  assert report_main(["--runs", str(Path(__file__).parent), "--no_figures"]) == 2  # no runs there: not a usage error


def test_dry_run_print_config_help_and_a_required_workdir(tmp_path):
  """--dry_run prints the plan and --print_config the config, writing nothing; --help lists the config fields with
  their docs; --workdir has no silent default but the quickstart's."""
  out = _cli(f"--config={shipped.FOLDER / 'smoke.py'}", f"--workdir={tmp_path / 'run'}", "--dry-run",
             "--config.perturb.time=20", cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "t = 20" in out.stdout and "K = 3 members" in out.stdout and "devices:" in out.stdout
  out = _cli(f"--config={shipped.FOLDER / 'smoke.py'}", f"--workdir={tmp_path / 'run'}", "--print_config",
             "--config.seed=7", cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-2000:]
  printed = json.loads(out.stdout)
  assert printed["seed"] == 7 and printed["model"]["name"] == "mlp"
  assert not (tmp_path / "run").exists()
  bad = _cli(f"--config={shipped.FOLDER / 'smoke.py'}", "--dry_run", "--config.perturb.time=99999", cwd=tmp_path)
  assert bad.returncode == 2 and "perturb.time" in bad.stderr
  nowhere = _cli(f"--config={shipped.FOLDER / 'smoke.py'}", cwd=tmp_path)  # no silent default but the quickstart's
  assert nowhere.returncode == 2 and nowhere.stderr.startswith("error: --workdir:") and not list(tmp_path.iterdir())
  helped = _cli("--help", cwd=tmp_path)
  assert "perturb.batch_source = 'fresh'" in helped.stdout and "--workdir" in helped.stdout
