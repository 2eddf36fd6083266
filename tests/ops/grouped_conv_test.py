"""reid_jax.ops.grouped_conv against XLA's own convolution: values and gradients."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from reid_jax.ops import grouped_conv

NHWC = ("NHWC", "HWIO", "NHWC")
# (batch, height, width, C_in, C_out, groups, kernel, stride, padding): the three CPU
# formulations (shift-multiply-add at C_g <= 8, XLA's grouped conv above, 1x1 matmul),
# odd sizes, stride 2, MLFN's block shapes and ResNet's stem.
CASES = [
    (2, 9, 7, 16, 16, 4, 3, 1, 1),     # C_g = 4: shift-multiply-add
    (2, 9, 7, 32, 16, 4, 3, 2, 1),     # C_g = 8, O = 4, stride 2 on odd sizes
    (2, 8, 6, 64, 64, 2, 3, 1, 1),     # C_g = 32: XLA's grouped conv
    (2, 7, 5, 64, 128, 4, 3, 2, 1),    # C_g = 16, O = 32, stride 2
    (2, 16, 8, 128, 128, 32, 3, 1, 1), # MLFN's factor modules at width 0.5
    (2, 9, 7, 6, 10, 1, 3, 2, 1),      # dense 3x3
    (2, 11, 8, 3, 8, 1, 7, 2, 3),      # dense 7x7 stride 2 (a stem)
    (2, 9, 7, 6, 10, 1, 1, 2, 0),      # 1x1 stride 2 (a projection shortcut)
]


def ours(x, k, stride, pad, groups):
  dn = lax.conv_dimension_numbers(x.shape, k.shape, NHWC)
  return grouped_conv.conv_general_dilated(x, k, (stride, stride), ((pad, pad), (pad, pad)),
                                           dimension_numbers=dn, feature_group_count=groups)


def xla(x, k, stride, pad, groups):
  return lax.conv_general_dilated(x, k, (stride, stride), ((pad, pad), (pad, pad)),
                                  dimension_numbers=NHWC, feature_group_count=groups,
                                  precision=lax.Precision.HIGHEST)


def inputs(b, h, w, cin, cout, groups, kernel, dtype=np.float32, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((b, h, w, cin)).astype(dtype)
  k = rng.standard_normal((kernel, kernel, cin // groups, cout)).astype(dtype)
  return jnp.asarray(x), jnp.asarray(k)


def relative(a, b):
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize("b, h, w, cin, cout, groups, kernel, stride, pad", CASES)
def test_values_and_gradients_equal_feature_group_count(b, h, w, cin, cout, groups, kernel,
                                                        stride, pad):
  x, k = inputs(b, h, w, cin, cout, groups, kernel)
  cotangent = jnp.asarray(np.random.default_rng(1).standard_normal(
      xla(x, k, stride, pad, groups).shape).astype(np.float32))

  def value_and_grads(conv):
    y, vjp = jax.vjp(lambda x, k: conv(x, k, stride, pad, groups), x, k)
    return (y, *vjp(cotangent))

  ours_, theirs = jax.jit(lambda: value_and_grads(ours))(), jax.jit(lambda: value_and_grads(xla))()
  for name, a, e in zip(("output", "input gradient", "kernel gradient"), ours_, theirs):
    assert a.shape == e.shape and a.dtype == e.dtype
    assert relative(a, e) < 2e-6, (name, relative(a, e))


def test_flax_conv_keeps_parameters_and_outputs():
  import flax.linen as nn
  x, _ = inputs(2, 8, 6, 32, 32, 8, 3)
  conv = lambda **kw: nn.Conv(32, (3, 3), (2, 2), padding=((1, 1), (1, 1)),
                              feature_group_count=8, use_bias=False, **kw)
  variables = conv().init(jax.random.key(0), x)
  assert variables["params"]["kernel"].shape == (3, 3, 4, 32)
  y = conv(conv_general_dilated=grouped_conv.conv_general_dilated).apply(variables, x)
  assert relative(y, conv(precision=lax.Precision.HIGHEST).apply(variables, x)) < 2e-6


@pytest.mark.parametrize("cin, groups", [(32, 8), (64, 2)])
def test_cpu_gradient_has_no_kernel_gradient_convolution(cin, groups):
  """XLA:CPU's grouped kernel gradient (a batch_group_count convolution) is what
  this module exists to avoid; with C_g <= 8 no convolution is left at all."""
  x, k = inputs(2, 8, 6, cin, cin, groups, 3)
  loss = lambda x, k: jnp.sum(ours(x, k, 1, 1, groups) ** 2)
  hlo = jax.jit(jax.grad(loss, (0, 1))).lower(x, k).as_text()
  assert not re.search(r"batch_group_count = (?!1 )", hlo)
  assert ("stablehlo.convolution" in hlo) == (cin // groups > grouped_conv.SMALL_GROUP)


def test_other_backends_use_xla_grouped_convolution(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  x, k = inputs(2, 8, 6, 32, 32, 8, 3)
  jaxpr = str(jax.make_jaxpr(lambda x, k: ours(x, k, 1, 1, 8))(x, k))
  assert "feature_group_count=8" in jaxpr and "custom_vjp" not in jaxpr


def test_bfloat16_inputs_accumulate_in_float32():
  x, k = inputs(2, 9, 7, 32, 32, 8, 3)
  y = jax.jit(lambda x, k: ours(x, k, 1, 1, 8))(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16))
  assert y.dtype == jnp.bfloat16
  expected = xla(x.astype(jnp.bfloat16).astype(jnp.float32),
                 k.astype(jnp.bfloat16).astype(jnp.float32), 1, 1, 8)
  assert relative(y.astype(jnp.float32), expected) < 4e-3  # one bfloat16 rounding of the sum
