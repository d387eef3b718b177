"""Batches and augmentation as pure functions of (key, step).

The training set lives on the device as uint8 images, or as int32 token ids ``[N, 3, L]`` for text
(:mod:`butterfly_jax.io.text`), which pass through unchanged: no normalisation, no augmentation. The batch at
step ``s`` is slice ``s mod E`` of the epoch permutation ``permutation(fold_in(data_key, s // E), N)`` (E =
steps per epoch, the last partial batch is dropped), and its augmentation is drawn from
``fold_in(augment_key, s)``: neither depends on anything that happened before step ``s``, so every child sees
exactly the same batches and augmentations. One function builds step ``s``'s batch for the whole family:
:meth:`Batcher.step_batch`.
"""

import jax
import jax.numpy as jnp
import numpy as np

from butterfly_jax.core import rng


def epoch_permutation(data_key, epoch, num_examples: int):
  return jax.random.permutation(rng.epoch_key(data_key, epoch), num_examples)


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


def rotate(images, angles_deg, fill):
  """Each image ``[B, H, W, C]`` rotated by its angle (degrees, counter-clockwise as torchvision's
  ``rotate``) about its centre, nearest pixel, points from outside the image filled with ``fill [C]``."""
  _, h, w, _ = images.shape
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - cy, jnp.arange(w, dtype=jnp.float32) - cx,
                        indexing="ij")

  def one(img, angle):
    a = jnp.deg2rad(angle)
    cos, sin = jnp.cos(a), jnp.sin(a)
    # the output pixel (y, x) shows the input at the inverse rotation of (y, x) (image rows point down)
    src_x = jnp.round(cos * xx - sin * yy + cx).astype(jnp.int32)
    src_y = jnp.round(sin * xx + cos * yy + cy).astype(jnp.int32)
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    out = img[jnp.clip(src_y, 0, h - 1), jnp.clip(src_x, 0, w - 1)]
    return jnp.where(inside[..., None], out, fill)

  return jax.vmap(one)(images, angles_deg)


def erase_boxes(key, b: int, h: int, w: int, max_area: float, p: float = 0.5, min_area: float = 0.02,
                ratio=(0.3, 3.3), attempts: int = 10):
  """torchvision ``RandomErasing(p, scale=(min_area, max_area), ratio)`` boxes for ``b`` images: a boolean mask
  ``[B, H, W]``. Each image is erased with probability ``p``; then up to ``attempts`` boxes of area fraction
  ``U(min_area, max_area)`` and aspect ratio ``exp(U(log ratio))`` are drawn and the first that fits
  (height < H and width < W) is placed uniformly; an image whose attempts all fail is left alone."""
  k_p, k_area, k_ratio, k_pos = jax.random.split(key, 4)
  erase = jax.random.uniform(k_p, (b,)) < p
  area = jax.random.uniform(k_area, (b, attempts), minval=min_area, maxval=max_area) * (h * w)
  log_r = jax.random.uniform(k_ratio, (b, attempts), minval=np.log(ratio[0]), maxval=np.log(ratio[1]))
  bh = jnp.round(jnp.sqrt(area * jnp.exp(log_r))).astype(jnp.int32)
  bw = jnp.round(jnp.sqrt(area / jnp.exp(log_r))).astype(jnp.int32)
  fits = (bh < h) & (bw < w)
  first = jnp.argmax(fits, axis=1)
  found = jnp.any(fits, axis=1) & erase
  bh = jnp.take_along_axis(bh, first[:, None], 1)[:, 0]
  bw = jnp.take_along_axis(bw, first[:, None], 1)[:, 0]
  u = jax.random.uniform(k_pos, (b, 2))
  top = jnp.floor(u[:, 0] * (h - bh + 1)).astype(jnp.int32)
  left = jnp.floor(u[:, 1] * (w - bw + 1)).astype(jnp.int32)
  rows = jnp.arange(h)[None, :, None]
  cols = jnp.arange(w)[None, None, :]
  inside = ((rows >= top[:, None, None]) & (rows < (top + bh)[:, None, None])
            & (cols >= left[:, None, None]) & (cols < (left + bw)[:, None, None]))
  return inside & found[:, None, None]


def augment(key, x, *, flip: bool, translate: int, cutout: int, rotate_deg: float = 0.0, erase: float = 0.0,
            black=None, translate_black: bool = False):
  """Random horizontal flip, rotation by up to ``rotate_deg`` degrees (nearest pixel, ``black`` fill),
  translation by up to ``translate`` pixels (``black`` fill with ``translate_black``, else zero fill), cutout of
  side ``cutout``, random erasing of a box of area fraction up to ``erase`` (:func:`erase_boxes`; zero fill), in
  this order (the authors' order).

  ``x`` is a normalised float batch [B, H, W, C], so the zero fill is the data mean (torchvision's
  ``RandomErasing(value=mean)`` before ``Normalize``); ``black [C]`` is a black pixel normalised (0 where not
  given), torchvision's fill for rotation and ``RandomAffine`` translation.
  """
  if not (flip or translate or cutout or rotate_deg or erase):
    return x
  b, h, w, _ = x.shape
  k_flip, k_shift, k_cut = jax.random.split(key, 3)
  if flip:
    do_flip = jax.random.bernoulli(k_flip, 0.5, (b,))
    x = jnp.where(do_flip[:, None, None, None], x[:, :, ::-1, :], x)
  if rotate_deg:
    angles = jax.random.uniform(rng.augment_key(key, "rotate"), (b,), minval=-rotate_deg, maxval=rotate_deg)
    fill = jnp.zeros(x.shape[-1], x.dtype) if black is None else jnp.asarray(black, x.dtype)
    x = rotate(x, angles, fill)
  if translate:
    p = translate
    padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    if translate_black and black is not None:   # the border black instead of 0 (the data mean)
      border = ~jnp.pad(jnp.ones((h, w), bool), ((p, p), (p, p)))
      padded = jnp.where(border[None, :, :, None], jnp.asarray(black, x.dtype), padded)
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
  if erase:
    x = jnp.where(erase_boxes(rng.augment_key(key, "erase"), b, h, w, erase)[..., None], 0.0, x)
  return x


class Batcher:
  """Training batches for one dataset and config: ``batcher.step_batch(data, perm, augment_key, step) -> (x, y)``.

  Traceable inside jit. ``perm`` is the permutation of the epoch of ``step``
  (:meth:`epoch_permutation`), computed once per epoch outside the step: sorting the whole training set
  at every step cost as much as a small network's step. The device arrays are passed explicitly
  (``data``) so that jit sees them as arguments, not constants.
  """

  def __init__(self, *, batch_size, num_examples, mean, std, flip=False, translate=0, cutout=0, rotate=0.0,
               erase=0.0, translate_fill="mean"):
    """``mean`` and ``std`` per channel normalise uint8 images; both None: the inputs are not images (text's
    int32 token ids) and a batch's inputs are the training set's rows as they are, with no augmentation."""
    self.batch_size = batch_size
    self.num_examples = num_examples
    if mean is None or std is None:
      augmented = [name for name, on in (("flip", flip), ("translate", translate), ("cutout", cutout),
                                         ("rotate", rotate), ("erase", erase)) if on]
      if mean is not None or std is not None or augmented:
        raise ValueError(f"Batcher: inputs that are not images (mean and std None) take no normalisation and no "
                         f"augmentation; got mean={mean!r}, std={std!r}, data.augment: {', '.join(augmented)}")
      self.mean = self.std = self.aug = None
      return
    self.mean = np.asarray(mean, np.float32)
    self.std = np.asarray(std, np.float32)
    self.aug = dict(flip=bool(flip), translate=int(translate), cutout=int(cutout), rotate_deg=float(rotate),
                    erase=float(erase), black=(0.0 - self.mean) / self.std,
                    translate_black=translate_fill == "black")

  @property
  def steps_per_epoch(self) -> int:
    return self.num_examples // self.batch_size

  def epoch_permutation(self, data_key, epoch):
    return _epoch_permutation_jit(data_key, epoch, self.num_examples)

  def step_batch(self, data, perm, augment_key, step):
    """The batch of ``step``, augmented, for every member of the family: the identical SGD noise.

    Its examples are slice ``step mod E`` of ``perm``, the permutation of the epoch ``step // E`` drawn from the
    run's data key (:meth:`epoch_permutation`); its augmentation is drawn from the run's augmentation key and
    ``step`` alone (:func:`butterfly_jax.core.rng.step_augment_key`). Nothing else enters: not the member, its
    parameters, the family's size or what happened before ``step``, so every child sees the same batches.
    """
    inputs, labels = data
    idx = slice_batch(perm, step, self.num_examples, self.batch_size)
    return self.gather(inputs, labels, idx, rng.step_augment_key(augment_key, step))

  __call__ = step_batch

  def gather(self, inputs, labels, idx, aug_key):
    """Examples ``idx``: images normalised and augmented with ``aug_key``; other inputs as they are."""
    if self.mean is None:
      return inputs[idx], labels[idx]
    x = normalize(inputs[idx], self.mean, self.std)
    return augment(aug_key, x, **self.aug), labels[idx]


_epoch_permutation_jit = jax.jit(epoch_permutation, static_argnums=2)
