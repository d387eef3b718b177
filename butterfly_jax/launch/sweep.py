"""Expanding a config file's declared sweep into runs: one config and one directory name per run.

A config file (``configs/NAME.py``) has ``get_config()``; it may also define ``sweep(add)``, where every
``add(**overrides)`` call declares one run. Overrides are keyed by dotted field names::

  def sweep(add):
    for seed in range(3):
      add(seed=seed, **{"perturb.time": "5ep", "perturb.scales": (0.0, 1e-4)})

Each run is a fresh ``get_config()`` with its overrides applied, then the sweep-wide ``--set`` overrides,
then :func:`butterfly_jax.run.spec.check`. ConfigDict semantics: a value must have the field's type (an
int may go into a float field, a list into a tuple field; a step field such as ``perturb.time`` takes text,
``"2000"`` or ``"5ep"``); ``--set`` text is parsed as ``--config.a.b=text`` is by ml_collections. A key
that does not exist is an error listing the fields that do. Runs with identical configs are kept once. A file without ``sweep`` is one run,
named ``base``. The config argument (``--config=configs/NAME.py:ARG``) goes to ``get_config(ARG)`` and, if
``sweep`` takes a second parameter, to ``sweep(add, ARG)`` as well, so that a phase of a config file can
declare its own runs (``configs/resnet50_c100_to_c10.py:pretrain`` is one run, the file's default phase a
fine-tuning sweep).
"""

import dataclasses
import hashlib
import inspect
import itertools
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable

import ml_collections
from absl import flags
from ml_collections import config_flags

from butterfly_jax import config as config_lib
from butterfly_jax.io.rundir import to_jsonable
from butterfly_jax.run import config_files, spec as spec_lib

MAX_NAME = 120                          # longer readable names are cut and given a hash suffix
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9._+-]+$")


class SweepError(ValueError):
  """The sweep cannot be expanded: a bad config file, override key or value; the message names it."""


@dataclasses.dataclass
class Run:
  """One declared run: its index in the sweep, directory name, overrides (as declared) and full config."""
  index: int
  name: str
  overrides: dict
  config: ml_collections.ConfigDict


# --- grids ---------------------------------------------------------------------------------------------

def grid(axes: dict) -> list:
  """Every combination of ``axes`` ({dotted key: values}) as override dicts; the last key varies fastest."""
  keys = list(axes)
  for key, values in axes.items():
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
      raise SweepError(f"grid: {key}: expected a list of values, got {values!r}")
  return [dict(zip(keys, combo)) for combo in itertools.product(*(list(v) for v in axes.values()))]


def product(add: Callable, axes: dict, fixed: dict | None = None) -> None:
  """Declares one run per combination of ``axes`` values, each also with the ``fixed`` overrides.

  ``product(add, {"seed": [0, 1, 2], "perturb.time": ["0", "1ep"]})`` declares 6 runs.
  """
  for overrides in grid(axes):
    add(**(fixed or {}), **overrides)


# --- loading a config file -----------------------------------------------------------------------------

def split_config_arg(spec: str) -> tuple:
  """``"configs/x.py:arg"`` -> (Path, ("arg",)); the argument, like ml_collections', is after the first colon."""
  path, *arg = str(spec).split(":", 1)
  return Path(path), tuple(arg)


def load_config_module(spec: str):
  """Executes a config file (``path`` or ``path:arg``; ``configs/NAME.py`` is a shipped config from any directory:
  :mod:`butterfly_jax.run.config_files`) as a module; returns (module, get_config args)."""
  try:
    path, args = split_config_arg(config_files.resolve(spec))
  except config_lib.ConfigError as e:
    raise SweepError(str(e)) from None
  module = config_lib.config_file(path)
  if not callable(getattr(module, "get_config", None)):
    raise SweepError(f"--config: {path} defines no get_config()")
  return module, args


# --- overrides -----------------------------------------------------------------------------------------

def load_config(spec: str, items: Iterable[str] = ()) -> ml_collections.ConfigDict:
  """``get_config`` of a config file (``path`` or ``path:arg``) with ``a.b=value`` items parsed by field type, as
  ``--set`` parses them (the bench scripts' ``--config`` and ``--set``)."""
  module, config_args = load_config_module(spec)
  c = module.get_config(*config_args)
  for key, value in parse_assignments(c, items).items():
    set_field(c, key, value)
  return c


def _strip_prefix(key: str) -> str:
  """Dotted key without the big_vision-style ``config.`` prefix."""
  return key[len("config."):] if key.startswith("config.") else key


def _holder(config: ml_collections.ConfigDict, key: str):
  """(the ConfigDict holding ``key``'s last part, that part); SweepError if a part does not exist."""
  parts = key.split(".")
  node, path = config, []
  for part in parts:
    if not isinstance(node, ml_collections.ConfigDict):
      raise SweepError(f"{key}: {'.'.join(path)} is a value ({node!r}), not a group of fields")
    if part not in node:
      where = ".".join(path) or "the config"
      raise SweepError(f"{key}: no such field; {where} has: {', '.join(sorted(node.keys()))}")
    path.append(part)
    parent, node = node, node[part]
  return parent, parts[-1]


def _leaf(config: ml_collections.ConfigDict, key: str):
  """(holder, last part) of dotted ``key``, which must name a value, not a group of fields."""
  parent, leaf = _holder(config, key)
  if isinstance(parent[leaf], ml_collections.ConfigDict):
    example = f"{key}.{next(iter(parent[leaf].keys()), 'x')}"
    raise SweepError(f"{key}: is a group of fields; set its fields one by one, e.g. {example}")
  return parent, leaf


def set_field(config: ml_collections.ConfigDict, key: str, value: Any) -> Any:
  """Sets dotted ``key`` of ``config`` to ``value`` with ConfigDict's type checks (an int may go into a float
  field, a list into a tuple field), and two it lacks (True/False is not a number, None is no value); returns
  the value as stored."""
  key = _strip_prefix(key)
  parent, leaf = _leaf(config, key)
  old = parent[leaf]
  if value is None or (isinstance(value, bool) and not isinstance(old, bool)):
    ok = False
  else:
    try:
      parent[leaf] = value
      ok = True
    except TypeError:
      ok = False
  if not ok:
    hint = " (steps are text: '2000' or '5ep')" if key in config_lib.STEP_FIELDS else ""
    raise SweepError(f"{key}: expected {type(old).__name__} (the type of its value {old!r}), got {value!r} "
                     f"({type(value).__name__}){hint}")
  return parent[leaf]


def parse_value(config: ml_collections.ConfigDict, key: str, text: str) -> Any:
  """A command-line string for field ``key`` parsed by ml_collections, as ``--config.KEY=text`` is parsed for
  ``python -m butterfly_jax.main``: by the field's type."""
  key = _strip_prefix(key)
  holder, leaf = _leaf(config, key)
  argv = ["launch", f"--config.{key}={text}"]
  parsed = flags.FlagValues()
  config_flags.DEFINE_config_dict("config", config.copy_and_resolve_references(), flag_values=parsed,
                                  lock_config=False, sys_argv=argv)
  try:
    parsed(argv)
  except flags.Error as e:
    raise SweepError(f"{key}: cannot parse {text!r} as {type(holder[leaf]).__name__}: "
                     f"{str(e).split(': ', 1)[-1]}") from None
  return _holder(parsed["config"].value, key)[0][leaf]


def parse_assignments(config: ml_collections.ConfigDict, items: Iterable[str]) -> dict:
  """``["a.b=value", ...]`` (``--set``/``--config.a.b=value``) -> {key: parsed value}."""
  out = {}
  for item in items:
    key, sep, text = item.partition("=")
    if not sep or not key:
      raise SweepError(f"--set: expected FIELD=VALUE such as perturb.time=5ep, got {item!r}")
    key = _strip_prefix(key.strip())
    out[key] = parse_value(config, key, text)
  return out


# --- names ---------------------------------------------------------------------------------------------

def _token(value: Any) -> tuple:
  """(readable, filesystem-safe text of one value; whether it is exact, i.e. the text names the value)."""
  if isinstance(value, bool) or value is None:
    return str(value), True
  if isinstance(value, int):
    return str(value), True
  if isinstance(value, float):
    return repr(value), True   # the shortest text that round-trips: 1e-05, 0.1
  if isinstance(value, str):
    if value == "" or _SAFE_TOKEN.match(value):
      return value, True
    return re.sub(r"[^A-Za-z0-9._+-]", "_", value).strip("_") or "_", False
  if isinstance(value, (tuple, list)):
    parts = [_token(v) for v in value]
    exact = bool(parts) and all(ok and "_" not in text and text for text, ok in parts)
    return "_".join(text for text, _ in parts) or "empty", exact
  return re.sub(r"[^A-Za-z0-9._+-]", "_", str(value)), False


def canonical(obj) -> str:
  """Stable JSON text of ``obj`` (sorted keys; tuples as lists): the identity of overrides or a config."""
  return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))


def short_hash(obj) -> str:
  return hashlib.sha256(canonical(obj).encode()).hexdigest()[:8]


def run_name(overrides: dict) -> str:
  """A directory name from the overrides: ``perturb.time=5ep,seed=1`` (keys sorted).

  A value that cannot be written exactly in a file name (a path, a regex, a nested tuple) is written
  approximately and the name gets ``~`` and 8 hex digits of a hash of all overrides; so does a name longer
  than MAX_NAME, which then names fields by their last part (``time=5ep``) and is cut to fit if need be.
  No overrides: ``base``.
  """
  if not overrides:
    return "base"
  tokens = {key: _token(overrides[key]) for key in sorted(overrides)}
  name = ",".join(f"{key}={text}" for key, (text, _) in tokens.items())
  exact = all(ok for _, ok in tokens.values())
  if exact and len(name) <= MAX_NAME:
    return name
  suffix = "~" + short_hash(overrides)
  if len(name) + len(suffix) > MAX_NAME:
    name = ",".join(f"{key.rsplit('.', 1)[-1]}={text}" for key, (text, _) in tokens.items())
    name = name[:MAX_NAME - len(suffix)].rstrip(",")
  return name + suffix


# --- expansion -----------------------------------------------------------------------------------------

def declared_overrides(module, args: tuple = ()) -> list:
  """The override dicts of ``module.sweep(add)`` (``sweep(add, *args)`` if it takes the config argument), in
  call order (``[{}]`` without a sweep)."""
  sweep_fn = getattr(module, "sweep", None)
  if sweep_fn is None:
    return [{}]
  declared = []

  def add(**overrides):
    declared.append({_strip_prefix(k): v for k, v in overrides.items()})

  if len(inspect.signature(sweep_fn).parameters) > 1:  # sweep(add, ARG): the config argument too
    sweep_fn(add, *args)
  else:
    sweep_fn(add)
  if not declared:
    raise SweepError(f"{module.__name__}: sweep(add) declared no runs (call add(**overrides) once per run)")
  return declared


def expand(config_spec: str, set_overrides: dict | None = None, set_items: Iterable[str] = ()) -> list:
  """The runs of a config file's sweep: a list of :class:`Run`, duplicates dropped, names unique.

  ``set_overrides`` ({key: value}) and ``set_items`` (``"key=text"`` strings, parsed by field type) apply
  to every run; a key that the sweep also sets is an error (one of them would silently win).
  """
  module, args = load_config_module(config_spec)
  template = module.get_config(*args)
  common = dict(parse_assignments(template, set_items))
  common.update({_strip_prefix(k): v for k, v in (set_overrides or {}).items()})
  runs, seen = [], {}
  for i, overrides in enumerate(declared_overrides(module, args)):
    clash = sorted(set(overrides) & set(common))
    if clash:
      raise SweepError(f"--set {clash[0]}: the sweep also sets it (run {i}: {overrides}); "
                       "remove it from one of them")
    c = module.get_config(*args)
    stored = {}
    try:
      for key, value in overrides.items():
        stored[key] = set_field(c, key, value)
      for key, value in common.items():
        set_field(c, key, value)
      spec_lib.check(c)
    except (SweepError, config_lib.ConfigError) as e:
      raise type(e)(f"sweep run {i} {overrides}: {e}") from None
    identity = canonical(c.to_dict())
    if identity in seen:
      continue
    seen[identity] = True
    runs.append(Run(index=len(runs), name=run_name(stored), overrides=stored, config=c))
  _disambiguate(runs)
  return runs


def _disambiguate(runs: list) -> None:
  """Runs whose different overrides still share a name (``(5,)`` vs ``("5",)`` in a tuple field) get a hash
  suffix."""
  by_name = {}
  for run in runs:
    by_name.setdefault(run.name, []).append(run)
  for same in by_name.values():
    if len(same) > 1:
      for run in same:
        run.name = run.name[:MAX_NAME - 9] + "~" + short_hash({"overrides": run.overrides,
                                                               "types": {k: type(v).__name__
                                                                         for k, v in run.overrides.items()}})
