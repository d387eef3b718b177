"""The paper's definitions, each pinned against an independent computation in the test itself.

E_init against the authors' ``get_init_stds`` rules written out here for ResNet-20; the batch direction's
sign by the loss it changes; a fine-tuned ViT's t = 0 batch perturbation; the extra-steps learning rate
against the authors' formula; one-cycle against torch's; the augmentations; what results.json records.
CKA's unbiased estimator is pinned in test_similarity.py.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from butterfly_jax import config as config_lib
from butterfly_jax.core import batches, optim, perturb, tree_math
from butterfly_jax.models import make_model
from butterfly_jax.models.registry import param_order
from butterfly_jax.run import spec as spec_lib
from butterfly_jax.run.configs_embedded import smoke


def _authors_resnet20_e_init(width=32, classes=10, constant_params=False):
  """sqrt(sum of numel * std^2) by the authors' BaseModel.get_init_stds for their resnet20-32 (torch layer
  order: stem conv and norm; per block conv1, norm1, conv2, norm2, then the 1x1 shortcut conv and its norm;
  fc): He-normal weights std sqrt(2 / fan_in); norm weights and biases std 0, or with
  include_constant_params the std of the next non-shortcut weight layer (1/sqrt(n) after the last)."""
  layers = [("w", width * 3 * 9, 3 * 9, False), ("c", width), ("c", width)]
  cin = width
  for s, mult in enumerate((1, 2, 4)):
    c = width * mult
    for b in range(3):
      layers += [("w", c * cin * 9, cin * 9, False), ("c", c), ("c", c), ("w", c * c * 9, c * 9, False),
                 ("c", c), ("c", c)]
      if s > 0 and b == 0:
        layers += [("w", c * cin, cin, True), ("c", c), ("c", c)]
      cin = c
  layers += [("w", classes * cin, cin, False), ("c", classes)]
  total, nxt = 0.0, None
  for layer in reversed(layers):
    if layer[0] == "w":
      _, numel, fan_in, shortcut = layer
      total += numel * 2.0 / fan_in
      if not shortcut:
        nxt = (2.0 / fan_in) ** 0.5
    elif constant_params:
      n = layer[1]
      std = nxt if nxt is not None else 1.0 / n ** 0.5
      total += n * std ** 2
  return total ** 0.5


@pytest.fixture(scope="module")
def resnet20():
  _, init_fn = make_model("resnet20", (32, 32, 3), 10, width=2, norm="layernorm")
  stats = perturb.init_stats(init_fn, jax.random.key(1), 8)
  order = param_order("resnet20", (32, 32, 3), 10, width=2, norm="layernorm")
  params = init_fn(jax.random.key(0))
  mask = jax.tree_util.tree_map(lambda x: jnp.ones(x.shape, jnp.float32), params)
  return stats, order, mask


@pytest.mark.parametrize("constant_params", [False, True])
def test_e_init_of_resnet20_is_the_sum_of_the_authors_init_variances(resnet20, constant_params):
  stats, order, mask = resnet20
  stds = perturb.init_stds(stats, order, constant_params)
  e_init = perturb.expected_init_l2(stats, mask, stds, "variance")
  expected = _authors_resnet20_e_init(constant_params=constant_params)
  assert e_init == pytest.approx(expected, rel=2e-3)   # 8 draws of 1.1M weights: sampling error ~1e-4
  if not constant_params:
    assert expected == pytest.approx(56.2, abs=0.05)


def test_the_old_mean_square_rule_counted_norm_scales(resnet20):
  stats, order, mask = resnet20
  old = perturb.expected_init_l2(stats, mask, rule="mean_square")
  n_scales = sum(int(np.prod(shape)) for path, shape in order.items() if path.endswith("/scale"))
  # E[theta^2] adds 1 per LayerNorm scale: every old sigma was about 1.22 times the paper's
  assert old == pytest.approx((_authors_resnet20_e_init() ** 2 + n_scales) ** 0.5, rel=2e-3)
  assert old / _authors_resnet20_e_init() == pytest.approx(1.22, abs=0.01)


def test_fixed_init_std_replaces_every_random_layer(resnet20):
  stats, order, mask = resnet20
  stds = tree_math.flat_dict(perturb.init_stds(stats, order, False, fixed=0.02))
  assert stds["conv_in/kernel"] == 0.02 and stds["head/kernel"] == 0.02 and stds["norm_in/scale"] == 0.0


def _setup(c):
  from butterfly_jax.run.setup import Setup as _Setup
  return _Setup(c)


@pytest.mark.parametrize("sign", [1, -1])
def test_batch_perturbation_raises_the_perturbation_batch_loss_to_first_order(sign):
  from butterfly_jax.run.experiment import _initial_params, _perturbations, perturbation_batch
  from butterfly_jax.core.members import cross_entropy
  c = smoke()
  c.perturb.batch_sign = sign
  setup = _setup(c)
  params, _ = _initial_params(setup)
  eps, info = _perturbations(setup, params, (1e-3,))
  x, y = perturbation_batch(setup)
  loss = jax.jit(cross_entropy(setup.apply_fn))
  grad = jax.grad(cross_entropy(setup.apply_fn))(params, x, y)
  sigma = 1e-4
  change = float(loss(perturb.apply(params, eps, jnp.float32(sigma)), x, y) - loss(params, x, y))
  first_order = sigma * float(sum(jnp.vdot(g, e) for g, e in zip(jax.tree_util.tree_leaves(grad),
                                                                   jax.tree_util.tree_leaves(eps))))
  # eps is grad / |grad| * E_init, so the first-order change is sigma * |grad| * E_init
  assert first_order == pytest.approx(sign * sigma * info["direction_l2"] * info["expected_init_l2"], rel=1e-3)
  assert np.sign(change) == sign
  assert change == pytest.approx(first_order, rel=0.05)


def test_unnormalised_perturbation_is_sigma_times_the_masked_direction():
  from butterfly_jax.run.experiment import _initial_params, _perturbations
  c = smoke()
  c.perturb.normalize = False
  setup = _setup(c)
  params, _ = _initial_params(setup)
  eps, info = _perturbations(setup, params, (1e-3,))
  assert float(tree_math.tree_norm(eps)) == pytest.approx(info["direction_l2"], rel=1e-6)


def _tiny_vit_finetune(tmp_path, head):
  from butterfly_jax.io.rundir import RunDir
  kwargs = dict(patch=4, depth=1, width=16, heads=2, mlp_dim=32)
  _, pre_init = make_model("vit", (8, 8, 3), 5, **kwargs)
  pre = RunDir(tmp_path / "pre")
  pre.root.mkdir(parents=True, exist_ok=True)
  pre.save_checkpoint("keep/0", {"params": pre_init(jax.random.key(3)), "step": 0})
  c = smoke()
  c.data.name = "synthetic"
  c.data.synthetic.shape = (8, 8, 3)
  c.data.synthetic.num_classes = 10
  c.model.name = "vit"
  c.model.kwargs = kwargs
  c.init.checkpoint = f"{tmp_path / 'pre'}:0"
  c.init.head = head
  c.perturb.time = "0"
  return c


@pytest.mark.parametrize("head", ["torch_linear", "model"])
def test_finetuned_vit_batch_perturbation_at_t0_moves_the_backbone(tmp_path, head):
  from butterfly_jax.run.experiment import _initial_params, _perturbations
  setup = _setup(_tiny_vit_finetune(tmp_path, head))
  params, info = _initial_params(setup)
  assert info["head_init"] == head
  eps, _ = _perturbations(setup, params, (1e-2,))
  flat = tree_math.flat_dict(eps)
  backbone = float(np.sqrt(sum(np.sum(np.square(v)) for k, v in flat.items() if not k.startswith("head/"))))
  total = float(tree_math.tree_norm(eps))
  if head == "torch_linear":
    bound = 1 / 16 ** 0.5
    kernel = np.asarray(params["head"]["kernel"])
    assert np.all(np.abs(kernel) <= bound) and kernel.std() == pytest.approx(bound / 3 ** 0.5, rel=0.2)
    assert backbone > 0.1 * total   # the gradient reaches the backbone through a non-zero head
  else:
    assert backbone == 0.0          # a zero head passes no gradient: sigma would all go into the head


def _schedule_config(name="triangular", T=100, W=10, t=30, extra_lr="decay"):
  c = config_lib.default_config()
  c.schedule.name = name
  c.optim.lr = 0.1
  c.perturb.extra_lr = extra_lr
  return c, optim.make_member_schedule(c, T, W, t), optim.make_schedule(c, T, W)


@pytest.mark.parametrize("t", [30, 4])
def test_extra_steps_schedule_is_the_authors_formula_step_by_step(t):
  T, W, P = 100, 10, 0.1
  _, member, base = _schedule_config(t=t)
  lr = lambda s, offset, end: float(member(jnp.int32(s), jnp.int32(offset), jnp.int32(end)))
  for s in range(T):
    assert lr(s, 0, T) == pytest.approx(float(base(s)), abs=1e-9)   # child 0: the plain schedule
  if t >= W:
    l_t = P * (T - t) / (T - W)                                     # the unperturbed lr at t
    for j in range(T):   # reset_lr_schedule past the warm-up: from lr(t), linearly to 0 over T steps
      assert lr(t + j, 0, t + T) == pytest.approx(l_t * (1 - j / T), rel=1e-5, abs=1e-9)
  else:
    for s in range(t, W):   # an unfinished warm-up continues as in the unperturbed run
      assert lr(s, 0, t + T) == pytest.approx(P * s / W, rel=1e-6)
    for s in range(W, t + T):
      assert lr(s, 0, t + T) == pytest.approx(P * (t + T - s) / (t + T - W), rel=1e-5, abs=1e-9)
  for s in range(t, t + T):   # a rewound child restarts the schedule at t
    assert lr(s, t, t + T) == pytest.approx(float(base(s - t)), abs=1e-9)


def test_extra_steps_run_logs_the_decaying_rate(tmp_path):
  from butterfly_jax.run.experiment import run
  from butterfly_jax.report.table import read_metrics
  c = smoke()
  c.perturb.extra_steps = True
  c.eval.align = False
  res = run(c, tmp_path)
  t, T, W = res["steps"]["t"], res["steps"]["T"], res["steps"]["warmup"]
  assert [ch["end_step"] for ch in res["children"]] == [T, t + T, t + T]
  l_t = c.optim.lr * (T - t) / (T - W)
  for rec in read_metrics(tmp_path / "metrics.jsonl"):
    s = rec["step"] - 1   # the logged lr is the one used by the chunk's last step
    if rec["phase"] == "children" and s >= t:
      assert rec["lr"][1] == pytest.approx(l_t * (1 - (s - t) / T), rel=1e-5)
      if s < T:
        assert rec["lr"][0] == pytest.approx(c.optim.lr * (T - s) / (T - W), rel=1e-5)


def _torch_two_phases(step, T, pct, start, middle, end):
  """A value annealed as torch.optim.lr_scheduler.OneCycleLR's source does (two phases, cos)."""
  end1, end2 = float(pct * T) - 1, T - 1
  a, b, frac = (start, middle, step / end1) if step <= end1 else (middle, end, (step - end1) / (end2 - end1))
  return b + (a - b) / 2.0 * (np.cos(np.pi * frac) + 1)


def _torch_onecycle(step, P, T, pct, div=25.0, final_div=1e4):
  return _torch_two_phases(step, T, pct, P / div, P, P / div / final_div)


def test_onecycle_is_torch_onecycle():
  c, _, base = _schedule_config(name="onecycle", T=200, W=5)
  for s in range(200):
    assert float(base(s)) == pytest.approx(_torch_onecycle(s, 0.1, 200, 5 / 200), rel=1e-5, abs=1e-8)  # float32
  assert float(base(500)) == pytest.approx(float(base(199)))


def test_rotation_by_a_right_angle_is_rot90_and_zero_is_identity():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 7, 3)), jnp.float32)
  fill = jnp.full(3, -9.0)
  np.testing.assert_array_equal(batches.rotate(x, jnp.zeros(2), fill), x)
  np.testing.assert_array_equal(batches.rotate(x, jnp.full(2, 90.0), fill), np.rot90(np.asarray(x), 1, axes=(1, 2)))
  small = np.asarray(batches.rotate(x, jnp.full(2, 30.0), fill))
  assert np.any(small == -9.0) and not np.array_equal(small, x)  # corners come from outside: the fill


def test_random_erasing_boxes_follow_torchvision_parameters():
  b, h, w, max_area = 4000, 32, 32, 0.25
  boxes = np.asarray(batches.erase_boxes(jax.random.key(0), b, h, w, max_area))
  erased = boxes.any(axis=(1, 2))
  assert erased.mean() == pytest.approx(0.5, abs=0.03)   # p = 0.5
  area = boxes.sum(axis=(1, 2))[erased] / (h * w)
  assert area.min() >= 0.015 and area.max() <= max_area + 0.02 and area.mean() == pytest.approx(0.135, abs=0.01)
  rows, cols = boxes.any(axis=2)[erased].sum(1), boxes.any(axis=1)[erased].sum(1)
  assert np.all(rows * cols == boxes.sum(axis=(1, 2))[erased])   # rectangles
  ratio = rows / cols
  assert ratio.min() >= 0.3 / 1.3 and ratio.max() <= 3.3 * 1.3


def test_augmented_batches_stay_a_pure_function_of_key_and_step():
  n = 64
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (n, 8, 8, 3)), jnp.uint8)
  data = (images, jnp.arange(n) % 10)
  b = batches.Batcher(batch_size=16, num_examples=n, mean=[0.5] * 3, std=[0.25] * 3, flip=True, translate=2,
                      cutout=0, rotate=10.0, erase=0.3)
  perm = b.epoch_permutation(jax.random.key(1), 0)
  one, two = b(data, perm, jax.random.key(2), 3), b(data, perm, jax.random.key(2), 3)
  np.testing.assert_array_equal(one[0], two[0])
  assert not np.array_equal(one[0], b(data, perm, jax.random.key(2), 4)[0])


def test_results_record_the_definitions_and_old_runs_are_recognised(smoke_run, tmp_path):
  from butterfly_jax.report.table import definitions_label
  from butterfly_jax.io.rundir import RunDir, RunDirError
  c, workdir, res = smoke_run
  assert res["definitions"] == {"version": 3, "e_init": "variance", "constant_params": False, "init_std": 0.0,
                                "normalize": True, "batch_sign": 1, "extra_lr": "decay",
                                "cka_estimator": "unbiased", "finetune_head": "torch_linear",
                                "translate_fill": "black", "resnet_padding": "symmetric", "align_bias": False,
                                "batch_source": "fresh", "batch_dropout": "authors", "eval_dtype": "float32"}
  stored = json.loads((workdir / "config.json").read_text())
  assert definitions_label(stored) == "v3"
  # the smoke run's network has no ResNet padding: a config from before the field is the same config
  no_padding = json.loads(json.dumps(stored))
  del no_padding["model"]["resnet_padding"]
  assert config_lib.upgrade(no_padding)["model"]["resnet_padding"] == "symmetric"
  assert definitions_label(config_lib.upgrade(no_padding)) == "v3"
  # a ResNet's config from before version 3 pads as XLA's SAME did
  resnet = json.loads(json.dumps(no_padding))
  resnet["model"]["name"] = "resnet20"
  del resnet["eval"]["align_bias"]
  assert config_lib.upgrade(resnet)["model"]["resnet_padding"] == "same"
  assert definitions_label(config_lib.upgrade(resnet)) == "v2"
  resnet = config_lib.upgrade(resnet)
  resnet["model"]["resnet_padding"] = "symmetric"   # one field of version 3 set, one not: a custom version 3
  assert definitions_label(resnet) == "v3-custom"
  resnet["eval"]["align_bias"] = False
  assert definitions_label(resnet) == "v3"
  resnet["perturb"]["batch_sign"] = -1
  assert definitions_label(resnet) == "v3-custom"
  for dotted, value in (("perturb.batch_source", "first"), ("eval.dtype", "float16")):  # no version, still custom
    other = json.loads(json.dumps(stored))
    section, field = dotted.split(".")
    other[section][field] = value
    assert definitions_label(other) == "v3-custom"
  # an aligned run from before weight matching left biases out of its cost (version 2) included them
  no_align_bias = json.loads(json.dumps(stored))
  del no_align_bias["eval"]["align_bias"]
  assert config_lib.upgrade(no_align_bias)["eval"]["align_bias"] is (stored["eval"]["align"] is True)
  old = json.loads(json.dumps(stored))   # a config.json written before the definitions' fields existed
  for dotted in config_lib.LEGACY_VALUES:
    *parents, field = dotted.split(".")
    node = old
    for part in parents:
      node = node[part]
    del node[field]
  upgraded = config_lib.upgrade(old)
  assert upgraded["perturb"]["batch_sign"] == -1 and upgraded["perturb"]["init_scale"] == "mean_square"
  assert upgraded["eval"]["cka_estimator"] == "biased" and definitions_label(upgraded) == "v1"
  assert upgraded["data"]["augment"]["translate_fill"] == "mean" and upgraded["data"]["augment"]["flip"] is False
  folder = tmp_path / "old"
  folder.mkdir()
  (folder / "config.json").write_text(json.dumps(old))
  (folder / "results.json").write_text((workdir / "results.json").read_text())
  with pytest.raises(RunDirError, match="different config"):
    RunDir(folder).finished_results(c.to_dict())   # never taken for a run of today's definitions


def test_the_committed_reproduction_runs_are_labelled_as_old_definitions():
  from pathlib import Path
  from butterfly_jax.report.table import definitions_label
  configs = sorted((Path(__file__).resolve().parents[1] / "reproduction").glob("*/runs/*/config.json"))
  assert configs
  assert {definitions_label(config_lib.upgrade(json.loads(p.read_text()))) for p in configs} == {"v1"}


def _torch_onecycle_momentum(step, T, pct, base=0.85, top=0.95):
  return _torch_two_phases(step, T, pct, top, base, top)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_onecycle_cycles_momentum_as_torch_does(name):
  c = config_lib.default_config()
  c.schedule.name, c.optim.name = "onecycle", name
  T, W = 40, 8
  tx = optim.make_transform(c, T, W)
  params = {"w": jnp.zeros(3)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  buf = np.zeros(3)
  for k in range(T):
    g = {"w": jnp.full(3, 1.0 + k)}
    direction, state = update(g, state, params)
    beta = _torch_onecycle_momentum(k, T, W / T)
    if name == "sgd":   # torch SGD: buf = momentum * buf + g, with this step's momentum
      buf = beta * buf + (1.0 + k)
      np.testing.assert_allclose(np.asarray(direction["w"]), buf, rtol=1e-5)
    else:               # Adam's first moment with this step's beta1
      buf = beta * buf + (1 - beta) * (1.0 + k)
      inner = state[-1] if isinstance(state, tuple) else state
      np.testing.assert_allclose(np.asarray(inner.inner_state.mu["w"]), buf, rtol=1e-5)
  with pytest.raises(ValueError, match="needs total_steps"):
    optim.make_transform(c)
  if name == "sgd":   # cycle_momentum off: optim.momentum throughout
    c.schedule.cycle_momentum = False
    plain = optim.make_transform(c, T, W)
    state = plain.init(params)
    for expected in (1.0, 1.9, 2.71):
      direction, state = plain.update({"w": jnp.ones(3)}, state, params)
      np.testing.assert_allclose(np.asarray(direction["w"]), expected, rtol=1e-6)


@pytest.mark.parametrize("fill", ["black", "mean"])
def test_translation_fills_with_black_or_the_mean(fill):
  n = 16
  images = jnp.full((n, 8, 8, 3), 200, jnp.uint8)
  b = batches.Batcher(batch_size=n, num_examples=n, mean=[0.5] * 3, std=[0.25] * 3, flip=False, translate=3,
                      cutout=0, translate_fill=fill)
  x, _ = b((images, jnp.zeros(n, jnp.int32)), jnp.arange(n), jax.random.key(0), 0)
  inside = (200 / 255 - 0.5) / 0.25
  values = np.unique(np.asarray(x))
  expected = sorted([inside, -2.0 if fill == "black" else 0.0])   # black is (0 - 0.5) / 0.25
  np.testing.assert_allclose(values, expected, rtol=1e-5)


def _torch_basic_block_resnet(params, x, padding: int):
  """The authors' basic-block ResNet forward (their ``resnet.py``: 3x3 convolutions with torch's ``padding=1``,
  bias-free, a 1x1 projection shortcut with its norm) in PyTorch, on our parameters, with LayerNorm over the
  channels at each pixel (eps 1e-5, ours; theirs divides by sigma + 1e-7, a documented difference).
  ``padding=-1`` emulates XLA's SAME instead: (0, 1) before a stride-2 3x3 convolution."""
  import torch
  import torch.nn.functional as F
  t = lambda a: torch.from_numpy(np.array(a, np.float32))

  def conv(h, p, stride):
    w = t(p["kernel"]).permute(3, 2, 0, 1)
    k = w.shape[-1]
    if k == 3 and padding < 0 and stride == 2:
      return F.conv2d(F.pad(h, (0, 1, 0, 1)), w, stride=2)
    return F.conv2d(h, w, stride=stride, padding=k // 2)

  def norm(h, p):
    return F.layer_norm(h.permute(0, 2, 3, 1), (h.shape[1],), t(p["scale"]), t(p["bias"]), 1e-5).permute(0, 3, 1, 2)

  h = F.relu(norm(conv(t(x).permute(0, 3, 1, 2), params["conv_in"], 1), params["norm_in"]))
  blocks = sorted((k for k in params if k.startswith("stage")), key=lambda k: tuple(
      int(n) for n in k.replace("stage", "").split("_block")))
  for name in blocks:
    p = params[name]
    stride = 2 if name.endswith("_block0") and not name.startswith("stage1") else 1
    y = F.relu(norm(conv(h, p["conv1"], stride), p["norm1"]))
    y = norm(conv(y, p["conv2"], 1), p["norm2"])
    if "shortcut_conv" in p:
      h = norm(conv(h, p["shortcut_conv"], stride), p["shortcut_norm"])
    h = F.relu(h + y)
  return (h.mean(dim=(2, 3)) @ t(params["head"]["kernel"]) + t(params["head"]["bias"])).numpy()


@pytest.mark.parametrize("name,kwargs", [("resnet20", dict(width=2)), ("resnet34", dict(width=0.125))])
def test_resnet_stride2_padding_is_the_authors_torch_padding(name, kwargs):
  """Our ResNets' weights in the authors' PyTorch forward give our logits (padding "symmetric", the default);
  with XLA's SAME ("same", definitions' version 2) the strided path sits one pixel off and they differ."""
  x = np.asarray(jax.random.normal(jax.random.key(1), (4, 32, 32, 3)))
  for padding in ("symmetric", "same"):
    apply_fn, init_fn = make_model(name, (32, 32, 3), 10, padding=padding, conv="xla", **kwargs)
    params = init_fn(jax.random.key(0))
    ours = np.asarray(apply_fn(params, x)[0])
    scale = np.abs(ours).max()
    authors = _torch_basic_block_resnet(params, x, 1)
    emulated_same = _torch_basic_block_resnet(params, x, -1)
    if padding == "symmetric":
      np.testing.assert_allclose(ours, authors, rtol=0, atol=1e-5 * scale)
      assert np.abs(ours - emulated_same).max() > 1e-2 * scale
    else:
      np.testing.assert_allclose(ours, emulated_same, rtol=0, atol=1e-5 * scale)
      assert np.abs(ours - authors).max() > 1e-2 * scale


def test_resnet50_pads_its_strided_3x3_convolutions_symmetrically():
  """The bottleneck ResNet-50 (torchvision's layout: stride on the 3x3) pads as the basic-block ResNets do."""
  x = jnp.ones((1, 32, 32, 3))
  logits = {}
  for padding in ("symmetric", "same"):
    apply_fn, init_fn = make_model("resnet50", (32, 32, 3), 10, padding=padding, width=0.125, conv="xla")
    logits[padding] = apply_fn(init_fn(jax.random.key(0)), jax.random.normal(jax.random.key(1), x.shape))[0]
  assert not np.allclose(logits["symmetric"], logits["same"], atol=1e-4)
  from butterfly_jax.models.conv import resnet_padding
  assert resnet_padding(3) == ((1, 1), (1, 1)) and resnet_padding(3, "same") == "SAME"
  assert resnet_padding(1) == resnet_padding(1, "same") == "VALID"


def _augmented_smoke(**fields):
  c = smoke()
  c.data.augment.flip, c.data.augment.translate = True, 2
  c.update_from_flattened_dict(fields)
  return c


def test_the_first_batch_source_perturbs_with_the_first_training_batch_exactly():
  """``perturb.batch_source="first"`` (the authors' code when perturbation seed = loader seed): the examples and
  the augmentation of the training step 0's batch, bit for bit, at any t."""
  from butterfly_jax.run.experiment import perturbation_batch
  setup = _setup(_augmented_smoke(**{"perturb.batch_source": "first", "perturb.time": "7"}))
  perm, augment_key = setup.sgd_noise(0)
  step0 = setup.batcher.step_batch(setup.train_data, perm, augment_key, 0)
  got = perturbation_batch(setup)
  np.testing.assert_array_equal(got[0], step0[0])
  np.testing.assert_array_equal(got[1], step0[1])
  fresh = perturbation_batch(_setup(_augmented_smoke(**{"perturb.time": "7"})))
  assert not np.array_equal(fresh[0], step0[0])


def test_the_fixed_batch_source_is_one_batch_whatever_the_seeds():
  """``fixed`` (the authors' scripts, which leave the perturbation seed unset): one batch for every seed and
  perturbation seed; ``fresh`` (the default) differs between seeds."""
  from butterfly_jax.run.experiment import perturbation_batch
  batches = {(source, seed, pseed): perturbation_batch(_setup(_augmented_smoke(**{
      "perturb.batch_source": source, "seed": seed, "perturb.seed": pseed})))
             for source in ("fixed", "fresh") for seed, pseed in ((0, -1), (1, -1), (1, 5))}
  for seed, pseed in ((1, -1), (1, 5)):
    np.testing.assert_array_equal(batches["fixed", seed, pseed][0], batches["fixed", 0, -1][0])
    assert not np.array_equal(batches["fresh", seed, pseed][0], batches["fresh", 0, -1][0])


def test_the_first_batch_source_refuses_another_batch_size():
  c = _augmented_smoke(**{"perturb.batch_source": "first", "perturb.batch_size": 8})
  with pytest.raises(config_lib.ConfigError, match="perturb.batch_size: perturb.batch_source='first'"):
    spec_lib.check(c)
  with pytest.raises(config_lib.ConfigError, match="perturb.batch_source.*fresh, first, fixed"):
    spec_lib.check(_augmented_smoke(**{"perturb.batch_source": "random"}))


@pytest.mark.parametrize("mode,t,expected", [("authors", 0, False), ("authors", 1, True), ("authors", 40, True),
                                             ("train", 0, True), ("eval", 5, False)])
def test_bert_batch_perturbation_gradient_takes_dropout_as_the_authors(mode, t, expected):
  """The authors' BERT perturbation gradient runs in whatever mode the model is in: eval at step 0 (after the
  opening evaluation), train (dropout on) from step 1. With dropout the direction is another one; a model
  without dropout is never affected."""
  from butterfly_jax.run.experiment import _initial_params, _perturbations, perturbation_dropout
  c = config_lib.config_file("configs/glue_tiny.py").get_config()
  c.model.kwargs.dropout = c.model.kwargs.attention_dropout = 0.1
  c.perturb.batch_dropout, c.perturb.time = mode, str(t)
  c.train.steps = "64"
  assert perturbation_dropout(c, t, True) is expected and perturbation_dropout(c, t, False) is False
  if t > 1:
    return
  setup = _setup(c)
  params, _ = _initial_params(setup)
  eps, info = _perturbations(setup, params, (1e-2,))
  assert info["dropout_in_gradient"] is expected
  c.perturb.batch_dropout = "eval"
  eps_eval, _ = _perturbations(_setup(c), params, (1e-2,))
  same = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(eps), jax.tree_util.tree_leaves(eps_eval)))
  assert same is (not expected)


def test_resnet_transfer_configs_follow_the_authors_recipe():
  """The authors' ResNet transfer scripts: erasing up to 4/32 when pre-training on CIFAR-100 (their cutout 4),
  2/32 otherwise; a fine-tuning head initialised as the model's own (He-normal, bias 0), not as nn.Linear."""
  c100 = config_lib.config_file("configs/resnet50_c100_to_c10.py")
  c10 = config_lib.config_file("configs/resnet50_c10_to_c100.py")
  assert c100.get_config("pretrain").data.augment.erase == 4 / 32
  assert c10.get_config("pretrain").data.augment.erase == 2 / 32
  for module in (c100, c10):
    assert module.get_config("finetune").data.augment.erase == 2 / 32
    assert module.get_config("finetune").init.head == "model"
    assert module.get_config("pretrain").optim.weight_decay == 0.0


@pytest.mark.parametrize("name", ["multiberts_qnli", "olmo1b_qnli"])
def test_language_presets_perturb_what_the_authors_case_sensitive_mask_perturbs(name):
  """The authors' ``'.*norm.*|.*bias.*|.*embeddings.*'`` under ``re.match`` (case-sensitive) on transformers'
  names: BERT keeps its layers' ``LayerNorm.weight``, the pooler's and the classifier's weights in the mask and
  leaves out the embeddings (their LayerNorm too) and every bias; OLMo-1B-hf has nothing it matches. Every
  perturbed parameter counts at the preset's init std in E_init, norm scales too."""
  import re
  from butterfly_jax.models.registry import param_order as order
  c = config_lib.config_file(f"configs/{name}.py").get_config()
  model = c.model.name
  kwargs = dict(vocab_size=90, hidden=32, layers=2, heads=2, intermediate=64, max_positions=16)
  shapes = order(model, (3, 16), 2, **kwargs)
  params = {}
  for path, shape in shapes.items():
    node = params
    *parents, leaf = path.split("/")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = jnp.zeros(shape)
  mask = tree_math.flat_dict(perturb.build_mask(params, c.perturb.mask, jax.random.key(0), finetune=True))
  ours = {p for p, m in mask.items() if float(jnp.max(m)) > 0}
  hf = {  # our path -> transformers' name (BertForSequenceClassification / OlmoForSequenceClassification)
      "embed/word": "bert.embeddings.word_embeddings.weight", "embed/position": "bert.embeddings.position_embeddings.weight",
      "embed/token_type": "bert.embeddings.token_type_embeddings.weight",
      "embed_norm/scale": "bert.embeddings.LayerNorm.weight", "embed_norm/bias": "bert.embeddings.LayerNorm.bias",
      "pooler/kernel": "bert.pooler.dense.weight", "pooler/bias": "bert.pooler.dense.bias",
      "head/kernel": "classifier.weight" if model == "bert" else "score.weight", "head/bias": "classifier.bias",
      "embed": "model.embed_tokens.weight"}
  bert_layer = {"attn/query": "attention.self.query", "attn/key": "attention.self.key",
                "attn/value": "attention.self.value", "attn/out": "attention.output.dense",
                "attn_norm": "attention.output.LayerNorm", "fc1": "intermediate.dense", "fc2": "output.dense",
                "mlp_norm": "output.LayerNorm"}
  olmo_layer = {"attn/query": "self_attn.q_proj", "attn/key": "self_attn.k_proj", "attn/value": "self_attn.v_proj",
                "attn/out": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
  for path in shapes:
    if path.startswith("layer"):
      layer, rest = path.split("/", 1)
      module, leaf = rest.rsplit("/", 1)
      i = layer[len("layer"):]
      suffix = {"kernel": "weight", "scale": "weight", "bias": "bias"}[leaf]
      hf[path] = (f"bert.encoder.layer.{i}.{bert_layer[module]}.{suffix}" if model == "bert"
                  else f"model.layers.{i}.{olmo_layer[module]}.{suffix}")
  theirs = {p for p in shapes if not re.match(r".*norm.*|.*bias.*|.*embeddings.*", "model." + hf[p])}
  assert ours == theirs
  if model == "bert":
    assert "layer0/attn_norm/scale" in ours and "embed_norm/scale" not in ours and "head/kernel" in ours
  else:
    assert "embed" in ours and ours == set(shapes)
  stats = perturb.init_stats(make_model(model, (3, 16), 2, **kwargs)[1], jax.random.key(0), 2)
  stds = tree_math.flat_dict(perturb.init_stds(stats, shapes, c.perturb.constant_params, fixed=c.perturb.init_std))
  assert {stds[p] for p in ours} == {c.perturb.init_std}


def test_multiberts_presets_are_the_authors_launcher_presets():
  from butterfly_jax.launch import sweep as sweep_lib
  path = "configs/multiberts_qnli.py"
  batch = sweep_lib.expand(f"{path}:sst2,batch")
  assert len(batch) == 4 and {r.config.init.checkpoint for r in batch} == {"weights/multiberts-seed_0-step_2000k"}
  assert {r.config.schedule.warmup for r in batch} == {"250", "0"} and {r.config.perturb.time for r in batch} == {
      "1", "100"}
  assert {(r.config.train.batch_size, r.config.train.steps, r.config.perturb.kind) for r in batch} == {
      (128, "2500", "batch")}
  gauss = sweep_lib.expand(f"{path}:cola,gaussian,seed=1")
  assert len(gauss) == 12 and {r.config.perturb.kind for r in gauss} == {"gaussian"}
  assert all("multiberts-seed_1-" in r.config.init.checkpoint for r in gauss)
  for bad in ("stsb", "qnli,adam", "rte,seed=2", "cola"):
    with pytest.raises(ValueError, match="config argument"):
      config_lib.config_file(path).get_config(bad)


def test_reduced_precision_evaluation_is_close_and_keeps_twins_exact():
  """``eval.dtype="float16"`` (the authors' evaluation under autocast): losses within float16's round-off of
  float32's, not equal to them; identical networks still evaluate identically along the path (a twin's barrier
  stays exactly 0)."""
  from butterfly_jax.core import evaluate
  apply_fn, init_fn = make_model("mlp", (8, 8, 1), 10, hidden=(32,))
  a, b = init_fn(jax.random.key(0)), init_fn(jax.random.key(1))
  children = tree_math.stack([a, a, b])
  x = jax.random.normal(jax.random.key(2), (64, 8, 8, 1))
  y = jnp.arange(64) % 10
  w = jnp.ones(64)
  alphas = jnp.linspace(0, 1, 5)
  rows = (jnp.array([0] * 5 + [0] * 5), jnp.array([1] * 5 + [2] * 5), jnp.concatenate([alphas, alphas]), None)
  out = {}
  for dtype in ("float32", "float16"):
    batch = evaluate.make_eval_batch(apply_fn, 1, None, dtype)
    out[dtype] = np.asarray(batch(children, *rows, x, y, w, None, None)[0])
  np.testing.assert_allclose(out["float16"], out["float32"], rtol=5e-3)
  assert not np.array_equal(out["float16"], out["float32"])
  twin = out["float16"][:5]
  assert evaluate.barrier_from_curve(np.asarray(alphas), twin) == 0.0 and np.all(twin == twin[0])
  with pytest.raises(config_lib.ConfigError, match="eval.dtype.*float32, float16, bfloat16"):
    c = smoke()
    c.eval.dtype = "float8"
    spec_lib.check(c)


def test_resnet20_config_offers_both_of_the_authors_step_budgets():
  """The authors' earlier ResNet-20 scripts extend the perturbed child (``same_steps_pperturb`` true), their later
  ones do not: both are configs."""
  module = config_lib.config_file("configs/resnet20.py")
  assert module.get_config().perturb.extra_steps is True
  assert module.get_config("same_steps").perturb.extra_steps is False
  with pytest.raises(ValueError, match="config argument"):
    module.get_config("longer")
