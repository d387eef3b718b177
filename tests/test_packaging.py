"""The installed package: shipped config files found from any directory, the launcher's old ``launch`` name in the
repository, a source hash that config and launcher edits leave alone, pyproject.toml's package list and version
floors (the same as .ci/floors.txt's), and (marked ``install``) the wheel in a fresh virtual environment outside
the checkout running a sweep, a SLURM task and the report."""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from butterfly_jax.config import ConfigError
from butterfly_jax.io.rundir import tree_hash
from butterfly_jax.launch import sweep as sweep_lib
from butterfly_jax.run import config_files as configs

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"butterfly-run", "butterfly-launch", "butterfly-report", "butterfly-proxy", "butterfly-threshold"}


def test_configs_name_finds_the_shipped_file_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  smoke = configs.FOLDER / "smoke.py"
  assert configs.resolve("configs/smoke.py") == str(smoke)
  transfer = configs.FOLDER / "resnet50_c100_to_c10.py"
  assert configs.resolve("./configs/resnet50_c100_to_c10.py:pretrain") == f"{transfer}:pretrain"
  assert configs.resolve_argv(["--config", "configs/smoke.py", "--runs=r"]) == ["--config", str(smoke), "--runs=r"]
  assert configs.resolve_argv(["--workdir=w", "--config=configs/smoke.py:a"]) == ["--workdir=w", f"--config={smoke}:a"]
  # a config file that starts from a sibling (config_file(..., beside=__file__)) loads from anywhere
  module, _ = sweep_lib.load_config_module("configs/fashion_mnist_finetune.py")
  assert module.get_config().data.classes == (5, 6, 7, 8, 9)
  assert {"smoke", "quickstart", "fashion_mnist", "resnet20"} <= set(configs.names())

  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "smoke.py").write_text("# a file of one's own\n")
  assert configs.resolve("configs/smoke.py") == "configs/smoke.py"   # a path that exists is used as it is

  for spec, what in (("configs/nope.py", "no config file at 'configs/nope.py'"),
                     ("elsewhere/smoke.py", "no config file at 'elsewhere/smoke.py'"),
                     ("configs", "configs is a folder")):
    with pytest.raises(ConfigError, match="^--config: ") as e:
      configs.resolve(spec)
    assert what in str(e.value) and "smoke, study_batch_size" in str(e.value) and str(configs.FOLDER) in str(e.value)
  with pytest.raises(sweep_lib.SweepError, match="no config file at 'configs/nope.py'"):
    sweep_lib.expand("configs/nope.py")


def test_the_launch_name_still_runs_the_launcher_from_the_repository_root(tmp_path):
  sys.path.insert(0, str(ROOT))
  try:
    import launch
    from launch.sweep import product
  finally:
    sys.path.remove(str(ROOT))
  assert product is sweep_lib.product and launch.sweep is sweep_lib
  out = subprocess.run([sys.executable, "-m", "launch", "--config=configs/smoke.py", f"--runs={tmp_path}",
                        "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and f"20 runs, 20 to run, in {tmp_path}" in out.stdout, out.stderr[-2000:]


def test_editing_what_cannot_change_a_run_leaves_the_source_hash(tmp_path):
  """A resume is refused when the package source changed (rundir.check_resume); config files, the launcher, the
  report's figures, the proxy and the progress display do not change what a run computes."""
  package = tmp_path / "butterfly_jax"
  shutil.copytree(ROOT / "butterfly_jax", package, ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copytree(configs.FOLDER, package / "configs", ignore=shutil.ignore_patterns("__pycache__"))  # as in a wheel
  before = tree_hash(package)
  for edited in (package / "configs" / "smoke.py", package / "launch" / "local.py", package / "report" / "figures.py",
                 package / "proxy.py", package / "run" / "progress.py", package / "run" / "commands.py"):
    edited.write_text(edited.read_text() + "\n# edited\n")
  assert tree_hash(package) == before
  (package / "core" / "tree_math.py").write_text((package / "core" / "tree_math.py").read_text() + "\n# edited\n")
  assert tree_hash(package) != before


def test_pyproject_lists_every_package_folder():
  """pyproject.toml names the packages (it maps configs/ in) and the data-only folders with their files
  (package-data: the tiny GLUE task); a new subpackage or data folder must be named there too."""
  import tomllib
  tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
  found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "butterfly_jax").rglob("__init__.py")
           if "__pycache__" not in p.parts}
  data = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "butterfly_jax").rglob("*")
          if p.is_file() and p.suffix in (".tsv", ".txt", ".json") and "__pycache__" not in p.parts}
  assert data and set(tool["package-data"]) == data
  assert set(tool["packages"]) == found | data | {"butterfly_jax.configs"}
  assert tool["package-dir"] == {"butterfly_jax.configs": "configs"} and (ROOT / "configs" / "__init__.py").is_file()


def test_the_floors_file_pins_every_floor_pyproject_declares():
  """CI tests the floors by installing with .ci/floors.txt as constraints (docs/testing.md): it pins each dependency
  of the package and of its report and track extras at the floor pyproject.toml declares, nothing else but jaxlib
  (at jax's floor: jax needs its own version), and the test extra repeats those extras' floors."""
  import tomllib
  from packaging.requirements import Requirement
  from packaging.utils import canonicalize_name
  from packaging.version import Version

  def bounds(lines, operator):
    out = {}
    for line in lines:
      req = Requirement(line)
      (spec,) = req.specifier  # one bound each
      assert spec.operator == operator and not req.marker, line
      out[canonicalize_name(req.name)] = Version(spec.version)
    return out

  project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
  extras = project["optional-dependencies"]
  declared = bounds(project["dependencies"] + extras["report"] + extras["track"], ">=")
  lines = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines()]
  pinned = bounds([line for line in lines if line], "==")
  assert pinned.pop("jaxlib") == pinned["jax"]
  assert pinned == declared
  test = {canonicalize_name(Requirement(r).name): r for r in extras["test"]}
  for r in extras["report"] + extras["track"]:
    assert test[canonicalize_name(Requirement(r).name)] == r


# --- the wheel, installed outside the checkout --------------------------------------------------------------

def _run(cmd, cwd, env, timeout=600):
  out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, f"{cmd}: exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
  return out


def _build_wheel(tmp_path, env) -> Path:
  """The wheel of a copy of the package's sources (nothing written into the checkout). With setuptools >= 77
  here (pyproject.toml's build requirement) it builds offline; otherwise pip fetches the build backend, as
  ``pip install`` does."""
  src = tmp_path / "src"
  for folder in ("butterfly_jax", "configs"):
    shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(ROOT / name, src / name)
  try:
    local = tuple(int(x) for x in importlib.metadata.version("setuptools").split(".")[:2]) >= (77, 0)
  except (importlib.metadata.PackageNotFoundError, ValueError):
    local = False
  _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *(["--no-build-isolation"] if local else []),
        "-w", tmp_path / "dist", src], tmp_path, env)
  (wheel,) = (tmp_path / "dist").glob("butterfly_jax-*.whl")
  return wheel


def _fresh_venv(tmp_path, wheel, env) -> Path:
  """A virtual environment with the wheel installed and, after it, this environment's installed packages on its
  path (a .pth file: nothing downloaded). Only folders are added, so no .pth of theirs runs (an editable install
  of the checkout stays off) and the venv's own site-packages, holding the wheel, comes first."""
  venv = tmp_path / "venv"
  _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
  python = venv / "bin" / "python"
  _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
       tmp_path, env)
  site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path,
                   env).stdout.strip())
  ours = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
  (site / "zz_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
  return venv


@pytest.mark.slow
@pytest.mark.install
def test_the_installed_wheel_runs_a_sweep_a_slurm_task_and_the_report_outside_the_checkout(tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
  venv = _fresh_venv(tmp_path, _build_wheel(tmp_path, env), env)
  bin_dir, work = venv / "bin", tmp_path / "work"
  work.mkdir()

  probe = ("import butterfly_jax, importlib.metadata as m, importlib.util as u, json; "
           "d = m.distribution('butterfly_jax'); "
           "s = {e.name: callable(e.load()) for e in d.entry_points if e.group == 'console_scripts'}; "
           "c = u.find_spec('butterfly_jax.configs').submodule_search_locations[0]; "
           "print(json.dumps({'file': butterfly_jax.__file__, 'scripts': s, 'launch': u.find_spec('launch') is None, "
           "'configs': c}))")
  seen = json.loads(_run([bin_dir / "python", "-c", probe], work, env).stdout.splitlines()[-1])
  assert Path(seen["file"]).resolve().is_relative_to(venv.resolve()), seen  # the wheel's, not the checkout's
  assert seen["scripts"] == dict.fromkeys(SCRIPTS, True) and seen["launch"], seen
  shipped = Path(seen["configs"])  # the top-level configs/ travels as butterfly_jax.configs
  assert shipped.resolve().is_relative_to(venv.resolve()) and (shipped / "smoke.py").is_file(), seen
  assert {p.name for p in shipped.glob("*.py")} == {p.name for p in configs.FOLDER.glob("*.py")}
  for command, flag in (("butterfly-run", "--workdir"), ("butterfly-threshold", "--times")):  # absl's --help
    shown = subprocess.run([bin_dir / command, "--help"], cwd=work, env=env, capture_output=True, text=True,
                           timeout=300)  # exit status 1, absl's for --help
    assert f"{bin_dir / command}:\n" in shown.stdout and f"  {flag}: " in shown.stdout, shown.stdout[-3000:]

  runs, cache = work / "runs", tmp_path / "jax_cache"
  launch = [bin_dir / "butterfly-launch", "--config=configs/smoke.py", f"--runs={runs}", f"--jax-cache={cache}"]
  _run([*launch, f"--slurm={work / 'job.sh'}"], work, env)
  job = (work / "job.sh").read_text()
  assert f"cd {work}\n" in job and "PYTHONPATH" not in job and " -m butterfly_jax.launch.run_one " in job
  task = _run(["bash", work / "job.sh"], tmp_path, {**env, "SLURM_ARRAY_TASK_ID": "0"})
  assert ": finished" in task.stdout

  sweep = _run(launch, work, env)
  assert "20 runs, 1 already finished, 19 to run" in sweep.stdout
  state = json.loads((runs / "sweep.json").read_text())
  assert [item["status"] for item in state["runs"]] == ["skipped"] + ["finished"] * 19
  assert len(list(runs.glob("*/results.json"))) == 20

  # the table only: the figures are the report tests' subject, and the wheel ships no file they read
  report = _run([bin_dir / "butterfly-report", f"--runs={runs}", f"--out={work / 'report'}", "--no-figures"], work,
                env)
  written = [Path(line) for line in report.stdout.splitlines() if line.startswith(str(work / "report"))]
  assert work / "report" / "table.csv" in written and all(p.is_file() for p in written), report.stdout
