"""Memory per child: parameter, optimizer and gradient bytes from shapes; activations from XLA's analysis."""

import optax
import pytest

from butterfly_jax.core import memory
from butterfly_jax.models import make_model


def test_child_memory_counts_shapes_and_splits_activations_over_the_data_axis():
  apply_fn, init_fn = make_model("mlp", (8, 8, 1), 10, hidden=(256,))
  n = 64 * 256 + 256 + 256 * 10 + 10
  one = memory.child_memory(init_fn, apply_fn, optax.trace(0.9), (8, 8, 1), 512)
  assert (one.params, one.opt_state, one.grads) == (4 * n, 4 * n, 4 * n)   # float32; SGD momentum: one buffer
  adam = memory.child_memory(init_fn, apply_fn, optax.scale_by_adam(), (8, 8, 1), 512)
  assert adam.opt_state == 8 * n + 4   # two moments and a step count
  assert one.activations >= 512 * 256 * 4   # at least the hidden layer's output, kept for the backward pass
  half = memory.child_memory(init_fn, apply_fn, optax.trace(0.9), (8, 8, 1), 512, data_devices=2)
  assert 0.4 < half.activations / one.activations < 0.6   # half of the batch on each device
  assert one.total == one.params + one.opt_state + one.grads + one.activations
  with pytest.raises(ValueError, match="batch_size 512 is not divisible by data_devices 3"):
    memory.child_memory(init_fn, apply_fn, optax.trace(0.9), (8, 8, 1), 512, data_devices=3)


def test_largest_family():
  assert memory.largest_family(10, 100) == 10
  assert memory.largest_family(10, 100, shared=5) == 9
  assert memory.largest_family(200, 100) == 0
  with pytest.raises(ValueError, match="per_child must be > 0"):
    memory.largest_family(0, 100)


def test_a_text_models_child_takes_token_ids_and_its_dropout_masks_count():
  import jax.numpy as jnp
  kw = dict(vocab_size=50, hidden=32, layers=2, heads=2, intermediate=64, max_positions=16)
  apply_fn, init_fn = make_model("bert", (3, 16), 2, **kw)
  plain = memory.child_memory(init_fn, apply_fn, optax.adam(1e-3), (3, 16), 64, input_dtype=jnp.int32)
  dropped = memory.child_memory(init_fn, apply_fn, optax.adam(1e-3), (3, 16), 64, input_dtype=jnp.int32,
                                dropout=True)
  assert dropped.params == plain.params and dropped.opt_state == plain.opt_state
  assert dropped.activations > plain.activations   # the masks (or the dropped copies) are kept for the backward pass
