"""Batches and augmentation as pure functions of (key, step).

The training set lives on the device as uint8. The batch at step ``s`` is slice ``s mod E`` of the epoch
permutation ``permutation(fold_in(data_key, s // E), N)`` (E = steps per epoch, the last partial batch is
dropped), and its augmentation is drawn from ``fold_in(augment_key, s)``: neither depends on anything that
happened before step ``s``, so every child sees exactly the same batches and augmentations.
"""

import jax
import jax.numpy as jnp
import numpy as np


def epoch_permutation(data_key, epoch, num_examples: int):
  return jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)


def batch_indices(data_key, step, num_examples: int, batch_size: int):
  """Indices of the batch at ``step`` (a pure function of the key and the step)."""
  steps_per_epoch = num_examples // batch_size
  perm = epoch_permutation(data_key, step // steps_per_epoch, num_examples)
  return slice_batch(perm, step, num_examples, batch_size)


def slice_batch(perm, step, num_examples: int, batch_size: int):
  """The batch of ``step`` from its epoch's permutation ``perm``."""
  steps_per_epoch = num_examples // batch_size
  return jax.lax.dynamic_slice_in_dim(perm, (step % steps_per_epoch) * batch_size, batch_size)


def normalize(images_u8, mean, std):
  """uint8 NHWC -> float32, scaled to [0, 1] then standardised per channel."""
  x = images_u8.astype(jnp.float32) / 255.0
  return (x - mean) / std


def augment(key, x, *, flip: bool, translate: int, cutout: int):
  """Random horizontal flip, translation by up to ``translate`` pixels (zero fill), cutout of side ``cutout``.

  ``x`` is a normalised float batch [B, H, W, C], so the zero fill is the data mean.
  """
  if not (flip or translate or cutout):
    return x
  b, h, w, _ = x.shape
  k_flip, k_shift, k_cut = jax.random.split(key, 3)
  if flip:
    do_flip = jax.random.bernoulli(k_flip, 0.5, (b,))
    x = jnp.where(do_flip[:, None, None, None], x[:, :, ::-1, :], x)
  if translate:
    p = translate
    padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    offsets = jax.random.randint(k_shift, (b, 2), 0, 2 * p + 1)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, x.shape[-1]))
    x = jax.vmap(crop)(padded, offsets)
  if cutout:
    centres = jax.random.randint(k_cut, (b, 2), 0, jnp.array([h, w]))
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    lo = cutout // 2
    inside = ((rows >= centres[:, 0, None, None] - lo) & (rows < centres[:, 0, None, None] - lo + cutout)
              & (cols >= centres[:, 1, None, None] - lo) & (cols < centres[:, 1, None, None] - lo + cutout))
    x = jnp.where(inside[..., None], 0.0, x)
  return x


class Batcher:
  """Training batches for one dataset and config: ``batcher(data, perm, augment_key, step) -> (x, y)``.

  Traceable inside jit. ``perm`` is the permutation of the epoch of ``step``
  (:meth:`epoch_permutation`), computed once per epoch outside the step: sorting the whole training set
  at every step cost as much as a small network's step. The device arrays are passed explicitly
  (``data``) so that jit sees them as arguments, not constants.
  """

  def __init__(self, *, batch_size, num_examples, mean, std, flip, translate, cutout):
    self.batch_size = batch_size
    self.num_examples = num_examples
    self.mean = np.asarray(mean, np.float32)
    self.std = np.asarray(std, np.float32)
    self.aug = dict(flip=bool(flip), translate=int(translate), cutout=int(cutout))

  @property
  def steps_per_epoch(self) -> int:
    return self.num_examples // self.batch_size

  def epoch_permutation(self, data_key, epoch):
    return _epoch_permutation_jit(data_key, epoch, self.num_examples)

  def __call__(self, data, perm, augment_key, step):
    images, labels = data
    idx = slice_batch(perm, step, self.num_examples, self.batch_size)
    return self.gather(images, labels, idx, jax.random.fold_in(augment_key, step))

  def gather(self, images, labels, idx, aug_key):
    x = normalize(images[idx], self.mean, self.std)
    return augment(aug_key, x, **self.aug), labels[idx]


_epoch_permutation_jit = jax.jit(epoch_permutation, static_argnums=2)
