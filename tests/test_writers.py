"""Live writers (``log.writers``, butterfly_jax/run/writers.py): what TensorBoard's event files and W&B's offline run
hold, read back from disk and checked against metrics.jsonl and results.json; that they change no result and no
run identity; their errors; what a resumed run shows."""

import json
import struct
import sys

import numpy as np
import pytest

from butterfly_jax.config import ConfigError
from butterfly_jax.io import rundir as rundir_lib
from butterfly_jax.run import writers as writers_lib
from butterfly_jax.run.configs_embedded import smoke
from butterfly_jax.run.experiment import run

tensorboardX = pytest.importorskip("tensorboardX")  # the track extra (in the test extra)
wandb = pytest.importorskip("wandb")
from tensorboardX.proto import event_pb2  # noqa: E402  (after the skip)
from wandb.proto import wandb_internal_pb2  # noqa: E402

BOTH = ("tensorboard", "wandb")


def _wandb_environment(set_env, folder):
  """W&B offline (no network here), quiet, its caches and settings under ``folder``."""
  for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                     "WANDB_DISABLE_GIT": "true", "WANDB_CACHE_DIR": folder / "cache",
                     "WANDB_DATA_DIR": folder / "data", "WANDB_CONFIG_DIR": folder / "config"}.items():
    set_env(key, str(value))


@pytest.fixture(autouse=True)
def wandb_offline(monkeypatch, tmp_path_factory):
  _wandb_environment(monkeypatch.setenv, tmp_path_factory.mktemp("wandb_home"))


def _run(c, workdir):
  """``run(c, workdir)``, then W&B's service shut down: its ``finish`` returns before the service has written the
  run's last records (measured: 37 of 39 rows on disk right after it, every one at ``wandb.teardown()``, which
  a process's exit calls)."""
  try:
    return run(c, workdir)
  finally:
    wandb.teardown()


def _config(writers=BOTH):
  """The smoke config with barriers during training (every other log line) and ``writers``."""
  c = smoke()
  c.eval.every_steps = 20
  c.log.writers = writers
  return c


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
  """(workdir, results, lines) of a smoke run with both writers."""
  workdir = tmp_path_factory.mktemp("tracked")
  with pytest.MonkeyPatch.context() as mp:
    _wandb_environment(mp.setenv, tmp_path_factory.mktemp("wandb_home"))
    results = _run(_config(), workdir)
  return workdir, results, _lines(workdir)


def _lines(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


# TensorBoard's event files, read without TensorBoard: TFRecord framing (length, its CRC, data, its CRC) around
# tensorboardX's Event protobufs.

def _events(path):
  data, pos, out = path.read_bytes(), 0, []
  while pos < len(data):
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    out.append(event_pb2.Event.FromString(data[pos + 12:pos + 12 + length]))
    pos += 12 + length + 4
  assert pos == len(data), f"{path}: a torn record"
  return out


def _event_files(workdir):
  return sorted((workdir / writers_lib.TENSORBOARD_DIR).glob("events.out.tfevents.*"))


def _tensorboard(workdir):
  """``(scalars, texts, hparams)``: every scalar series ``{tag: {step: value}}`` as TensorBoard shows it (its files
  read in name order; a point at step s preempts the series' points at steps >= s, RustBoard's rule for a job
  restarted from a checkpoint), the text summaries and the hyperparameters' session start."""
  scalars, texts, hparams = {}, {}, None
  for path in _event_files(workdir):
    for event in _events(path):
      for value in event.summary.value:
        if value.WhichOneof("value") == "simple_value":
          series = scalars.setdefault(value.tag, [])
          series[:] = [(s, v) for s, v in series if s < event.step] + [(event.step, value.simple_value)]
        elif value.metadata.plugin_data.plugin_name == "text":
          texts[value.tag.partition("/")[0]] = value.tensor.string_val[0].decode()
        elif value.tag == "_hparams_/session_start_info":
          from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData
          hparams = HParamsPluginData.FromString(value.metadata.plugin_data.content).session_start_info.hparams
  return {tag: dict(series) for tag, series in scalars.items()}, texts, hparams


# W&B's offline run: its transaction log (run-<id>.wandb), W&B's record protobufs in LevelDB's log framing (a 7-byte
# header, then 32 KiB blocks of chunks: CRC, length, type FULL 1 / FIRST 2 / MIDDLE 3 / LAST 4).

def _wandb_records(folder):
  (path,) = folder.glob("run-*.wandb")
  data, pos, block, records, pending = path.read_bytes(), 7, 32768, [], b""
  assert data[:4] == b":W&B"
  while pos + 7 <= len(data):
    left = block - pos % block
    if left < 7:
      pos += left
      continue
    _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
    if kind == 0:  # a block's zero padding
      pos += left
      continue
    chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
    pending = chunk if kind in (1, 2) else pending + chunk
    if kind in (1, 4):
      records.append(wandb_internal_pb2.Record.FromString(pending))
  return records


def _wandb_runs(workdir):
  return sorted((workdir / writers_lib.WANDB_DIR).glob("offline-run-*"))


def _wandb_history(records):
  """``{step: {key: value}}`` of the history rows."""
  out = {}
  for record in records:
    if record.WhichOneof("record_type") == "history":
      row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
      out.setdefault(row["_step"], {}).update(row)
  return out


def _f32(x):
  return float(np.float32(x))


def _member_values(lines):
  """``{(tag, step): value}`` of what the writers show of each line, from metrics.jsonl itself."""
  out = {}
  for line in lines:
    names = ["trunk"] if line["phase"] == "trunk" else [f"child{j}" for j in range(len(line["train_loss"]))]
    for key in ("train_loss", "lr", "l2_from_init", "eval_train_loss", "eval_test_error"):
      for name, value in zip(names, line.get(key) or ()):
        out[f"{key}/{name}", line["step"]] = value
    for j, value in enumerate(line["l2_to_child0"][1:], start=1):
      out[f"l2_to_child0/child{j}", line["step"]] = value
    for j, pair in enumerate(line.get("barrier") or (), start=1):
      for split in ("train", "test"):
        for quantity in ("loss", "error"):
          out[f"barrier/{split}/{quantity}/child{j}", line["step"]] = pair[split][quantity]
  return out


def test_tensorboard_event_files_hold_the_log_lines_the_results_and_the_config(tracked):
  workdir, results, lines = tracked
  scalars, texts, hparams = _tensorboard(workdir)
  expected = _member_values(lines)
  assert {line["step"] for line in lines if "barrier" in line} == {20, 40}
  for (tag, step), value in expected.items():
    assert scalars[tag][step] == _f32(value), (tag, step)
  during = {tag for tag in scalars if not tag.startswith(("final/", "alpha_curve"))}
  assert during == {tag for tag, _ in expected}  # no other series during training
  assert set(scalars["train_loss/child1"]) == {20, 30, 40} and set(scalars["train_loss/trunk"]) == {10}
  # the final numbers at the last step, each child's as in results.json
  final = writers_lib.final_scalars(results)
  assert {tag for tag in scalars if tag.startswith("final/")} == set(final)
  children = results["children"]
  for j in (1, 2):
    for split in ("train", "test"):
      for quantity in ("loss", "error"):
        barrier = children[j]["vs_child0"]["barrier"][split][quantity]
        assert scalars[f"final/vs_child0/barrier/{split}/{quantity}/child{j}"] == {40: _f32(barrier)}
        aligned = children[j]["vs_child0"]["aligned"]["barrier"][split][quantity]
        assert scalars[f"final/vs_child0/aligned/barrier/{split}/{quantity}/child{j}"] == {40: _f32(aligned)}
    assert scalars[f"final/vs_child0/cka/child{j}"] == {40: _f32(children[j]["vs_child0"]["cka"])}
  assert scalars["final/test/accuracy/child0"] == {40: _f32(children[0]["test"]["accuracy"])}
  assert children[2]["vs_child0"]["barrier"]["test"]["error"] > 0  # a barrier that is not 0 is among them
  # the α-curves: step i is the i-th point of results.json's alphas grid, which the text "alphas" lists
  for j in (1, 2):
    curve = children[j]["vs_child0"]["curves"]["test"]["loss"]
    assert scalars[f"alpha_curve/test/loss/child{j}"] == {i: _f32(v) for i, v in enumerate(curve)}
    curve = children[j]["vs_child0"]["aligned"]["curves"]["train"]["error"]
    assert scalars[f"alpha_curve_aligned/train/error/child{j}"] == {i: _f32(v) for i, v in enumerate(curve)}
  assert len(results["alphas"]) == 5
  for i, alpha in enumerate(results["alphas"]):
    assert f"| {i} | {alpha!r} |" in texts["alphas"]
  # the config: as text (config.json's content) and as hyperparameters
  config = json.loads("\n".join(line[4:] for line in texts["config"].splitlines()))
  assert config == json.loads((workdir / "config.json").read_text())
  assert hparams["optim.lr"].number_value == 0.05 and hparams["model.name"].string_value == "mlp"
  assert json.loads(hparams["perturb.scales"].string_value) == [0.0, 0.01]
  assert json.loads(hparams["log.writers"].string_value) == list(BOTH)


def test_wandb_offline_run_holds_the_same_values(tracked):
  workdir, results, lines = tracked
  (folder,) = _wandb_runs(workdir)
  records = _wandb_records(folder)
  kinds = [r.WhichOneof("record_type") for r in records]
  (start,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
  c = _config()
  assert start.run_id == writers_lib.wandb_id(rundir_lib.RunDir(workdir), c) and start.project == "butterfly_jax"
  assert start.display_name == workdir.name
  config = {item.key: json.loads(item.value_json) for item in start.config.update if item.key != "_wandb"}
  assert config == json.loads((workdir / "config.json").read_text())
  history = _wandb_history(records)
  assert sorted(history) == [line["step"] for line in lines]
  for (tag, step), value in _member_values(lines).items():
    assert history[step][tag] == value, (tag, step)  # W&B keeps float64: metrics.jsonl's numbers exactly
  last = history[40]
  for tag, value in writers_lib.final_scalars(results).items():
    assert last[tag] == value, tag
  barrier = results["children"][2]["vs_child0"]["barrier"]["test"]["error"]
  assert barrier > 0 and last["final/vs_child0/barrier/test/error/child2"] == barrier
  table = json.loads((folder / "files" / last["alpha_curves/path"]).read_text())
  assert table["columns"] == list(writers_lib.TABLE_COLUMNS)
  rows = [dict(zip(table["columns"], row)) for row in table["data"]]
  assert rows == writers_lib.alpha_curves(results)
  curve = [r["value"] for r in rows if (r["child"], r["aligned"], r["split"], r["quantity"]) == (2, False, "test",
                                                                                                   "loss")]
  assert curve == results["children"][2]["vs_child0"]["curves"]["test"]["loss"]
  plot = json.loads((folder / "files" / last["alpha_curve/test/loss_table/path"]).read_text())  # a line plot's
  points = [dict(zip(plot["columns"], row)) for row in plot["data"]]
  assert [p["lineVal"] for p in points if p["lineKey"] == "child2 (σ=0.01)"] == curve
  assert [p["step"] for p in points if p["lineKey"] == "child2 (σ=0.01)"] == results["alphas"]
  (exit_record,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
  assert exit_record.exit_code == 0 and kinds.count("history") == len(lines)


def test_writers_change_no_result_and_no_run_identity(tracked, tmp_path):
  workdir, results, lines = tracked
  plain = tmp_path / "plain"
  reference = run(_config(writers=()), plain)
  drop = lambda r: {k: v for k, v in r.items() if k not in ("timing", "provenance")}
  assert drop(json.loads((workdir / "results.json").read_text())) == drop(
      json.loads((plain / "results.json").read_text()))
  no_time = lambda ls: [{k: v for k, v in line.items() if k != "time_s"} for line in ls]
  assert no_time(lines) == no_time(_lines(plain))
  assert not (plain / "tensorboard").exists() and not (plain / "wandb").exists()
  # the same run whatever its writers: the finished run is found (and nothing is written), not refused
  assert run(_config(), plain) == reference
  assert not (plain / "tensorboard").exists()
  # a stored config from before the writers existed is the same config
  stored = json.loads((plain / "config.json").read_text())
  del stored["log"]["writers"], stored["log"]["wandb_project"]
  (plain / "config.json").write_text(json.dumps(stored))
  assert rundir_lib.RunDir(plain).finished_results(_config().to_dict()) == reference


@pytest.mark.parametrize("writers,match", [
    (("tensorbord",), r"log\.writers: unknown writer 'tensorbord'; allowed: tensorboard, wandb"),
    (("tensorboard,wandb",), r"log\.writers: unknown writer 'tensorboard,wandb'; allowed: .*'wandb'\)\"\)"),
    (("wandb", "wandb"), r"log\.writers: each writer once, got \('wandb', 'wandb'\)"),
])
def test_bad_writer_names_are_named_errors(tmp_path, writers, match):
  with pytest.raises(ConfigError, match=match):
    run(_config(writers), tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_a_writer_without_its_package_is_an_error_before_the_run_directory_is_touched(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: found nowhere, not importable
  with pytest.raises(ConfigError, match=r"^log\.writers: 'wandb' needs the wandb package, which is not installed: "
                                        r"pip install 'butterfly_jax\[track\]' \(or pip install wandb\)"):
    run(_config(), tmp_path / "run")
  assert not (tmp_path / "run").exists()
  with pytest.raises(writers_lib.WriterError, match=r"'wandb' needs the wandb package"):  # found, then broken
    writers_lib.open_writers(_config(("wandb",)), rundir_lib.RunDir(tmp_path / "other"), fresh=True)


def test_a_writer_that_cannot_start_fails_before_anything_trains(tmp_path, monkeypatch):
  def init(**kwargs):
    raise wandb.errors.CommError("Network error (ConnectionError), entering retry loop.\nmore lines")

  monkeypatch.setattr(wandb, "init", init)
  with pytest.raises(writers_lib.WriterError, match=r"^log\.writers: 'wandb' could not start \(CommError: Network "
                                                    r"error \(ConnectionError\), entering retry loop\.\); nothing has "
                                                    r"trained in this attempt\. Log in \(wandb login.*WANDB_MODE="
                                                    r"offline"):
    run(_config(), tmp_path)
  assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "checkpoints").exists()
  (events,) = _event_files(tmp_path)  # TensorBoard, opened first, was closed again: a whole file
  assert _events(events)


def test_a_writer_failing_mid_run_is_switched_off_and_the_run_finishes(tracked, tmp_path, monkeypatch, caplog):
  workdir, results, _ = tracked
  log = writers_lib.TensorBoard.log

  def log_until_30(self, step, scalars):
    if step == 30:
      raise OSError(28, "No space left on device")
    log(self, step, scalars)

  monkeypatch.setattr(writers_lib.TensorBoard, "log", log_until_30)
  with tensorboardX.SummaryWriter(str(tmp_path / "tensorboard")) as stale:  # an earlier run's, started afresh
    stale.add_scalar("train_loss/child5", 1.0, global_step=50)
  with caplog.at_level("WARNING"):
    res = _run(_config(), tmp_path)
  assert "log.writers: tensorboard failed (OSError: [Errno 28] No space left on device) and is off" in caplog.text
  drop = lambda r: {k: v for k, v in r.items() if k not in ("timing", "provenance")}
  assert drop(res) == drop(results)
  scalars, _, _ = _tensorboard(tmp_path)
  assert set(scalars["train_loss/child0"]) == {20} and not any(t.startswith("final/") for t in scalars)
  assert "train_loss/child5" not in scalars and len(_event_files(tmp_path)) == 1  # the run started from step 0
  assert sorted(_wandb_history(_wandb_records(_wandb_runs(tmp_path)[0]))) == [10, 20, 30, 40]  # W&B went on


class _Interrupted(Exception):
  pass


def test_a_resumed_run_shows_every_step_once(tmp_path, monkeypatch):
  """A run interrupted after its line at step 30 resumes from its checkpoint at 20 and logs 30 again: TensorBoard's
  second event file preempts the first one's 30, and shows each series as metrics.jsonl holds it; W&B continues
  the same run id (offline: a second folder), the failed attempt marked failed."""
  c = _config()
  c.checkpoint.every_steps = "20"
  log = rundir_lib.RunDir.log

  def log_then_stop(self, record):
    log(self, record)
    if record["step"] == 30:
      raise _Interrupted

  monkeypatch.setattr(rundir_lib.RunDir, "log", log_then_stop)
  with pytest.raises(_Interrupted):
    _run(c, tmp_path)
  monkeypatch.setattr(rundir_lib.RunDir, "log", log)
  res = _run(c, tmp_path)
  assert res["timing"]["resumed_from"] == {"phase": "children", "step": 20}
  first, second = _event_files(tmp_path)
  assert first.name.endswith(".0000") and second.name.endswith(".0001")
  steps = lambda path: [e.step for e in _events(path) for v in e.summary.value if v.tag == "train_loss/child2"]
  assert steps(first) == [20, 30] and steps(second) == [30, 40]  # 30 twice on disk, once as shown
  lines = _lines(tmp_path)
  assert [line["step"] for line in lines] == [10, 20, 30, 40]
  scalars, _, _ = _tensorboard(tmp_path)
  shown = {(tag, step): value for tag, series in scalars.items() if not tag.startswith(("final/", "alpha_curve"))
           for step, value in series.items()}
  assert shown == {key: _f32(value) for key, value in _member_values(lines).items()}
  attempts = [_wandb_records(folder) for folder in _wandb_runs(tmp_path)]
  assert len(attempts) == 2
  ids = {r.run.run_id for records in attempts for r in records if r.WhichOneof("record_type") == "run"}
  assert ids == {writers_lib.wandb_id(rundir_lib.RunDir(tmp_path), c)}
  exits = [r.exit.exit_code for records in attempts for r in records if r.WhichOneof("record_type") == "exit"]
  assert sorted(_wandb_history(attempts[0])) == [10, 20, 30] and sorted(_wandb_history(attempts[1])) == [30, 40]
  assert exits == [1, 0]
