"""A data axis (``members.data_devices``): each member's batch split over several (virtual CPU) devices of a 2-D
``("members", "data")`` mesh. What stays bitwise and what does not:

* the batch of step s (examples and augmentation) is bitwise the one-device batch: identical SGD noise;
* with the data axis fixed, splitting the members over more devices changes no bit under ``sequential`` (each
  member runs the same partitioned program), and σ = 0 twins stay bitwise equal (barriers and L2 exactly 0);
* against one device, training agrees within float32 round-off (bf16 round-off under ``bfloat16``): the gradient,
  loss and BatchNorm sums over the batch are partial sums per device added by an all-reduce, another order of
  addition than one device's. A BatchNorm model agrees too, so its moments are the whole batch's, not a shard's;
  so does a BERT with dropout, so its masks are the one-device masks.

The bitwise comparisons between layouts and the BatchNorm CNN compile at XLA's default level; the comparisons
within round-off compile at the suite's level 0, where they hold as well and compile faster (tests/xla_flags.py).
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from butterfly_jax.config import ConfigError
from butterfly_jax.core import placement
from butterfly_jax.io import rundir as rundir_lib
from butterfly_jax.run import spec as spec_lib
from test_sharding import _approx, _metrics, _strip
import xla_flags

pytestmark = pytest.mark.slow  # the slow tier: layouts with a data axis, compiled in subprocesses

RUN = textwrap.dedent("""
    import sys, jax
    from butterfly_jax.run.configs_embedded import smoke
    from butterfly_jax.run.experiment import run
    assert jax.device_count() == 8, jax.devices()
    c = smoke()
    c.perturb.scales = (0.0, 1e-2, 1.0)   # as the smoke_run fixture: K = 4
    c.members.data_devices = 0            # auto: the trunk on 1 x 8 devices, the children on 4 x 2
    run(c, sys.argv[1])
""")

STEPS = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding
    from butterfly_jax.core import batches, members, placement, tree_math
    from butterfly_jax.run.configs_embedded import smoke
    from butterfly_jax.run.setup import Setup
    assert jax.device_count() == 4, jax.devices()
    devices = jax.devices()
    group = sys.argv[2]   # "layout": compiled at XLA's default level; "tolerance": at the suite's level
    out = {}

    def host(tree):
      return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]

    def diff(a, b):
      return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) for x, y in zip(a, b))

    # the batch of a step, augmented, computed split over the data axis: the one-device batch, bitwise
    mesh = placement.member_mesh(2, devices=devices, data_devices=2)
    if group == "layout":
      b = batches.Batcher(batch_size=16, num_examples=64, mean=[0.5], std=[0.25], flip=True, translate=1, rotate=10.0,
                          erase=0.3)
      data = (jnp.asarray(np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1)), jnp.uint8), jnp.arange(64))
      perm, key = b.epoch_permutation(jax.random.key(0), 0), jax.random.key(1)
      one = jax.jit(b.step_batch)(data, perm, key, jnp.int32(3))
      spec = NamedSharding(mesh, placement.batch_spec())
      split = jax.jit(lambda *a: jax.lax.with_sharding_constraint(b.step_batch(*a), spec))(
          placement.replicate(data, mesh), placement.replicate(perm, mesh), key, jnp.int32(3))
      out["batch_split"] = [x.sharding.spec == placement.batch_spec() for x in split] + [
          x.addressable_shards[0].data.shape[0] == 8 for x in split]
      out["batch_bitwise"] = all(np.array_equal(x, y) for x, y in zip(host(one), host(split)))

    setups, steps = {}, {}

    def train(c, k, mesh, keys, n=3):
      # a family of k members initialised from keys after n steps: (params and optimizer state as host arrays,
      # losses, their dtypes)
      cid = json.dumps(c.to_dict(), sort_keys=True, default=str)
      if cid not in setups:
        setups[cid] = Setup(c)
      setup = setups[cid]
      if (cid, k, mesh) not in steps:
        steps[cid, k, mesh] = members.make_train_step(setup.apply_fn, setup.transform, setup.schedule, setup.batcher,
                                                      setup.strategy, mesh, c.train.compute_dtype, setup.member_schedule,
                                                      setup.dropout)
      params = [setup.init_fn(jax.random.key(i)) for i in keys]
      fam = members.new_family(params, [setup.transform.init(p) for p in params], [0] * k, [100] * k)
      fam, data = placement.shard_members(fam, mesh), placement.replicate(setup.train_data, mesh)
      perm = placement.replicate(setup.batcher.epoch_permutation(setup.keys["data"], 0), mesh)
      losses = []
      for s in range(n):
        fam, loss, _ = steps[cid, k, mesh](fam, data, perm, setup.keys["augment"], jnp.int32(s))
        losses.append(loss)
      dtypes = sorted({str(x.dtype) for x in jax.tree_util.tree_leaves((fam.params, fam.opt_state))})
      return host((fam.params, fam.opt_state)), np.asarray(jax.device_get(losses)), dtypes

    def case(name, c, keys=(0, 1)):
      # two members on 2 (members) x 2 (data) devices against one device
      ref, ref_loss, _ = train(c, 2, None, keys)
      got, loss, dtypes = train(c, 2, placement.member_mesh(2, 0, devices, data_devices=2), keys)
      out[name] = {"max_diff": diff(got, ref), "bitwise": all(np.array_equal(x, y) for x, y in zip(got, ref)),
                   "loss_diff": float(np.max(np.abs(loss - ref_loss))), "dtypes": dtypes,
                   "twins_equal": all(np.array_equal(x[0], x[1]) for x in got)}
      return got

    from butterfly_jax.run import config_files
    from butterfly_jax.config import config_file

    def layout():
      # bitwise comparisons between layouts, and a BatchNorm CNN: XLA's default level (tests/xla_flags.py)
      c = smoke()
      c.members.strategy = "sequential"
      got = case("sequential", c)
      # each member alone (K = 1) on 1 x 2 devices: the same partitioned program as one member per device group
      lone = [train(c, 1, placement.member_mesh(1, 0, devices[:2], data_devices=2), (i,))[0] for i in (0, 1)]
      out["sequential"]["lone_bitwise"] = all(np.array_equal(x[i], l[i][0]) for i in (0, 1)
                                              for x, *l in zip(got, *lone))
      c = smoke()
      c.members.strategy, c.model.name = "sequential", "cnn"
      c.model.kwargs = {"channels": (4,), "dense": 16, "norm": "batchnorm"}
      c.eval.norm_stats_examples, c.eval.batch_size = 64, 32
      case("cnn_batchnorm", c)
      # its evaluation (statistics re-estimated per network, loss and error sums) with the batches split
      setup = next(v for v in setups.values() if v.c.model.name == "cnn")
      params = jax.tree_util.tree_map(jnp.asarray, tree_math.stack([setup.init_fn(jax.random.key(i)) for i in (0, 1)]))
      indices = {"train": np.arange(100), "test": np.arange(100)}
      alphas = np.linspace(0, 1, 3)
      ref = setup.evaluate_family(params, indices, alphas)
      split = setup.evaluate_family(placement.shard_members(params, mesh), indices, alphas)
      out["cnn_batchnorm"]["eval_diff"] = max(
          float(np.max(np.abs(np.asarray(ref[s][m], np.float64) - np.asarray(split[s][m], np.float64))))
          for s in ("train", "test") for m in ("child_loss", "child_error"))

    def tolerance():
      # comparisons within round-off and twins compiled alike: any XLA level
      c = smoke()
      c.members.strategy = "vmap"
      case("vmap", c)
      c = smoke()
      c.members.strategy, c.train.compute_dtype = "sequential", "bfloat16"
      case("bfloat16", c, keys=(0, 0))
      # a text model: the tiny BERT of configs/glue_tiny.py with BERT's dropout, under map (its CPU default)
      c = config_file(config_files.FOLDER / "glue_tiny.py").get_config()
      c.model.kwargs.dropout = c.model.kwargs.attention_dropout = 0.1
      c.members.strategy = "map"
      case("bert_dropout", c, keys=(0, 0))
      c.train.compute_dtype = "bfloat16"
      case("bert_bfloat16", c, keys=(0, 0))

    {"layout": layout, "tolerance": tolerance}[group]()
    json.dump(out, open(sys.argv[1], "w"))
""")


def _env(devices: int, level: str | None = "default") -> dict:
  """This process's XLA flags (tests/conftest.py: the run's flags) plus forced CPU devices, at XLA's default
  level (tests/xla_flags.py) or, with ``level=None``, at the suite's own (level 0: comparisons within round-off
  hold at any level, and compile faster there)."""
  flags = (xla_flags.default_level if level == "default" else xla_flags.suite_level)(
      f"--xla_force_host_platform_device_count={devices}")
  return dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")


def test_data_size_and_mesh_shapes():
  assert placement.data_size(2, 4, 0, 1) == 1                  # 1: today's layout, no data axis
  assert placement.data_size(2, 4, 0, 0, (16, 128)) == 2       # auto: the devices K = 2 leaves over
  assert placement.data_size(1, 6, 0, 0, (16, 128, 16)) == 4   # the trunk: as many as divide the batches
  assert placement.data_size(3, 6, 0, 0, (16,)) == 2
  assert placement.data_size(8, 4, 0, 0, (16,)) == 1           # K = 8 on 4 devices: none left over
  assert placement.data_size(2, 8, 2, 0, (16,)) == 4           # members.devices = 2 leaves 4 per member
  assert placement.data_size(4, 8, 0, 2, (16,)) == 2
  with pytest.raises(placement.PlacementError, match="members.data_devices: 8 devices per member asked for, 4 available"):
    placement.data_size(2, 4, 0, 8, (16,))
  with pytest.raises(placement.PlacementError, match=r"members.data_devices: 3 does not divide the batch size\(s\) \[16\]"):
    placement.data_size(2, 4, 0, 3, (16, 12))
  one = jax.local_devices()[:1]
  assert placement.member_mesh(4, devices=one) is None and placement.member_mesh(1, devices=one, data_devices=0) is None
  assert placement.data_devices(None) == 1 and placement.member_devices(None) == 1


@pytest.mark.parametrize("value,match", [
    (-1, "members.data_devices: expected an integer >= 0"),
    (3, "members.data_devices: 3 devices must split every batch evenly, and train.batch_size = 16, eval.batch_size "
        "= 128, perturb.batch_size = 16 is not divisible by 3"),
])
def test_bad_data_devices_are_named(smoke_config, value, match):
  smoke_config.members.data_devices = value
  with pytest.raises(ConfigError, match=match):
    spec_lib.check(smoke_config)


def test_more_data_devices_than_there_are_fail_before_anything_is_written(smoke_config, tmp_path):
  from butterfly_jax.run.experiment import run
  smoke_config.members.data_devices = 2 * jax.device_count()
  with pytest.raises(ConfigError, match="members.data_devices: .* devices per member asked for"):
    run(smoke_config, tmp_path / "run")
  assert not (tmp_path / "run" / "config.json").exists()


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
  """Training steps of small families under one device and (members x data) layouts on 4 CPU devices."""
  folder, out = tmp_path_factory.mktemp("steps"), {}
  for group, env in (("layout", _env(4)), ("tolerance", _env(4, level=None))):
    done = subprocess.run([sys.executable, "-c", STEPS, str(folder / f"{group}.json"), group], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out.update(json.loads((folder / f"{group}.json").read_text()))
  return out


def test_the_batch_split_over_the_data_axis_is_the_one_device_batch_bitwise(steps):
  assert steps["batch_split"] == [True] * 4   # each device holds half of the examples
  assert steps["batch_bitwise"]


def test_sequential_members_x_data_matches_one_device_within_round_off(steps):
  r = steps["sequential"]
  assert r["max_diff"] < 1e-5 and r["loss_diff"] < 1e-5, r
  assert r["dtypes"] == ["float32"]
  # one member per device group: each member's bits are those of the same network trained alone on 2 devices
  assert r["lone_bitwise"]


def test_vmap_members_x_data_matches_one_device_within_round_off(steps):
  r = steps["vmap"]
  assert r["max_diff"] < 1e-5 and r["loss_diff"] < 1e-5, r


def test_bfloat16_with_a_data_axis_keeps_float32_state_and_twins_equal(steps):
  r = steps["bfloat16"]
  assert r["dtypes"] == ["float32"]   # parameters and optimizer state stay float32
  assert r["twins_equal"]             # identical members, one per device group, stay bitwise equal
  assert r["max_diff"] < 5e-2 and r["loss_diff"] < 5e-2, r   # bf16 round-off, not another training


def test_batchnorm_moments_are_the_whole_batchs(steps):
  r = steps["cnn_batchnorm"]
  assert r["max_diff"] < 1e-5 and r["loss_diff"] < 1e-5, r  # moments over half-batches would differ far more
  assert r["eval_diff"] < 1e-5, r   # evaluation with statistics re-estimated on split batches


def test_a_text_model_with_dropout_on_a_data_axis_matches_one_device_and_keeps_twins_equal(steps):
  """BERT with dropout, its batch split over 2 devices: the dropout masks are the one-device masks (a different
  mask would move the weights far more than round-off), and identical members stay bitwise equal, also in bf16."""
  r = steps["bert_dropout"]
  assert r["twins_equal"] and r["dtypes"] == ["float32", "int32"]  # AdamW's step count
  assert r["max_diff"] < 1e-5 and r["loss_diff"] < 1e-5, r
  r = steps["bert_bfloat16"]
  assert r["twins_equal"] and r["dtypes"] == ["float32", "int32"]
  assert r["max_diff"] < 5e-2 and r["loss_diff"] < 5e-2, r


def test_run_with_auto_data_axis_matches_one_device_within_round_off(tmp_path, smoke_run):
  _, one_dir, one = smoke_run
  # compared within round-off with smoke_run (compiled at the suite's level): the suite's level here too
  done = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / "eight")], env=_env(8, level=None),
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  eight = json.loads((tmp_path / "eight" / "results.json").read_text())
  assert (eight["members_devices"], eight["data_devices"]) == (4, 2) and one["data_devices"] == 1
  assert eight["children"][1]["vs_child0"]["l2"] == 0.0   # the sigma = 0 twin, exactly
  assert eight["children"][1]["vs_child0"]["barrier"] == {s: {"loss": 0.0, "error": 0.0} for s in ("train", "test")}
  strip = lambda r: {k: v for k, v in _strip(r).items() if k != "data_devices"}
  assert _approx(strip(eight), strip(one)) and _approx(_metrics(tmp_path / "eight"), _metrics(one_dir))
  pa = rundir_lib.restore_checkpoint(tmp_path / "eight" / "checkpoints" / "children")["params"]
  pb = rundir_lib.restore_checkpoint(one_dir / "checkpoints" / "children")["params"]
  for a, b in zip(jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
