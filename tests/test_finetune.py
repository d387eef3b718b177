"""Pre-training then fine-tuning: kept checkpoints, class subsets, starting a family from a saved run."""

import numpy as np
import pytest

from butterfly_jax import config as config_lib
from butterfly_jax.core import tree_math
from butterfly_jax.io import rundir as rundir_lib
from butterfly_jax.io.data import DataError, load_dataset, select_classes
from butterfly_jax.run.configs_embedded import smoke
from butterfly_jax.run.experiment import run, weights_sha256
from butterfly_jax.run.spec import kept_steps


def test_select_classes_keeps_and_relabels_in_order():
  data = load_dataset("digits")
  sub = select_classes(data, (7, 2))
  assert sub.num_classes == 2
  assert set(np.unique(sub.train_labels)) == {0, 1}
  np.testing.assert_array_equal(sub.train_images[sub.train_labels == 0], data.train_images[data.train_labels == 7])
  assert sub.num_test == int(np.sum(np.isin(data.test_labels, (7, 2))))
  with pytest.raises(DataError, match="data.classes"):
    select_classes(data, (3, 10))


def _pretrain(tmp_path):
  c = smoke()
  c.data.classes = (0, 1, 2, 3, 4)
  c.perturb.scales = ()          # one network: a pre-training run
  c.checkpoint.keep = ("0", "20")
  c.checkpoint.keep_log = 3      # 1, 6 and 40 of T = 40
  c.eval.cka_examples = 0
  return c, run(c, tmp_path / "pre")


def test_pretraining_keeps_checkpoints_and_finetuning_starts_from_them(tmp_path, monkeypatch):
  c, pre = _pretrain(tmp_path)
  assert len(pre["children"]) == 1 and "vs_child0" not in pre["children"][0]
  assert pre["kept_steps"] == [0, 1, 6, 20, 40] == kept_steps(tmp_path / "pre")
  assert pre["data"]["num_classes"] == 5

  f = smoke()
  f.data.classes = (5, 6, 7, 8, 9)
  f.init.checkpoint = f"{tmp_path / 'pre'}:20"
  f.checkpoint.keep = ("0",)
  parsed, parse = [], config_lib.parse_init_checkpoint
  monkeypatch.setattr(config_lib, "parse_init_checkpoint", lambda value: parsed.append(value) or parse(value))
  res = run(f, tmp_path / "fine")  # norms and biases are left out of the mask by default when fine-tuning
  assert parsed == [f.init.checkpoint]  # read once, into the run's spec (butterfly_jax.run.spec.InitSource)
  assert res["init"]["head"] == "fresh" and res["init"]["checkpoint"].endswith("keep/20")
  start = tree_math.flat_dict(rundir_lib.restore_checkpoint(tmp_path / "fine" / "checkpoints" / "keep" / "0")["params"])
  source = tree_math.flat_dict(rundir_lib.restore_checkpoint(tmp_path / "pre" / "checkpoints" / "keep" / "20")["params"])
  assert set(start) == set(source)
  for name in start:
    if name.startswith("head/"):
      assert not np.array_equal(start[name], source[name])  # a fresh head for the new labels
    else:
      np.testing.assert_array_equal(start[name], source[name])  # exactly the pre-trained weights
  body = [n for n in start if not n.startswith("head/")]  # the model's order, which the fingerprint follows
  assert res["init"]["weights_sha256"] == weights_sha256(source, body)  # exactly these pre-trained weights
  table = pytest.importorskip("butterfly_jax.report.table").load_table(tmp_path / "fine")
  assert set(table["init_weights_sha256"]) == {res["init"]["weights_sha256"]}  # the report carries it per pair
  other = tree_math.flat_dict(rundir_lib.restore_checkpoint(tmp_path / "pre" / "checkpoints" / "keep" / "6")["params"])
  assert weights_sha256(other, body) != weights_sha256(source, body)  # another kept step, another fingerprint
  twin = res["children"][1]
  assert twin["vs_child0"]["l2"] == 0.0
  assert res["children"][2]["perturb"]["num_perturbed"] == sum(
      v.size for k, v in source.items() if "bias" not in k)  # the MLP has no norms: kernels only
  assert res["children"][2]["perturb"]["mask"]["applied_exclude"] == ".*norm.*|.*bias.*"


def test_finetuning_from_a_misfit_or_missing_checkpoint_names_the_problem(tmp_path):
  _pretrain(tmp_path)
  f = smoke()
  f.model.kwargs.hidden = (16,)
  f.init.checkpoint = f"{tmp_path / 'pre'}:20"
  with pytest.raises(config_lib.ConfigError, match=r"dense0/kernel: checkpoint shape \(64, 32\), model shape \(64, 16\)"):
    run(f, tmp_path / "misfit")
  f = smoke()
  f.init.checkpoint = f"{tmp_path / 'pre'}:21"
  with pytest.raises(config_lib.ConfigError, match=r"kept steps .*\[0, 1, 6, 20, 40\]"):
    run(f, tmp_path / "missing")
  f.init.checkpoint = "no-step-here"
  with pytest.raises(config_lib.ConfigError, match="RUN_DIR:STEP"):
    run(f, tmp_path / "bad")
  assert not (tmp_path / "missing").exists() and not (tmp_path / "bad").exists()  # refused before the directory


def test_kept_steps_after_the_end_are_an_error(tmp_path):
  c = smoke()
  c.checkpoint.keep = ("100",)
  with pytest.raises(config_lib.ConfigError, match=r"checkpoint.keep: steps \[100\] are after the end"):
    run(c, tmp_path)
