"""Kronecker-Product Matching (KPM): match, softly warp and pool two feature maps.

Shen et al., "End-to-End Deep Kronecker-Product Matching for Person
Re-identification", CVPR 2018, Sec. 3.1. For a query map X = {x_i}, i = 1..M, and
a gallery map Y = {y_j}, j = 1..N (positions flattened, x_i, y_j in R^C):

  beta_ij = softmax_j(x_i . y_j / tau)             matching confidence maps (Eq. 5-7)
  yhat_i  = sum_j beta_ij y_j                      Y softly warped onto X (Eq. 3, 8)
  d       = sum_i alpha_i (x_i - yhat_i)           pooled difference (Eq. 4, 10)
          = X^T alpha - Y^T w,   w_j = sum_i alpha_i beta_ij

so only w = beta^T alpha (length N) is needed, never the warped map. Two
implementations give the same values and gradients:
  'einsum'  the M x N logits by einsum (float32 accumulation), a softmax, then w;
  'fused'   a Pallas kernel that never writes the M x N map to memory
            (`reid_jax.ops.kpm_fused`; the Pallas interpreter on CPU).
Inputs may be float32 or bfloat16; products accumulate and results are in float32.
"""
import numpy as np

import jax
import jax.numpy as jnp

from reid_jax.ops import kpm_fused

IMPLEMENTATIONS = ("einsum", "fused")
_DTYPES = (jnp.float32, jnp.bfloat16)
_F32 = dict(preferred_element_type=jnp.float32)


def _check_maps(x, y, x_dims: str, y_dims: str):
  """Rank 3 feature maps of an accepted dtype with the same channel count."""
  for name, v, dims in (("x", x, x_dims), ("y", y, y_dims)):
    if v.ndim != 3:
      raise ValueError(f"{name} has shape {tuple(v.shape)}, expected [{dims}].")
    if v.dtype not in _DTYPES:
      raise ValueError(f"{name} has dtype {v.dtype}, expected float32 or bfloat16.")
  if x.shape[2] != y.shape[2]:
    raise ValueError(f"y has shape {tuple(y.shape)}, expected [{y_dims}] with C = {x.shape[2]} "
                     f"(the channels of x, shape {tuple(x.shape)}).")


def _check_args(x, y, alpha, tau, impl, pairs: bool):
  x, y, alpha = jnp.asarray(x), jnp.asarray(y), jnp.asarray(alpha)
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"unknown impl {impl!r}; use one of {IMPLEMENTATIONS}.")
  _check_tau(tau)
  if pairs:
    _check_maps(x, y, "P, M, C", "P, N, C")
    if y.shape[0] != x.shape[0]:
      raise ValueError(f"y has shape {tuple(y.shape)}, expected [P, N, C] with P = {x.shape[0]} "
                       f"pairs like x, shape {tuple(x.shape)}.")
  else:
    _check_maps(x, y, "Q, M, C", "G, N, C")
  if alpha.shape != x.shape[:2]:
    raise ValueError(f"alpha has shape {tuple(alpha.shape)}, expected "
                     f"[{'P' if pairs else 'Q'}, M] = {list(x.shape[:2])}.")
  return x, y, alpha


def _check_tau(tau):
  if not isinstance(tau, (int, float)) or not tau > 0:
    raise ValueError(f"tau must be a positive number (a static temperature), got {tau!r}.")


def matching(x: jax.Array, y: jax.Array, *, tau: float = 0.05) -> jax.Array:
  """The matching confidence maps beta (Eq. 5-7): x [..., M, C], y [..., N, C] -> [..., M, N].

  beta[..., i, j] = softmax_j(x_i . y_j / tau), float32; rows sum to 1. The
  leading dimensions broadcast (e.g. x[:, None] against y[None] for every pair).
  """
  x, y = jnp.asarray(x), jnp.asarray(y)
  _check_tau(tau)
  for name, v, dims in (("x", x, "M, C"), ("y", y, "N, C")):
    if v.ndim < 2:
      raise ValueError(f"{name} has shape {tuple(v.shape)}, expected [..., {dims}].")
  if x.shape[-1] != y.shape[-1]:
    raise ValueError(f"y has shape {tuple(y.shape)}, expected [..., N, C] with C = {x.shape[-1]} "
                     f"(the channels of x, shape {tuple(x.shape)}).")
  try:
    np.broadcast_shapes(x.shape[:-2], y.shape[:-2])
  except ValueError:
    raise ValueError(f"the leading dimensions of x {tuple(x.shape)} and y {tuple(y.shape)} "
                     "do not broadcast.") from None
  return jax.nn.softmax(jnp.einsum("...mc,...nc->...mn", x, y, **_F32) / tau, axis=-1)


def warp(x: jax.Array, y: jax.Array, *, tau: float = 0.05) -> jax.Array:
  """Y softly warped onto X (Eq. 3, 8): yhat_i = sum_j beta_ij y_j, [..., M, C] float32.

  x - warp(x, y) is the map of differences Delta of Eq. 8.
  """
  y = jnp.asarray(y)
  return jnp.einsum("...mn,...nc->...mc", matching(x, y, tau=tau), y.astype(jnp.float32))


def _einsum_weights(x, y, alpha, tau, cross):
  """w = beta^T alpha (Eq. 10) through the full matching maps."""
  if cross:
    beta = jax.nn.softmax(jnp.einsum("qmc,gnc->qgmn", x, y, **_F32) / tau, axis=-1)
    return jnp.einsum("qm,qgmn->qgn", alpha.astype(jnp.float32), beta)
  beta = jax.nn.softmax(jnp.einsum("pmc,pnc->pmn", x, y, **_F32) / tau, axis=-1)
  return jnp.einsum("pm,pmn->pn", alpha.astype(jnp.float32), beta)


def _weights(x, y, alpha, tau, impl, cross):
  if impl == "fused":
    return kpm_fused.match_weights(x, y, alpha, tau=tau, cross=cross)
  return _einsum_weights(x, y, alpha, tau, cross)


def match_pool(x: jax.Array, y: jax.Array, alpha: jax.Array, *, tau: float = 0.05,
               impl: str = "einsum") -> jax.Array:
  """The pooled difference of every (query, gallery) pair (Eq. 4, 10): "one X against many Y".

  x [Q, M, C] query maps, y [G, N, C] gallery maps, alpha [Q, M] the query
  position weights -> d [Q, G, C] float32 with
  d[q, g] = sum_i alpha[q, i] (x[q, i] - sum_j beta_ij y[g, j]), beta of Eq. 5
  (`matching(x[q], y[g])`). impl: one of IMPLEMENTATIONS.
  """
  x, y, alpha = _check_args(x, y, alpha, tau, impl, pairs=False)
  w = _weights(x, y, alpha, tau, impl, cross=True)
  pooled_x = jnp.einsum("qm,qmc->qc", alpha.astype(jnp.float32), x.astype(jnp.float32))
  return pooled_x[:, None] - jnp.einsum("qgn,gnc->qgc", w, y.astype(jnp.float32))


def match_pool_pairs(x: jax.Array, y: jax.Array, alpha: jax.Array, *, tau: float = 0.05,
                     impl: str = "einsum") -> jax.Array:
  """The pooled difference (Eq. 4, 10) of P given pairs (x[p], y[p]), e.g. training pairs.

  x [P, M, C], y [P, N, C], alpha [P, M] -> d [P, C] float32; d[p] is
  match_pool(x[p:p+1], y[p:p+1], alpha[p:p+1])[0, 0].
  """
  x, y, alpha = _check_args(x, y, alpha, tau, impl, pairs=True)
  w = _weights(x, y, alpha, tau, impl, cross=False)
  pooled_x = jnp.einsum("pm,pmc->pc", alpha.astype(jnp.float32), x.astype(jnp.float32))
  return pooled_x - jnp.einsum("pn,pnc->pc", w, y.astype(jnp.float32))
