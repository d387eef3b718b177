"""The package's layers (docs/library.md, "The package's layers"), read from the source: which subpackage may import
which, no import cycles, package imports at the top of modules, and the names the config shares with the core."""

import ast
import re
import sys
from pathlib import Path

import pytest

from butterfly_jax import config as config_lib
from butterfly_jax.core import members, perturb
from butterfly_jax.version import __version__

PACKAGE = Path(__file__).resolve().parents[1] / "butterfly_jax"

# Each layer and the layers it may import from (itself included). The commands (main, proxy, threshold), the
# launcher and the report sit on top and may import anything below.
LAYERS = {
    "leaf": {"leaf"},                 # config and version: nothing from the package
    "core": {"core"},                 # core/ and models/: no config, no files (the version excepted)
    "io": {"leaf", "core", "io"},
    "run": {"leaf", "core", "io", "run"},
    "top": {"leaf", "core", "io", "run", "top"},
}
# Imports inside functions that stay there: optional dependencies only. The report's table needs no pandas to be
# imported, its figures and the instability map need matplotlib and pandas (the [report] extra): they are imported
# when asked for.
LAZY_ALLOWED = {("butterfly_jax.report", "butterfly_jax.report.figures"),
                ("butterfly_jax.report", "butterfly_jax.report.instability"),
                ("butterfly_jax.report.__main__", "butterfly_jax.report.instability")}
# Libraries that read or write files: not in the numerical core.
FILE_IO = {"os", "pathlib", "json", "shutil", "orbax", "tensorflow_datasets", "safetensors", "pickle"}
# Signals are the commands' business (run/interrupt.py installs their handlers): not in the numerical core.
SIGNALS = {"signal"}


def _modules() -> dict:
  out = {}
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out[name] = path
  return out


MODULES = _modules()


def _layer(name: str) -> str:
  if name in ("butterfly_jax.config", "butterfly_jax.version"):
    return "leaf"
  sub = name.split(".")[1] if name.count(".") else ""
  return {"core": "core", "models": "core", "io": "io", "run": "run"}.get(sub, "top")


def _imports(name: str):
  """``(target module, at top level?, line)`` for every import of a package module by module ``name``, and
  ``(library, top, line)`` for every other import (targets outside the package keep their first name)."""
  path = MODULES[name]
  tree = ast.parse(path.read_text())
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  top_level = {id(n) for n in tree.body}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
      subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
      targets = subs if len(subs) == len(node.names) else subs + [base]
    else:
      continue
    for t in targets:
      yield t, id(node) in top_level, node.lineno


def _package_edges():
  for name in MODULES:
    for target, top, line in _imports(name):
      if target in MODULES and target != name:
        yield name, target, top, line


def test_every_subpackage_says_what_it_is_for():
  for name, path in MODULES.items():
    if path.name == "__init__.py":
      assert ast.get_docstring(ast.parse(path.read_text())), f"{name} has no docstring"


def test_each_layer_imports_only_the_layers_below_it():
  bad = []
  for name, target, _, line in _package_edges():
    src, dst = _layer(name), _layer(target)
    if name == "butterfly_jax":  # the public API gathers from every layer
      continue
    if dst not in LAYERS[src] and not (src == "core" and target == "butterfly_jax.version"):
      bad.append(f"{name}:{line} ({src}) imports {target} ({dst})")
  assert not bad, "\n".join(bad)


def test_the_config_is_a_leaf_and_the_core_reads_no_config_no_files_and_no_signals():
  for name in MODULES:
    layer = _layer(name)
    for target, _, line in _imports(name):
      if layer == "leaf":
        assert not target.startswith("butterfly_jax"), f"{name}:{line} imports {target}"
      if layer == "core":
        assert target != "butterfly_jax.config", f"{name}:{line} imports the config"
        assert target.split(".")[0] not in FILE_IO, f"{name}:{line} imports {target}, a file library"
        assert target.split(".")[0] not in SIGNALS, f"{name}:{line} imports {target}: signals are not the core's"


def test_no_import_cycles():
  graph = {}
  for name, target, _, _ in _package_edges():
    graph.setdefault(name, set()).add(target)
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        cycle = stack[stack.index(nxt):] + [nxt]
        pytest.fail("import cycle: " + " -> ".join(cycle))
      if nxt not in state:
        visit(nxt)
    stack.pop()
    state[node] = "done"

  sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
  for node in sorted(graph):
    if node not in state:
      visit(node)


def test_package_imports_are_at_the_top_of_modules():
  lazy = sorted({(name, target, line) for name, target, top, line in _package_edges() if not top})
  assert [(n, t) for n, t, _ in lazy if (n, t) not in LAZY_ALLOWED] == [], lazy


def test_the_config_names_what_the_core_implements():
  """The config is a leaf, so the choices it validates are written there; they must be the core's."""
  assert config_lib.INIT_SCALES == perturb.INIT_SCALES
  assert config_lib.MEMBER_STRATEGIES == members.MEMBER_STRATEGIES
  assert set(config_lib.COMPUTE_DTYPES) == set(config_lib.PARAM_DTYPES) == set(members.COMPUTE_DTYPES)
  pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
  assert re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1) == __version__
