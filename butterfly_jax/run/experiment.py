"""One butterfly experiment: trunk to step t, perturb K-1 copies once, train the family with identical
SGD noise to T, then compare every child with child 0 (L2 distance, loss/error barriers on train and test).

:func:`run` is the whole experiment, in phases (``_run``, ``_phases``): set up
(:class:`butterfly_jax.run.setup.Setup`, and where an unfinished run resumes: :class:`_Start`, the one place that
knows), trunk, perturb, children, evaluate (and align and compare), assemble the results; the live writers
(``log.writers``) watch the log lines and the results from outside. The pieces they call are pure functions in the
other modules.
"""

import hashlib
import logging
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from butterfly_jax import config as config_lib
from butterfly_jax.core import evaluate, hosts, members, permutations, perturb, placement, rng, similarity, tree_math
from butterfly_jax.io import pretrained, results as results_lib, rundir as rundir_lib, runtime
from butterfly_jax.io.rundir import RunDir, provenance
from butterfly_jax.run import interrupt, progress, spec as spec_lib, writers as writers_lib
from butterfly_jax.run.setup import Setup


@jax.jit
def _finite(tree):
  return jax.tree_util.tree_reduce(
      lambda a, b: a & b, jax.tree_util.tree_map(lambda x: jnp.all(jnp.isfinite(x)), tree), jnp.bool_(True))


def _all_finite(tree) -> bool:
  return bool(hosts.fetch(_finite(tree)))


def _next_multiple(step: int, every: int) -> int:
  return (step // every + 1) * every


def _train(setup, family, start, stop, phase, rundir, init_params, bar, during_eval=None, diverged=None,
           checkpoint=None, partial=None, saved=None):
  """Advances ``family`` over steps [start, stop) in chunks of ``log.every_steps``, logging each chunk; returns
  ``(family, diverged)``.

  ``checkpoint(family, step, diverged, partial=None)``, if given, is called at every multiple of the checkpoint
  cadence (a chunk boundary) and at ``stop``, after that chunk's log line, and returns the checkpoint's folder.
  A stop request (:mod:`butterfly_jax.run.interrupt`) is honoured after the step in progress, at the latest before
  the next one or before the function returns: the state at that step boundary is checkpointed (unless it is a
  checkpoint already: ``saved``, the folder holding the state at ``start``, or one just written), and where a
  chunk is under way, with ``partial``, the chunk's sums so far (each member's loss sum, steps, finiteness); then
  :class:`~butterfly_jax.run.interrupt.Interrupted` is raised. ``partial`` (from such a checkpoint) continues the
  chunk under way at ``start``: its log line is then the one an uninterrupted run writes, bit for bit.
  """
  c = setup.c
  every = c.log.every_steps
  ckpt_every = setup.steps.checkpoint_every
  k = family.lr_offset.shape[0]
  train_step, train_data, mesh = setup.trainer(k)
  family = placement.shard_members(family, mesh)
  init_params = placement.replicate(init_params, mesh)  # beside the family (several processes: must be global)
  diverged = np.zeros(k, bool) if diverged is None else np.asarray(diverged, bool).copy()
  step, sums = start, _chunk_sums(partial, k)
  saved_at = (start, saved) if saved is not None else (None, None)

  def stop_at(step, sums=None):
    """Checkpoints the state at ``step`` (``sums``: a chunk under way) unless it is one already; raises."""
    path = saved_at[1] if saved_at[0] == step and sums is None else None
    if path is None and checkpoint is not None:
      partial = None if sums is None else {name: v.tolist() for name, v in zip(_CHUNK_SUMS, hosts.fetch(sums))}
      path = checkpoint(family, step, diverged, partial)
    raise interrupt.Interrupted(interrupt.requested(), phase if path is not None else None,
                                step if path is not None else None, path, f"in the {phase}'s training")

  t0 = time.time()
  while True:
    if interrupt.requested():
      stop_at(step)
    if step >= stop:
      break
    nxt = min(_next_multiple(step, every), stop)
    if c.eval.every_steps and phase == "children":
      nxt = min(nxt, _next_multiple(step, c.eval.every_steps))
    if checkpoint is not None and ckpt_every:
      nxt = min(nxt, _next_multiple(step, ckpt_every))
    nxt = min([nxt] + [s for s in setup.steps.keep if s > step])
    loss_sum, trained, finite = sums
    for s in range(step, nxt):
      family, loss, active = train_step(family, train_data, *setup.sgd_noise(s, mesh), jnp.int32(s))
      loss_sum, trained, finite = loss_sum + loss, trained + active, finite & jnp.isfinite(loss)
      if s + 1 < nxt and interrupt.requested():
        stop_at(s + 1, (loss_sum, trained, finite))
    sums = _chunk_sums(None, k)
    dist = members.distances(family.params, init_params)
    stats, dist = hosts.fetch(({"loss_sum": loss_sum, "steps": trained, "finite": finite}, dist))
    diverged |= ~(stats["finite"] & dist["finite"])
    # on this process's default device, from host offsets: the same program (and bits) whatever the mesh
    offsets, ends = (jnp.asarray(x) for x in hosts.fetch((family.lr_offset, family.end_step)))
    lr = np.asarray(setup.logged_lr(jnp.int32(nxt - 1), offsets, ends))
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
    if step in setup.steps.keep:
      _keep(rundir, tree_math.unstack(family.params, 0), step)
    if checkpoint is not None and ckpt_every and (step % ckpt_every == 0 or step == stop):
      saved_at = (step, checkpoint(family, step, diverged))
  return family, diverged


_CHUNK_SUMS = ("loss_sum", "steps", "finite")  # a checkpoint's ``chunk``: the sums of a chunk under way


def _chunk_sums(partial, k: int):
  """``(loss_sum, steps, finite)`` per member at the start of a chunk: zeros, or the sums of a chunk under way at a
  stop (a checkpoint's ``chunk``). float32 sums come back from JSON exactly; a non-finite one is stored as null and
  comes back as NaN (its member's ``finite`` is then false, and its log line's loss null, either way)."""
  if not partial:
    return jnp.zeros(k, jnp.float32), jnp.zeros(k, jnp.int32), jnp.ones(k, bool)
  loss = np.array([np.nan if v is None else v for v in partial["loss_sum"]], np.float32)
  return (jnp.asarray(loss), jnp.asarray(np.asarray(partial["steps"], np.int32)),
          jnp.asarray(np.asarray(partial["finite"], bool)))


def _keep(rundir, params, step: int) -> None:
  """Child 0's weights at ``step`` (``checkpoint.keep``), for runs that start from them (``init.checkpoint``)."""
  rundir.save_checkpoint(f"keep/{step}", {"params": params, "step": step})


def _initial_params(setup):
  """The fresh initialisation, or (``init.checkpoint``, :class:`~butterfly_jax.run.spec.InitSource`) weights from
  outside or a saved run's child 0 at a kept step, with a fresh head unless ``init.keep_head``: every parameter but
  the head must match the new model's in name and shape."""
  c, init = setup.c, setup.spec.init
  params0 = setup.init_fn(setup.keys["init"])
  if init.kind == "fresh":
    return params0, None
  head = {"head": "kept"} if c.init.keep_head else {"head": "fresh", "head_init": c.init.head}
  if init.kind == "weights":
    params = jax.tree_util.tree_map(jnp.asarray, pretrained.load_weights(
        init.given, c.model.name, params0, c.init.keep_head, c.model.kwargs.to_dict()))
    flat = tree_math.flat_dict(params)
    return params, {"checkpoint": str(init.path.resolve()), **head,
                    "weights_sha256": weights_sha256(flat, _loaded_names(flat, c.init.keep_head))}
  path = init.path
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
  return tree_math.unflatten_like(params0, out), {
      "checkpoint": str(path), **head, "weights_sha256": weights_sha256(out, _loaded_names(fresh, c.init.keep_head))}


def _loaded_names(flat: dict, keep_head: bool) -> list:
  """The parameters a run took from its starting checkpoint: all of them, or all but a fresh head."""
  return [n for n in flat if keep_head or n.split("/")[0] != "head"]


def weights_sha256(flat: dict, names) -> str:
  """SHA-256 of the named arrays of ``flat`` (name, dtype, shape and bytes, in the given order): which saved
  weights a fine-tuning run started from, comparable across runs and machines."""
  h = hashlib.sha256()
  for name in names:
    x = np.asarray(flat[name])
    h.update(f"{name}|{x.dtype.str}|{x.shape}|".encode())
    h.update(np.ascontiguousarray(x).tobytes())
  return h.hexdigest()


def perturbation_batch(setup):
  """The batch of the batch perturbation (``perturb.batch_source``), augmented as in training (the authors draw
  it from an augmented training loader): ``fresh``, ``perturb.batch_size`` training examples drawn with the run's
  perturbation key; ``fixed``, the same with the perturbation key of seed :data:`rng.FIXED_BATCH_SEED`, one batch
  for every run; ``first``, the first training batch of epoch 0, its examples and augmentation exactly."""
  source = setup.c.perturb.batch_source
  if source == "first":
    perm = setup.batcher.epoch_permutation(setup.keys["data"], 0)
    return setup.batcher.step_batch(setup.train_data, perm, setup.keys["augment"], 0)
  key = (lambda role: rng.fixed_perturb_key(role)) if source == "fixed" else (
      lambda role: rng.perturb_key(setup.keys, role))
  idx = jax.random.permutation(key("batch_examples"), setup.data.num_train)[:setup.steps.perturb_batch]
  return setup.batcher.gather(*setup.train_data, idx, key("batch_augment"))


def perturbation_dropout(c, t: int, dropout: bool) -> bool:
  """Whether the batch perturbation's gradient is taken with dropout on (``perturb.batch_dropout``) for a model
  that has dropout: ``train`` always, ``eval`` never, ``authors`` from step 1 on (their model is in train mode
  then; at step 0 it is still in eval mode after the evaluation that opens training)."""
  mode = c.perturb.batch_dropout
  return dropout and (mode == "train" or (mode == "authors" and t >= 1))


def _perturbations(setup, trunk_params, scales):
  """The normalised direction eps (one per family; children differ in sigma) and its description; for
  ``perturb.kind="ulp"`` the mask in place of eps (the children's weights move in units in the last place)."""
  c = setup.c
  p = c.perturb
  finetune = bool(c.init.checkpoint)
  mask = perturb.build_mask(trunk_params, p.mask, rng.perturb_key(setup.keys, "mask"), finetune)
  mask_info = {"num_perturbed": int(sum(float(jnp.sum(m)) for m in jax.tree_util.tree_leaves(mask))),
               "mask": dict(p.mask.to_dict(), applied_exclude=perturb.effective_exclude(p.mask, finetune)),
               **({"weight": perturb.single_weight_name(mask)} if p.mask.single else {})}
  if p.kind == "ulp":
    return mask, {"kind": "ulp", **mask_info}
  stats = perturb.init_stats(setup.init_fn, setup.keys["init_stats"], p.init_draws)
  stds = perturb.init_stds(stats, setup.param_order, p.constant_params, fixed=p.init_std)
  e_init = perturb.expected_init_l2(stats, mask, stds, p.init_scale)
  dropout = p.kind == "batch" and perturbation_dropout(c, setup.steps.t, setup.dropout)
  if p.kind == "batch":
    x, y = placement.shard_batch(perturbation_batch(setup), setup.mesh(1))  # split as the trunk's batches
    batch = (x, y, rng.perturb_key(setup.keys, "batch_dropout")) if dropout else (x, y)
    direction = jax.jit(perturb.batch_direction, static_argnums=(0, 3))(
        members.cross_entropy(setup.apply_fn, c.train.compute_dtype), trunk_params, batch, int(p.batch_sign))
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
          # whether the batch gradient was taken with dropout (perturb.batch_dropout says when it is)
          **({"dropout_in_gradient": dropout} if p.kind == "batch" else {}),
          # with perturb.mask.single, "weight" is the weight drawn (or named): repeatable as perturb.mask.single=it
          **mask_info}
  return eps, info


def _align(setup, params, diverged, stats=None):
  """Each child k >= 1 aligned to child 0 (``eval.align_method``): weight-matched, or activation-matched on
  :meth:`Setup.align_examples` (``stats``: the children's BatchNorm statistics, stacked, for a model with
  BatchNorm). Returns (aligned stacked params, permutations, what results.json records of the method: nothing for
  weight matching, so its results are what they were before the method could be chosen; ``{j: what results.json
  records of child j's match}``: for a child matched by activations, its ``unit_correlation``
  (:func:`_unit_correlation`))."""
  c = setup.c
  params = hosts.fetch(params)
  children = [tree_math.unstack(params, j) for j in range(tree_math.num_members(params))]
  spec = permutations.spec_for(c.model.name, children[0], **c.model.kwargs.to_dict())
  matched = [j for j in range(1, len(children)) if not (diverged[j] or diverged[0])]
  info, sums = {}, {}
  if c.eval.align_method == "activations":
    info = {"method": "activations", "examples": len(setup.align_examples())}
    if matched:
      stats = None if stats is None else [tree_math.unstack(hosts.fetch(stats), j) for j in range(len(children))]
      sums = setup.activation_sums([jax.device_put(child) for child in children], stats, matched)
  perms, aligned, per_child = [], [children[0]], {}
  for j in range(1, len(children)):
    if j not in matched:
      perm = permutations.identity_permutation(spec)  # nothing to match in non-finite weights
    elif j in sums:
      scores = sums[j].scores()
      perm = permutations.assign_units(spec, scores)
      per_child[j] = {"unit_correlation": _unit_correlation(scores, perm)}
    else:
      perm = permutations.weight_matching(rng.align_key(setup.keys, j), spec, children[0],
                                          children[j], max_iter=c.eval.align_max_iter, bias=c.eval.align_bias)
    perms.append(perm)
    aligned.append(permutations.apply_permutation(spec, perm, children[j]))
  return tree_math.stack(aligned), perms, info, per_child


def _unit_correlation(scores: dict, perm: dict) -> dict:
  """How well two networks' hidden units correspond by their activations: the mean correlation over every unit of
  every permutation between a unit of child 0 and its counterpart in child j, ``identity`` (unit i with unit i: the
  twins' shared init says they are the same unit) and ``matched`` (unit i with unit ``perm[i]``, activation
  matching's choice). 1 for identical units, but a unit constant on the examples (a dead ReLU) counts 0; a matched
  far above the identity means the units moved."""
  names = sorted(scores)
  diag = np.concatenate([np.diag(np.asarray(scores[n])) for n in names])
  match = np.concatenate([np.asarray(scores[n])[np.arange(len(perm[n])), np.asarray(perm[n])] for n in names])
  return {"identity": float(diag.mean()), "matched": float(match.mean())}


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
  ``init.checkpoint`` source: :func:`butterfly_jax.io.rundir.check_resume`; ``allow_code_change`` resumes
  across a source change); of another config, it is an error unless ``discard_unfinished``
  (:meth:`RunDir.start`). One process at a time: another one running in ``workdir`` is
  :class:`butterfly_jax.io.rundir.RunDirBusy`.
  """
  rundir_lib.loaded_revision()  # the code this process runs, before the checkout can change under a long worker
  rundir_lib.source_hash()
  spec_lib.check(c)
  runtime.configure(c.runtime.deterministic)  # before JAX starts its backends, where it has not yet
  rundir = RunDir(workdir)
  done = rundir.finished_results(c.to_dict())
  if done is not None:
    logging.warning("%s already holds this run's results; nothing to do", rundir.root)
    return done
  spec = spec_lib.resolve(c)  # every error that needs no training, before the run directory is touched
  with rundir.locked():
    done = rundir.finished_results(c.to_dict())  # another process may have finished it meanwhile
    if done is not None:
      logging.warning("%s already holds this run's results; nothing to do", rundir.root)
      return done
    return _run(spec, rundir, discard_unfinished, allow_code_change)


def _init_source(init):
  """Where ``init.checkpoint`` points (path and content hash; ``init``: its
  :class:`~butterfly_jax.run.spec.InitSource`), or None: recorded in every checkpoint."""
  if init.kind == "fresh" or not init.path.exists():
    return None
  return {"path": str(init.path.resolve()), "sha256": rundir_lib.fingerprint(init.path)}


class _Start:
  """Where the run starts training, all of the resume logic: from scratch (``phase`` None, step 0), or from the
  newest training state of an unfinished run of the same config (:meth:`RunDir.start`): its ``phase`` ("trunk"
  or "children", :data:`butterfly_jax.io.rundir.PHASES`) and step, the family to restore, the members it had found
  diverged and, among the children, the perturbation it had applied."""

  def __init__(self, rundir, resume):
    self.meta, self.path = resume if resume is not None else ({"phase": None, "step": 0}, None)
    self.notes = rundir.resume_notes if resume is not None else []

  @property
  def phase(self) -> str | None:
    return self.meta["phase"]

  @property
  def step(self) -> int:
    return self.meta["step"]

  def trains(self, phase: str) -> bool:
    """Whether ``phase`` has steps left: a run resumed among the children skips the trunk."""
    return self.phase is None or rundir_lib.PHASE_ORDER[phase] >= rundir_lib.PHASE_ORDER[self.phase]

  def first_step(self, phase: str, default: int) -> int:
    """The step ``phase`` starts from: the checkpoint's if it is of ``phase``, else ``default``."""
    return self.step if self.phase == phase else default

  def diverged(self, phase: str):
    """The members found diverged up to the checkpoint, if it is of ``phase``; else None (none yet)."""
    return self.meta.get("diverged") if self.phase == phase else None

  def partial(self, phase: str):
    """The sums of the chunk of steps under way when the run stopped on a signal, if the checkpoint is of
    ``phase`` and was written mid-chunk; else None."""
    return self.meta.get("chunk") if self.phase == phase else None

  def saved(self, phase: str):
    """The checkpoint's folder, if it is of ``phase`` (the state where the phase's training starts); else None."""
    return self.path.parent if self.phase == phase else None

  def family(self, phase: str, target: members.Family) -> members.Family:
    """``target`` (a family of the phase's shape and types), or its state restored when the checkpoint is of
    ``phase``."""
    if self.phase != phase:
      return target
    tree = rundir_lib.restore_checkpoint(self.path, {"family": target._asdict()})
    return members.Family(**tree["family"])

  def perturbed_children(self, plan: spec_lib.FamilyPlan, params0, opt0):
    """A run resumed among the children: ``(family, perturbation info, noise)`` as checkpointed (:func:`_perturb`)."""
    family = self.family("children", members.new_family([params0] * plan.k, [opt0] * plan.k, plan.lr_offsets,
                                                         plan.end_steps))
    return family, self.meta["perturb"], {"l2": self.meta["noise_l2"], "changed": self.meta.get("noise_changed")}

  def timing(self) -> dict:
    """The start of results.json's ``timing``: where a resumed run resumed from."""
    if self.path is None:
      return {}
    out = {"resumed_from": {"phase": self.phase, "step": self.step}}
    if self.notes:
      out["resumed_from"]["notes"] = self.notes
      out["resumed_from"]["code"] = self.meta.get("code")
    return out


def _set_up(spec, rundir, discard_unfinished, allow_code_change):
  """Set up: ``(setup, plan, start)``: what the spec derives (:class:`Setup`), the family's plan, and the run
  directory started, or an unfinished run in it resumed (:class:`_Start`)."""
  setup = Setup(spec)
  identity = {"code": rundir_lib.code_identity(), "init_source": _init_source(spec.init)}
  resume = rundir.start(spec.config.to_dict(), discard=discard_unfinished, identity=identity,
                        allow_code_change=allow_code_change)
  return setup, spec.family, _Start(rundir, resume)


def _trunk(setup, plan, start, rundir, params0, opt0, bar):
  """Trunk: one network from init to ``t``, checkpointed as it goes; ``(params, opt_state)`` at ``t``."""
  c = setup.c
  if 0 in setup.steps.keep and start.phase is None:
    _keep(rundir, params0, 0)
  trunk = start.family("trunk", members.new_family([params0], [opt0], [0], [plan.t]))
  save = lambda fam, step, div, partial=None: rundir.save_state(
      {"phase": "trunk", "step": step, "diverged": [bool(d) for d in div], **({"chunk": partial} if partial else {})},
      {"family": fam._asdict()})
  trunk, diverged = _train(setup, trunk, start.first_step("trunk", 0), plan.t, "trunk", rundir, params0, bar,
                           diverged=start.diverged("trunk"), checkpoint=save, partial=start.partial("trunk"),
                           saved=start.saved("trunk"))
  if diverged.any() or not _all_finite(trunk.params):
    raise FloatingPointError(f"the trunk diverged (non-finite loss or weights) before the perturbation at step "
                             f"{plan.t}; lower optim.lr or check the data")
  trunk_params = tree_math.unstack(trunk.params, 0)
  trunk_opt = tree_math.unstack(trunk.opt_state, 0)
  del trunk
  if c.checkpoint.trunk:
    rundir.save_checkpoint("trunk", {"params": trunk_params, "opt_state": trunk_opt, "step": plan.t})
  return trunk_params, trunk_opt


def _perturb(setup, plan, trunk_params, trunk_opt):
  """Perturb, once: child 0 is the trunk, child j the trunk plus ``scales[j - 1] * eps`` (``perturb.kind="ulp"``: its
  masked weights ``scales[j - 1]`` units in the last place up), all with the trunk's optimizer state; ``(family,
  perturbation info, noise)``, ``noise`` each child's L2 distance from the trunk (``"l2"``) and how many of its
  weights differ from the trunk's (``"changed"``: a change under half a weight's spacing rounds away)."""
  eps, pinfo = _perturbations(setup, trunk_params, plan.scales)
  if pinfo["kind"] == "ulp":
    moved = [perturb.ulp_steps(trunk_params, eps, int(s)) for s in plan.scales]
  else:
    moved = [perturb.apply(trunk_params, eps, jnp.float32(s)) for s in plan.scales]
  children = [trunk_params] + moved
  noise = {"l2": [tree_math.l2_distance(p, trunk_params) for p in children],
           "changed": [perturb.num_changed(p, trunk_params) for p in children]}
  family = members.new_family(children, [trunk_opt] * plan.k, plan.lr_offsets, plan.end_steps)
  return family, pinfo, noise


def _during_eval(setup, during, alphas, k):
  """``fn(params, diverged)``: the barriers and the children's losses and errors logged during training
  (``eval.every_steps``), on the examples ``during``."""

  def during_eval(params, diverged):
    cur = setup.evaluate_family(params, during, alphas)
    barriers = [_nulled(b) if (diverged[j] or diverged[0]) else b
                for j, b in enumerate(evaluate.pair_barriers(cur, alphas, k)[0], start=1)]
    nan = lambda v: np.where(diverged, np.nan, v)  # written as null
    return {"barrier": barriers, "eval_train_loss": nan(cur["train"]["child_loss"]),
            "eval_test_error": nan(cur["test"]["child_error"])}

  return during_eval


def _children(setup, plan, start, rundir, family, pinfo, noise, params0, bar, during_eval):
  """Children: the family from ``t`` to its end steps with identical SGD noise, checkpointed as it goes;
  ``(family, diverged)``."""

  def save(fam, step, div, partial=None):
    return rundir.save_state({"phase": "children", "step": step, "diverged": [bool(d) for d in div],
                              "perturb": rundir_lib.to_jsonable(pinfo), "noise_l2": noise["l2"],
                              "noise_changed": noise["changed"],
                              **({"chunk": partial} if partial else {})}, {"family": fam._asdict()})

  return _train(setup, family, start.first_step("children", plan.t), max(plan.end_steps), "children", rundir,
                params0, bar, during_eval, diverged=start.diverged("children"), checkpoint=save,
                partial=start.partial("children"), saved=start.saved("children"))


class _StopOnUpdate:
  """A progress bar whose every update (an evaluation batch) is also a place to stop: ``stop()`` raises there."""

  def __init__(self, bar, stop):
    self._bar, self._stop = bar, stop

  def update(self, n: int = 1) -> None:
    self._bar.update(n)
    self._stop()


def _stop_in_evaluation(setup, plan, rundir):
  """``stop()`` for :func:`_evaluate`: on a stop request, :class:`~butterfly_jax.run.interrupt.Interrupted`, the
  training state being checkpointed where the training ended (the checkpoint at the end of the children, written
  with every cadence but ``checkpoint.every_steps="0"``, under which the evaluation is not stopped: a resume would
  train again from step 0)."""
  end = max(plan.end_steps)

  def stop():
    signum = interrupt.requested()
    if signum is not None and setup.steps.checkpoint_every:
      raise interrupt.Interrupted(signum, "children", end, rundir.state_path("children", end), "in the evaluation")

  return stop


def _evaluate(setup, plan, family, diverged, params0, indices, alphas, timing, stop=None) -> dict:
  """Evaluate: every child and every pair's loss/error curve on train and test, the L2 distances, the pairs'
  ensembles and CKA; then (``eval.align``) the same after alignment (:func:`_compare_aligned`). A member
  whose weights or final losses are not finite joins ``diverged``. bf16 parameters (``train.param_dtype``) are
  evaluated, matched and compared as their float32 upcasts. ``stop()``, if given, is called after every
  evaluation batch (:func:`_stop_in_evaluation`)."""
  c = setup.c
  params = setup.float32(family.params)
  mesh = setup.mesh(plan.k)
  tic = time.time()
  align = c.eval.align and plan.k > 1
  n_eval = sum(len(v) for v in indices.values()) * (2 if align else 1) + len(indices["test"])
  with progress.bar(n_eval, "eval", "ex", enabled=c.log.progress and hosts.is_primary()) as bar:
    ebar = bar if stop is None else _StopOnUpdate(bar, stop)
    final = setup.evaluate_family(params, indices, alphas, ebar)
    params0 = placement.replicate(setup.float32(params0), mesh)
    dist = hosts.fetch(members.distances(params, params0))
    diverged = diverged | ~dist["finite"]
    for split in ("train", "test"):
      diverged |= ~np.isfinite(final[split]["child_loss"])
    pairs = similarity.compare_pairs(setup.pair_batch, params, *setup.test_data, indices["test"],
                                     c.eval.batch_size, c.eval.cka_examples, setup.mean, setup.std,
                                     final.get("children_stats"), c.eval.cka_estimator, mesh)
    ebar.update(len(indices["test"]))
    aligned = None
    if align:
      aligned = _compare_aligned(setup, plan, params, diverged, params0, mesh, indices, alphas, ebar, timing,
                                 final.get("children_stats"))
  timing["eval_s"] = time.time() - tic
  barriers, path_finite = evaluate.pair_barriers(final, alphas, plan.k)
  return {"final": final, "dist": dist, "pairs": pairs, "barriers": barriers, "path_finite": path_finite,
          "aligned": aligned, "diverged": diverged, "mesh": mesh}


def _compare_aligned(setup, plan, params, diverged, params0, mesh, indices, alphas, ebar, timing,
                     stats=None) -> dict:
  """Align and compare: each child k >= 1 aligned to child 0 (:func:`_align`; ``stats``: the children's BatchNorm
  statistics, for activation matching), then evaluated as the children are: its L2 distance, barriers and curves,
  and the permutations' fixed points."""
  tic = time.time()
  aligned_params, perms, info, per_child = _align(setup, params, diverged, stats)
  aligned_params = placement.shard_members(aligned_params, mesh)  # placed like the family it came from
  timing["align_s"] = time.time() - tic
  final = setup.evaluate_family(aligned_params, indices, alphas, ebar)
  barriers, path_finite = evaluate.pair_barriers(final, alphas, plan.k)
  dist = hosts.fetch(members.distances(aligned_params, params0))
  return {"final": final, "barriers": barriers, "path_finite": path_finite, "dist": dist, "perms": perms,
          "info": info, "per_child": per_child}


def _vs_child0(ev, j) -> dict:
  """Child ``j`` (>= 1) against child 0 in the evaluation ``ev`` (:func:`_evaluate` or :func:`_compare_aligned`):
  the curves of loss, error and (text tasks) the metric, and their barriers."""
  return {"l2": ev["dist"]["l2_to_child0"][j], "barrier": ev["barriers"][j - 1],
          "barrier_path_finite": ev["path_finite"][j - 1],
          "curves": {split: dict(ev["final"][split]["curves"][j - 1]) for split in ("train", "test")}}


def _split_results(final, split: str, j: int, metric) -> dict:
  """Child ``j``'s loss and accuracy on ``split`` and, for a text task, its metric ``{"name", "value"}``."""
  out = {"loss": final[split]["child_loss"][j], "accuracy": 1.0 - final[split]["child_error"][j]}
  if metric:
    out["metric"] = {"name": metric, "value": final[split]["child_metric"][j]}
  return out


def _child_results(plan, pinfo, noise, ev, metric=None) -> list[dict]:
  """results.json's ``children``: each child's perturbation, final losses and accuracies (and the text task's
  ``metric``) and, for k >= 1, its comparison with child 0 (before and after alignment); a diverged child's numbers
  are null."""
  final, dist, diverged, aligned = ev["final"], ev["dist"], ev["diverged"], ev["aligned"]
  out = []
  for j in range(plan.k):
    child = {
        "index": j,
        "perturb": dict(pinfo, scale=0.0 if j == 0 else plan.scales[j - 1], noise_l2=noise["l2"][j],
                        num_perturbed=0 if j == 0 else pinfo["num_perturbed"],
                        # a run resumed from a checkpoint written before this count has none
                        **({} if noise["changed"] is None else {"num_changed": noise["changed"][j]})),
        "train": _split_results(final, "train", j, metric),
        "test": _split_results(final, "test", j, metric),
        "diverged": bool(diverged[j]),
        "end_step": plan.end_steps[j],
        "l2_from_init": dist["l2_from_init"][j],
    }
    if j >= 1:
      child["vs_child0"] = {**_vs_child0(ev, j), **ev["pairs"][j - 1]}
      if aligned is not None:
        child["vs_child0"]["aligned"] = {**_vs_child0(aligned, j),
                                         "fixed_point_fraction":
                                             permutations.fixed_point_fraction(aligned["perms"][j - 1]),
                                         "fixed_point_fractions":
                                             permutations.fixed_point_fractions(aligned["perms"][j - 1]),
                                         **aligned["info"], **aligned["per_child"].get(j, {})}
    if diverged[j] or (j >= 1 and diverged[0]):
      child = _nulled(child, keep=("index", "perturb", "diverged", "end_step"))
      for split in ("train", "test"):  # the metric's name is no number
        if metric:
          child[split]["metric"]["name"] = metric
      if j >= 1 and aligned is not None:  # nor is how it would have been aligned
        child["vs_child0"]["aligned"].update(aligned["info"])
    out.append(child)
  return out


def _results(setup, plan, pinfo, noise, ev, params0, init_info, indices, alphas, timing) -> dict:
  """Assemble results: results.json (:func:`_child_results`, and what the run was: steps, data, model, init)."""
  c, steps, data, mesh = setup.c, setup.steps, setup.data, ev["mesh"]
  return {
      "definitions": config_lib.definitions(c),
      "children": _child_results(plan, pinfo, noise, ev, setup.metric),
      "steps": {"t": plan.t, "T": plan.total, "steps_per_epoch": steps.steps_per_epoch, "warmup": steps.warmup},
      "alphas": alphas,
      "eval": {"num_examples": {s: len(v) for s, v in indices.items()}},
      "data": {"name": data.name, "source": data.source, "num_train": data.num_train, "num_test": data.num_test,
               "input_shape": list(data.input_shape), "num_classes": data.num_classes,
               **({"metric": setup.metric} if setup.metric else {})},
      "model": {"name": c.model.name,
                "num_params": int(sum(x.size for x in jax.tree_util.tree_leaves(params0))),
                "dropout_in_training": bool(setup.dropout), "param_dtype": c.train.param_dtype},
      "init": init_info,
      "norm_statistics": setup.norm_info,
      "kept_steps": steps.keep,
      "members_strategy": setup.strategy,
      "members_devices": placement.member_devices(mesh),
      "data_devices": placement.data_devices(mesh),
      "timing": timing,
      "provenance": provenance(),
  }


def _run(spec, rundir, discard_unfinished, allow_code_change):
  """Set up, then the phases (:func:`_phases`) with the live writers of ``log.writers`` open
  (:mod:`butterfly_jax.run.writers`): they see every log line and, once results.json is written, the results."""
  t_start = time.time()
  setup, plan, start = _set_up(spec, rundir, discard_unfinished, allow_code_change)
  with writers_lib.opened(spec.config, rundir, fresh=start.phase is None) as writers:
    results = _phases(setup, plan, start, rundir, t_start)
    writers.finish(results)
  return results


def _phases(setup, plan, start, rundir, t_start):
  """The phases in order: trunk, perturb, children, evaluate (and align/compare), assemble results; returns
  results.json as a reader sees it."""
  c = setup.c
  alphas = evaluate.alpha_grid(c.eval.num_alphas)
  indices = setup.evaluation_examples(c.eval.num_examples)
  during = setup.evaluation_examples(c.eval.during_num_examples, during=True)
  params0, init_info = _initial_params(setup)
  params0 = setup.held(params0)  # train.param_dtype: rounded to bf16 once (the init, or the loaded weights)
  opt0 = setup.transform.init(params0)  # optax's state follows the parameters' dtype
  timing = start.timing()
  bar = progress.bar(max(plan.end_steps), "train", "step", initial=start.step,
                     enabled=c.log.progress and hosts.is_primary())

  tic = time.time()
  if start.trains("trunk"):
    trunk_params, trunk_opt = _trunk(setup, plan, start, rundir, params0, opt0, bar)
  timing["trunk_s"] = time.time() - tic

  tic = time.time()
  if start.trains("trunk"):
    family, pinfo, noise = _perturb(setup, plan, trunk_params, trunk_opt)
    del trunk_params, trunk_opt
  else:
    family, pinfo, noise = start.perturbed_children(plan, params0, opt0)
  family, diverged = _children(setup, plan, start, rundir, family, pinfo, noise, params0, bar,
                               _during_eval(setup, during, alphas, plan.k))
  bar.close()
  timing["children_s"] = time.time() - tic
  if c.checkpoint.children:
    rundir.save_checkpoint("children", {"params": family.params, "opt_state": family.opt_state})

  ev = _evaluate(setup, plan, family, diverged, params0, indices, alphas, timing,
                 _stop_in_evaluation(setup, plan, rundir))
  timing["total_s"] = time.time() - t_start
  rundir.finish(_results(setup, plan, pinfo, noise, ev, params0, init_info, indices, alphas, timing))
  results = results_lib.load(rundir.results)  # what a reader of results.json sees
  for j in parted_twins(plan, results):
    logging.warning(
        "%s: child %d, the sigma = 0 twin, ends %.3g from child 0 (L2), not 0: the members' copies of the step "
        "computed differently (strategy %s), so every barrier of this run is measured against a reference that a "
        "perturbation of nothing also moves. Run it again with --config.members.strategy=map (one compiled step "
        "for every member) and report the network (BUILD_NOTES.md, 'Twins under the sequential strategy')",
        rundir.root, j, results["children"][j]["vs_child0"]["l2"], results.get("members_strategy"))
  return results


def parted_twins(plan: spec_lib.FamilyPlan, results) -> list[int]:
  """The children with σ = 0 and child 0's schedule (no rewinding, no extra steps) that did not end bitwise equal
  to child 0 (an L2 distance other than 0): the control that should never fire."""
  out = []
  for j, child in enumerate(results["children"][1:], start=1):
    same_schedule = plan.lr_offsets[j] == plan.lr_offsets[0] and plan.end_steps[j] == plan.end_steps[0]
    l2 = child.get("vs_child0", {}).get("l2")
    if plan.scales[j - 1] == 0 and same_schedule and not child["diverged"] and l2 not in (None, 0.0):
      out.append(j)
  return out
