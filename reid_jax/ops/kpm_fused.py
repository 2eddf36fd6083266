"""The KPM pooling weights as a Pallas kernel (Shen et al., CVPR 2018, Eq. 5-10).

`match_weights` gives w_j = sum_i alpha_i beta_ij with beta_ij = softmax_j(x_i . y_j / tau)
(Eq. 5/7) for every pair, so that the pooled difference of Eq. 4/10 is
d = X^T alpha - Y^T w (`reid_jax.ops.kpm`). The M x N matching map never reaches
HBM: it lives one [bm, bn] tile at a time in registers (GPU) or VMEM (TPU).

Kernel: grid (pair, block of bm query positions); a pair is (query map, gallery
map), all Q x G of them or P given ones. Logit tiles l = x_I y_J^T / tau
[bm, bn] are accumulated in float32 over channel tiles of bc (bf16 or float32
operands). With one gallery tile (bn >= N) the tile is kept and the softmax
done in one pass. Otherwise one loop makes two passes over the gallery tiles:
pass 1 an online row max m_i and sum l_i, pass 2 recomputes each tile and
writes w_J = sum_i (alpha_i / l_i) exp(l_iJ - m_i). Each program writes its
partial w (length N); the partials of the query blocks are summed outside.
Sizes are padded to whole tiles: padded gallery positions get logit -inf,
padded query positions alpha 0, padded channels are zeros.

Lowering is chosen per platform with `lax.platform_dependent`: Triton on GPU
(power-of-two tiles >= 16, as tl.dot needs; bm = 64, bn = 128, bc = 128 bf16 /
64 float32: one pipeline stage of x and y tiles is 48 KiB of shared memory, two
stages 96 KiB), Mosaic on TPU (whole channel rows in VMEM, blocks aligned to
(16, 128) or whole) and the Pallas interpreter on CPU, with the GPU tiling.

Backward (`jax.custom_vjp`, gradients for x, y and alpha, not tau): plain JAX,
a `lax.scan` over blocks of 64 query positions (bm if blocks are given) that
recomputes the block's matching map with einsum, holding [..., 64, N] at a time:
  r_i = sum_j beta_ij gw_j,  dalpha_i = r_i,
  dl_ij = alpha_i beta_ij (gw_j - r_i) / tau,  dX = dl Y,  dY = dl^T X.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

_NT = (((1,), (1,)), ((), ()))  # dot_general numbers of a @ b.T


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def default_blocks(platform: str, m: int, n: int, c: int, itemsize: int) -> tuple[int, int, int]:
  """(bm, bn, bc): query positions, gallery positions and channels per tile."""
  if platform == "tpu":
    bm = min(128, _round_up(m, 16))
    bn = _round_up(n, 16) if n <= 512 else 512
    bc = _round_up(c, 128) if c <= 2048 else 512
    return bm, bn, bc
  p2 = lambda v, lo, hi: min(hi, max(lo, pl.next_power_of_2(v)))
  return p2(m, 16, 64), p2(n, 16, 128), p2(c, 16, 256 // itemsize)


def _at(i, size):
  """Slice number i of the given size; i is a Python int or a loop index."""
  if isinstance(i, int):
    return pl.ds(i * size, size)
  return pl.ds(pl.multiple_of(i * size, size), size)


def _fold(count, body, init):
  """lax.fori_loop, or a single static step (static slices) when count == 1."""
  return body(0, init) if count == 1 else lax.fori_loop(0, count, body, init)


def _kernel(x_ref, y_ref, a_ref, w_ref, *, n, scale, bn, bc):
  # x_ref [bm, Cp], y_ref [Np, Cp], a_ref [bm, 1] float32, w_ref [1, Np] float32.
  bm, cp = x_ref.shape
  num_j, num_c = y_ref.shape[0] // bn, cp // bc

  def logits(j):
    def add(c, acc):
      xc, yc = x_ref[:, _at(c, bc)], y_ref[_at(j, bn), _at(c, bc)]
      return acc + lax.dot_general(xc, yc, _NT, preferred_element_type=jnp.float32)
    s = _fold(num_c, add, jnp.zeros((bm, bn), jnp.float32)) * scale
    col = lax.broadcasted_iota(jnp.int32, (bm, bn), 1) + j * bn
    return jnp.where(col < n, s, -jnp.inf)

  if num_j == 1:
    p = logits(0)
    p = jnp.exp(p - p.max(axis=1, keepdims=True))
    coef = a_ref[...] / p.sum(axis=1, keepdims=True)
    w_ref[...] = jnp.sum(coef * p, axis=0, keepdims=True)
    return

  # Two passes over the gallery tiles in one loop, so that both compute each tile's
  # logits with the same code (bitwise equal: the normaliser of pass 1 fits pass 2).
  def step(k, carry):
    j = lax.rem(k, num_j)  # not %: jnp's floor remainder does not lower to Triton
    s = logits(j)

    def stats(ml):  # pass 1: running row max and sum of exponentials
      m, l = ml
      m_new = jnp.maximum(m, s.max(axis=1, keepdims=True))
      return m_new, l * jnp.exp(m - m_new) + jnp.exp(s - m_new).sum(axis=1, keepdims=True)

    def emit(ml):  # pass 2: w_J = sum_i alpha_i beta_iJ
      m, l = ml
      w_ref[:, _at(j, bn)] = jnp.sum(a_ref[...] / l * jnp.exp(s - m), axis=0, keepdims=True)
      return ml

    return lax.cond(k < num_j, stats, emit, carry)

  lax.fori_loop(0, 2 * num_j, step, (jnp.full((bm, 1), -jnp.inf, jnp.float32),
                                      jnp.zeros((bm, 1), jnp.float32)))


def _compiler_params(platform: str):
  if platform == "gpu":
    return pltriton.CompilerParams(num_warps=4, num_stages=2)
  if platform == "tpu":
    return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel"))
  return None


def _weights_call(x, y, alpha, *, tau, cross, blocks, platform):
  """w [Q, G, N] (cross) or [P, N] by the kernel, lowered for one platform."""
  dtype = jnp.result_type(x.dtype, y.dtype)
  (q, m, c), (g, n, _) = x.shape, y.shape
  bm, bn, bc = blocks or default_blocks(platform, m, n, c, jnp.dtype(dtype).itemsize)
  mp, np_, cp = _round_up(m, bm), _round_up(n, bn), _round_up(c, bc)
  x = jnp.pad(x.astype(dtype), ((0, 0), (0, mp - m), (0, cp - c)))
  y = jnp.pad(y.astype(dtype), ((0, 0), (0, np_ - n), (0, cp - c)))
  a = jnp.pad(alpha.astype(jnp.float32), ((0, 0), (0, mp - m)))[..., None]
  num_pairs, num_m = q * g if cross else q, mp // bm
  # One flat pair axis: CUDA allows 2^31 - 1 programs on grid axis 0, 65,535 on the others.
  # lax.div / lax.rem, not // and %: jnp's floor division goes through `sign`, whose Mosaic
  # lowering needs the local TPU's generation (none when exporting from another machine).
  query = (lambda k: lax.div(k, g)) if cross else (lambda k: k)
  gallery = (lambda k: lax.rem(k, g)) if cross else (lambda k: k)
  partial_w = pl.pallas_call(
      functools.partial(_kernel, n=n, scale=1.0 / tau, bn=bn, bc=bc),
      out_shape=jax.ShapeDtypeStruct((num_pairs, num_m, 1, np_), jnp.float32),
      grid=(num_pairs, num_m),
      in_specs=[pl.BlockSpec((None, bm, cp), lambda k, i: (query(k), i, 0)),
                pl.BlockSpec((None, np_, cp), lambda k, i: (gallery(k), 0, 0)),
                pl.BlockSpec((None, bm, 1), lambda k, i: (query(k), i, 0))],
      out_specs=pl.BlockSpec((None, None, 1, np_), lambda k, i: (k, i, 0, 0)),
      interpret=platform == "cpu",
      compiler_params=_compiler_params(platform),
      name="kpm_match_weights",
  )(x, y, a)
  w = partial_w.sum(axis=(1, 2))[:, :n]
  return w.reshape(q, g, n) if cross else w


def _forward(x, y, alpha, tau, cross, blocks):
  branch = lambda platform: functools.partial(
      _weights_call, tau=tau, cross=cross, blocks=blocks, platform=platform)
  return lax.platform_dependent(x, y, alpha, cpu=branch("cpu"), cuda=branch("gpu"),
                                rocm=branch("gpu"), tpu=branch("tpu"))


def _cross_grads(x, y, alpha, gw, scale, rows):
  """(dx, dy, dalpha) of w [Q, G, N] given its cotangent gw, rows query positions at a time."""
  q, m, c = x.shape
  rows = min(rows, m)
  mp = _round_up(m, rows)
  xb = jnp.pad(x, ((0, 0), (0, mp - m), (0, 0))).reshape(q, mp // rows, rows, c).swapaxes(0, 1)
  ab = jnp.pad(alpha.astype(jnp.float32), ((0, 0), (0, mp - m))).reshape(q, -1, rows).swapaxes(0, 1)
  f32 = dict(preferred_element_type=jnp.float32)

  def step(dy, block):
    xi, ai = block
    beta = jax.nn.softmax(jnp.einsum("qic,gnc->qgin", xi, y, **f32) * scale, axis=-1)
    r = jnp.einsum("qgin,qgn->qgi", beta, gw)
    dl = ai[:, None, :, None] * beta * (gw[:, :, None, :] - r[..., None]) * scale
    dx = jnp.einsum("qgin,gnc->qic", dl, y, **f32)
    return dy + jnp.einsum("qgin,qic->gnc", dl, xi, **f32), (dx, r.sum(axis=1))

  dy, (dx, da) = lax.scan(step, jnp.zeros(y.shape, jnp.float32), (xb, ab))
  dx = dx.swapaxes(0, 1).reshape(q, mp, c)[:, :m]
  da = da.swapaxes(0, 1).reshape(q, mp)[:, :m]
  return dx.astype(x.dtype), dy.astype(y.dtype), da.astype(alpha.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _weights(x, y, alpha, tau, cross, blocks):
  return _forward(x, y, alpha, tau, cross, blocks)


def _weights_fwd(x, y, alpha, tau, cross, blocks):
  return _forward(x, y, alpha, tau, cross, blocks), (x, y, alpha)


def _weights_bwd(tau, cross, blocks, residuals, gw):
  x, y, alpha = residuals
  rows = blocks[0] if blocks else 64
  if cross:
    return _cross_grads(x, y, alpha, gw, 1.0 / tau, rows)
  one = lambda xp, yp, ap, gp: [d[0] for d in _cross_grads(
      xp[None], yp[None], ap[None], gp[None, None], 1.0 / tau, rows)]
  return tuple(jax.vmap(one)(x, y, alpha, gw))


_weights.defvjp(_weights_fwd, _weights_bwd)


def match_weights(x: jax.Array, y: jax.Array, alpha: jax.Array, *, tau: float, cross: bool,
                  blocks: tuple[int, int, int] | None = None) -> jax.Array:
  """w = beta^T alpha per pair (Eq. 5/7 and 10), float32, by the fused kernel.

  cross: x [Q, M, C], y [G, N, C], alpha [Q, M] -> w [Q, G, N] (every pair);
  otherwise x [P, M, C], y [P, N, C], alpha [P, M] -> w [P, N] (pair p = x[p], y[p]).
  Shapes are not validated here (`reid_jax.ops.kpm` does). blocks overrides the
  tiles (bm, bn, bc) of `default_blocks` on every platform, e.g. for tests of
  the multi-tile paths on small inputs.
  """
  return _weights(x, y, alpha, float(tau), bool(cross), None if blocks is None else tuple(blocks))
