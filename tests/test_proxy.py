"""The random-permutation proxy on a saved run: same function, distance and barrier from moved units only."""

import json
import os
import subprocess
import sys

import pytest

from butterfly_jax.core import permutations, tree_math
from butterfly_jax.proxy import load_child, recovery, run_proxy


def test_proxy_on_a_saved_run(smoke_run):
  _, workdir, res = smoke_run
  out = run_proxy(workdir, child=2, fractions=(0.0, 0.5, 1.0), seeds=2, num_examples=100)
  assert json.loads((workdir / "proxy.json").read_text()) == out
  assert out["num_examples"] == {"train": 100, "test": 100}
  rows = out["rows"]
  assert [(r["target_fraction"], r["seed"]) for r in rows] == [(f, s) for f in (0.0, 0.5, 1.0) for s in (0, 1)]
  for r in rows:
    assert r["fixed_point_fraction"] == pytest.approx(r["target_fraction"], abs=0.05)
    for split in ("train", "test"):
      for metric in ("loss", "error"):
        assert r["barrier"][split][metric] >= 0.0
  full = [r for r in rows if r["target_fraction"] == 1.0]
  assert all(r["l2"] == 0.0 and r["barrier"]["train"]["loss"] == 0.0 for r in full)
  moved = [r for r in rows if r["target_fraction"] == 0.0]
  assert all(r["l2"] > 0.5 * res["children"][2]["l2_from_init"] for r in moved)
  # moving every unit costs more than moving half of them
  mean = lambda f: sum(r["l2"] for r in rows if r["target_fraction"] == f) / 2
  assert mean(0.0) > mean(0.5) > 0.0


def test_weight_matching_recovers_a_known_permutation_of_a_trained_network(smoke_run):
  """The positive control for alignment (``--align``): a trained network against a permuted copy of itself."""
  import jax
  c, workdir, _ = smoke_run
  params = load_child(workdir, 2)
  spec = permutations.spec_for(c.model.name, params)
  applied = permutations.random_permutation(jax.random.key(5), spec, 0.0)
  moved = tree_math.l2_distance(params, permutations.apply_permutation(spec, applied, params))
  assert permutations.fixed_point_fraction(applied) == 0.0 and moved > 0
  found = recovery(spec, params, applied, jax.random.key(6))
  assert found == {"recovered_fraction": 1.0, "l2": 0.0}   # every unit put back, the copy restored exactly
  # no matching rounds: the identity is found, nothing is put back and the whole distance is left
  none = recovery(spec, params, applied, jax.random.key(6), max_iter=0)
  assert none["recovered_fraction"] == 0.0 and none["l2"] == pytest.approx(moved)
  half = permutations.random_permutation(jax.random.key(7), spec, 0.5)
  assert recovery(spec, params, half, jax.random.key(6), max_iter=0)["recovered_fraction"] == pytest.approx(
      permutations.fixed_point_fraction(half))


def test_activation_matching_recovers_a_known_permutation_of_a_trained_network(smoke_run):
  """``--align`` on a run that aligns by activation matching: the permuted copy's units are matched back by their
  activations on the run's own examples, and the proxy labels the row by the method."""
  import jax
  from butterfly_jax.run.setup import Setup
  c, workdir, _ = smoke_run
  c = c.copy_and_resolve_references()
  c.eval.align_method = "activations"
  setup = Setup(c)
  params = load_child(workdir, 2)
  spec = permutations.spec_for(c.model.name, params)
  applied = permutations.random_permutation(jax.random.key(5), spec, 0.0)
  assert recovery(spec, params, applied, jax.random.key(6), setup=setup) == {"recovered_fraction": 1.0, "l2": 0.0}
  from butterfly_jax.proxy import random_permutation_proxy
  rows, _ = random_permutation_proxy(setup, params, (0.0,), 1, jax.random.key(0), 50, align=True)
  assert rows[0]["activation_matching"] == {"recovered_fraction": 1.0, "l2": 0.0} and "weight_matching" not in rows[0]


@pytest.mark.slow
def test_proxy_command_line(smoke_run, tmp_path):
  _, workdir, _ = smoke_run
  cmd = [sys.executable, "-m", "butterfly_jax.proxy", f"--run={workdir}", "--fractions=0,1", "--seeds=1",
         "--num_examples=50", "--align"]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
  assert done.returncode == 0, done.stderr
  assert "proxy.json" in done.stdout and "fixed" in done.stdout and "recovered" in done.stdout
  # the run's XLA flags (determinism, and the CPU flags the runs use), as a run of main would have set them
  from butterfly_jax.io import runtime
  provenance = json.loads((workdir / "proxy.json").read_text())["provenance"]
  assert provenance["xla_flags"] == runtime.xla_flags("", True) != ""
  rows = json.loads((workdir / "proxy.json").read_text())["rows"]
  assert [r["weight_matching"] for r in rows] == [{"recovered_fraction": 1.0, "l2": 0.0}] * 2
  bad = subprocess.run([sys.executable, "-m", "butterfly_jax.proxy", f"--run={tmp_path}"], capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode == 2 and "config.json" in bad.stderr


def test_a_run_without_children_checkpoint_is_read_from_its_final_training_state(smoke_run, tmp_path):
  """A finished run saved with ``checkpoint.children=False`` (a long run of the map) still has its last
  training state; the proxy reads the children there, bitwise as the children checkpoint holds them."""
  import shutil

  import jax
  import numpy as np
  _, workdir, _ = smoke_run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  shutil.rmtree(copy / "checkpoints" / "children")
  for child in (0, 2):
    want, got = load_child(workdir, child), load_child(copy, child)
    pairs = zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(got), strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)
  (copy / "results.json").unlink()  # unfinished: its newest state is not the end of training
  with pytest.raises(ValueError, match="no finished run"):
    load_child(copy, 0)
