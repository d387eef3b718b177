"""One butterfly experiment: trunk to step t, perturb K-1 copies once, train the family with identical
SGD noise to T, then compare every child with child 0 (L2 distance, loss/error barriers on train and test).

:func:`run` is the whole experiment; the pieces it calls are pure functions in the other modules.
"""

import functools
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from butterfly_jax import (batches, config as config_lib, evaluate, hosts, members, optim, perturb, placement, rng,
                           runtime, similarity, tree_math)
from butterfly_jax.data import load_dataset, select_classes
from butterfly_jax.models import make_model, make_moments
from butterfly_jax.models.layers import torch_linear_init
from butterfly_jax.models.registry import param_order
from butterfly_jax import rundir as rundir_lib
from butterfly_jax.rundir import RunDir, provenance


class _Setup:
  """Everything a run derives from its config before training: data on device, model, optimizer, keys."""

  def __init__(self, c):
    self.c = c
    data = load_dataset(c.data.name, c.data.dir or None, tfds_data_dir=c.data.tfds_dir or None,
                        synthetic=c.data.synthetic.to_dict())
    if c.data.classes:
      data = select_classes(data, c.data.classes)
    self.data = data
    self.steps = config_lib.resolve_steps(c, data.num_train)
    config_lib.check_model_input(c, data.input_shape)
    available = jax.device_count()
    if c.members.devices > available:
      logging.warning("members.devices: %d devices asked for, %d available; the children split over at most %d",
                      c.members.devices, available, available)
    self.keys = rng.role_keys(c.seed, c.perturb.seed)
    self.apply_fn, self.model_init_fn = make_model(c.model.name, data.input_shape, data.num_classes,
                                                   **c.model.kwargs.to_dict())
    self.param_order = param_order(c.model.name, data.input_shape, data.num_classes, **c.model.kwargs.to_dict())
    self.transform = optim.make_transform(c, self.steps["total"], self.steps["warmup"])
    self.schedule = optim.make_schedule(c, self.steps["total"], self.steps["warmup"])
    self.member_schedule = optim.make_member_schedule(c, self.steps["total"], self.steps["warmup"], self.steps["t"])
    self.strategy = members.resolve_strategy(c.members.strategy)
    mean, std = data.channel_stats()
    self.mean, self.std = jnp.asarray(mean), jnp.asarray(std)
    aug = c.data.augment
    self.batcher = batches.Batcher(batch_size=c.train.batch_size, num_examples=data.num_train, mean=mean,
                                   std=std, flip=aug.flip, translate=aug.translate, cutout=aug.cutout,
                                   rotate=aug.rotate, erase=aug.erase, translate_fill=aug.translate_fill)
    self.train_data = (jnp.asarray(data.train_images), jnp.asarray(data.train_labels))
    self.test_data = (jnp.asarray(data.test_images), jnp.asarray(data.test_labels))
    self.eval_batch = evaluate.make_eval_batch(self.apply_fn, c.eval.alpha_chunk)
    self.pair_batch = similarity.make_pair_batch(self.apply_fn, c.eval.cka_feature)
    moments_fn = make_moments(c.model.name, data.input_shape, data.num_classes, **c.model.kwargs.to_dict())
    self.norm_info = None  # BatchNorm models: how every evaluated network's statistics are re-estimated
    if moments_fn is not None:
      self.stats_estimator = evaluate.make_stats_estimator(moments_fn, c.eval.alpha_chunk)
      batch = min(c.train.batch_size, data.num_train)
      n = max(1, min(c.eval.norm_stats_examples, data.num_train) // batch) * batch
      self.norm_indices = _eval_indices(rng.eval_key(self.keys, "norm_stats_examples"), data.num_train, n)
      self.norm_info = {"re_estimated": True, "examples": n, "batch_size": batch, "augmented": False,
                         "networks": "every evaluated network (children, interpolated, aligned)"}
    self._steps = {}
    self._perm = (None, None, None)

  @property
  def fresh_head(self) -> bool:
    """Fine-tuning with a new head initialised as torch's ``nn.Linear`` (``init.head``), as the authors do."""
    c = self.c
    return bool(c.init.checkpoint) and not c.init.keep_head and c.init.head == "torch_linear"

  def init_fn(self, key):
    """The run's initial distribution of parameters: the model's init, with a torch-default head when
    :attr:`fresh_head` (so the head's init variance counts in ``E_init`` as it does in the authors' code).
    Jitted once per setup (:meth:`_jitted_init`)."""
    return self._jitted_init(key)

  @functools.cached_property
  def _jitted_init(self):
    return jax.jit(self._init)

  def _init(self, key):
    params = self.model_init_fn(key)
    if self.fresh_head and "head" in params:
      head = dict(params["head"])
      head["kernel"], bias = torch_linear_init(rng.head_init_key(key), head["kernel"], head.get("bias"))
      if bias is not None:
        head["bias"] = bias
      params = dict(params, head=head)
    return params

  def trainer(self, num_members: int):
    """``(train_step, train_data, mesh)`` for a family of ``num_members``: the members split over the local
    devices that divide them evenly (``members.devices``), the training data replicated on those devices."""
    mesh = placement.member_mesh(num_members, self.c.members.devices)
    key = None if mesh is None else tuple(d.id for d in mesh.devices.flat)
    if key not in self._steps:
      step = members.make_train_step(self.apply_fn, self.transform, self.schedule, self.batcher, self.strategy,
                                     mesh, self.c.train.compute_dtype, self.member_schedule)
      self._steps[key] = (step, placement.replicate(self.train_data, mesh), mesh)
      if mesh is not None:
        logging.info("a family of %d members runs on %d devices", num_members, mesh.devices.size)
    return self._steps[key]

  def permutation(self, step: int, mesh=None):
    """The training-set permutation of the epoch of ``step`` (cached for the current epoch, on ``mesh``)."""
    epoch = step // self.batcher.steps_per_epoch
    if self._perm[:2] != (epoch, id(mesh)):
      self._perm = (epoch, id(mesh), placement.replicate(self.batcher.epoch_permutation(self.keys["data"], epoch),
                                                       mesh))
    return self._perm[2]


def _check_before_training(setup) -> None:
  """Config errors that depend on the model's parameters and features, found from their shapes alone (no
  compute) before anything trains: the perturbation mask and the CKA feature."""
  c = setup.c
  shapes = jax.eval_shape(setup.init_fn, setup.keys["init"])
  if c.perturb.scales:
    perturb.build_mask(shapes, c.perturb.mask, rng.perturb_key(setup.keys, "mask"), bool(c.init.checkpoint))
  if c.eval.cka_examples and len(c.perturb.scales):
    x = jax.ShapeDtypeStruct((1, *setup.data.input_shape), jnp.float32)
    features = jax.eval_shape(lambda p, x: setup.apply_fn(p, x)[1], shapes, x)
    if c.eval.cka_feature not in features:
      raise config_lib.ConfigError(f"eval.cka_feature: the model has no feature {c.eval.cka_feature!r}; it has "
                                   f"{', '.join(sorted(features))}")


def _all_finite(tree) -> bool:
  return bool(hosts.fetch(jax.tree_util.tree_reduce(
      lambda a, b: a & b, jax.tree_util.tree_map(lambda x: jnp.all(jnp.isfinite(x)), tree), jnp.bool_(True))))


def _eval_indices(key, n_total: int, n: int) -> np.ndarray:
  """All examples in order, or ``n`` of them drawn once with the eval key."""
  if not n or n >= n_total:
    return np.arange(n_total)
  return np.sort(np.asarray(jax.random.permutation(key, n_total))[:n])


def _next_multiple(step: int, every: int) -> int:
  return (step // every + 1) * every


def _train(setup, family, start, stop, phase, rundir, init_params, bar, during_eval=None, diverged=None,
           checkpoint=None):
  """Advances ``family`` over steps [start, stop) in chunks of ``log.every_steps``, logging each chunk.

  ``checkpoint(family, step, diverged)``, if given, is called at every multiple of the checkpoint cadence
  (a chunk boundary) and at ``stop``, after that chunk's log line.
  """
  c = setup.c
  every = c.log.every_steps
  ckpt_every = setup.steps["checkpoint_every"]
  k = family.lr_offset.shape[0]
  train_step, train_data, mesh = setup.trainer(k)
  family = placement.shard_members(family, mesh)
  init_params = placement.replicate(init_params, mesh)  # beside the family (several processes: must be global)
  diverged = np.zeros(k, bool) if diverged is None else np.asarray(diverged, bool).copy()
  step = start
  t0 = time.time()
  while step < stop:
    nxt = min(_next_multiple(step, every), stop)
    if c.eval.every_steps and phase == "children":
      nxt = min(nxt, _next_multiple(step, c.eval.every_steps))
    if checkpoint is not None and ckpt_every:
      nxt = min(nxt, _next_multiple(step, ckpt_every))
    nxt = min([nxt] + [s for s in setup.steps["keep"] if s > step])
    loss_sum = jnp.zeros(k, jnp.float32)
    trained = jnp.zeros(k, jnp.int32)
    finite = jnp.ones(k, bool)
    for s in range(step, nxt):
      family, loss, active = train_step(family, train_data, setup.permutation(s, mesh), setup.keys["augment"],
                                        jnp.int32(s))
      loss_sum, trained, finite = loss_sum + loss, trained + active, finite & jnp.isfinite(loss)
    dist = members.distances(family.params, init_params)
    stats, dist = hosts.fetch(({"loss_sum": loss_sum, "steps": trained, "finite": finite}, dist))
    diverged |= ~(stats["finite"] & dist["finite"])
    # on this process's default device, from host offsets: the same program (and bits) whatever the mesh
    offsets, ends = (jnp.asarray(x) for x in hosts.fetch((family.lr_offset, family.end_step)))
    lr = np.asarray(jax.vmap(setup.member_schedule, in_axes=(None, 0, 0))(jnp.int32(nxt - 1), offsets, ends))
    steps = np.maximum(stats["steps"], 1)
    record = {"phase": phase, "step": nxt, "lr": lr, "train_loss": stats["loss_sum"] / steps,
              "active": stats["steps"] > 0, "l2_from_init": dist["l2_from_init"],
              "l2_to_child0": dist["l2_to_child0"], "diverged": diverged, "time_s": time.time() - t0}
    if during_eval is not None and c.eval.every_steps and nxt % c.eval.every_steps == 0:
      record.update(during_eval(family.params, diverged))
    rundir.log(record)
    bar.update(nxt - step)
    bar.set_postfix(phase=phase, loss=f"{float(np.mean(record['train_loss'])):.3f}")
    step = nxt
    if step in setup.steps["keep"]:
      _keep(rundir, tree_math.unstack(family.params, 0), step)
    if checkpoint is not None and ckpt_every and (step % ckpt_every == 0 or step == stop):
      checkpoint(family, step, diverged)
  return family, diverged


def _keep(rundir, params, step: int) -> None:
  """Child 0's weights at ``step`` (``checkpoint.keep``), for runs that start from them (``init.checkpoint``)."""
  rundir.save_checkpoint(f"keep/{step}", {"params": params, "step": step})


def kept_steps(run_dir) -> list[int]:
  folder = RunDir(run_dir).checkpoints / "keep"
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def _initial_params(setup):
  """The fresh initialisation, or (``init.checkpoint``) a saved run's child 0 at a kept step with a fresh
  head: every parameter but the head must match the new model's in name and shape."""
  c = setup.c
  params0 = setup.init_fn(setup.keys["init"])
  if not c.init.checkpoint:
    return params0, None
  head = {"head": "kept"} if c.init.keep_head else {"head": "fresh", "head_init": c.init.head}
  run_dir, sep, step = c.init.checkpoint.rpartition(":")
  if not (sep and step.isdigit()) and Path(c.init.checkpoint).exists():
    if c.model.name not in ("vit", "vit_b16"):
      raise config_lib.ConfigError(f"init.checkpoint: a weights file is read for ViT models only; for model "
                                   f"{c.model.name} give 'RUN_DIR:STEP' of a saved run")
    from butterfly_jax.pretrained import load_vit_weights
    params = load_vit_weights(c.init.checkpoint, params0, c.init.keep_head)
    return jax.tree_util.tree_map(jnp.asarray, params), {
        "checkpoint": str(Path(c.init.checkpoint).resolve()), **head}
  if not sep or not step.isdigit():
    raise config_lib.ConfigError(f"init.checkpoint: expected 'RUN_DIR:STEP' (a kept step of a saved run) or a ViT "
                                 f"weights file that exists, got {c.init.checkpoint!r}")
  path = RunDir(run_dir).checkpoints / "keep" / step
  if not path.is_dir():
    raise config_lib.ConfigError(f"init.checkpoint: {path} does not exist; kept steps of {run_dir}: "
                                 f"{kept_steps(run_dir) or 'none (set checkpoint.keep in that run)'}")
  loaded = rundir_lib.restore_checkpoint(path)["params"]
  fresh, out, problems = tree_math.flat_dict(params0), {}, []
  old = tree_math.flat_dict(loaded)
  for name, x in fresh.items():
    if name.split("/")[0] == "head" and not c.init.keep_head:
      out[name] = x
    elif name not in old:
      problems.append(f"{name}: missing from the checkpoint")
    elif tuple(old[name].shape) != tuple(x.shape):
      problems.append(f"{name}: checkpoint shape {tuple(old[name].shape)}, model shape {tuple(x.shape)}")
    else:
      out[name] = jnp.asarray(old[name], x.dtype)
  extra = sorted(n for n in old if n not in fresh)
  if extra:
    problems.append(f"not in the model: {extra}")
  if problems:
    raise config_lib.ConfigError(f"init.checkpoint: {path} does not fit model {c.model.name}: " + "; ".join(problems))
  return tree_math.unflatten_like(params0, out), {"checkpoint": str(path), **head}


def perturbation_batch(setup):
  """The fresh batch of the batch perturbation: ``perturb.batch_size`` training examples drawn with the
  perturbation key, augmented as in training (the authors draw it from their augmented training loader)."""
  idx = jax.random.permutation(rng.perturb_key(setup.keys, "batch_examples"),
                               setup.data.num_train)[:setup.steps["perturb_batch"]]
  return setup.batcher.gather(*setup.train_data, idx, rng.perturb_key(setup.keys, "batch_augment"))


def _perturbations(setup, trunk_params, scales):
  """The normalised direction eps (one per family; children differ in sigma) and its description."""
  c = setup.c
  p = c.perturb
  stats = perturb.init_stats(setup.init_fn, setup.keys["init_stats"], p.init_draws)
  stds = perturb.init_stds(stats, setup.param_order, p.constant_params, fixed=p.init_std)
  finetune = bool(c.init.checkpoint)
  mask = perturb.build_mask(trunk_params, p.mask, rng.perturb_key(setup.keys, "mask"), finetune)
  e_init = perturb.expected_init_l2(stats, mask, stds, p.init_scale)
  if p.kind == "batch":
    x, y = perturbation_batch(setup)
    direction = jax.jit(perturb.batch_direction, static_argnums=(0, 3))(
        members.cross_entropy(setup.apply_fn, c.train.compute_dtype), trunk_params, (x, y), int(p.batch_sign))
  else:
    direction = perturb.gaussian_direction(rng.perturb_key(setup.keys, "gaussian"), trunk_params, stds)
  if p.normalize:
    eps, raw_norm = perturb.normalised(direction, mask, jnp.float32(e_init))
  else:
    eps, raw_norm = perturb.unnormalised(direction, mask)
  if not np.isfinite(float(raw_norm)) or not np.isfinite(e_init):
    raise perturb.PerturbationError(
        f"perturb: the {c.perturb.kind} direction is not finite (norm {float(raw_norm)}, E_init {e_init}); the "
        "network at the perturbation time holds non-finite weights or gradients")
  if float(raw_norm) == 0 and any(s > 0 for s in scales):
    raise perturb.PerturbationError(
        f"perturb: the {c.perturb.kind} direction is zero on the mask (e.g. a gaussian perturbation of "
        "parameters initialised to constants, such as norm scales and biases, or a batch gradient that is exactly 0 "
        "there, such as a single first-layer weight fed by a pixel that is 0 in every image); change perturb.mask "
        "(another perturb.mask.single) or perturb.kind")
  info = {"kind": c.perturb.kind, "expected_init_l2": e_init, "direction_l2": float(raw_norm),
          "num_perturbed": int(sum(float(jnp.sum(m)) for m in jax.tree_util.tree_leaves(mask))),
          "mask": dict(c.perturb.mask.to_dict(), applied_exclude=perturb.effective_exclude(c.perturb.mask, finetune))}
  return eps, info


def _family_eval(setup, params, indices, alphas, bar=None):
  """Per split: child means and pair curves, on the given example indices; with BatchNorm, also the
  children's re-estimated statistics (``"children_stats"``, for :func:`similarity.compare_pairs`)."""
  k = tree_math.num_members(params)
  table = evaluate.network_table(k, alphas)
  stats, out = None, {}
  if setup.norm_info is not None:
    stats = evaluate.estimate_norm_stats(setup.stats_estimator, params, table, setup.train_data[0],
                                         setup.norm_indices, setup.norm_info["batch_size"], setup.mean, setup.std)
    out["children_stats"] = jax.tree_util.tree_map(lambda x: x[:k], stats)  # the table's first k rows
  for split, data in (("train", setup.train_data), ("test", setup.test_data)):
    progress = (lambda n: bar.update(n)) if bar is not None else None
    loss, err = evaluate.evaluate_networks(setup.eval_batch, params, table, *data, indices[split],
                                           setup.c.eval.batch_size, setup.mean, setup.std, progress, stats)
    out[split] = evaluate.family_curves(loss, err, k, alphas)
  return out


def _align(setup, params, diverged):
  """Each child k >= 1 weight-matched to child 0: (aligned stacked params, permutations)."""
  from butterfly_jax import permutations
  c = setup.c
  params = hosts.fetch(params)
  children = [tree_math.unstack(params, j) for j in range(tree_math.num_members(params))]
  spec = permutations.spec_for(c.model.name, children[0], **c.model.kwargs.to_dict())
  perms, aligned = [], [children[0]]
  for j in range(1, len(children)):
    if diverged[j] or diverged[0]:
      perm = permutations.identity_permutation(spec)  # nothing to match in non-finite weights
    else:
      perm = permutations.weight_matching(rng.align_key(setup.keys, j), spec, children[0],
                                          children[j], max_iter=c.eval.align_max_iter)
    perms.append(perm)
    aligned.append(permutations.apply_permutation(spec, perm, children[j]))
  return tree_math.stack(aligned), perms


def _pair_barriers(curves_by_split, alphas, k):
  """``(barriers, path_finite)``, lists over the pairs (0, k), k >= 1: the loss and error barriers per split, and
  per split whether the loss and error are finite at every point of the pair's path. Where they are not, both
  barriers of that split are NaN (null in results.json; the error of non-finite logits is arbitrary) and the flag
  says why: with finite end points, a network inside the path blew up."""
  barriers, path_finite = [], []
  for j in range(1, k):
    barrier, finite = {}, {}
    for split in ("train", "test"):
      curve = curves_by_split[split]["curves"][j - 1]
      finite[split] = bool(all(np.all(np.isfinite(np.asarray(curve[m], np.float64))) for m in ("loss", "error")))
      barrier[split] = {m: evaluate.barrier_from_curve(alphas, curve[m]) if finite[split] else float("nan")
                        for m in ("loss", "error")}
    barriers.append(barrier)
    path_finite.append(finite)
  return barriers, path_finite


def _barriers(curves_by_split, alphas, k):
  return _pair_barriers(curves_by_split, alphas, k)[0]


def _nulled(tree, keep=()):
  """Every number in ``tree`` (but the top-level keys in ``keep``) replaced by None: a diverged child's
  metrics are meaningless (the error of NaN logits, say), so they are not reported."""
  if isinstance(tree, dict):
    return {k: (v if k in keep else _nulled(v)) for k, v in tree.items()}
  if isinstance(tree, (list, tuple, np.ndarray)):
    return [_nulled(v) for v in tree]
  return None


def run(c: ml_collections.ConfigDict, workdir, discard_unfinished: bool = False,
        allow_code_change: bool = False) -> dict:
  """Runs the experiment of config ``c`` in ``workdir`` and returns the results (also in results.json).

  A workdir that already holds this config's results is left alone and its results returned. One that holds
  an unfinished run of the same config resumes it (if written by the same code and from the same
  ``init.checkpoint`` source: :func:`butterfly_jax.rundir.check_resume`; ``allow_code_change`` resumes
  across a source change); of another config, it is an error unless ``discard_unfinished``
  (:meth:`RunDir.start`). One process at a time: another one running in ``workdir`` is
  :class:`butterfly_jax.rundir.RunDirBusy`.
  """
  rundir_lib.loaded_revision()  # the code this process runs, before the checkout can change under a long worker
  rundir_lib.source_hash()
  config_lib.validate(c)
  runtime.configure(c.runtime.deterministic)  # before JAX starts its backends, where it has not yet
  rundir = RunDir(workdir)
  done = rundir.finished_results(c.to_dict())
  if done is not None:
    logging.warning("%s already holds this run's results; nothing to do", rundir.root)
    return done
  with rundir.locked():
    done = rundir.finished_results(c.to_dict())  # another process may have finished it meanwhile
    if done is not None:
      logging.warning("%s already holds this run's results; nothing to do", rundir.root)
      return done
    return _run(c, rundir, discard_unfinished, allow_code_change)


def _init_source(c):
  """Where ``init.checkpoint`` points (path and content hash), or None: recorded in every checkpoint."""
  if not c.init.checkpoint:
    return None
  run_dir, sep, step = c.init.checkpoint.rpartition(":")
  path = RunDir(run_dir).checkpoints / "keep" / step if (sep and step.isdigit()) else Path(c.init.checkpoint)
  if not path.exists():
    return None  # _initial_params says what is wrong
  return {"path": str(path.resolve()), "sha256": rundir_lib.fingerprint(path)}


def _run(c, rundir, discard_unfinished, allow_code_change):
  t_start = time.time()
  setup = _Setup(c)
  _check_before_training(setup)
  steps, scales = setup.steps, tuple(float(s) for s in c.perturb.scales)
  k, t, total = len(scales) + 1, steps["t"], steps["total"]
  end_steps = [total] + [t + total if c.perturb.extra_steps else total] * (k - 1)
  lr_offsets = [0] + [t if c.perturb.rewind_lr else 0] * (k - 1)
  identity = {"code": rundir_lib.code_identity(), "init_source": _init_source(c)}
  resume = rundir.start(c.to_dict(), discard=discard_unfinished, identity=identity,
                        allow_code_change=allow_code_change)

  alphas = evaluate.alpha_grid(c.eval.num_alphas)
  keys = setup.keys
  indices = {"train": _eval_indices(rng.eval_key(keys, "train_examples"), setup.data.num_train, c.eval.num_examples),
             "test": _eval_indices(rng.eval_key(keys, "test_examples"), setup.data.num_test, c.eval.num_examples)}
  during = {"train": _eval_indices(rng.eval_key(keys, "during_train_examples"), setup.data.num_train,
                                   c.eval.during_num_examples),
            "test": _eval_indices(rng.eval_key(keys, "during_test_examples"), setup.data.num_test,
                                  c.eval.during_num_examples)}

  def during_eval(params, diverged):
    cur = _family_eval(setup, params, during, alphas)
    barriers = [_nulled(b) if (diverged[j] or diverged[0]) else b
                for j, b in enumerate(_barriers(cur, alphas, k), start=1)]
    nan = lambda v: np.where(diverged, np.nan, v)  # written as null
    return {"barrier": barriers, "eval_train_loss": nan(cur["train"]["child_loss"]),
            "eval_test_error": nan(cur["test"]["child_error"])}

  params0, init_info = _initial_params(setup)
  opt0 = setup.transform.init(params0)
  if 0 in steps["keep"] and resume is None:
    _keep(rundir, params0, 0)
  timing = {}
  resume_meta, resume_path = resume if resume is not None else ({"phase": None, "step": 0}, None)
  if resume is not None:
    timing["resumed_from"] = {"phase": resume_meta["phase"], "step": resume_meta["step"]}
    if rundir.resume_notes:
      timing["resumed_from"]["notes"] = rundir.resume_notes
      timing["resumed_from"]["code"] = resume_meta.get("code")
  bar = tqdm(total=t + max(end_steps) - t, initial=resume_meta["step"], desc="train", unit="step",
             disable=not (c.log.progress and hosts.is_primary()), dynamic_ncols=True)

  def restore(target):
    tree = rundir_lib.restore_checkpoint(resume_path, {"family": target._asdict()})
    return members.Family(**tree["family"])

  # Trunk: one network from init to t.
  tic = time.time()
  if resume_meta["phase"] != "children":
    trunk = members.new_family([params0], [opt0], [0], [t])
    if resume_meta["phase"] == "trunk":
      trunk = restore(trunk)
    save_trunk = lambda fam, step, div: rundir.save_state(
        {"phase": "trunk", "step": step, "diverged": [bool(d) for d in div]}, {"family": fam._asdict()})
    trunk, trunk_diverged = _train(setup, trunk, resume_meta["step"], t, "trunk", rundir, params0, bar,
                                   diverged=resume_meta.get("diverged") if resume_meta["phase"] == "trunk" else None,
                                   checkpoint=save_trunk)
    if trunk_diverged.any() or not _all_finite(trunk.params):
      raise FloatingPointError(f"the trunk diverged (non-finite loss or weights) before the perturbation at step "
                               f"{t}; lower optim.lr or check the data")
    trunk_params = tree_math.unstack(trunk.params, 0)
    trunk_opt = tree_math.unstack(trunk.opt_state, 0)
    del trunk
    if c.checkpoint.trunk:
      rundir.save_checkpoint("trunk", {"params": trunk_params, "opt_state": trunk_opt, "step": t})
  timing["trunk_s"] = time.time() - tic

  # Perturb once, then train the family with identical SGD noise.
  tic = time.time()
  if resume_meta["phase"] == "children":
    pinfo, noise_l2, start, diverged0 = (resume_meta["perturb"], resume_meta["noise_l2"], resume_meta["step"],
                                         resume_meta["diverged"])
    family = restore(members.new_family([params0] * k, [opt0] * k, lr_offsets, end_steps))
  else:
    eps, pinfo = _perturbations(setup, trunk_params, scales)
    children = [trunk_params] + [perturb.apply(trunk_params, eps, jnp.float32(s)) for s in scales]
    noise_l2 = [tree_math.l2_distance(p, trunk_params) for p in children]
    family = members.new_family(children, [trunk_opt] * k, lr_offsets, end_steps)
    start, diverged0 = t, None
    del children, eps, trunk_params, trunk_opt

  def save_children(fam, step, div):
    rundir.save_state({"phase": "children", "step": step, "diverged": [bool(d) for d in div],
                       "perturb": rundir_lib.to_jsonable(pinfo), "noise_l2": noise_l2}, {"family": fam._asdict()})

  family, diverged = _train(setup, family, start, max(end_steps), "children", rundir, params0, bar, during_eval,
                            diverged=diverged0, checkpoint=save_children)
  bar.close()
  timing["children_s"] = time.time() - tic
  if c.checkpoint.children:
    rundir.save_checkpoint("children", {"params": family.params, "opt_state": family.opt_state})

  mesh = setup.trainer(k)[2]

  # Evaluate: every child, every pair's loss/error curve, on train and test.
  tic = time.time()
  align = c.eval.align and k > 1
  n_eval = sum(len(v) for v in indices.values()) * (2 if align else 1) + len(indices["test"])
  with tqdm(total=n_eval, desc="eval", unit="ex", disable=not (c.log.progress and hosts.is_primary()), dynamic_ncols=True) as ebar:
    final = _family_eval(setup, family.params, indices, alphas, ebar)
    params0 = placement.replicate(params0, mesh)
    dist = hosts.fetch(members.distances(family.params, params0))
    diverged |= ~dist["finite"]
    for split in ("train", "test"):
      diverged |= ~np.isfinite(final[split]["child_loss"])
    pairs = similarity.compare_pairs(setup.pair_batch, family.params, *setup.test_data, indices["test"],
                                     c.eval.batch_size, c.eval.cka_examples, setup.mean, setup.std,
                                     final.get("children_stats"), c.eval.cka_estimator)
    ebar.update(len(indices["test"]))
    if align:
      tac = time.time()
      aligned_params, perms = _align(setup, family.params, diverged)
      aligned_params = placement.shard_members(aligned_params, mesh)  # placed like the family it came from
      timing["align_s"] = time.time() - tac
      aligned_final = _family_eval(setup, aligned_params, indices, alphas, ebar)
      aligned_barriers, aligned_path_finite = _pair_barriers(aligned_final, alphas, k)
      aligned_dist = hosts.fetch(members.distances(aligned_params, params0))
  timing["eval_s"] = time.time() - tic
  barriers, path_finite = _pair_barriers(final, alphas, k)

  results_children = []
  for j in range(k):
    child = {
        "index": j,
        "perturb": dict(pinfo, scale=0.0 if j == 0 else scales[j - 1], noise_l2=noise_l2[j],
                        num_perturbed=0 if j == 0 else pinfo["num_perturbed"]),
        "train": {"loss": final["train"]["child_loss"][j], "accuracy": 1.0 - final["train"]["child_error"][j]},
        "test": {"loss": final["test"]["child_loss"][j], "accuracy": 1.0 - final["test"]["child_error"][j]},
        "diverged": bool(diverged[j]),
        "end_step": end_steps[j],
        "l2_from_init": dist["l2_from_init"][j],
    }
    if j >= 1:
      child["vs_child0"] = {
          "l2": dist["l2_to_child0"][j],
          "barrier": barriers[j - 1],
          "barrier_path_finite": path_finite[j - 1],
          "curves": {split: {m: final[split]["curves"][j - 1][m] for m in ("loss", "error")}
                     for split in ("train", "test")},
          **pairs[j - 1],
      }
      if align:
        from butterfly_jax.permutations import fixed_point_fraction, fixed_point_fractions
        child["vs_child0"]["aligned"] = {
            "l2": aligned_dist["l2_to_child0"][j],
            "barrier": aligned_barriers[j - 1],
            "barrier_path_finite": aligned_path_finite[j - 1],
            "curves": {split: {m: aligned_final[split]["curves"][j - 1][m] for m in ("loss", "error")}
                       for split in ("train", "test")},
            "fixed_point_fraction": fixed_point_fraction(perms[j - 1]),
            "fixed_point_fractions": fixed_point_fractions(perms[j - 1]),
        }
    if diverged[j] or (j >= 1 and diverged[0]):
      child = _nulled(child, keep=("index", "perturb", "diverged", "end_step"))
    results_children.append(child)
  timing["total_s"] = time.time() - t_start
  results = {
      "definitions": config_lib.definitions(c),
      "children": results_children,
      "steps": {"t": t, "T": total, "steps_per_epoch": steps["steps_per_epoch"], "warmup": steps["warmup"]},
      "alphas": alphas,
      "eval": {"num_examples": {s: len(v) for s, v in indices.items()}},
      "data": {"name": setup.data.name, "source": setup.data.source, "num_train": setup.data.num_train,
               "num_test": setup.data.num_test, "input_shape": list(setup.data.input_shape),
               "num_classes": setup.data.num_classes},
      "model": {"name": c.model.name,
                "num_params": int(sum(x.size for x in jax.tree_util.tree_leaves(params0)))},
      "init": init_info,
      "norm_statistics": setup.norm_info,
      "kept_steps": steps["keep"],
      "members_strategy": setup.strategy,
      "members_devices": 1 if mesh is None else int(mesh.devices.size),
      "timing": timing,
      "provenance": provenance(),
  }
  rundir.finish(results)
  return json.loads(rundir.results.read_text())  # what a reader of results.json sees
