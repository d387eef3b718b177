"""Bad input fails before any compute, with an error naming the field and what is allowed."""

import pytest

from butterfly_jax import config as config_lib
from butterfly_jax.config import ConfigError
from butterfly_jax.io.data import DataError
from butterfly_jax.run import spec as spec_lib
from butterfly_jax.run.experiment import run


@pytest.mark.parametrize("field,value,match", [
    ("model.name", "vgg", "model.name: unknown value 'vgg'; allowed: resnet20"),
    ("data.name", "imagenet", "data.name: unknown value 'imagenet'; allowed: cifar10"),
    ("optim.name", "lion", "optim.name: unknown value 'lion'; allowed: sgd, adam, adamw"),
    ("perturb.kind", "dropout", "perturb.kind: unknown value 'dropout'; allowed: batch, gaussian, ulp"),
    ("perturb.scales", (1e-3, -1.0), "perturb.scales: every sigma must be a finite number >= 0"),
    ("train.compute_dtype", "float16", "train.compute_dtype: unknown value 'float16'; allowed: float32, bfloat16"),
    ("train.param_dtype", "float16", "train.param_dtype: unknown value 'float16'; allowed: float32, bfloat16"),
    ("members.devices", -1, "members.devices: expected an integer >= 0"),
    ("members.strategy", "pmap", "members.strategy: unknown value"),
    ("eval.num_alphas", 1, "eval.num_alphas"),
    ("optim.clip_norm", -1.0, "optim.clip_norm: must be a finite number >= 0"),
    ("perturb.mask.include", "(", "perturb.mask.include: not a valid regular expression"),
    ("eval.align_method", "cosine", "eval.align_method: unknown value 'cosine'; allowed: weights, activations"),
    ("eval.align_examples", 0, "eval.align_examples: expected an integer >= 1"),
])
def test_bad_fields_are_named(smoke_config, tmp_path, field, value, match):
  section, key = field.rsplit(".", 1)
  node = smoke_config
  for part in section.split("."):
    node = node[part]
  node[key] = value
  with pytest.raises(ConfigError, match=match.replace("(", r"\(")):
    run(smoke_config, tmp_path)
  assert not (tmp_path / "config.json").exists()  # nothing was started


@pytest.mark.parametrize("scale", [0.5, 2.0 ** 17])
def test_ulp_scales_are_whole_numbers_of_units_in_the_last_place(smoke_config, tmp_path, scale):
  smoke_config.perturb.kind, smoke_config.perturb.scales = "ulp", (0.0, scale)
  with pytest.raises(ConfigError, match=r"perturb.scales: with perturb.kind='ulp' each sigma is a whole number .* 0 "
                                        r"to 65536, got"):
    run(smoke_config, tmp_path)
  assert not (tmp_path / "config.json").exists()


def test_perturbation_after_training_end_is_rejected(smoke_config, tmp_path):
  smoke_config.perturb.time = "50ep"
  with pytest.raises(ConfigError, match="perturb.time: .* after the end of training"):
    run(smoke_config, tmp_path)


def test_extra_steps_that_would_train_at_learning_rate_zero_are_rejected(smoke_config, tmp_path):
  smoke_config.perturb.time, smoke_config.perturb.extra_steps = "5", True
  smoke_config.perturb.extra_lr = "hold"  # the old rule: the schedule's last value, 0, after T
  with pytest.raises(ConfigError, match="perturb.extra_lr: 'hold' .* perturb.extra_lr='decay'"):
    run(smoke_config, tmp_path)
  for field, value in (("perturb.rewind_lr", True), ("schedule.final_lr", 0.01), ("schedule.name", "constant"),
                       ("perturb.extra_lr", "decay")):
    c = smoke_config.copy_and_resolve_references()
    section, key = field.split(".")
    c[section][key] = value
    assert config_lib.resolve_steps(c, 1000)["t"] == 5


def test_rewinding_without_extra_steps_is_rejected(smoke_config, tmp_path):
  smoke_config.perturb.time, smoke_config.perturb.rewind_lr = "5", True
  with pytest.raises(ConfigError, match="perturb.rewind_lr: .*perturb.extra_steps=True"):
    run(smoke_config, tmp_path)
  assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize("field, value, match", [
    ("perturb.batch_sign", 0, "perturb.batch_sign: expected 1 .* or -1"),
    ("perturb.batch_sign", True, "perturb.batch_sign"),
    ("perturb.normalize", "yes", "perturb.normalize: expected True or False"),
    ("perturb.constant_params", 1, "perturb.constant_params: expected True or False"),
    ("perturb.init_scale", "rms", "perturb.init_scale: unknown value 'rms'; allowed: variance, mean_square"),
    ("perturb.init_std", -0.02, "perturb.init_std: expected a finite number >= 0"),
    ("perturb.extra_lr", "rewind", "perturb.extra_lr: unknown value 'rewind'; allowed: decay, hold"),
    ("eval.cka_estimator", "debiased", "eval.cka_estimator: unknown value 'debiased'; allowed: unbiased, biased"),
    ("init.head", "zeros", "init.head: unknown value 'zeros'; allowed: torch_linear, model"),
    ("schedule.name", "one-cycle", "schedule.name: unknown value 'one-cycle'; allowed: .*onecycle"),
    ("data.augment.rotate", -10.0, "data.augment.rotate: expected a number >= 0"),
    ("data.augment.erase", 1.5, "data.augment.erase: the largest erased area fraction must be in"),
    ("data.augment.erase", 0.01, "data.augment.erase: the largest erased area fraction must be in"),
    ("data.augment.translate_fill", "white",
     "data.augment.translate_fill: unknown value .white.; allowed: black, mean"),
    ("schedule.cycle_momentum", "yes", "schedule.cycle_momentum: expected True or False"),
])
def test_bad_values_of_the_definition_fields_fail_before_compute(smoke_config, tmp_path, field, value, match):
  section, _, key = field.rpartition(".")
  node = smoke_config
  for part in section.split("."):
    node = node[part]
  with node.ignore_type():
    node[key] = value
  with pytest.raises(ConfigError, match=match):
    run(smoke_config, tmp_path)
  assert not (tmp_path / "config.json").exists()


def test_mean_square_rule_takes_no_constant_params(smoke_config, tmp_path):
  smoke_config.perturb.init_scale, smoke_config.perturb.constant_params = "mean_square", True
  with pytest.raises(ConfigError, match="perturb.init_scale: 'mean_square' .* takes no perturb.constant_params"):
    run(smoke_config, tmp_path)


def test_a_perturbation_direction_that_is_zero_on_its_mask_is_a_clear_error(smoke_config, tmp_path):
  from butterfly_jax.core.perturb import PerturbationError
  smoke_config.perturb.kind = "gaussian"
  smoke_config.perturb.mask.include = ".*bias.*"  # biases start at 0: a gaussian direction at init scale is 0
  with pytest.raises(PerturbationError, match="direction is zero on the mask"):
    run(smoke_config, tmp_path)
  assert not (tmp_path / "results.json").exists()


def test_missing_data_dir_is_a_clear_error(smoke_config, tmp_path):
  smoke_config.data.name = "fashion_mnist"
  smoke_config.data.dir = str(tmp_path / "nowhere")
  with pytest.raises(DataError, match="nowhere"):
    run(smoke_config, tmp_path / "run")


@pytest.mark.parametrize("value,steps", [("7", 7), (" 7 ", 7), ("2ep", 20), ("0.5ep", 5), ("0ep", 0)])
def test_steps_and_epochs(value, steps):
  assert config_lib.to_steps(value, 10, "perturb.time") == steps
  assert config_lib.to_steps(value, None, "perturb.time") == (None if "ep" in value else steps)  # data unknown


@pytest.mark.parametrize("value", ["5 epochs", "-3", "1.5", "ep", 7, True, 1.5, None])
def test_bad_step_values(value):
  with pytest.raises(ConfigError, match="perturb.time"):
    config_lib.to_steps(value, 10, "perturb.time")


@pytest.mark.parametrize("value,parsed", [
    ("runs/pre:1170", ("runs/pre", 1170)), ("C:/runs/pre:20", ("C:/runs/pre", 20)), (":0", ("", 0)),
    ("weights/vit.npz", ("weights/vit.npz", None)), ("runs/pre:", ("runs/pre:", None)),
    ("runs/pre:5ep", ("runs/pre:5ep", None)), ("", ("", None)), (None, ("", None))])
def test_init_checkpoint_is_a_kept_step_of_a_run_or_a_file(value, parsed):
  assert config_lib.parse_init_checkpoint(value) == parsed


def test_step_fields_are_text(smoke_config):
  """Strictly typed: a Python int is refused where it is set (ConfigDict) or checked (validate); only a stored
  config.json of an older version, which allowed ints, has them converted, by upgrade()."""
  with pytest.raises(TypeError):
    smoke_config.train.steps = 40
  smoke_config.checkpoint.keep = (0, "1ep")
  with pytest.raises(ConfigError, match=r"checkpoint\.keep: expected steps .* got 0 \(steps are text: '0'\)"):
    spec_lib.check(smoke_config)
  stored = smoke_config.to_dict()
  stored["train"]["steps"], stored["perturb"]["time"], stored["checkpoint"]["keep"] = 40, 10.0, [0, "1ep"]
  upgraded = config_lib.upgrade(stored)
  assert (upgraded["train"]["steps"], upgraded["perturb"]["time"], upgraded["checkpoint"]["keep"]) == (
      "40", "10", ["0", "1ep"])
  assert stored["train"]["steps"] == 40  # the stored dict itself is left alone


def test_a_stored_config_from_before_new_fields_is_the_same_config(tmp_path):
  """Fields added to the tool later default to the old behaviour: an old finished run stays recognised.
  (Fields of the definitions' version 2 are the exception: test_fidelity.py.)"""
  import json
  from butterfly_jax.io import rundir as rundir_lib
  from butterfly_jax.run.configs_embedded import smoke
  c = smoke()
  old = c.to_dict()
  del old["runtime"], old["init"]["keep_head"], old["data"]["classes"], old["checkpoint"]["keep"]
  del old["eval"]["align_method"], old["eval"]["align_examples"]  # an old aligned run weight-matched
  upgraded = config_lib.upgrade(json.loads(json.dumps(rundir_lib.to_jsonable(old))))
  assert rundir_lib.to_jsonable(upgraded) == rundir_lib.to_jsonable(c.to_dict())
  rd = rundir_lib.RunDir(tmp_path)
  rundir_lib.write_json_atomic(rd.config, old)
  rundir_lib.write_json_atomic(rd.results, {"children": []})
  assert rd.finished_results(c.to_dict()) == {"children": []}
  c.data.classes = (1, 2)  # a new field set to a non-default value is a different config
  with pytest.raises(rundir_lib.RunDirError, match="different config"):
    rd.finished_results(c.to_dict())


@pytest.mark.parametrize("field, value", [
    ("optim.lr", float("inf")), ("optim.lr", float("nan")), ("optim.lr", -0.1), ("optim.momentum", 1.0),
    ("optim.momentum", -0.5), ("optim.b1", 1.0), ("optim.b2", 1.5), ("optim.eps", 0.0),
    ("schedule.final_lr", float("inf")), ("schedule.final_lr", -1.0),
])
def test_optimizer_numbers_out_of_range_fail_before_compute(smoke_config, tmp_path, field, value):
  section, key = field.split(".")
  with smoke_config[section].ignore_type():
    smoke_config[section][key] = value
  with pytest.raises(ConfigError, match=f"{field}: must be a finite number in"):
    run(smoke_config, tmp_path)
  assert not (tmp_path / "config.json").exists()


@pytest.mark.parametrize("field, value, match", [
    ("perturb.mask.include", "nothing.*", "perturb.mask: .* selects no parameter"),
    ("perturb.mask.single", "dense0/kernel[9999,0]", "perturb.mask.single: index .* is not inside"),
    ("eval.cka_feature", "logits_please", "eval.cka_feature: the model has no feature 'logits_please'"),
])
def test_model_dependent_errors_come_before_any_training(smoke_config, tmp_path, field, value, match):
  *path, key = field.split(".")
  node = smoke_config
  for part in path:
    node = node[part]
  node[key] = value
  with pytest.raises(ConfigError, match=match):
    run(smoke_config, tmp_path)
  assert not (tmp_path / "metrics.jsonl").exists()   # nothing trained


def test_activation_matching_of_a_model_without_activations_is_refused_before_anything(smoke_config, tmp_path):
  """Activation matching reads the units' activations, which the transformers do not provide: with
  ``eval.align`` on, such a config fails before the run directory is made, naming the field and the models that
  have them; without alignment nothing reads the method."""
  smoke_config.model.name = "vit"
  smoke_config.model.kwargs = {"patch": 4, "depth": 1, "width": 8, "heads": 2, "mlp_dim": 8}
  smoke_config.eval.align_method = "activations"
  with pytest.raises(ConfigError, match="eval.align_method: 'activations' .* model.name=vit .*mlp, cnn, resnet20"):
    run(smoke_config, tmp_path)
  assert not (tmp_path / "config.json").exists()
  smoke_config.eval.align = False
  spec_lib.check(smoke_config)
  smoke_config.eval.align, smoke_config.model.name, smoke_config.model.kwargs = True, "mlp", {"hidden": (4,)}
  spec_lib.check(smoke_config)


@pytest.mark.parametrize("name, kwargs, match", [
    ("mlp", {"hidden": (0,)},
     r"model.kwargs.hidden: expected a tuple of hidden-layer widths, integers >= 1, got \(0,\)"),
    ("mlp", {"hidden": (32.0,)}, "model.kwargs.hidden: expected a tuple of hidden-layer widths"),
    ("mlp", {"hidden": "abc"}, "model.kwargs.hidden: expected a tuple"),
    ("mlp", {"width": 2}, "model.kwargs: model mlp takes no width; it takes hidden, norm"),
    ("mlp", {"norm": "bn"}, "model.kwargs.norm: unknown value 'bn'; allowed: layernorm, batchnorm, none"),
    ("cnn", {"channels": (8, -1)}, "model.kwargs.channels: expected a tuple of convolution channels"),
    ("cnn", {"dense": 0}, "model.kwargs.dense: expected an integer >= 1, got 0"),
    ("cnn", {"pool": "avg"}, "model.kwargs.pool: unknown value 'avg'; allowed: reshape, xla"),
    ("cnn", {"conv": "fast"}, "model.kwargs.conv: unknown value 'fast'; allowed: auto, xla"),
    ("resnet20", {"depth": 32}, "model.kwargs: model resnet20 takes no depth; it takes width, norm, conv"),
    ("resnet20", {"width": 0}, r"model.kwargs.width: must be a finite number in \(0.0, inf\)"),
    ("resnet20", {"width": 0.01}, r"model.kwargs.width: 0.01 leaves no channels \(16 x width rounds to 0\)"),
    ("resnet", {"depth": 21}, "model.kwargs.depth: a CIFAR ResNet has depth 6n.2 with n >= 1"),
    ("resnet", {"stages": (2, 0)}, "model.kwargs.stages: expected a tuple of blocks per stage"),
    ("resnet", {"stages": (1, 1), "depth": 8}, "model.kwargs.depth: not used when model.kwargs.stages is set"),
    ("resnet50", {"width": 0.001}, "model.kwargs.width: 0.001 leaves no channels"),
    ("vit", {"width": 10, "heads": 3}, "model.kwargs.width: 10 is not divisible by model.kwargs.heads = 3"),
    ("vit", {"depth": 0}, "model.kwargs.depth: expected an integer >= 1, got 0"),
    ("vit", {"image_size": -1}, r"model.kwargs.image_size: expected an integer >= 0 \(0 = no resizing\)"),
    # needs the data's image size (digits: 8x8): found after loading it, still before anything is written
    ("vit", {"patch": 3, "width": 16, "heads": 2}, "model.kwargs.patch: the 8x8 images of data.name=digits do not "
                                                   "divide into 3x3 patches"),
    ("cnn", {"channels": (4, 4, 4, 4)}, "model.kwargs.channels: 4 convolutions.* leave nothing of the 8x8 images"),
])
def test_bad_model_arguments_fail_before_compute(smoke_config, tmp_path, name, kwargs, match):
  smoke_config.model.name = name
  smoke_config.model.kwargs = kwargs
  with pytest.raises(ConfigError, match=match):
    run(smoke_config, tmp_path)
  assert not (tmp_path / "config.json").exists()


def test_every_model_argument_the_config_allows_is_one_the_model_takes():
  import dataclasses
  from butterfly_jax.models.registry import MODEL_KWARGS, MODELS, build_module
  assert set(MODEL_KWARGS) == set(MODELS)
  for name, allowed in MODEL_KWARGS.items():
    fields = {f.name for f in dataclasses.fields(type(build_module(name, 10)))}
    assert set(allowed) <= fields - {"num_classes", "parent", "name"}, name
    spec_lib.check_model_kwargs(name, {})  # the defaults are valid


@pytest.mark.parametrize("name, field", [("digits", "dir"), ("synthetic", "dir"), ("digits", "tfds_dir")])
def test_a_data_path_that_the_dataset_would_not_read_is_an_error(smoke_config, tmp_path, name, field):
  smoke_config.data.name = name
  smoke_config.data[field] = str(tmp_path / "files")
  with pytest.raises(ConfigError, match=f"data.{field}: data.name={name} reads no files .* would be ignored"):
    run(smoke_config, tmp_path / "run")
  assert not (tmp_path / "run" / "config.json").exists()


def test_more_member_devices_than_there_are_is_logged(smoke_config, caplog):
  import jax
  from butterfly_jax.run.setup import Setup as _Setup
  n = jax.device_count()
  smoke_config.members.devices = n + 3
  with caplog.at_level("WARNING"):
    _Setup(smoke_config)
  assert f"members.devices: {n + 3} devices asked for, {n} available" in caplog.text
  caplog.clear()
  smoke_config.members.devices = n
  with caplog.at_level("WARNING"):
    _Setup(smoke_config)
  assert "members.devices" not in caplog.text


def test_docs_configs_lists_every_config_field_with_its_default_and_doc():
  """docs/configs.md's table of fields is fields_table(): one row per field of default_config(), from FIELD_DOCS."""
  from pathlib import Path
  assert set(config_lib.FIELD_DOCS) == set(config_lib.fields())
  page = (Path(__file__).resolve().parents[1] / "docs" / "configs.md").read_text()
  table = config_lib.fields_table()
  assert table in page, ("docs/configs.md's config table is stale: regenerate it with python -m butterfly_jax.config "
                         "and paste it over the old one")
  assert page.count("| field | default | meaning |") == 1
