"""notebooks/butterfly_effect.ipynb: committed without outputs and equal to what its generator writes; executed top
to bottom (nbclient, a kernel on this interpreter) in its smoke setting, where every claim its cells assert must
hold, its figures must be drawn and its progress bars must be notebook widgets. Its Colab parts run here with a
stand-in: Google Drive as a folder mounted by a fake ``google.colab.drive``, a disconnect as a killed kernel, an
unreachable install source as a path or git address that does not exist (no network)."""

import importlib.util
import json
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

import xla_flags

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "butterfly_effect.ipynb"
KERNEL = "butterfly_jax_test"
WIDGET = "application/vnd.jupyter.widget-view+json"
# Colab's google.colab.drive, as far as the notebook uses it: mount(mountpoint) makes MyDrive appear there (a folder
# of the test's, standing in for /content/drive); ``MOUNT_FAILS`` makes it raise as a refused permission does. JAX
# imports google.colab.output where google.colab is imported (its debugger's Colab display): an empty module here.
FAKE_COLAB = """\
import sys
import types
from pathlib import Path

try:
  import google
except ImportError:
  google = sys.modules["google"] = types.ModuleType("google")
colab, drive, output = (types.ModuleType(f"google.colab{name}") for name in ("", ".drive", ".output"))
MOUNT_FAILS = False


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
  if MOUNT_FAILS:
    raise ValueError("mount failed")
  (Path(mountpoint) / "MyDrive").mkdir(parents=True, exist_ok=True)
  print("Mounted at", mountpoint)


drive.mount, colab.drive, colab.output, google.colab = mount, drive, output, colab
sys.modules.update({"google.colab": colab, "google.colab.drive": drive, "google.colab.output": output})"""


def _generator():
  spec = importlib.util.spec_from_file_location("make_notebook", ROOT / "notebooks" / "make_notebook.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _parameters_index(nb) -> int:
  tagged = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
  assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
  return tagged[0]


def with_parameters(nb, **values):
  """``nb`` with a cell assigning ``values`` after its parameters cell (papermill's convention)."""
  cell = nbformat.v4.new_code_cell("\n".join(f"{name} = {value!r}" for name, value in values.items()))
  cell.metadata["tags"] = ["injected-parameters"]
  nb.cells.insert(_parameters_index(nb) + 1, cell)
  return nb


def _cell(nb, text: str) -> int:
  """The index of the one cell whose source holds ``text``."""
  found = [i for i, cell in enumerate(nb.cells) if text in cell.source]
  assert len(found) == 1, f"expected one cell holding {text!r}, found {len(found)}"
  return found[0]


def _code(source: str, tag: str = "injected-by-test"):
  cell = nbformat.v4.new_code_cell(source)
  cell.metadata["tags"] = [tag]
  return cell


def _stream(nb, name: str = None) -> str:
  """The text the cells of ``nb`` printed (on ``name``: stdout or stderr; both when None)."""
  return "".join(out.text for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
                 if out.output_type == "stream" and name in (None, out.name))


def test_the_committed_notebook_has_no_outputs_and_is_what_its_generator_writes():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [cell for cell in nb.cells if cell.cell_type == "code"]
  assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
  source = nb.cells[_parameters_index(nb)].source
  for name in ("SMOKE = False", "SETTING = ", "OUT = ", "DRIVE = True", "DRIVE_MOUNT = ", "BUTTERFLY_JAX_SOURCE = "):
    assert name in source
  generator = _generator()
  assert NOTEBOOK.read_text() == generator.text(generator.build()), \
      "the notebook differs from its generator's: run python notebooks/make_notebook.py"


def test_the_readme_badge_and_the_install_cell_use_the_repository_address():
  generator = _generator()
  repository = generator.repository_url()
  assert repository == "https://github.com/butterfly-jax/butterfly_jax"
  colab = generator.colab_url(repository)
  assert colab == ("https://colab.research.google.com/github/butterfly-jax/butterfly_jax/blob/main/"
                   "notebooks/butterfly_effect.ipynb")
  readme = (ROOT / "README.md").read_text()
  assert f"]({colab})" in readme.split("```")[0], "the Colab badge belongs above the README's first command"
  nb = nbformat.read(NOTEBOOK, as_version=4)
  assert f'BUTTERFLY_JAX_SOURCE = "git+{repository}"' in nb.cells[_parameters_index(nb)].source
  with pytest.raises(ValueError, match="Repository: expected https://github.com/OWNER/NAME"):
    generator.colab_url("https://example.org/butterfly_jax")


@pytest.fixture
def kernel(tmp_path, monkeypatch):
  """A kernelspec running this interpreter (the test's environment, wherever the test runs), found through
  JUPYTER_PATH; IPython's profile in the temporary folder; of XLA_FLAGS only the suite's XLA level (it compiles
  faster, tests/conftest.py), none of the flags a run sets, so that the notebook's ``runtime.configure()`` cell
  sets them itself, as in a fresh notebook kernel."""
  spec = tmp_path / "jupyter" / "kernels" / KERNEL
  spec.mkdir(parents=True)
  (spec / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "butterfly_jax test", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
  monkeypatch.setenv("XLA_FLAGS", f"{xla_flags.LEVEL}=0")
  return KERNEL


def test_an_unknown_setting_stops_the_notebook_with_the_allowed_ones(tmp_path, kernel):
  from nbclient import NotebookClient
  from nbclient.exceptions import CellExecutionError
  nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), SETTING="cifar")
  with pytest.raises(CellExecutionError, match="SETTING: 'cifar' is not a setting; allowed: 'auto', 'digits'"):
    NotebookClient(nb, kernel_name=kernel, timeout=600, resources={"metadata": {"path": str(tmp_path)}}).execute()
  assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom_in_its_smoke_setting(tmp_path, kernel):
  from nbclient import NotebookClient
  workdir = tmp_path / "work"
  workdir.mkdir()
  nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), SMOKE=True, OUT="runs")
  start = time.monotonic()
  NotebookClient(nb, kernel_name=kernel, timeout=600, resources={"metadata": {"path": str(workdir)}}).execute()
  print(f"the notebook ran in {time.monotonic() - start:.0f} s")
  outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
  assert not [out for out in outputs if out.output_type == "error"]
  images = [out for out in outputs if "image/png" in out.get("data", {})]
  assert len(images) >= 3, f"expected the two report figures and the paths' figure, got {len(images)} images"
  assert any(WIDGET in out.get("data", {}) for out in outputs), "no notebook progress bar (tqdm widget)"
  for t in ("0", "2ep"):
    results = json.loads((workdir / "runs" / "smoke" / f"t={t}" / "results.json").read_text())
    assert results["steps"]["T"] == 279  # 3 epochs of the digits quickstart
  assert sorted(p.name for p in (workdir / "runs" / "smoke" / "figures").glob("*.png")) == [
      "barrier_vs_sigma_batch.png", "l2_from_init_batch.png"]


def test_the_gpu_setting_is_the_papers_resnet20_on_cifar10_through_tfds(tmp_path, kernel):
  """The GPU path, as far as a CPU can take it: the notebook's cells up to its setting, with ``SETTING =
  "resnet20"``, then CIFAR-10 through tensorflow-datasets (mocked: no download here) and the family's plan. Every
  child ends at T, so the σ = 0 twin the notebook asserts equal to child 0 is child 0 at the late time too."""
  from nbclient import NotebookClient
  nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), SETTING="resnet20", OUT="runs")
  setting = next(i for i, cell in enumerate(nb.cells) if "NAME = choose_setting()" in cell.source)
  nb.cells = nb.cells[:setting + 1] + [nbformat.v4.new_code_cell("""\
import tensorflow_datasets as tfds
from butterfly_jax import config as config_lib
from butterfly_jax.run import spec as spec_lib
with tfds.testing.mock_data(num_examples=256):
  data = spec_lib.load_data(CONFIG)
late = CONFIG.copy_and_resolve_references()
late.perturb.time = LATE
steps = config_lib.resolve_steps(late, 50_000)  # CIFAR-10's training set (the mock holds fewer images)
print({"name": NAME, "data": CONFIG.data.name, "model": CONFIG.model.name, "kwargs": CONFIG.model.kwargs.to_dict(),
       "extra_steps": CONFIG.perturb.extra_steps, "scales": list(CONFIG.perturb.scales), "times": [EARLY, LATE],
       "source": data.source, "shape": list(data.input_shape), "classes": data.num_classes, "T": steps["total"],
       "t": steps["t"]})""")]
  NotebookClient(nb, kernel_name=kernel, timeout=600, resources={"metadata": {"path": str(tmp_path)}}).execute()
  assert "the wall time of this setting is an estimate, not measured: about 2.7 h on a T4" in "".join(
      out.text for out in nb.cells[setting].outputs if out.output_type == "stream")
  out = eval(nb.cells[-1].outputs[-1]["text"])
  assert out["name"] == "resnet20" and out["data"] == "cifar10" and out["source"] == "tfds:cifar10"
  assert out["model"] == "resnet20" and out["kwargs"]["norm"] == "layernorm"
  assert out["shape"] == [32, 32, 3] and out["classes"] == 10
  assert out["extra_steps"] is False and out["scales"] == [0.0, 1e-4, 1e-2] and out["times"] == ["0", "10ep"]
  assert (out["T"], out["t"]) == (50 * 390, 10 * 390)  # 50 epochs of CIFAR-10's 50,000 images at batch 128


def test_the_gpu_settings_wall_time_is_labelled_an_estimate_until_build_notes_hold_a_measurement():
  """Wherever the notebook states the GPU setting's wall time (its table, its setting cell's print), it says
  "estimate, not measured" and what the estimate is based on, as long as BUILD_NOTES.md ("The notebook") says the
  GPU path is not run. A measurement written there fails this test until the notebook states it instead."""
  section = (ROOT / "BUILD_NOTES.md").read_text().split("### The notebook", 1)[1].split("\n#", 1)[0]
  assert re.search(r"The GPU path \([^)]*\) is not run", section), (
      "BUILD_NOTES.md, 'The notebook', no longer says that the notebook's GPU path is not run: state the measured "
      "wall time in notebooks/make_notebook.py (GPU_TIME, GPU_TIME_BASIS) instead of the estimate, and update this "
      "test")
  assert "2.0e16 FLOP" in section  # the estimate's basis, as the notebook states it
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # one line per statement: a code cell's strings continued on the next line joined to it
  lines = [line for cell in nb.cells for line in re.sub(r'"\s*,?\s*\n\s*"', " ", cell.source).splitlines()]
  gpu_time = re.compile(r"\d+(\.\d+)? ?(h|min|hours|minutes) on an? (T4|L4|A100|H100|GPU)")
  stated = [line for line in lines if gpu_time.search(line)]
  assert len(stated) == 2, f"expected the table's row and the setting cell's print, found {stated}"
  for line in stated:
    assert "estimate, not measured" in line and "2.0e16 FLOP" in line and "TFLOP/s" in line, line


def test_the_install_cell_says_what_to_do_when_its_source_cannot_be_reached(tmp_path, kernel):
  """With butterfly_jax unimportable (as on a fresh runtime), the install cell given a git address and a wheel that
  cannot be installed (neither needs the network) prints pip's words and what to do (a wheel, or
  BUTTERFLY_JAX_SOURCE at a path or URL), then stops the notebook with an error: never a silent failure."""
  from nbclient import NotebookClient
  wheel = tmp_path / "butterfly_jax-0.0.0-py3-none-any.whl"
  wheel.write_bytes(b"not a wheel")  # the one file the pattern matches
  pattern, missing = str(tmp_path / "butterfly_jax-*.whl"), "git+file:///nonexistent/butterfly_jax"
  nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), BUTTERFLY_JAX_SOURCE=missing)
  params = _parameters_index(nb)
  install = nb.cells[_cell(nb, "WHAT_TO_DO = ")]
  again = _code(install.source)
  nb.cells = nb.cells[:params + 2] + [
      _code('import sys\nsys.modules["butterfly_jax"] = None  # unimportable: the install cell must install it'),
      nb.cells[_cell(nb, "RUNS_ROOT, NOT_DRIVE = runs_folder()")], install,
      _code(f"BUTTERFLY_JAX_SOURCE = {pattern!r}"), again,
      _code("print(requirement('git+https://example.org/butterfly_jax'))")]
  NotebookClient(nb, kernel_name=kernel, timeout=600, allow_errors=True,
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  for cell, requirement in ((install, f"butterfly_jax[report] @ {missing}"),
                            (again, f"butterfly_jax[report] @ {wheel.as_uri()}")):
    errors = [out for out in cell.outputs if out.output_type == "error"]
    assert [(e.ename, e.evalue.split(":")[0]) for e in errors] == [("RuntimeError", "butterfly_jax is not installed")]
    printed = "".join(out.text for out in cell.outputs if out.output_type == "stream")
    assert f"pip install {requirement!r} failed" in printed
    assert "ERROR" in printed.split("pip's last words:")[1], printed  # pip's own message
    for advice in ("pip wheel . --no-deps -w dist", "python -m build --wheel", "%pip install butterfly_jax-*.whl",
                   'BUTTERFLY_JAX_SOURCE = "/content/butterfly_jax-*.whl"', "/content/drive/MyDrive/butterfly_jax_src"):
      assert advice in printed, advice
  assert nb.cells[-1].outputs[-1].text == "butterfly_jax[report] @ git+https://example.org/butterfly_jax\n"


def test_the_drive_cell_keeps_the_runs_local_and_says_why_unless_drive_mounts_on_colab(tmp_path, kernel):
  """Off Colab, with ``DRIVE = False`` on Colab, and when Drive does not mount, the runs go to ``OUT`` and the cell
  says why; on Colab with Drive mounted, under the mount's MyDrive/butterfly_jax."""
  from nbclient import NotebookClient
  mount = tmp_path / "drive"
  nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), DRIVE_MOUNT=str(mount), OUT="runs")
  params = _parameters_index(nb)
  drive = nb.cells[_cell(nb, "RUNS_ROOT, NOT_DRIVE = runs_folder()")]
  cases = [("", "not on Colab"), (FAKE_COLAB, None), ("DRIVE = False", "DRIVE = False"),
           ("DRIVE, MOUNT_FAILS = True, True", "Google Drive did not mount (ValueError: mount failed)")]
  runs = [(_code(setup), _code(drive.source + "\nprint(repr((str(RUNS_ROOT), NOT_DRIVE)))")) for setup, _ in cases]
  nb.cells = nb.cells[:params + 2] + [cell for pair in runs for cell in pair]
  NotebookClient(nb, kernel_name=kernel, timeout=600, resources={"metadata": {"path": str(tmp_path)}}).execute()
  for (setup, why), (_, cell) in zip(cases, runs):
    printed = "".join(out.text for out in cell.outputs if out.output_type == "stream")
    root, not_drive = eval(printed.splitlines()[-1])
    drive_root = str(mount / "MyDrive" / "butterfly_jax")
    assert (root, not_drive is None) == ((drive_root, True) if why is None else ("runs", False))
    assert why is None or not_drive.startswith(why), not_drive
    if why is None:
      assert f"Mounted at {mount}" in printed and f"The runs go to {root}/<setting>/t=<t> on Google Drive" in printed
    else:
      assert f"The runs go to {tmp_path / 'runs'}/<setting>/t=<t> ({why}" in printed
    assert "resumes an unfinished one from its last checkpoint" in printed


@pytest.mark.slow
def test_on_colab_the_runs_go_to_drive_and_running_again_after_a_disconnect_resumes_them(tmp_path, kernel):
  """On "Colab" (the fake google.colab, Drive a folder of the test's), the smoke setting's two runs go under
  MyDrive/butterfly_jax/smoke/, none under ``OUT``. A disconnect (the kernel killed once the late run has written
  its first training-state checkpoint) leaves the early run finished and the late one unfinished; the notebook run
  again in a fresh kernel returns the early run's stored results.json untouched (nothing trained again) and
  resumes the late one from its checkpoint (results.json's ``timing.resumed_from``)."""
  from nbclient import NotebookClient
  from nbclient.exceptions import DeadKernelError
  mount, work = tmp_path / "drive", tmp_path / "work"
  work.mkdir()
  runs = mount / "MyDrive" / "butterfly_jax" / "smoke"
  early, late = runs / "t=0", runs / "t=2ep"
  disconnect = _code(f"""\
import os
import signal
import threading
import time


def disconnect(states={str(late / "checkpoints" / "state")!r}):
  while not list(Path(states).glob("*/manifest.json")):
    time.sleep(0.01)
  os.kill(os.getpid(), signal.SIGKILL)


threading.Thread(target=disconnect, daemon=True).start()""")

  def execute(*before_the_runs):
    """The notebook up to its runs' cell, with the fake google.colab and ``before_the_runs`` just before it."""
    nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), SMOKE=True, DRIVE_MOUNT=str(mount), OUT="runs")
    params, families = _parameters_index(nb), _cell(nb, "RESULTS[when] = bj.run_experiment(c, RUNS[when])")
    nb.cells = (nb.cells[:params + 2] + [_code(FAKE_COLAB)] + nb.cells[params + 2:families] + list(before_the_runs)
                + [nb.cells[families]])
    start = time.monotonic()
    try:
      NotebookClient(nb, kernel_name=kernel, timeout=600, resources={"metadata": {"path": str(work)}}).execute()
    finally:
      print(f"executed in {time.monotonic() - start:.0f} s")
    return nb

  with pytest.raises(DeadKernelError):
    execute(disconnect)
  stored = (early / "results.json").read_bytes()
  assert not (late / "results.json").exists() and list((late / "checkpoints" / "state").glob("*/manifest.json"))
  again = execute()
  printed = _stream(again)
  assert f"Mounted at {mount}" in printed and f"The runs go to {runs.parent}/<setting>/t=<t> on Google Drive" in printed
  assert f"{early} already holds this run's results; nothing to do" in printed
  assert f"{late} holds an unfinished run; resuming it from its" in printed
  assert (early / "results.json").read_bytes() == stored
  resumed = json.loads((late / "results.json").read_text())["timing"]["resumed_from"]
  assert resumed["step"] > 0, resumed
  assert not (work / "runs").exists(), "a run went to OUT, not to Drive"
