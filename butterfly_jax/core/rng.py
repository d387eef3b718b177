"""Random keys come from roles, never from state.

A seed is split once into named keys (``fold_in`` of a fixed role number); every step folds in the step
number. The twins share every key but the perturbation key, which only the perturbation uses. Every sub-key
is named here by its role, with the number folded in to get it:

* ``data``: the epoch ``e``'s permutation of the training set from ``fold_in(data, e)`` (:func:`epoch_key`);
* ``augment``: step ``s``'s augmentation from ``fold_in(augment, s)`` (:func:`step_augment_key`), and within one
  batch the rotation and random-erasing draws from ``AUGMENT_ROLES``; a model's dropout in step ``s`` from the
  same step key (:func:`step_dropout_key`), shared by every member like the batch;
* ``init``: the model's initialisation, and a fresh torch-style head from ``fold_in(init, HEAD_INIT)``;
* ``perturb``: ``PERTURB_ROLES`` (the mask, the examples and augmentation of the batch perturbation, the
  Gaussian direction);
* ``eval``: ``EVAL_ROLES`` (which examples are evaluated at the end and during training, which estimate
  BatchNorm statistics, and which activation matching correlates), and child ``j``'s weight matching to child 0
  from ``fold_in(eval, ALIGN_BASE + j)``;
* ``init_stats``: the initialisations drawn to estimate the init statistics of ``E_init``.

The random-permutation proxy (:mod:`butterfly_jax.proxy`) draws from a key of its own seed
(:func:`proxy_permutation_key`), and weight-matches each permuted copy back with a key of the same indices
(:func:`proxy_alignment_key`).
"""

import jax

ROLES = {"init": 0, "data": 1, "augment": 2, "perturb": 3, "eval": 4, "init_stats": 5}

HEAD_INIT = 7  # fold_in(init key): a fresh head initialised as torch's nn.Linear (init.head = "torch_linear")

PERTURB_ROLES = {
    "mask": 1,           # which weights a masked perturbation moves (perturb.mask: random picks)
    "batch_examples": 2,  # the examples of the batch perturbation
    "batch_augment": 3,   # their augmentation
    "gaussian": 4,        # the Gaussian direction
    "batch_dropout": 5,   # the dropout masks of the batch perturbation's gradient (perturb.batch_dropout)
}
# perturb.batch_source="fixed": the batch perturbation's examples and augmentation come from the perturbation key
# of this seed in every run, whatever its seeds (the authors' scripts leave the perturbation seed unset, so their
# loader's unseeded generator draws one batch for every run)
FIXED_BATCH_SEED = 0

EVAL_ROLES = {
    "train_examples": 0,         # the training examples evaluated at the end (eval.num_examples)
    "test_examples": 1,          # the test examples evaluated at the end
    "during_train_examples": 2,  # the training examples evaluated during training (eval.during_num_examples)
    "during_test_examples": 3,   # the test examples evaluated during training
    "norm_stats_examples": 4,    # the training examples that re-estimate BatchNorm statistics
    "align_examples": 5,         # the training examples whose activations activation matching correlates
}

ALIGN_BASE = 100  # fold_in(eval key, ALIGN_BASE + j): the weight matching of child j to child 0

AUGMENT_ROLES = {"rotate": 10, "erase": 11}  # fold_in(step's augmentation key); flip, shift, cutout: split in 3
DROPOUT = 12  # fold_in(step's augmentation key): the step's dropout masks (BERT)

PROXY_STRIDE = 1000  # fold_in(proxy key, i * PROXY_STRIDE + s): the s-th permutation of the i-th fraction
PROXY_ALIGN = 10**9  # fold_in(proxy key, PROXY_ALIGN): the sub-key of the proxy's weight matching (--align)


def role_keys(seed: int, perturb_seed: int = -1) -> dict[str, jax.Array]:
  """``{role: key}`` for ``seed``; ``perturb_seed >= 0`` derives the perturbation key from it alone."""
  root = jax.random.key(seed)
  keys = {role: jax.random.fold_in(root, i) for role, i in ROLES.items()}
  if perturb_seed is not None and perturb_seed >= 0:
    keys["perturb"] = jax.random.fold_in(jax.random.key(perturb_seed), ROLES["perturb"])
  return keys


def epoch_key(data_key, epoch):
  """The key of ``epoch``'s permutation of the training set."""
  return jax.random.fold_in(data_key, epoch)


def step_augment_key(augment_key, step):
  """The key of the augmentation of ``step``'s batch."""
  return jax.random.fold_in(augment_key, step)


def step_dropout_key(augment_key, step):
  """The key of the dropout masks of ``step``'s training step (every member's: twins drop the same units)."""
  return jax.random.fold_in(step_augment_key(augment_key, step), DROPOUT)


def augment_key(step_key, role: str):
  """Within one batch's augmentation: the key of ``role`` (:data:`AUGMENT_ROLES`)."""
  return jax.random.fold_in(step_key, AUGMENT_ROLES[role])


def head_init_key(init_key):
  """The key of a fresh head's torch-style initialisation."""
  return jax.random.fold_in(init_key, HEAD_INIT)


def perturb_key(keys, role: str):
  """The perturbation's sub-key of ``role`` (:data:`PERTURB_ROLES`) from the run's ``keys``."""
  return jax.random.fold_in(keys["perturb"], PERTURB_ROLES[role])


def fixed_perturb_key(role: str):
  """:func:`perturb_key` of ``role`` for the seed :data:`FIXED_BATCH_SEED`: the same in every run."""
  return perturb_key(role_keys(FIXED_BATCH_SEED), role)


def eval_key(keys, role: str):
  """The evaluation's sub-key of ``role`` (:data:`EVAL_ROLES`) from the run's ``keys``."""
  return jax.random.fold_in(keys["eval"], EVAL_ROLES[role])


def align_key(keys, child: int):
  """The key of child ``child``'s weight matching to child 0."""
  return jax.random.fold_in(keys["eval"], ALIGN_BASE + child)


def proxy_permutation_key(key, fraction_index: int, seed: int):
  """The proxy's key of the ``seed``-th random permutation at its ``fraction_index``-th fixed-point fraction."""
  return jax.random.fold_in(key, fraction_index * PROXY_STRIDE + seed)


def proxy_alignment_key(key, fraction_index: int, seed: int):
  """The key of the proxy's weight matching of that permuted copy back to the network (``--align``): the
  permutation's index, folded into a sub-key of its own."""
  return jax.random.fold_in(jax.random.fold_in(key, PROXY_ALIGN), fraction_index * PROXY_STRIDE + seed)
