"""Convolution implementations (``model.kwargs.conv``): same parameters and same function as ``nn.Conv``."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import butterfly_jax as bj
from butterfly_jax.models import make_model
from butterfly_jax.models.conv import CONV_IMPLS, _xla_conv, conv_layer, fastgrad_conv, resolve_conv
from butterfly_jax.models.layers import max_pool_2x2

CASES = [  # (height, width, kernel, stride, padding, bias)
    (8, 8, 3, 1, "SAME", False),
    (9, 7, 3, 1, "SAME", True),
    (8, 8, 3, 2, "SAME", False),   # even size, stride 2: SAME pads (0, 1)
    (9, 9, 3, 2, "SAME", True),    # odd size, stride 2: SAME pads (1, 1)
    (8, 8, 1, 2, "VALID", False),  # the ResNet shortcut
    (9, 7, 1, 2, "VALID", True),
    (8, 8, 3, 2, ((1, 1), (1, 1)), False),  # torch's padding=1 (the ResNets' "symmetric")
    (9, 7, 3, 2, ((1, 1), (0, 2)), True),
]


def _conv(impl, k, s, padding, bias):
  return conv_layer(impl, 5, (k, k), strides=(s, s), padding=padding, use_bias=bias, name="c")


@pytest.mark.parametrize("h,w,k,s,padding,bias", CASES)
def test_conv_equals_nn_conv_forward_and_gradients(h, w, k, s, padding, bias):
  mods = {impl: _conv(impl, k, s, padding, bias) for impl in ("xla", "saved", "fastgrad", "im2col")}
  assert isinstance(mods["xla"], nn.Conv)
  x = jax.random.normal(jax.random.key(0), (2, h, w, 3))
  params = mods["xla"].init(jax.random.key(1), x)
  for impl in ("saved", "fastgrad", "im2col"):  # same names, shapes, initialiser and key: the same parameters
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, mods[impl].init(jax.random.key(1), x))
  if bias:  # a non-zero bias, so that its addition is tested too
    params = jax.tree_util.tree_map(lambda p: p + 0.1, params)
  cot = jax.random.normal(jax.random.key(2), mods["xla"].apply(params, x).shape)

  @jax.jit
  def outputs(params, x):  # one compilation per case: every implementation's output and gradients
    fn = lambda m: lambda p, x: jnp.sum(m.apply(p, x) * cot)
    return {impl: (m.apply(params, x), jax.grad(fn(m), argnums=(0, 1))(params, x)) for impl, m in mods.items()}

  out = outputs(params, x)
  y_ref, (gp_ref, gx_ref) = out["xla"]
  for impl in ("saved", "fastgrad"):  # XLA's own forward convolution
    np.testing.assert_array_equal(out[impl][0], y_ref, err_msg=impl)
  for impl in ("saved", "fastgrad", "im2col"):
    y, (gp, gx) = out[impl]
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5, err_msg=impl)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-5, atol=1e-5, err_msg=impl)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=impl),
                           gp, gp_ref)


GRAD_CASES = [  # (height, width, cin, kernel, stride, padding): every branch of fastgrad's backward
    (8, 8, 3, 3, 1, "SAME"), (9, 7, 3, 3, 1, "SAME"),  # XLA's gradients (as saved)
    (8, 8, 3, 3, 2, "SAME"), (9, 9, 3, 3, 2, "SAME"), (16, 16, 8, 3, 2, "SAME"),  # dx by phases
    (8, 8, 2, 3, 2, "VALID"), (10, 10, 2, 5, 2, "SAME"), (9, 9, 2, 4, 3, "SAME"),  # other windows and strides
    (8, 8, 3, 1, 2, "VALID"), (9, 7, 8, 1, 2, "VALID"),  # 1x1 stride 2 (the ResNet shortcut): dW by a matmul
    (28, 28, 1, 3, 1, "SAME"), (7, 7, 1, 1, 1, "VALID"),  # one input channel (the CNN's first layer): dW by a matmul
    (8, 8, 3, 3, 2, ((1, 1), (1, 1))), (16, 16, 8, 3, 2, ((1, 1), (1, 1))),  # torch's padding=1: dx by phases
    (9, 7, 2, 3, 2, ((2, 0), (1, 2))), (8, 8, 1, 3, 2, ((1, 1), (1, 1))),  # other pads; one channel: dW by a matmul
]


@pytest.mark.parametrize("h,w,cin,k,s,padding", GRAD_CASES)
def test_fastgrad_vjp_agrees_with_xla(h, w, cin, k, s, padding):
  """Forward bitwise XLA's; gradients within 1e-6 of the largest entry (measured: at most 3.3e-7)."""
  x = jax.random.normal(jax.random.key(0), (2, h, w, cin))
  kernel = jax.random.normal(jax.random.key(1), (k, k, cin, 5))
  y_ref, vjp_ref = jax.vjp(lambda x, k_: _xla_conv(x, k_, (s, s), padding), x, kernel)
  y, vjp = jax.vjp(lambda x, k_: fastgrad_conv(x, k_, (s, s), padding), x, kernel)
  np.testing.assert_array_equal(y, y_ref)
  dy = jax.random.normal(jax.random.key(2), y.shape)
  for got, want in zip(vjp(dy), vjp_ref(dy)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * float(jnp.max(jnp.abs(want))))


@pytest.mark.parametrize("impl,k,s,padding", [("saved", 3, 1, "SAME"), ("fastgrad", 3, 2, "SAME"),
                                              ("fastgrad", 1, 2, "VALID")])
def test_saved_conv_forward_is_bitwise_xla_and_vmaps(impl, k, s, padding):
  ref, mod = _conv("xla", k, s, padding, False), _conv(impl, k, s, padding, False)
  x = jax.random.normal(jax.random.key(0), (3, 6, 6, 3))
  p = ref.init(jax.random.key(1), x)
  np.testing.assert_array_equal(jax.jit(mod.apply)(p, x), jax.jit(ref.apply)(p, x))
  # over a members axis (the cond becomes a select): each member's gradient as on its own
  ps = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), p)
  grad = jax.grad(lambda p: jnp.sum(mod.apply(p, x) ** 2))
  batched = jax.jit(jax.vmap(grad))(ps)
  for i in range(2):
    single = jax.jit(grad)(jax.tree_util.tree_map(lambda a: a[i], ps))
    jax.tree_util.tree_map(lambda b, s: np.testing.assert_allclose(b[i], s, rtol=1e-5, atol=1e-5), batched, single)


def test_resnet20_im2col_has_the_same_parameters_and_logits():
  """(``saved`` and ``fastgrad`` run the very same forward convolution as ``xla``; ``fastgrad``, the CPU default,
  is what every other test runs.)"""
  x = jax.random.normal(jax.random.key(3), (2, 32, 32, 3))
  apply_ref, params, _ = bj.create_model("resnet20", jax.random.key(0), (32, 32, 3), 10, width=1, conv="xla")
  applies = {}
  for impl in ("im2col",):
    applies[impl], init_fn = make_model("resnet20", (32, 32, 3), 10, width=1, conv=impl)
    shapes = jax.eval_shape(init_fn, jax.random.key(0))  # the same tree of names and shapes (values: above)
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(params)
    jax.tree_util.tree_map(lambda s, p: s.shape == p.shape and s.dtype == p.dtype or pytest.fail(str(s)),
                           shapes, params)
  out = jax.jit(lambda p, x: {impl: fn(p, x) for impl, fn in {"xla": apply_ref, **applies}.items()})(params, x)
  np.testing.assert_allclose(out["im2col"][0], out["xla"][0], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out["im2col"][1]["penultimate"], out["xla"][1]["penultimate"], rtol=1e-4, atol=1e-4)


def test_cnn_gradients_agree_across_convs_and_pools():
  x = jax.random.normal(jax.random.key(3), (4, 13, 12, 1))  # odd height: pooling drops the last row
  y = jnp.arange(4) % 3
  variants = {"xla": {"conv": "xla", "pool": "xla"}, "saved": {"conv": "saved"}, "fastgrad": {"conv": "fastgrad"},
              "im2col": {"conv": "im2col"}}
  applies = {}
  for name, kw in variants.items():
    applies[name], init_fn = make_model("cnn", (13, 12, 1), 3, channels=(4, 8), dense=8, **kw)
  params = init_fn(jax.random.key(0))
  loss = lambda fn: lambda p: jnp.mean(jax.nn.log_softmax(fn(p, x)[0])[jnp.arange(4), y])
  grads = jax.jit(lambda p: {name: jax.grad(loss(fn))(p) for name, fn in applies.items()})(params)
  for name in ("saved", "fastgrad", "im2col"):
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name),
                           grads[name], grads["xla"])


def test_reshape_max_pool_equals_reduce_window():
  for shape in ((2, 8, 8, 3), (2, 9, 7, 3)):
    x = jax.random.normal(jax.random.key(0), shape)
    np.testing.assert_array_equal(max_pool_2x2(x), max_pool_2x2(x, "xla"))
    g = lambda impl: jax.grad(lambda x: jnp.sum(max_pool_2x2(x, impl) ** 2))(x)
    np.testing.assert_array_equal(g("reshape"), g("xla"))  # no ties in random data
  with pytest.raises(ValueError, match="model.pool.*allowed: reshape, xla"):
    max_pool_2x2(x, "avg")


def test_auto_and_bad_values():
  assert resolve_conv("auto", "cpu") == "fastgrad"
  assert resolve_conv("auto", "gpu") == "xla" and resolve_conv("auto", "tpu") == "xla"
  assert set(CONV_IMPLS) == {"auto", "xla", "saved", "fastgrad", "im2col"}
  with pytest.raises(ValueError, match="model.conv.*allowed: auto, xla, saved, fastgrad, im2col"):
    bj.create_model("resnet20", jax.random.key(0), (32, 32, 3), 10, conv="winograd")
  with pytest.raises(ValueError, match="model.conv: padding"):
    conv_layer("im2col", 4, (3, 3), padding="CIRCULAR", name="c").init(jax.random.key(0), jnp.ones((1, 4, 4, 1)))
  with pytest.raises(ValueError, match="model.conv: padding"):
    conv_layer("fastgrad", 4, (3, 3), padding=((1, -1), (1, 1)), name="c").init(jax.random.key(0),
                                                                                jnp.ones((1, 4, 4, 1)))
  with pytest.raises(ValueError, match="model.resnet_padding.*allowed: symmetric, same"):
    bj.create_model("resnet20", jax.random.key(0), (32, 32, 3), 10, padding="torch")
