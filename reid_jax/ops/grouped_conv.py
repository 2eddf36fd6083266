"""2-D convolution (grouped or dense) in the formulation each backend runs fastest.

`conv_general_dilated` is a drop-in for `lax.conv_general_dilated`, to be given to
Flax's `nn.Conv(..., conv_general_dilated=...)`, so parameters keep `nn.Conv`'s layout:
kernel [KH, KW, C_in / G, C_out], output channel g * O + o reading input channels
g * C_g .. (g + 1) * C_g (`feature_group_count=G`). The formulation is chosen at trace
time from `jax.default_backend()`:

- not CPU (cuDNN on GPU, the TPU compiler): XLA's own convolution, grouped or not,
  differentiated by XLA;
- CPU (XLA:CPU; benchmarks/train_bench.py measures the whole step): XLA:CPU
  computes a kernel gradient as a convolution whose window is the whole image,
  behind transposes of both operands: about 4x slower than per-tap matmuls when
  dense, 100-300x when grouped (a `batch_group_count` convolution); and its grouped
  convolution is slow below 16 channels per group. So:
  * a 1x1 convolution is a matmul over the channels (of the strided input), and
    XLA differentiates the matmul;
  * any other one is a `custom_vjp` of three parts:
    - output: with C_g <= `SMALL_GROUP` channels per group (and G > 1),
      shift-multiply-add: the sum over the KH x KW taps and the C_g input channels
      of a shifted input channel times a kernel row, one elementwise fusion over
      [B, H, W, C_out] that never materialises patches; otherwise XLA's convolution;
    - input gradient: the transposed convolution, i.e. the same convolution (by the
      same rule) of the stride-dilated output gradient with the spatially flipped
      kernel, in and out channels of each group swapped;
    - kernel gradient: per tap, a matmul of the shifted input [N, C_g] and the
      output gradient [N, O] contracting the N = B H W positions, batched over the
      groups (both moved group-major once).
  Products accumulate in float32 whatever the input dtype.

Other uses (lhs/rhs dilation, other layouts, not 2-D) go to `lax.conv_general_dilated`.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax

# Channels per group up to which the CPU path uses shift-multiply-add rather than
# XLA's grouped convolution (measured on XLA:CPU: 4 and 8 faster, 16 and 32 slower).
SMALL_GROUP = 8
_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None):
  """`lax.conv_general_dilated`; NHWC/HWIO 2-D convolutions go to `conv2d`."""
  plain = (lhs.ndim != 4
           or any(d != 1 for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
           or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
           != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
  if plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, precision=precision)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  return conv2d(lhs, rhs, tuple(window_strides), tuple(map(tuple, padding)), feature_group_count)


def conv2d(x, kernel, strides, padding, groups=1):
  """x [B, H, W, C_in] convolved with kernel [KH, KW, C_in / groups, C_out]:
  `lax.conv_general_dilated(..., feature_group_count=groups)` in NHWC/HWIO."""
  if jax.default_backend() != "cpu":
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC,
                                    feature_group_count=groups)
  if kernel.shape[:2] == (1, 1) and groups == 1 and not any(map(any, padding)):
    x = x[:, ::strides[0], ::strides[1]]
    return jnp.dot(x, kernel[0, 0], preferred_element_type=jnp.float32).astype(x.dtype)
  return _cpu_conv(x, kernel, strides, padding, groups)


def _taps(x, kernel_size, strides, padding, out_size):
  """(dy, dx, x[..., dy + s_h i, dx + s_w j, :]) for every tap of the kernel, x
  [..., H, W, C] padded first: [..., Ho, Wo, C]."""
  pads = [(0, 0, 0)] * (x.ndim - 3) + [(lo, hi, 0) for lo, hi in padding] + [(0, 0, 0)]
  x = lax.pad(x, jnp.zeros((), x.dtype), pads)
  (sh, sw), (ho, wo) = strides, out_size
  for dy in range(kernel_size[0]):
    for dx in range(kernel_size[1]):
      yield dy, dx, x[..., dy:dy + sh * (ho - 1) + 1:sh, dx:dx + sw * (wo - 1) + 1:sw, :]


def _out_size(in_size, kernel_size, strides, padding):
  return tuple((n + lo + hi - k) // s + 1
               for n, k, s, (lo, hi) in zip(in_size, kernel_size, strides, padding))


def _shift_multiply_add(x, kernel, strides, padding, groups):
  """sum over taps t and input channels i of shift_t(x)[..., g, i] * kernel[t, i, g, :].

  A loop over the kernel rows materialises the sum: XLA:CPU drops optimisation
  barriers before fusion, and an unrolled sum would be copied into each of its
  consumers (BatchNorm's statistics, its normalisation, the backward pass)."""
  kh, kw, cg, cout = kernel.shape
  b = x.shape[0]
  ho, wo = _out_size(x.shape[1:3], (kh, kw), strides, padding)
  (sh, sw), f32 = strides, jnp.float32
  pads = [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in padding] + [(0, 0, 0)]
  x = lax.pad(x.astype(f32), jnp.zeros((), f32), pads)
  k = kernel.astype(f32).reshape(kh, kw, cg, groups, cout // groups)

  def kernel_row(dy, out):
    rows = lax.dynamic_slice_in_dim(x, dy, sh * (ho - 1) + 1, axis=1)[:, ::sh]
    k_row = lax.dynamic_index_in_dim(k, dy, keepdims=False)
    for dx in range(kw):
      xs = rows[:, :, dx:dx + sw * (wo - 1) + 1:sw].reshape(b, ho, wo, groups, cg)
      for i in range(cg):
        out = out + xs[..., i, None] * k_row[dx, i]
    return out

  out = lax.fori_loop(0, kh, kernel_row, jnp.zeros((b, ho, wo, groups, cout // groups), f32))
  return out.reshape(b, ho, wo, cout)


def _forward(x, kernel, strides, padding, groups):
  """The float32 output, by the formulation XLA:CPU runs fastest for this size."""
  if groups > 1 and kernel.shape[2] <= SMALL_GROUP:
    return _shift_multiply_add(x, kernel, strides, padding, groups)
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_NHWC,
                                  feature_group_count=groups, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _cpu_conv(x, kernel, strides, padding, groups):
  return _forward(x, kernel, strides, padding, groups).astype(x.dtype)


def _cpu_fwd(x, kernel, strides, padding, groups):
  return _cpu_conv(x, kernel, strides, padding, groups), (x, kernel)


def _cpu_bwd(strides, padding, groups, residuals, g):
  x, kernel = residuals
  kh, kw, cg, cout = kernel.shape
  o = cout // groups
  ho, wo = g.shape[1:3]
  # Input gradient: the transposed convolution. Dilate g by the stride, pad so
  # that a stride-1 convolution with the flipped kernel returns x's size.
  dilated_pad = []
  for n, k, s, (lo, _), m in zip(x.shape[1:3], (kh, kw), strides, padding, (ho, wo)):
    before = k - 1 - lo
    dilated_pad.append((before, n + k - 1 - ((m - 1) * s + 1) - before, s - 1))
  gd = lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), *dilated_pad, (0, 0, 0)))
  flipped = kernel[::-1, ::-1].reshape(kh, kw, cg, groups, o).transpose(0, 1, 4, 3, 2)
  gx = _forward(gd, flipped.reshape(kh, kw, o, groups * cg), (1, 1), ((0, 0), (0, 0)), groups)
  # Kernel gradient: per tap, the positions contracted between shifted x and g,
  # batched over the groups; both are moved group-major once ([G, B, H, W, C_g]),
  # which XLA:CPU's batched matmul needs and would otherwise redo for every tap.
  group_major = lambda v, c: lax.optimization_barrier(
      v.reshape(*v.shape[:3], groups, c).transpose(3, 0, 1, 2, 4))
  gg = group_major(g, o).reshape(groups, -1, o)
  gk = [lax.dot_general(xs.reshape(groups, -1, cg), gg, (((1,), (1,)), ((0,), (0,))),
                        preferred_element_type=jnp.float32)  # [G, C_g, O]
        for _, _, xs in _taps(group_major(x, cg), (kh, kw), strides, padding, (ho, wo))]
  gk = jnp.stack(gk).transpose(0, 2, 1, 3).reshape(kh, kw, cg, cout)
  return gx.astype(x.dtype), gk.astype(kernel.dtype)


_cpu_conv.defvjp(_cpu_fwd, _cpu_bwd)
