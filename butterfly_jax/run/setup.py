"""What a run derives from its spec (:mod:`butterfly_jax.run.spec`) before anything trains (:class:`Setup`),
shared by the experiment and the random-permutation proxy: the data on device, the model, the optimizer, the
run's keys, the evaluation examples and the evaluation of a family.

Images and text run through the same code: a dataset's inputs are ``train_inputs`` / ``test_inputs`` (uint8
images, or int32 token ids ``[N, 3, L]``: :mod:`butterfly_jax.io.text`), and ``mean`` / ``std`` are the images'
channel statistics or, for token ids, None (no normalisation: :func:`butterfly_jax.core.evaluate.model_input`). A text
task (:func:`butterfly_jax.run.spec.load_text_task`) also has a metric (accuracy, F1, Matthews correlation) that the evaluation reports
beside the loss and the error.
"""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np

from butterfly_jax import config as config_lib
from butterfly_jax.core import activations, batches, evaluate, members, optim, placement, rng, similarity, tree_math
from butterfly_jax.models import make_activations, make_model, make_moments
from butterfly_jax.models.layers import torch_linear_init
from butterfly_jax.models.registry import has_dropout, param_order
from butterfly_jax.run import spec as spec_lib


ACTIVATION_BATCH_FLOATS = 1 << 26  # activation matching: one network's activations per batch at most (256 MB)


class Setup:
  """Everything a run derives from its config before training: data on device, model, optimizer, keys; the
  evaluation of a family (:meth:`evaluate_family`) on the run's evaluation examples (:meth:`evaluation_examples`).

  Its only state is compiled functions and placed data, cached: one train step and one copy of the training data
  per mesh (:meth:`trainer`), and the current epoch's permutation (:meth:`sgd_noise`)."""

  def __init__(self, spec):
    """``spec``: the run's :class:`~butterfly_jax.run.spec.RunSpec`; a config is resolved first
    (:func:`~butterfly_jax.run.spec.resolve`, as for reading a finished run: what ``init.checkpoint`` names need not
    exist any more)."""
    if not isinstance(spec, spec_lib.RunSpec):
      spec = spec_lib.resolve(spec, training=False)
    self.spec = spec
    c = self.c = spec.config
    data = self.data = spec.data
    self.metric = getattr(data, "metric", None)  # a text task's metric (core.metrics.METRICS); None for images
    self.steps = spec.steps
    self.split_batch_sizes = tuple(config_lib.split_batch_sizes(c).values())
    self.keys = rng.role_keys(c.seed, c.perturb.seed)
    model_kwargs = spec.model_kwargs
    self.apply_fn, self.model_init_fn = make_model(c.model.name, data.input_shape, data.num_classes, **model_kwargs)
    self.param_order = param_order(c.model.name, data.input_shape, data.num_classes, **model_kwargs)
    self.dropout = has_dropout(c.model.name, **model_kwargs)  # applied in the training step only
    self.transform = optim.make_transform(c, self.steps.total, self.steps.warmup)
    self.schedule = optim.make_schedule(c, self.steps.total, self.steps.warmup)
    self.member_schedule = optim.make_member_schedule(c, self.steps.total, self.steps.warmup, self.steps.t)
    # the learning rate each member logs: one compiled program (eager, the schedule's dozen small ops would each
    # compile for every family size)
    self.logged_lr = jax.jit(jax.vmap(self.member_schedule, in_axes=(None, 0, 0)))
    self.strategy = spec.strategy
    # images: the training set's channel statistics normalise them; token ids: None, read as they are
    mean, std = data.channel_stats() if hasattr(data, "channel_stats") else (None, None)
    self.mean, self.std = (None, None) if mean is None else (jnp.asarray(mean), jnp.asarray(std))
    aug = c.data.augment
    self.batcher = batches.Batcher(batch_size=c.train.batch_size, num_examples=data.num_train, mean=mean,
                                   std=std, flip=aug.flip, translate=aug.translate, cutout=aug.cutout,
                                   rotate=aug.rotate, erase=aug.erase, translate_fill=aug.translate_fill)
    self.train_data = (jnp.asarray(data.train_inputs), jnp.asarray(data.train_labels))
    self.test_data = (jnp.asarray(data.test_inputs), jnp.asarray(data.test_labels))
    self.eval_batch = evaluate.make_eval_batch(self.apply_fn, c.eval.alpha_chunk,
                                               data.num_classes if self.metric else None, c.eval.dtype)
    self.pair_batch = similarity.make_pair_batch(self.apply_fn, c.eval.cka_feature)
    # activation matching (eval.align_method="activations"): one network's hidden activations on one batch; None
    # for a model that has none (the run's spec refuses the method for it)
    activations_fn = make_activations(c.model.name, data.input_shape, data.num_classes, **model_kwargs)
    self.activation_batch = None if activations_fn is None else activations.make_activation_batch(activations_fn)
    moments_fn = make_moments(c.model.name, data.input_shape, data.num_classes, **model_kwargs)
    self.norm_info = None  # BatchNorm models: how every evaluated network's statistics are re-estimated
    if moments_fn is not None:
      self.stats_estimator = evaluate.make_stats_estimator(moments_fn, c.eval.alpha_chunk)
      batch = min(c.train.batch_size, data.num_train)
      n = max(1, min(c.eval.norm_stats_examples, data.num_train) // batch) * batch
      self.norm_indices = eval_indices(rng.eval_key(self.keys, "norm_stats_examples"), data.num_train, n)
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

  @property
  def param_dtype(self):
    """The dtype the parameters are held in (``train.param_dtype``)."""
    return members.COMPUTE_DTYPES[self.c.train.param_dtype]

  def held(self, params):
    """``params`` (an initialisation or loaded weights, float32) in :attr:`param_dtype`: rounded once to bf16
    with ``train.param_dtype="bfloat16"``; unchanged for float32."""
    if self.param_dtype == jnp.float32:
      return params
    return jax.tree_util.tree_map(lambda p: p.astype(self.param_dtype), params)

  @staticmethod
  def float32(params):
    """``params`` upcast to float32 (exactly; unchanged when they are float32 already): what evaluation, weight
    matching and the pairs' comparisons read, so bf16 children are interpolated between their float32 upcasts."""
    if all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params)):
      return params
    return jax.tree_util.tree_map(lambda p: p.astype(jnp.float32), params)

  def mesh(self, num_members: int):
    """The mesh a family of ``num_members`` runs on (:func:`placement.member_mesh`; None: one device)."""
    return placement.member_mesh(num_members, self.c.members.devices, data_devices=self.c.members.data_devices,
                                 batch_sizes=self.split_batch_sizes)

  def trainer(self, num_members: int):
    """``(train_step, train_data, mesh)`` for a family of ``num_members``: the members split over the local
    devices that divide them evenly (``members.devices``), each member's batch over ``members.data_devices``
    (:func:`placement.member_mesh`), the training data replicated on those devices."""
    mesh = self.mesh(num_members)
    if mesh not in self._steps:  # a mesh is equal to, and hashes as, any mesh over the same devices
      step = members.make_train_step(self.apply_fn, self.transform, self.schedule, self.batcher, self.strategy,
                                     mesh, self.c.train.compute_dtype, self.member_schedule, self.dropout)
      self._steps[mesh] = (step, placement.replicate(self.train_data, mesh), mesh)
      if mesh is not None:
        logging.info("a family of %d members runs on %d devices (%d along the members axis, %d along the data "
                     "axis)", num_members, mesh.devices.size, placement.member_devices(mesh),
                     placement.data_devices(mesh))
    return self._steps[mesh]

  def sgd_noise(self, step: int, mesh=None):
    """``(perm, augment_key)``: what the batch of ``step`` is drawn from (:meth:`batches.Batcher.step_batch`), the
    same for every member: the training-set permutation of ``step``'s epoch (cached for the current epoch, placed
    on ``mesh``) and the run's augmentation key."""
    epoch = step // self.batcher.steps_per_epoch
    if self._perm[:2] != (epoch, mesh):
      self._perm = (epoch, mesh, placement.replicate(self.batcher.epoch_permutation(self.keys["data"], epoch), mesh))
    return self._perm[2], self.keys["augment"]

  def evaluation_examples(self, num_examples: int, during: bool = False) -> dict[str, np.ndarray]:
    """``{split: indices}``: all examples of each split, or ``num_examples`` of them drawn once with the
    evaluation key: the examples evaluated at the end of the run, or (``during``) during training."""
    roles = ("during_train_examples", "during_test_examples") if during else ("train_examples", "test_examples")
    return {"train": eval_indices(rng.eval_key(self.keys, roles[0]), self.data.num_train, num_examples),
            "test": eval_indices(rng.eval_key(self.keys, roles[1]), self.data.num_test, num_examples)}

  def align_examples(self) -> np.ndarray:
    """The training examples whose activations activation matching correlates: ``eval.align_examples`` of them
    (all if there are fewer), drawn once with the evaluation key."""
    return eval_indices(rng.eval_key(self.keys, "align_examples"), self.data.num_train, self.c.eval.align_examples)

  def activation_sums(self, children, stats, pairs) -> dict:
    """``{j: ActivationSums}`` of child 0 and child ``j`` (``j`` in ``pairs``) on :meth:`align_examples`,
    unaugmented (:func:`butterfly_jax.core.activations.pair_activation_sums`), in batches of ``eval.batch_size``
    or fewer: at most :data:`ACTIVATION_BATCH_FLOATS` activations of one network at a time (a ResNet-20 of width 2
    sows 1.5 MB of them per example). ``children``: one parameter tree per child; ``stats``: None, or each child's
    BatchNorm statistics."""
    one = jax.eval_shape(self.activation_batch, children[0], None if stats is None else stats[0],
                         self.train_data[0][:1], self.mean, self.std)
    per_example = sum(int(np.prod(a.shape[1:])) for a in jax.tree_util.tree_leaves(one))
    batch = max(1, min(self.c.eval.batch_size, ACTIVATION_BATCH_FLOATS // max(per_example, 1)))
    return activations.pair_activation_sums(self.activation_batch, children, stats, self.train_data[0],
                                            self.align_examples(), batch, self.mean, self.std, pairs)

  def evaluate_family(self, params, indices, alphas, bar=None):
    """Per split: the stacked children ``params``' means and their pairs' curves (:func:`evaluate.family_curves`;
    for a text task with its metric: :func:`evaluate.add_metric_curves`) on the examples ``indices``
    (``{split: indices}``); with BatchNorm, also the children's re-estimated statistics (``"children_stats"``, for
    :func:`similarity.compare_pairs`). bf16 parameters are evaluated as their float32 upcasts (:meth:`float32`)."""
    params = self.float32(params)
    k = tree_math.num_members(params)
    table = evaluate.network_table(k, alphas)
    mesh = placement.mesh_of(params)  # a data axis there splits the evaluation batches too
    stats, out = None, {}
    if self.norm_info is not None:
      stats = evaluate.estimate_norm_stats(self.stats_estimator, params, table, self.train_data[0],
                                           self.norm_indices, self.norm_info["batch_size"], self.mean, self.std,
                                           mesh)
      out["children_stats"] = jax.tree_util.tree_map(lambda x: x[:k], stats)  # the table's first k rows
    for split, data in (("train", self.train_data), ("test", self.test_data)):
      progress = (lambda n: bar.update(n)) if bar is not None else None
      loss, err, *confusion = evaluate.evaluate_networks(self.eval_batch, params, table, *data, indices[split],
                                                         self.c.eval.batch_size, self.mean, self.std, progress,
                                                         stats, mesh)
      out[split] = evaluate.family_curves(loss, err, k, alphas)
      if self.metric:
        evaluate.add_metric_curves(out[split], self.metric, confusion[0], k, alphas)
    return out


def eval_indices(key, n_total: int, n: int) -> np.ndarray:
  """All examples in order, or ``n`` of them drawn once with the eval key."""
  if not n or n >= n_total:
    return np.arange(n_total)
  return np.sort(np.asarray(jax.random.permutation(key, n_total))[:n])
