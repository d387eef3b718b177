"""Writes ``notebooks/butterfly_effect.ipynb`` from the cells below, without outputs.

    python notebooks/make_notebook.py            # (re)write the notebook
    python notebooks/make_notebook.py --check    # exit status 1 if the committed notebook differs

The notebook is kept as code here so that it is reviewed as code and regenerated, never edited by hand;
``tests/test_notebook.py`` checks that the committed file equals what this script writes and executes it top to
bottom with a small parameter cell. The repository's address comes from ``pyproject.toml``
(``[project.urls] Repository``), its one home.
"""

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "butterfly_effect.ipynb"
# The GPU setting's wall time, stated in the notebook's table and printed by its setting cell, and what it is based
# on: an estimate until BUILD_NOTES.md ("The notebook") holds a measurement (tests/test_notebook.py checks both).
GPU_TIME = "about 2.7 h on a T4, 27 min on an L4, 11 min on an A100"
GPU_TIME_BASIS = "XLA's count of the runs' 2.0e16 FLOP at an assumed 2, 12 and 30 TFLOP/s"


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
  """``[project.urls] Repository`` of ``pyproject.toml``, without a trailing slash."""
  import tomllib
  urls = tomllib.loads(pyproject.read_text())["project"].get("urls", {})
  if "Repository" not in urls:
    raise ValueError(f"{pyproject}: [project.urls] has no Repository; it holds {sorted(urls)}")
  return urls["Repository"].rstrip("/")


def colab_url(repository: str, branch: str = "main") -> str:
  """The address that opens this notebook of ``repository`` (a GitHub address) in Colab."""
  m = re.fullmatch(r"https://github\.com/([^/]+/[^/]+)", repository)
  if not m:
    raise ValueError(f"[project.urls] Repository: expected https://github.com/OWNER/NAME, got {repository!r}")
  return (f"https://colab.research.google.com/github/{m.group(1)}/blob/{branch}/"
          f"{NOTEBOOK.relative_to(ROOT).as_posix()}")


def cells(repository: str) -> list:
  """The notebook's cells, as (kind, source, tags) in order."""
  badge = f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(repository)})"
  notes = f"[BUILD_NOTES.md]({repository}/blob/main/BUILD_NOTES.md)"
  return [
      ("markdown", f"""\
# The butterfly effect in neural-network training

{badge}

Train a network to step *t*, copy it into a family of children, perturb every child but child 0 once by σ (a
fraction of the network's size at initialisation: σ = 1e-4 is a ten-thousandth of it), train the whole family on
with **identical SGD noise** (the same batches in the same order), then compare each child with child 0: the L2
distance between their weights and the **barrier**, how far the loss rises above the straight line between the
two networks (0: they lie in one linearly connected basin). This reimplements the experiments of *The Butterfly
Effect: Neural Network Training Trajectories Are Highly Sensitive to Initial Conditions* (Altıntaş, Kwok, Raffel,
Rolnick, ICML 2025) with [butterfly_jax]({repository}).

The notebook runs two families, perturbed early and late in training, shows the barrier against σ at both times
and the distance between the twins over training, then uses the library on the runs' saved checkpoints
(interpolation, `barrier_from_curve`, weight matching, CKA). Every claim the text makes about the runs is checked
by an `assert` in the cell after it, so a run in which a claim fails stops there (the one claim not measured for
ResNet-20 is reported there instead).

| runtime | setting | wall time |
| --- | --- | --- |
| GPU | the paper's ResNet-20 (width ×2, LayerNorm) on CIFAR-10 (downloaded by tensorflow-datasets), 50 epochs, σ ∈ {{0, 1e-4, 1e-2}} | **estimate, not measured**: {GPU_TIME} ({GPU_TIME_BASIS}; {notes}, "The notebook") |
| CPU with Fashion-MNIST's files (`apt-get install dataset-fashion-mnist`) | an MLP 512-512 on Fashion-MNIST, 20 epochs, σ ∈ {{0, 1e-4, 1e-2}} | about 15 min on 2 cores ({notes}, "The notebook") |
| CPU otherwise (Colab's CPU runtime) | the digits quickstart: an MLP on scikit-learn's digits, 20 epochs, σ ∈ {{0, 1e-6, 1e-4, 1e-2}} | 1-3 min on 2 cores ({notes}, "The notebook") |

On Colab, choose the runtime (Runtime → Change runtime type) before running the cells, then Runtime → Run all;
the runs are kept on Google Drive, so that after a disconnect Run all continues them (below, "Where the runs go").
""", ()),
      ("markdown", """\
## Parameters

`SETTING = "auto"` picks the row of the table above for this machine; name one (`"digits"`, `"fashion_mnist"`,
`"resnet20"`) to choose it yourself (`"fashion_mnist"` without the local files downloads the data through
tensorflow-datasets). `SMOKE = True` is a 3-epoch digits setting that needs about a minute of CPU time, the setting
in which this notebook is tested. `DRIVE` keeps the runs on Google Drive on Colab, `OUT` is their folder
elsewhere; `BUTTERFLY_JAX_SOURCE` is where butterfly_jax is installed from where it is missing.""", ()),
      ("code", f"""\
SMOKE = False      # True: 3 epochs of the digits quickstart, about a minute of CPU time (the notebook's test)
SETTING = "auto"   # "auto", "digits", "fashion_mnist" or "resnet20"
SEED = 0           # the runs' seed
DRIVE = True       # on Colab: mount Google Drive and keep the runs in MyDrive/butterfly_jax (ignored elsewhere)
DRIVE_MOUNT = "/content/drive"          # where Colab mounts Google Drive
OUT = "runs/butterfly_effect_notebook"  # the runs' folder without Drive: one folder per setting and perturbation time
BUTTERFLY_JAX_SOURCE = "git+{repository}"  # pip's source: a URL, a wheel or a folder""",
       ("parameters",)),
      ("markdown", """\
## Where the runs go

On Colab with `DRIVE = True`, this cell mounts Google Drive (Colab asks for permission) and the runs' folders go
under `MyDrive/butterfly_jax/<setting>/`, where they outlive the runtime; elsewhere, or when Drive does not mount,
under `OUT`. Each run checkpoints its training state as it trains (`checkpoint.every_steps` and the end of each
phase: docs/run-directory.md), so running the notebook again on the same folder, after a disconnect on Colab too, reads
the finished runs back without training them again and resumes an unfinished one from its last checkpoint, with
the same version of butterfly_jax (a run refuses to resume under changed package code).""", ()),
      ("code", """\
from pathlib import Path


def in_colab():
  try:
    import google.colab  # noqa: F401 (importable on Colab only)
  except ImportError:
    return False
  return True


def runs_folder():
  \"\"\"(folder of the runs, None) with Google Drive mounted, else (``OUT``, why not Drive).\"\"\"
  if not in_colab():
    return Path(OUT), "not on Colab"
  if not DRIVE:
    return Path(OUT), "DRIVE = False: on Colab, the runs are lost with the runtime"
  from google.colab import drive
  try:
    drive.mount(DRIVE_MOUNT)
  except Exception as e:  # permission refused or timed out: the runs are kept locally, and this says so
    return Path(OUT), f"Google Drive did not mount ({type(e).__name__}: {e}); the runs are lost with the runtime"
  return Path(DRIVE_MOUNT) / "MyDrive" / "butterfly_jax", None


RUNS_ROOT, NOT_DRIVE = runs_folder()
print(f"The runs go to {RUNS_ROOT.absolute()}/<setting>/t=<t>",
      "on Google Drive" if NOT_DRIVE is None else f"({NOT_DRIVE})")
print("Running the notebook again (after a disconnect: Runtime → Run all) reads the finished runs back without "
      "training them again and resumes an unfinished one from its last checkpoint.")""", ()),
      ("markdown", """\
## Install

Installs butterfly_jax (with matplotlib and pandas for the figures) from `BUTTERFLY_JAX_SOURCE` where it is not
importable yet, such as a fresh Colab runtime, whose JAX (with CUDA on a GPU runtime) is kept. When the source
cannot be reached, the cell says how to install from a wheel or a path instead, and stops. Nothing here imports
JAX.""", ()),
      ("code", """\
import glob
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path


def requirement(source):
  \"\"\"pip's requirement for butterfly_jax with the figures' packages (its ``report`` extra) from ``source``: a URL pip
  reads (``git+https://...``, ``https://.../butterfly_jax-VERSION-py3-none-any.whl``) or the path of a wheel or of a
  source folder (a pattern such as ``/content/butterfly_jax-*.whl`` if it matches one file).\"\"\"
  if "://" not in source:
    matches = glob.glob(str(Path(source).expanduser()))
    source = Path(matches[0] if len(matches) == 1 else source).expanduser().absolute().as_uri()
  return f"butterfly_jax[report] @ {source}"


WHAT_TO_DO = f\"\"\"
Install butterfly_jax another way, then run the notebook again from the parameters cell:
  * from a wheel: build one where the repository is, in its folder (`pip wheel . --no-deps -w dist`, or
    `python -m build --wheel`), upload dist/butterfly_jax-VERSION-py3-none-any.whl (Colab: the Files pane, on the
    left; it lands in /content), then either run `%pip install butterfly_jax-*.whl` in a new cell, or set
    BUTTERFLY_JAX_SOURCE = "/content/butterfly_jax-*.whl" in the parameters cell;
  * from a copy of the repository or another address: set BUTTERFLY_JAX_SOURCE to the folder's path (on Google
    Drive, for instance: "{DRIVE_MOUNT}/MyDrive/butterfly_jax_src") or to a URL pip reads (git+https://..., or
    https://.../butterfly_jax-VERSION-py3-none-any.whl).\"\"\"

if importlib.util.find_spec("butterfly_jax") is None:
  wanted = requirement(BUTTERFLY_JAX_SOURCE)
  pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", wanted],
                       capture_output=True, text=True)
  if pip.returncode != 0:
    print(f"pip install {wanted!r} failed (BUTTERFLY_JAX_SOURCE = {BUTTERFLY_JAX_SOURCE!r}); pip's last words:",
          *(pip.stdout + pip.stderr).strip().splitlines()[-10:], sep="\\n  ")
    print(WHAT_TO_DO)
    raise RuntimeError(f"butterfly_jax is not installed: pip could not install it from {BUTTERFLY_JAX_SOURCE!r}; "
                       "what to do is printed above")
  importlib.invalidate_caches()
print("butterfly_jax from", importlib.util.find_spec("butterfly_jax").origin)""", ()),
      ("markdown", """\
## The command line's bits

**This cell makes the runs' bits equal to the command line's** (`python -m butterfly_jax.main` with the same
config gives the same numbers on the same machine): `runtime.configure()` puts the XLA flags a run uses in
`XLA_FLAGS`, which XLA reads once, when JAX starts. It must come before anything uses JAX; if JAX already ran in
this kernel, restart it and run the notebook from the top.""", ()),
      ("code", """\
from butterfly_jax.io import runtime

assert runtime.configure(), "JAX started before runtime.configure(): restart the kernel, then run from the top"
import jax  # only now

print("JAX", jax.__version__, "on", jax.default_backend(), jax.devices())""", ()),
      ("markdown", """\
## The setting

A GPU runs the paper's ResNet-20 on CIFAR-10; a CPU runs Fashion-MNIST when its files are on the machine, else the
digits quickstart. Each setting has an early and a late perturbation time: the start of training (*t* = 0) and
10 epochs in (half of the 20 epochs of digits and Fashion-MNIST, a fifth of ResNet-20's 50).""", ()),
      ("code", """\
from pathlib import Path

import butterfly_jax as bj
from butterfly_jax.config import config_file
from butterfly_jax.run import config_files, configs_embedded

SETTINGS = ("digits", "fashion_mnist", "resnet20")
MEASURED = ("smoke", "digits", "fashion_mnist")  # settings whose outcome was measured (BUILD_NOTES.md)


def shipped_config(name):
  \"\"\"The config file ``configs/NAME.py`` that ships with the package.\"\"\"
  return config_file(config_files.FOLDER / f"{name}.py").get_config()


def choose_setting():
  if SMOKE:
    return "smoke"
  if SETTING != "auto":
    if SETTING not in SETTINGS:
      raise ValueError(f"SETTING: {SETTING!r} is not a setting; allowed: 'auto', {', '.join(map(repr, SETTINGS))}")
    return SETTING
  if jax.default_backend() == "gpu":
    return "resnet20"
  return "fashion_mnist" if Path(shipped_config("fashion_mnist").data.dir).is_dir() else "digits"


def setting_config(name):
  \"\"\"(config, early t, late t) of a setting; the configs are the shipped ones, with fewer σ for the larger two and
  no extra steps (ResNet-20's config has them).\"\"\"
  if name in ("digits", "smoke"):
    c, times = configs_embedded.quickstart(), ("0", "10ep")
    if name == "smoke":  # 3 epochs, one σ, 5-point curves
      c.train.steps, c.perturb.scales, c.eval.num_alphas, times = "3ep", (0.0, 1e-4), 5, ("0", "2ep")
  else:
    c, times = shipped_config(name), ("0", "10ep")
    c.perturb.scales = (0.0, 1e-4, 1e-2)
    c.perturb.extra_steps = False  # every child ends at T, so the σ = 0 twin is child 0 at every t (as on a CPU)
    if c.data.dir and not Path(c.data.dir).is_dir():
      c.data.dir = ""  # tensorflow-datasets downloads the data
  c.seed = SEED
  c.log.progress = True  # a progress bar per phase
  return c, *times


NAME = choose_setting()
CONFIG, EARLY, LATE = setting_config(NAME)
print(f"setting {NAME!r}: {CONFIG.data.name}, {CONFIG.model.name}, train.steps {CONFIG.train.steps}, σ {CONFIG.perturb.scales}, "
      f"perturbed at t = {EARLY} and t = {LATE}")
if NAME == "resnet20":
  print(\"the wall time of this setting is an estimate, not measured:\",
        \"""" + GPU_TIME + """\",
        \"(""" + GPU_TIME_BASIS + """)\")""", ()),
      ("markdown", """\
## Two families

One family perturbed at the start, one 10 epochs in, with the same seed (the same initialisation and the same
batches), so that only *t* differs. A progress bar follows each phase of a run; each run prints its summary.""", ()),
      ("code", """\
import time

from butterfly_jax.main import summary

RUNS, RESULTS = {}, {}
for when, t in (("early", EARLY), ("late", LATE)):
  c = CONFIG.copy_and_resolve_references()
  c.perturb.time = t
  RUNS[when] = RUNS_ROOT / NAME / f"t={t}"
  start = time.time()
  RESULTS[when] = bj.run_experiment(c, RUNS[when])
  print(f"\\n{when}: t = {t}, {RUNS[when]}, {time.time() - start:.0f} s in this cell\\n{summary(RESULTS[when])}\\n")""",
       ()),
      ("markdown", """\
## Barrier against σ, and the twins' distance over training

From the run directories (`results.json`, `metrics.jsonl`) with the report's figures: top, the barrier between
child 0 and each child after training against σ, one line per perturbation time; below, the L2 distance from
initialisation and to child 0 over training, one column per perturbation time.""", ()),
      ("code", """\
from IPython.display import Image, display

from butterfly_jax.report import load_table, load_trajectories, make_figures

TABLE = load_table(RUNS_ROOT / NAME)
FIGURES = make_figures(TABLE, RUNS_ROOT / NAME / "figures", load_trajectories(RUNS_ROOT / NAME),
                       only=("barrier_vs_sigma", "l2_from_init"))
for path in FIGURES:
  if path.suffix == ".png":
    display(Image(filename=str(path)))
TABLE[["t_epochs", "perturb.scale", "vs_child0.l2", "vs_child0.barrier.train.loss", "vs_child0.barrier.test.error",
       "vs_child0.cka"]].sort_values(["t_epochs", "perturb.scale"]).round(4)""", ()),
      ("markdown", """\
## What the runs show

* **The σ = 0 twin is exactly child 0**: L2 distance 0 and every barrier exactly 0, at both times. It is the
  control: the family's shared SGD noise adds no difference of its own.
* **Early, the smallest σ gives a barrier; late, it does not.** Perturbed at *t* = 0, a child moved by the smallest
  σ ends in another basin than child 0 (train-loss barrier ≥ 0.01, the summary's reading); perturbed at the late
  time (10 epochs in; 2 of 3 in the smoke setting), the same σ ends in child 0's basin (barrier < 0.01). Measured for the digits and Fashion-MNIST settings (seeds 0-2
  for digits: BUILD_NOTES.md, "Quickstart"); for ResNet-20 it is the paper's finding, not measured here, so the
  cell below reports it without asserting it.""", ()),
      ("code", """\
from butterfly_jax.main import CONNECTED_BELOW


def children(when, sigma_zero=False):
  return [ch for ch in RESULTS[when]["children"][1:] if (ch["perturb"]["scale"] == 0) == sigma_zero]


def train_barrier(child):
  return child["vs_child0"]["barrier"]["train"]["loss"]


for when in RESULTS:
  for twin in children(when, sigma_zero=True):
    v = twin["vs_child0"]
    barriers = [v["barrier"][split][metric] for split in ("train", "test") for metric in ("loss", "error")]
    assert v["l2"] == 0.0 and barriers == [0.0] * 4, f"{when}: the σ = 0 twin differs from child 0: {v}"

smallest = {when: min(children(when), key=lambda ch: ch["perturb"]["scale"]) for when in RESULTS}
early, late = train_barrier(smallest["early"]), train_barrier(smallest["late"])
sigma = smallest["early"]["perturb"]["scale"]
print(f"σ = {sigma:g}: train-loss barrier {early:.4f} at t = {EARLY}, {late:.4f} at t = {LATE}")
holds = early >= CONNECTED_BELOW > late
if NAME in MEASURED:
  assert holds, f"expected a barrier >= {CONNECTED_BELOW} at t = {EARLY} and < {CONNECTED_BELOW} at t = {LATE}"
else:
  print("early barrier, late none:", "holds" if holds else "does NOT hold", "in this (unmeasured) setting")""", ()),
      ("markdown", """\
## The library on the saved checkpoints

Each run keeps its children's final weights (`checkpoints/children`). `bj.load_run(folder)` reads a run directory
back as one object: its config, results, the report's tables, the children's parameters (`params(k)`), the model
(`apply_fn`) and the data (`dataset`, with `model_input` normalising it as the run did). They give the run's numbers
again through the library's functions: the loss along the straight path `interpolate(θ₀, θₖ, α)`, its barrier by
`barrier_from_curve` (equal to the run's up to float rounding), weight matching (a permutation of the child's
hidden units that computes the same function, closer to child 0), and the angular CKA of the two networks'
penultimate representations (0 for the twin).""", ()),
      ("code", """\
import jax.numpy as jnp
import numpy as np
import optax

RUN = bj.load_run(RUNS["early"])
RES, c = RUN.results, RUN.config
assert RES == RESULTS["early"]
assert c.eval.num_examples == 0, "this section evaluates whole splits, as the notebook's runs do"
data, apply_fn = RUN.dataset, RUN.apply_fn
k_twin = children("early", sigma_zero=True)[0]["index"]
k = smallest["early"]["index"]
theta0, twin, child = (RUN.params(i) for i in (0, k_twin, k))
spec = bj.spec_for(c.model.name, theta0)  # which parameter axes each hidden unit's permutation moves
print(RUN)


@jax.jit
def loss_sum(params, images, labels):
  logits, _ = apply_fn(params, RUN.model_input(images))
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).sum()


def train_loss(params, batch=c.eval.batch_size):
  \"\"\"Mean cross-entropy over the whole training split, summed on the host in float64.\"\"\"
  total = sum(float(loss_sum(params, data.train_inputs[i:i + batch], data.train_labels[i:i + batch]))
              for i in range(0, data.num_train, batch))
  return total / data.num_train


alphas = np.asarray(RES["alphas"])
curves = {name: [train_loss(RUN.interpolate(i, a)) for a in alphas] for name, i in (("twin", k_twin), ("child", k))}
barrier = {name: bj.barrier_from_curve(alphas, curve) for name, curve in curves.items()}
reported = train_barrier(RES["children"][k])
print(f"child {k} (σ = {sigma:g}): L2 {bj.l2_distance(theta0, child):.4f}, train-loss barrier {barrier['child']:.4f} "
      f"(the run reported {reported:.4f}); twin: barrier {barrier['twin']}")
assert barrier["twin"] == 0.0
assert abs(barrier["child"] - reported) <= 1e-3, "the library's barrier differs from the run's beyond rounding"
""", ()),
      ("markdown", """\
Weight matching (Git Re-Basin) permutes the child's hidden units to bring it as close to child 0 as it can. The
permuted child computes the same function and its distance to child 0 never grows; the barrier along the path to
it is drawn beside the plain one. Twins start from one initialisation, so their units start aligned and most
stay in place; what a barrier that remains after matching means is discussed in REPRODUCTION.md.""", ()),
      ("code", """\
import matplotlib.pyplot as plt

perm = bj.weight_matching(jax.random.key(SEED), spec, theta0, child)
aligned = bj.apply_permutation(spec, perm, child)
x = RUN.model_input(data.test_inputs[:512])
with jax.default_matmul_precision("highest"):  # full float32 on GPUs too, for this comparison
  np.testing.assert_allclose(apply_fn(aligned, x)[0], apply_fn(child, x)[0], rtol=1e-4, atol=1e-4)
l2_plain, l2_aligned = bj.l2_distance(theta0, child), bj.l2_distance(theta0, aligned)
assert l2_aligned <= l2_plain
curves["aligned child"] = [train_loss(bj.interpolate(theta0, aligned, a)) for a in alphas]
barrier["aligned child"] = bj.barrier_from_curve(alphas, curves["aligned child"])
print(f"L2 {l2_plain:.4f} -> {l2_aligned:.4f} after weight matching; units left in place: "
      f"{bj.fixed_point_fraction(perm):.0%}; train-loss barrier {barrier['child']:.4f} -> {barrier['aligned child']:.4f}")

fig, ax = plt.subplots(figsize=(6, 3.5))
for name, curve in curves.items():
  ax.plot(alphas, curve, marker="o", label=f"{name} (barrier {barrier[name]:.3f})")
ax.set_xlabel("α: (1 − α)·child 0 + α·other")
ax.set_ylabel("train loss")
ax.set_title(f"Linear paths from child 0, perturbed at t = {EARLY} (σ = {sigma:g})")
ax.legend()
plt.show()""", ()),
      ("markdown", """\
Angular CKA compares what the networks compute inside, up to rotation and scale: 0 radians for identical
representations, up to π/2 for unrelated ones.""", ()),
      ("code", """\
@jax.jit
def feature(params, images):
  return apply_fn(params, RUN.model_input(images))[1][c.eval.cka_feature]


def features(params, n=min(c.eval.cka_examples, data.num_test), batch=c.eval.batch_size):
  \"\"\"The compared representation (``eval.cka_feature``: the penultimate) of the first ``n`` test images.\"\"\"
  out = [np.asarray(feature(params, data.test_inputs[i:min(i + batch, n)])) for i in range(0, n, batch)]
  return np.concatenate([f.reshape(len(f), -1) for f in out])


f0, f_twin, f_child = features(theta0), features(twin), features(child)
cka = {"itself": bj.angular_cka(f0, f0), "twin": bj.angular_cka(f0, f_twin), "child": bj.angular_cka(f0, f_child)}
print({name: round(angle, 4) for name, angle in cka.items()}, "radians; the run reported",
      round(RES["children"][k]["vs_child0"]["cka"], 4), "for the child")
assert cka["itself"] < 1e-6 and cka["twin"] < 1e-6 < cka["child"]""", ()),
  ]


def build(repository: str | None = None) -> nbformat.NotebookNode:
  """The notebook, without outputs, with stable cell ids (``cell-NN``) so that it is reproducible."""
  repository = repository or repository_url()
  nb = nbformat.v4.new_notebook()
  nb.metadata = {
      "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
      "language_info": {"name": "python"},
      "colab": {"provenance": []},
  }
  for i, (kind, source, tags) in enumerate(cells(repository)):
    new = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
    cell = new(source.strip("\n"), id=f"cell-{i:02d}")
    if tags:
      cell.metadata["tags"] = list(tags)
    nb.cells.append(cell)
  nbformat.validate(nb)
  return nb


def text(nb: nbformat.NotebookNode) -> str:
  return nbformat.writes(nb) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--check", action="store_true", help="exit status 1 if the notebook differs; write nothing")
  args = parser.parse_args(argv)
  wanted = text(build())
  if args.check:
    same = NOTEBOOK.exists() and NOTEBOOK.read_text() == wanted
    print(f"{NOTEBOOK}: {'up to date' if same else 'differs; run python notebooks/make_notebook.py'}")
    return 0 if same else 1
  NOTEBOOK.write_text(wanted)
  print(f"wrote {NOTEBOOK}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
