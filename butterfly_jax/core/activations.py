"""The hidden units' activations of a family's children on the same examples, streamed into the sums that
activation matching reads (:class:`butterfly_jax.core.permutations.ActivationSums`).

:func:`make_activation_batch` jits a model's ``activations_fn`` (:func:`butterfly_jax.models.make_activations`) for one
network and one batch; :func:`pair_activation_sums` runs child 0 and each other child through it batch by batch and
accumulates, per pair (0, j), the float64 sums of their paired activations on the host.
"""

import jax
import jax.numpy as jnp
import numpy as np

from butterfly_jax.core import hosts, permutations
from butterfly_jax.core.evaluate import model_input, padded_batches, take


def make_activation_batch(activations_fn):
  """Jitted ``(params, stats, inputs, mean, std) -> {permutation name: (float32 array [B, ..., units], ...)}``:
  one network's activations on one batch; ``stats``: its BatchNorm statistics or None; ``mean``, ``std``: how uint8
  images are normalised (:func:`butterfly_jax.core.evaluate.model_input`)."""

  @jax.jit
  def activation_batch(params, stats, inputs, mean, std):
    acts = activations_fn(params, model_input(inputs, mean, std), stats)
    return {name: tuple(a.astype(jnp.float32) for a in arrays) for name, arrays in acts.items()}

  return activation_batch


def pair_activation_sums(activation_batch, children, stats, inputs, indices, batch_size: int, mean, std,
                         pairs) -> dict:
  """``{j: ActivationSums}`` of child 0's and child ``j``'s activations over the examples ``indices`` of ``inputs``
  (device arrays), for each ``j`` in ``pairs``. ``children``: one parameter tree per child (child 0 first);
  ``stats``: None, or each child's BatchNorm statistics. Batches of ``batch_size`` (the last one padded, its padding
  left out of the sums); child 0's activations are computed once per batch."""
  sums = {j: permutations.ActivationSums() for j in pairs}
  stats = stats if stats is not None else [None] * len(children)
  for _, idx, m in padded_batches(np.asarray(indices), batch_size):
    batch = take((inputs,), idx)[0]

    def acts(j):
      out = hosts.fetch(activation_batch(children[j], stats[j], batch, mean, std))
      return {name: tuple(np.asarray(a)[:m] for a in arrays) for name, arrays in out.items()}

    reference = acts(0)
    for j in pairs:
      sums[j].update(reference, acts(j))
  return sums
