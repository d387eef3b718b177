"""2-D convolutions for the models, selected by ``model.kwargs.conv``; all have ``nn.Conv``'s parameters.

Every implementation declares ``kernel`` of shape ``(kh, kw, cin, cout)`` and optional ``bias`` ``(cout,)``
under the layer's name, drawn from the same initialiser and key as ``nn.Conv``, so checkpoints,
permutation specs and perturbation masks do not depend on the choice. NHWC inputs, ``"SAME"`` or
``"VALID"`` padding exactly as ``lax.padtype_to_pads`` (``"SAME"`` with stride 2 on an even size pads
(0, 1)) or explicit ``((lo, hi), (lo, hi))`` pairs (torch's ``padding=1`` is ``((1, 1), (1, 1))``), no
dilation or groups.

* ``xla``: ``flax.linen.Conv``, XLA's convolution and its automatic gradient.
* ``saved``: the same forward convolution (bitwise the same output), with a custom VJP whose backward
  reads a saved, materialised copy of the input. XLA:CPU computes a kernel gradient from a transposed copy
  of the input (batch axis innermost); with plain autodiff it fuses the elementwise chain that produced the
  input (LayerNorm, ReLU, the residual adds of every earlier block of the stage) into that transpose and
  recomputes it there with strided reads, a large part of a ResNet training step (BUILD_NOTES.md).
  A ``lax.cond`` on a runtime predicate (whether the first input value is NaN; both branches return the
  input) is a fusion boundary that XLA keeps, so the transpose reads a stored tensor. Under ``vmap`` the
  cond becomes a ``select`` and the trick is inert (still correct).
* ``fastgrad``: ``saved`` (same forward, same stored input), with two gradients that XLA:CPU computes slowly
  replaced by faster primitives; everything else is ``saved``'s. (1) The input gradient of a strided
  ``kxk`` convolution (k > 1): XLA differentiates it into an input-dilated convolution (zeros between the
  ``dy`` values); here each of the ``s*s`` output phases is an ordinary correlation of ``dy`` with a
  sub-kernel of the flipped, in/out-swapped kernel, all phases the channels of one stride-1 convolution,
  interleaved back by a reshape (:func:`transposed_conv_by_phases`). (2) The kernel gradient of a 1x1
  strided convolution and of a single-input-channel one, as one matmul of the (strided) input windows with
  ``dy`` (:func:`kernel_grad_by_matmul`). Gradients agree with XLA's to within 1e-6 of their largest entry
  (tested). Replacing the other gradients does not pay: a stride-1 input gradient is already a forward
  convolution in XLA, and kernel gradients of 3x3 layers as matmuls (per tap, im2col, batched chunks) were
  slower than XLA's. The measurements behind these choices are in BUILD_NOTES.md ("Convolutions on CPU").
* ``im2col``: the ``kh*kw`` shifted (strided) windows of the padded input concatenated into one
  ``[..., kh*kw*cin]`` tensor and multiplied with the kernel reshaped to ``[kh*kw*cin, cout]`` by one
  ``dot_general``; autodiff gives matmul gradients. Slower than ``xla`` on XLA:CPU (building the patches
  and the transposed-operand kernel gradient dominate), kept as a reference and for
  backends where matmuls are the fast path.
* ``auto`` (the default): ``fastgrad`` on CPU, ``xla`` on GPU/TPU (where a ``cond`` would cost a host sync).
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from butterfly_jax.models.layers import he_normal

CONV_IMPLS = ("auto", "xla", "saved", "fastgrad", "im2col")
_DIMS = ("NHWC", "HWIO", "NHWC")


def resolve_conv(impl: str, backend: str | None = None) -> str:
  """``auto`` is ``fastgrad`` on CPU and ``xla`` elsewhere; other names are checked and returned."""
  if impl not in CONV_IMPLS:
    raise ValueError(f"model.conv: unknown convolution {impl!r}; allowed: {', '.join(CONV_IMPLS)}")
  if impl != "auto":
    return impl
  return "fastgrad" if (backend or jax.default_backend()) == "cpu" else "xla"


def _check_padding(padding):
  """``"SAME"``, ``"VALID"`` (any case) or two ``(lo, hi)`` pairs of ints >= 0, returned hashable (a custom VJP's
  static argument)."""
  if isinstance(padding, str) and padding.upper() in ("SAME", "VALID"):
    return padding.upper()
  try:
    pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
  except (TypeError, ValueError):
    pairs = ()
  if len(pairs) != 2 or min(min(p) for p in pairs) < 0:
    raise ValueError(f"model.conv: padding must be 'SAME', 'VALID' or ((lo, hi), (lo, hi)), got {padding!r}")
  return pairs


def _xla_conv(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_DIMS)


def _materialize(x):
  """``x``, through a ``lax.cond`` that XLA cannot fuse across (the branches differ only syntactically)."""
  return lax.cond(jnp.isnan(x[(0,) * x.ndim]), lambda v: -(-v), lambda v: v, x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def saved_input_conv(x, kernel, strides, padding):
  """XLA's convolution (NHWC, HWIO); its VJP reads a materialised copy of ``x`` (module docstring)."""
  return _xla_conv(x, kernel, strides, padding)


def _saved_fwd(x, kernel, strides, padding):
  return _xla_conv(x, kernel, strides, padding), (_materialize(x), kernel)


def _saved_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  _, vjp = jax.vjp(lambda x, k: _xla_conv(x, k, strides, padding), x, kernel)
  return vjp(dy)


saved_input_conv.defvjp(_saved_fwd, _saved_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def fastgrad_conv(x, kernel, strides, padding):
  """XLA's convolution (NHWC, HWIO); ``saved``'s VJP with faster gradients for some shapes (module docstring)."""
  return _xla_conv(x, kernel, strides, padding)


def _fastgrad_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  kh, kw, cin, _ = kernel.shape
  strided = tuple(strides) != (1, 1)
  if strided and (kh, kw) != (1, 1):
    dx = transposed_conv_by_phases(dy, kernel, x.shape, strides, padding)
  else:
    dx = jax.vjp(lambda x: _xla_conv(x, kernel, strides, padding), x)[1](dy)[0]
  if (strided and (kh, kw) == (1, 1)) or cin == 1:
    dkernel = kernel_grad_by_matmul(x, dy, kernel.shape, strides, padding)
  else:
    dkernel = jax.vjp(lambda k: _xla_conv(x, k, strides, padding), kernel)[1](dy)[0]
  return dx, dkernel


fastgrad_conv.defvjp(_saved_fwd, _fastgrad_bwd)


def _phase_taps(k: int, stride: int, lo: int):
  """One spatial axis of a strided convolution's input gradient, split by output phase ``p = t mod stride``:
  ``dx[stride*a + p] = sum_j dy[a - m_hi + j] * w[stride*(m_hi - j) + p + lo]`` over the taps that exist.
  Returns ({p: [(j, kernel index)]}, m_lo, m_hi)."""
  ms = {p: [m for m in range(-k - stride, k + stride) if 0 <= stride * m + p + lo < k] for p in range(stride)}
  every = [m for v in ms.values() for m in v]
  m_lo, m_hi = min(every), max(every)
  return {p: [(m_hi - m, stride * m + p + lo) for m in v] for p, v in ms.items()}, m_lo, m_hi


def transposed_conv_by_phases(dy, kernel, x_shape, strides, padding):
  """The input gradient of a strided ``_xla_conv`` as one stride-1 forward convolution and a reshape.

  XLA differentiates a strided convolution into an input-dilated one (zeros between the ``dy`` values),
  which XLA:CPU runs slowly. Instead, each output phase ``(p, q)`` (``dx[s*a + p, s*b + q]``) is an
  ordinary correlation of ``dy`` with a sub-kernel of the flipped, in/out-swapped ``kernel`` (a kernel tap
  that does not reach a phase is zero); the ``s*s`` phases are the output channels of one stride-1
  convolution, interleaved back into ``[N, H, W, cin]`` (depth-to-space), and cropped to ``x_shape``.
  """
  kh, kw, cin, cout = kernel.shape
  n, h, w, _ = x_shape
  sh, sw = strides
  (plh, _), (plw, _) = (axis_pads(h, kh, sh, padding, 0), axis_pads(w, kw, sw, padding, 1))
  oh, ow = dy.shape[1], dy.shape[2]
  taps_h, mh_lo, mh_hi = _phase_taps(kh, sh, plh)
  taps_w, mw_lo, mw_hi = _phase_taps(kw, sw, plw)
  ah, aw = -(-h // sh), -(-w // sw)  # positions per phase
  swapped = jnp.swapaxes(kernel, 2, 3)  # [kh, kw, cout, cin]
  zero = jnp.zeros((cout, cin), kernel.dtype)
  rows = []
  for jh in range(mh_hi - mh_lo + 1):
    cols = []
    for jw in range(mw_hi - mw_lo + 1):
      phases = []
      for p in range(sh):
        for q in range(sw):
          ih = [i for j, i in taps_h[p] if j == jh]
          iw = [i for j, i in taps_w[q] if j == jw]
          phases.append(swapped[ih[0], iw[0]] if ih and iw else zero)
      cols.append(jnp.stack(phases, axis=1))  # [cout, sh*sw, cin]
    rows.append(jnp.stack(cols))
  sub = jnp.stack(rows).reshape(mh_hi - mh_lo + 1, mw_hi - mw_lo + 1, cout, sh * sw * cin)
  pads = ((mh_hi, ah - oh - mh_lo), (mw_hi, aw - ow - mw_lo))
  out = lax.conv_general_dilated(dy, sub, (1, 1), pads, dimension_numbers=_DIMS)  # [n, ah, aw, sh*sw*cin]
  out = out.reshape(n, ah, aw, sh, sw, cin).transpose(0, 1, 3, 2, 4, 5).reshape(n, ah * sh, aw * sw, cin)
  return out[:, :h, :w]


def _windows(x, kh, kw, strides, padding, oh, ow):
  """The ``kh*kw`` shifted (strided) windows of the padded ``x`` ([N, H, W, C]) that meet each output pixel."""
  n, h, w, cin = x.shape
  sh, sw = strides
  (ph_lo, ph_hi), (pw_lo, pw_hi) = (axis_pads(h, kh, sh, padding, 0), axis_pads(w, kw, sw, padding, 1))
  if ph_lo or ph_hi or pw_lo or pw_hi:
    x = jnp.pad(x, ((0, 0), (ph_lo, ph_hi), (pw_lo, pw_hi), (0, 0)))
  return [lax.slice(x, (0, i, j, 0), (n, i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, cin), (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]


def kernel_grad_by_matmul(x, dy, kernel_shape, strides, padding):
  """The kernel gradient of ``_xla_conv`` as one matmul: im2col patches ``[N*OH*OW, kh*kw*cin]`` transposed
  times ``dy`` ``[N*OH*OW, cout]``. Used where the patches are small: 1x1 kernels (one strided slice) and a
  single input channel (XLA:CPU's kernel-gradient convolution is slow for both)."""
  kh, kw, cin, cout = kernel_shape
  windows = _windows(x, kh, kw, strides, padding, dy.shape[1], dy.shape[2])
  patches = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
  return lax.dot_general(patches.reshape(-1, kh * kw * cin), dy.reshape(-1, cout),
                         (((0,), (0,)), ((), ()))).reshape(kernel_shape)


def axis_pads(size: int, k: int, stride: int, padding, axis: int) -> tuple[int, int]:
  """(low, high) padding of spatial axis ``axis`` (0: height, 1: width): an explicit pair as given, ``"SAME"`` and
  ``"VALID"`` exactly as ``lax.padtype_to_pads`` (and so ``nn.Conv``)."""
  if not isinstance(padding, str):
    lo, hi = padding[axis]
    return int(lo), int(hi)
  ((lo, hi),) = lax.padtype_to_pads((size,), (k,), (stride,), padding)
  return int(lo), int(hi)


def im2col_conv(x, kernel, strides: Sequence[int] = (1, 1), padding: str = "SAME"):
  """``lax.conv_general_dilated(x, kernel, strides, padding, NHWC/HWIO/NHWC)`` as slices and one matmul.

  ``x``: ``[..., H, W, cin]`` (any leading batch axes); ``kernel``: ``[kh, kw, cin, cout]``.
  """
  padding = _check_padding(padding)
  kh, kw, cin, cout = kernel.shape
  sh, sw = strides
  h, w = x.shape[-3], x.shape[-2]
  (ph_lo, ph_hi), (pw_lo, pw_hi) = (axis_pads(h, kh, sh, padding, 0), axis_pads(w, kw, sw, padding, 1))
  lead = x.ndim - 3
  if ph_lo or ph_hi or pw_lo or pw_hi:
    x = jnp.pad(x, [(0, 0)] * lead + [(ph_lo, ph_hi), (pw_lo, pw_hi), (0, 0)])
  oh, ow = (h + ph_lo + ph_hi - kh) // sh + 1, (w + pw_lo + pw_hi - kw) // sw + 1
  windows = []
  for i in range(kh):
    for j in range(kw):
      start = (0,) * lead + (i, j, 0)
      limit = x.shape[:lead] + (i + (oh - 1) * sh + 1, j + (ow - 1) * sw + 1, cin)
      windows.append(lax.slice(x, start, limit, (1,) * lead + (sh, sw, 1)))
  patches = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
  return lax.dot_general(patches, kernel.reshape(kh * kw * cin, cout), (((patches.ndim - 1,), (0,)), ((), ())))


class Conv(nn.Module):
  """``nn.Conv`` (2-D, NHWC, no dilation or groups) computed by ``impl`` (``saved``, ``fastgrad`` or ``im2col``)."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: str = "SAME"
  use_bias: bool = True
  impl: str = "saved"
  kernel_init: Callable = nn.linear.default_kernel_init
  bias_init: Callable = nn.initializers.zeros_init()
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias)
    strides, padding = tuple(self.strides), _check_padding(self.padding)
    if self.impl == "saved":
      y = saved_input_conv(x, kernel, strides, padding)
    elif self.impl == "fastgrad":
      y = fastgrad_conv(x, kernel, strides, padding)
    elif self.impl == "im2col":
      y = im2col_conv(x, kernel, strides, padding)
    else:
      raise ValueError(f"model.conv: Conv computes 'saved', 'fastgrad' or 'im2col', got {self.impl!r}")
    return y + bias if bias is not None else y


def conv_layer(impl: str, features: int, kernel_size: Sequence[int], *, name: str, strides=(1, 1),
               padding="SAME", use_bias=True, kernel_init=nn.linear.default_kernel_init):
  """A 2-D convolution module named ``name``, computed by ``impl`` (one of :data:`CONV_IMPLS`)."""
  impl = resolve_conv(impl)
  kw = dict(strides=tuple(strides), padding=padding, use_bias=use_bias, kernel_init=kernel_init, name=name)
  if impl == "xla":
    return nn.Conv(features, tuple(kernel_size), **kw)
  return Conv(features, tuple(kernel_size), impl=impl, **kw)


RESNET_PADDINGS = ("symmetric", "same")


def resnet_padding(size: int, padding: str = "symmetric"):
  """The padding of a square ``size`` ResNet convolution: ``symmetric`` pads ``size // 2`` on every side (torch's
  ``padding=1`` for 3x3, the authors' ``resnet.py``), so a stride-2 3x3 convolution samples the pixels its 1x1
  shortcut does; ``same`` is XLA's ``SAME``, which pads (0, 1) on a stride-2 layer of even size, one pixel out of
  line with the shortcut (the definitions' version 2 and before). 1x1 convolutions pad nothing either way."""
  if padding not in RESNET_PADDINGS:
    raise ValueError(f"model.resnet_padding: unknown padding {padding!r}; allowed: {', '.join(RESNET_PADDINGS)}")
  if size == 1:
    return "VALID"
  return ((size // 2, size // 2),) * 2 if padding == "symmetric" else "SAME"


def resnet_conv(impl: str, features: int, size: int, stride: int, name: str, padding: str = "symmetric"):
  """A ResNet convolution: square ``size`` kernel, bias-free (a norm follows), He-normal, padded as
  :func:`resnet_padding` says."""
  return conv_layer(impl, features, (size, size), strides=(stride, stride), padding=resnet_padding(size, padding),
                    use_bias=False, kernel_init=he_normal, name=name)
