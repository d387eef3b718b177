"""notebooks/butterfly_effect.ipynb: committed without outputs and equal to what its generator writes; executed top
to bottom (nbclient, a kernel on this interpreter) in its smoke setting, where every claim its cells assert must
hold, its figures must be drawn and its progress bars must be notebook widgets."""

import importlib.util
import json
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


def test_the_committed_notebook_has_no_outputs_and_is_what_its_generator_writes():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [cell for cell in nb.cells if cell.cell_type == "code"]
  assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
  source = nb.cells[_parameters_index(nb)].source
  assert "SMOKE = False" in source and "SETTING = " in source and "OUT = " in source and "INSTALL = " in source
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
  assert f"git+{repository}" in nb.cells[_parameters_index(nb)].source
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
  out = eval(nb.cells[-1].outputs[-1]["text"])
  assert out["name"] == "resnet20" and out["data"] == "cifar10" and out["source"] == "tfds:cifar10"
  assert out["model"] == "resnet20" and out["kwargs"]["norm"] == "layernorm"
  assert out["shape"] == [32, 32, 3] and out["classes"] == 10
  assert out["extra_steps"] is False and out["scales"] == [0.0, 1e-4, 1e-2] and out["times"] == ["0", "10ep"]
  assert (out["T"], out["t"]) == (50 * 390, 10 * 390)  # 50 epochs of CIFAR-10's 50,000 images at batch 128
