"""The report's table: run directories collected into one tidy table (one row per child pair), the trajectories of
their metrics.jsonl, and how both are written (CSV and Parquet) and summarised.

A run directory is any folder under the runs directory holding a butterfly ``config.json`` (folders inside a run
directory are not searched). Only pandas is needed to load; pyarrow for Parquet.
"""

import importlib.util
import json
import logging
import math
from pathlib import Path

from butterfly_jax.config import (DEFINITIONS_VERSION, FIELD_VERSIONS, LEGACY_VALUES, ConfigError, default_config,
                                  get_dotted, legacy_applies, steps_text, to_steps, upgrade)
from butterfly_jax.io import results as results_lib

# Columns that lead the table, in this order (when present); the rest follow grouped by origin.
LEAD_COLUMNS = ("run", "status", "definitions", "perturbation", "seed", "t", "t_epochs", "T", "steps_per_epoch",
                "child", "perturb.scale", "num_perturbed", "num_changed", "noise_l2", "diverged", "child0.diverged", "pair_diverged",
                "barrier_status", "metric")
# barrier_status: why a pair's barriers are (or are not) numbers.
BARRIER_OK, PAIR_DIVERGED, PATH_NOT_FINITE = "ok", "pair_diverged", "path_not_finite"
# results.json child["perturb"] fields: renamed here; kind and mask repeat the config and are left out.
_CHILD_PERTURB = {"scale": "perturb.scale", "noise_l2": "noise_l2", "num_perturbed": "num_perturbed",
                  "num_changed": "num_changed",
                  "expected_init_l2": "expected_init_l2", "direction_l2": "direction_l2", "kind": None, "mask": None}
_SKIP_KEYS = ("curves",)   # lists along the interpolation path: not exploded into columns
# metrics.jsonl numbers that are meaningless for a diverged member (NaN in the trajectories).
_TRAJECTORY_METRICS = ("train_loss", "l2_from_init", "l2_to_child0", "eval_train_loss", "eval_test_error")


class ReportError(ValueError):
  """The runs directory cannot be reported on (missing, or holds no run directories)."""


def flatten(tree, prefix: str = "", skip_lists: bool = True) -> dict:
  """Every scalar leaf of nested dicts under a dotted name; subtrees named in ``_SKIP_KEYS`` are left out.

  Lists are left out when ``skip_lists`` (results: curves), else written as tuple strings such as
  ``"(32, 32, 3)"`` (config fields).
  """
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if key in _SKIP_KEYS:
      continue
    if isinstance(value, dict):
      out.update(flatten(value, name + ".", skip_lists))
    elif isinstance(value, (list, tuple)):
      if not skip_lists:
        out[name] = _tuple_string(value)
    else:
      out[name] = value
  return out


def _tuple_string(value) -> str:
  def convert(v):
    return tuple(convert(x) for x in v) if isinstance(v, (list, tuple)) else v
  return str(convert(value))


def perturbation_label(config: dict) -> str:
  """``batch``, ``gaussian``, ``batch/single-weight``, ``gaussian/fraction=0.1`` or ``batch/masked``."""
  p = config.get("perturb", {})
  kind = p.get("kind", "?")
  mask = p.get("mask", {})
  if mask.get("single"):
    return f"{kind}/single-weight"
  if mask.get("fraction", 1.0) < 1.0:
    return f"{kind}/fraction={mask['fraction']:g}"
  finetune_exclude = mask.get("exclude_finetune", "") if config.get("init", {}).get("checkpoint") else ""
  if mask.get("include", ".*") not in (".*", "") or mask.get("exclude", "") or finetune_exclude:
    return f"{kind}/masked"
  return kind


# Fields that change what sigma, the direction or a barrier means without a version of their own: a run that sets
# one away from its default is labelled "-custom" (eval.align_method: what its aligned barriers mean)
CUSTOM_FIELDS = ("perturb.normalize", "perturb.constant_params", "perturb.init_std", "perturb.batch_source",
                 "eval.dtype", "eval.align_method")


def definitions_label(config: dict) -> str:
  """``"v3"`` for a run under the current definitions (BUILD_NOTES "Definitions and recipes"); ``"v2"`` for one
  from before ResNets padded their 3x3 convolutions as torch does (``model.resnet_padding="same"``); ``"v1"`` for
  one from before that (sigma from E[theta_0^2], the batch direction -grad, biased CKA, a zero ViT head when
  fine-tuning, translation filled with the mean); ``"-custom"`` added where a run set a definition field of its
  version, or one of :data:`CUSTOM_FIELDS` (the batch perturbation's batch, the evaluation's precision, ...), away
  from its default."""
  defaults = default_config().to_dict()
  values = {key: get_dotted(config, key) for key in LEGACY_VALUES if legacy_applies(config, key)}
  version = DEFINITIONS_VERSION
  for v in range(DEFINITIONS_VERSION, 1, -1):  # the newest version whose fields (those that apply) are not all old
    fields = [k for k in values if FIELD_VERSIONS[k] == v]
    if not fields:
      continue
    if any(values[k] != LEGACY_VALUES[k] for k in fields):
      break
    version = v - 1
  custom = any(values[k] != get_dotted(defaults, k) for k in values if FIELD_VERSIONS[k] <= version) or any(
      get_dotted(config, k, get_dotted(defaults, k)) != get_dotted(defaults, k) for k in CUSTOM_FIELDS)
  return f"v{version}-custom" if custom and version > 1 else f"v{version}"


def find_runs(runs_dir) -> list[Path]:
  """Run directories under ``runs_dir`` (itself included): folders whose config.json is a butterfly config."""
  root = Path(runs_dir)
  if not root.is_dir():
    raise ReportError(f"--runs: {root} is not a directory")
  found = []

  def walk(folder: Path):
    cfg = folder / "config.json"
    if cfg.is_file():
      if _is_butterfly_config(cfg):
        found.append(folder)
        return  # checkpoints/ and anything else inside a run directory are not runs
      logging.warning("%s is not a butterfly_jax config (no perturb/train sections); skipped", cfg)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
      walk(sub)

  walk(root)
  return found


def _is_butterfly_config(path: Path) -> bool:
  try:
    cfg = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError):
    return False
  return isinstance(cfg, dict) and isinstance(cfg.get("perturb"), dict) and isinstance(cfg.get("train"), dict)


def read_metrics(path: Path) -> list[dict]:
  """The records of a metrics.jsonl; a torn last line (a run killed mid-write) is dropped."""
  if not path.is_file():
    return []
  records = []
  lines = path.read_text().splitlines()
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i < len(lines) - 1:
        logging.warning("%s: line %d is not JSON; skipped", path, i + 1)
  return records


def _steps_from_config(value, field: str):
  """A step field as an int when it is plain steps (``"10"``; an older version's 10); None for ``"5ep"`` (it
  needs the data) and for anything that is not steps. :func:`butterfly_jax.config.to_steps` parses."""
  try:
    return to_steps(steps_text(value, field), None, field)
  except ConfigError:
    return None


def _metric_values(child: dict) -> dict:
  """A child's results with each split's task metric ``{"name", "value"}`` (text tasks) as its value, so that it
  is one column per split (``train.metric``, ``test.metric``) beside ``train.accuracy``; the name is the run's
  ``metric`` column."""
  out = dict(child)
  for split in ("train", "test"):
    part = child.get(split)
    if isinstance(part, dict) and isinstance(part.get("metric"), dict):
      out[split] = {**part, "metric": part["metric"].get("value")}
  return out


def _run_rows(folder: Path, runs_dir: Path) -> tuple[list[dict], set]:
  """The rows of one run directory (one per child pair when finished, one status row otherwise) and the names
  of its config columns."""
  # upgraded: fields added since the run was written show the values that run used (the old definitions'
  # for a run from before the definitions' version 2), so every row says what its sigma and CKA meant
  config = upgrade(json.loads((folder / "config.json").read_text()))
  cfg_cols = flatten(config, skip_lists=False)
  base = {"run": folder.relative_to(runs_dir).as_posix() or ".", "perturbation": perturbation_label(config),
          "definitions": definitions_label(config)}
  results_path = folder / "results.json"
  results = None
  if results_path.is_file():
    try:
      results = results_lib.load(results_path)
    except (json.JSONDecodeError, results_lib.ResultsError) as e:
      logging.warning("%s is not valid results (%s); the run is reported as unreadable", results_path, e)
      base["status"] = "unreadable"
  if results is None:
    base.setdefault("status", "incomplete")
    base.update(_progress(folder / "metrics.jsonl"))
    t = _steps_from_config(config["perturb"].get("time"), "perturb.time")
    total = _steps_from_config(config["train"].get("steps"), "train.steps")
    base.update({"t": t, "T": total})
    return [{**base, **cfg_cols}], set(cfg_cols)

  base["status"] = "finished"
  steps = results.get("steps", {})
  spe = steps.get("steps_per_epoch")
  base.update({"t": steps.get("t"), "T": steps.get("T"), "steps_per_epoch": spe, "warmup_steps": steps.get("warmup"),
               "t_epochs": steps["t"] / spe if spe else None, "T_epochs": steps["T"] / spe if spe else None})
  run_cols = {"num_params": results.get("model", {}).get("num_params"),
              "data.num_train": results.get("data", {}).get("num_train"),
              "data.num_test": results.get("data", {}).get("num_test"),
              "members_strategy": results.get("members_strategy"),
              **flatten(results.get("timing", {}), "timing."),
              "init_weights_sha256": (results.get("init") or {}).get("weights_sha256"),  # fine-tuning runs
              # the program a run executed: the same config gives other last bits on another CPU or under
              # other XLA flags (runs before flags were recorded have None)
              **{key: results.get("provenance", {}).get(key)
                 for key in ("git_revision", "backend", "host_cpu", "xla_flags")}}
  if results.get("data", {}).get("metric"):  # a text task: the metric its metric columns hold
    base["metric"] = results["data"]["metric"]
  children = [_metric_values(child) for child in results["children"]]
  child0 = flatten({k: v for k, v in children[0].items() if k not in ("index", "perturb")}, "child0.")
  rows = []
  for child in children[1:]:
    pair = {"child": child["index"]}
    for key, name in _CHILD_PERTURB.items():
      if name and key in child.get("perturb", {}):
        pair[name] = child["perturb"][key]
    for key, value in child.get("perturb", {}).items():
      if key not in _CHILD_PERTURB and not isinstance(value, (dict, list)):
        pair[f"perturb.{key}"] = value
    pair.update(flatten({k: v for k, v in child.items() if k not in ("index", "perturb")}))
    pair["pair_diverged"] = bool(child.get("diverged")) or bool(children[0].get("diverged"))
    pair["barrier_status"] = barrier_status(child, pair["pair_diverged"])
    clash = set(pair) & set(cfg_cols)
    if clash:
      raise ReportError(f"{results_path}: result fields {sorted(clash)} clash with config fields of the same name")
    rows.append({**base, **pair, **child0, **run_cols, **cfg_cols})
  return rows, set(cfg_cols)


def barrier_status(child: dict, pair_diverged: bool) -> str:
  """``pair_diverged``: no barrier, child 0 or child k diverged (its metrics are null); ``path_not_finite``: both
  children are finite but a network on the interpolation path between them is not, so that split's barriers are
  null (``vs_child0.barrier_path_finite`` false; in results from before that flag, a null loss barrier of a pair
  that did not diverge); ``ok``: every barrier is a number."""
  if pair_diverged:
    return PAIR_DIVERGED
  v = child.get("vs_child0") or {}
  flags = v.get("barrier_path_finite")
  if isinstance(flags, dict):
    return PATH_NOT_FINITE if any(ok is False for ok in flags.values()) else BARRIER_OK
  barrier = v.get("barrier") or {}
  nulls = any((barrier.get(split) or {}).get("loss") is None for split in ("train", "test"))
  return PATH_NOT_FINITE if barrier and nulls else BARRIER_OK


def _progress(metrics_path: Path) -> dict:
  """What an unfinished run's metrics.jsonl shows: the last logged step and phase, and any divergence."""
  records = read_metrics(metrics_path)
  if not records:
    return {"last_step": None, "last_phase": None}
  last = records[-1]
  return {"last_step": last.get("step"), "last_phase": last.get("phase"),
          "diverged": any(r for rec in records for r in (rec.get("diverged") or []))}


_RUN_COLUMNS = ("num_params", "data.num_train", "data.num_test", "members_strategy", "init_weights_sha256",
                "git_revision", "backend")
_PROGRESS_COLUMNS = ("last_step", "last_phase")


def _order(rows, config_columns) -> list:
  """LEAD_COLUMNS, the pair's metrics, child 0's, the run's, the config's, then unfinished runs' progress."""
  columns = list(dict.fromkeys(k for row in rows for k in row))

  def rank(c):
    if c in LEAD_COLUMNS:
      return (0, LEAD_COLUMNS.index(c))
    if c in _PROGRESS_COLUMNS:
      return (5, 0)
    if c in config_columns:
      return (4, 0)
    if c in _RUN_COLUMNS or c.startswith("timing."):
      return (3, 0)
    return (2, 0) if c.startswith("child0.") else (1, 0)
  return sorted(columns, key=rank)  # stable: first-seen order within each group


def _consistent_types(df):
  """Object columns holding several Python types (e.g. ``perturb.time`` as 10 in one config, "10ep" in
  another) become strings, so that the table writes to Parquet."""
  for col in df.columns:
    if df[col].dtype == object:
      kinds = {type(v) for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
      if len(kinds) > 1:
        df[col] = df[col].map(lambda v: v if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
  return df


def load_table(runs_dir):
  """One row per (run, child k >= 1) of every finished run under ``runs_dir``; one status row per unfinished
  run. Columns: docs/reports.md. Raises ReportError when ``runs_dir`` holds no run directories."""
  import pandas as pd
  runs_dir = Path(runs_dir)
  folders = find_runs(runs_dir)
  if not folders:
    raise ReportError(f"--runs: no run directories (folders with a butterfly config.json) under {runs_dir}")
  rows, config_columns = [], set()
  for folder in folders:
    run_rows, keys = _run_rows(folder, runs_dir)
    rows += run_rows
    config_columns |= keys
  labels = sorted({row["definitions"] for row in rows})
  if len(labels) > 1:
    logging.warning("%s mixes runs under different definitions of sigma, the batch direction and CKA (%s; see the "
                    "'definitions' column and BUILD_NOTES.md 'Definitions and recipes'): compare them only within "
                    "one label",
                    runs_dir, ", ".join(labels))
  df = pd.DataFrame(rows, columns=_order(rows, config_columns))
  for col in df.columns:  # integers and flags stay so where an unfinished run leaves holes (nullable dtypes)
    values = [row[col] for row in rows if row.get(col) is not None]
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
      df[col] = df[col].astype(pd.Int64Dtype())
    elif values and all(isinstance(v, bool) for v in values):
      df[col] = df[col].astype(pd.BooleanDtype())
  return _consistent_types(df)


def load_trajectories(runs_dir):
  """metrics.jsonl of every run as a long table: one row per (run, logged step, member).

  Columns: ``run``, ``phase`` (trunk/children), ``step``, ``member`` (0 = the trunk or child 0),
  ``perturb.scale`` (σ of the member; NaN for the trunk), ``lr``, ``train_loss``, ``l2_from_init``,
  ``l2_to_child0``, ``diverged``, and when logged ``eval_train_loss``, ``eval_test_error`` and, for members
  k >= 1, ``barrier.{train,test}.{loss,error}`` of the pair (0, k). A diverged member's numbers are NaN.
  """
  import pandas as pd
  runs_dir = Path(runs_dir)
  rows = []
  for folder in find_runs(runs_dir):
    config = json.loads((folder / "config.json").read_text())
    scales = [0.0] + [float(s) for s in config["perturb"].get("scales", [])]
    run = folder.relative_to(runs_dir).as_posix() or "."
    for rec in read_metrics(folder / "metrics.jsonl"):
      members = len(rec.get("l2_from_init", []))
      for j in range(members):
        row = {"run": run, "phase": rec.get("phase"), "step": rec.get("step"), "member": j,
               "perturb.scale": scales[j] if rec.get("phase") == "children" and j < len(scales) else math.nan}
        for key in ("lr", "train_loss", "l2_from_init", "l2_to_child0", "diverged", "eval_train_loss",
                    "eval_test_error"):
          if isinstance(rec.get(key), list) and j < len(rec[key]):
            row[key] = rec[key][j]
        barriers = rec.get("barrier")
        if isinstance(barriers, list) and 1 <= j <= len(barriers):
          row.update(flatten(barriers[j - 1], "barrier."))
        if row.get("diverged"):  # numbers of non-finite networks (e.g. an error barrier of NaN logits)
          row.update({k: math.nan for k in row if k in _TRAJECTORY_METRICS or k.startswith("barrier.")})
        rows.append(row)
  df = pd.DataFrame(rows)
  if df.empty:
    return df
  # A resumed run drops the lines after its checkpoint before writing them again; should two remain, the last wins.
  df = df.drop_duplicates(["run", "phase", "step", "member"], keep="last").reset_index(drop=True)
  for col in df.columns:
    if col not in ("run", "phase", "member", "step", "diverged"):
      df[col] = pd.to_numeric(df[col], errors="coerce")
  return df


def load_curves(runs_dir):
  """The curves along the linear path of every finished run as a long table: one row per (run, child k >= 1,
  aligned or not, split, metric, α). Columns: ``run``, ``child``, ``perturb.scale`` (σ), ``aligned`` (False: the
  child as trained; True: after weight matching to child 0), ``split``, ``metric`` (``loss``, ``error``, a text
  task's metric), ``alpha`` (0 = child 0, 1 = child k) and ``value``; the path's end points are the two networks'
  own values. Runs without ``results.json`` have no curves."""
  import pandas as pd
  runs_dir = Path(runs_dir)
  rows = []
  for folder in find_runs(runs_dir):
    results_path = folder / "results.json"
    if not results_path.is_file():
      continue
    results = results_lib.load(results_path)
    alphas = results.get("alphas", [])
    run = folder.relative_to(runs_dir).as_posix() or "."
    for child in results.get("children", [])[1:]:
      vs = child.get("vs_child0") or {}
      for aligned, block in ((False, vs), (True, vs.get("aligned") or {})):
        for split, metrics in (block.get("curves") or {}).items():
          for metric, values in metrics.items():
            for alpha, value in zip(alphas, values):
              rows.append({"run": run, "child": child["index"], "perturb.scale": child["perturb"]["scale"],
                           "aligned": aligned, "split": split, "metric": metric, "alpha": alpha,
                           "value": math.nan if value is None else value})
  return pd.DataFrame(rows, columns=["run", "child", "perturb.scale", "aligned", "split", "metric", "alpha", "value"])


def write_table(df, out_dir, name: str = "table") -> list[Path]:
  """``name``.csv and, when pyarrow is installed, ``name``.parquet in ``out_dir``; returns the paths."""
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = [out_dir / f"{name}.csv"]
  df.to_csv(paths[0], index=False)
  if importlib.util.find_spec("pyarrow") is None:
    print(f"note: pyarrow is not installed; wrote {paths[0].name} only (pip install pyarrow for Parquet)")
    return paths
  paths.append(out_dir / f"{name}.parquet")
  df.to_parquet(paths[1], index=False)
  return paths


def summary(df) -> str:
  """Runs found, finished, incomplete and diverged pairs, in a few lines."""
  runs = df.drop_duplicates("run")
  counts = runs["status"].value_counts()
  finished = df[df["status"] == "finished"]
  diverged = int(finished["pair_diverged"].fillna(False).sum()) if "pair_diverged" in finished else 0
  blown = int((finished["barrier_status"] == PATH_NOT_FINITE).sum()) if "barrier_status" in finished else 0
  unreadable = f"  unreadable: {counts['unreadable']}" if "unreadable" in counts else ""
  lines = [f"runs found: {len(runs)}  finished: {counts.get('finished', 0)}  incomplete: "
           f"{counts.get('incomplete', 0)}{unreadable}",
           f"child pairs: {len(finished)}  diverged pairs: {diverged}  pairs with a non-finite path (no barrier): "
           f"{blown}"]
  for _, row in runs[runs["status"] != "finished"].iterrows():
    lines.append(f"  {row['status']}: {row['run']} (last logged step {_int_or_none(row.get('last_step'))})")
  return "\n".join(lines)


def _int_or_none(x):
  try:
    return int(x)
  except (TypeError, ValueError):
    return None

