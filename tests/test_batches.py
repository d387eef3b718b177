"""Batch order and augmentation are pure functions of (key, step)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from butterfly_jax.core import batches


def test_batch_at_step_depends_only_on_key_and_step():
  key = jax.random.key(3)
  n, b = 100, 8
  a = np.asarray(batches.batch_indices(key, 37, n, b))
  again = np.asarray(jax.jit(batches.batch_indices, static_argnums=(2, 3))(key, jnp.int32(37), n, b))
  np.testing.assert_array_equal(a, again)
  # computing other steps first (in any order) does not change it
  for s in (36, 0, 99, 12):
    batches.batch_indices(key, s, n, b)
  np.testing.assert_array_equal(a, np.asarray(batches.batch_indices(key, 37, n, b)))
  assert not np.array_equal(a, np.asarray(batches.batch_indices(jax.random.key(4), 37, n, b)))


def test_an_epoch_visits_each_example_at_most_once_and_epochs_differ():
  key = jax.random.key(0)
  n, b = 50, 8  # 6 steps per epoch, 2 examples dropped
  epoch0 = np.concatenate([np.asarray(batches.batch_indices(key, s, n, b)) for s in range(6)])
  epoch1 = np.concatenate([np.asarray(batches.batch_indices(key, s, n, b)) for s in range(6, 12)])
  assert len(set(epoch0.tolist())) == 48 and len(set(epoch1.tolist())) == 48
  assert not np.array_equal(epoch0, epoch1)


def test_augmentation_is_pure_and_does_what_it_says():
  x = jnp.arange(2 * 6 * 6 * 1, dtype=jnp.float32).reshape(2, 6, 6, 1) + 1.0
  key = jax.random.key(1)
  flip = batches.augment(key, x, flip=True, translate=0, cutout=0)
  for i in range(2):
    assert (np.array_equal(flip[i], x[i]) or np.array_equal(flip[i], x[i, :, ::-1]))
  np.testing.assert_array_equal(flip, batches.augment(key, x, flip=True, translate=0, cutout=0))
  cut = batches.augment(key, x, flip=False, translate=0, cutout=2)
  zeros = np.sum(np.asarray(cut) == 0, axis=(1, 2, 3))
  assert np.all(zeros >= 1) and np.all(zeros <= 4)  # a 2x2 square, clipped at the border
  shifted = batches.augment(key, x, flip=False, translate=2, cutout=0)
  assert shifted.shape == x.shape
  # a translated image is the original moved: every non-zero value keeps its row/column neighbours
  assert set(np.unique(np.asarray(shifted))) <= set(np.unique(np.asarray(x))) | {0.0}
  np.testing.assert_array_equal(batches.augment(key, x, flip=False, translate=0, cutout=0), x)


def test_batcher_with_cached_epoch_permutation_equals_pure_batch_indices():
  n, b = 40, 8
  images = jnp.arange(n, dtype=jnp.uint8).reshape(n, 1, 1, 1)
  labels = jnp.arange(n, dtype=jnp.int32)
  batcher = batches.Batcher(batch_size=b, num_examples=n, mean=[0.0], std=[1.0], flip=False, translate=0, cutout=0)
  key = jax.random.key(7)
  for step in (0, 4, 5, 13):
    perm = batcher.epoch_permutation(key, step // batcher.steps_per_epoch)
    _, y = batcher((images, labels), perm, jax.random.key(0), step)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(batches.batch_indices(key, step, n, b)))


def test_text_batches_are_pure_and_pass_through_unchanged():
  n, b, length = 30, 4, 7
  inputs = jnp.asarray(np.random.default_rng(0).integers(0, 1000, size=(n, 3, length)), jnp.int32)
  labels = jnp.arange(n, dtype=jnp.int32)
  batcher = batches.Batcher(batch_size=b, num_examples=n, mean=None, std=None)
  key, aug = jax.random.key(5), jax.random.key(6)
  step_batch = jax.jit(batcher.step_batch)
  for step in (0, 9, 23):
    perm = batcher.epoch_permutation(key, step // batcher.steps_per_epoch)
    x, y = step_batch((inputs, labels), perm, aug, jnp.int32(step))
    again, _ = step_batch((inputs, labels), batcher.epoch_permutation(key, step // batcher.steps_per_epoch),
                          jax.random.key(99), jnp.int32(step))  # another augmentation key changes nothing
    idx = np.asarray(batches.batch_indices(key, step, n, b))
    assert x.dtype == jnp.int32 and x.shape == (b, 3, length)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(inputs)[idx])  # the rows, unchanged
    np.testing.assert_array_equal(np.asarray(y), idx)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(x))
  for aug_field in ({"flip": True}, {"translate": 2}, {"erase": 0.1}):
    with pytest.raises(ValueError, match="not images.*no augmentation"):
      batches.Batcher(batch_size=b, num_examples=n, mean=None, std=None, **aug_field)
