"""Query-gallery distances, computed in query chunks so memory stays bounded.

`euclidean` is the true L2 distance, `sqeuclidean` its square (torchreid's
"euclidean"), `cosine` is 1 - cos(q, g) on L2-normalised features (torchreid's
"cosine"). Every block is a `dot_block` of one shape finished by `finish`, so
`pairwise_distance` and the streaming evaluators see identical values.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ("euclidean", "sqeuclidean", "cosine")
# Entries of one distance block (32 MB of float32): 256 query rows up to a 32k gallery.
BLOCK_ELEMENTS = 1 << 23


def check_metric(metric):
  if metric not in METRICS:
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def chunk_rows(num_gallery, block_elements=BLOCK_ELEMENTS):
  """Queries per block: a multiple of 8 between 8 and 256 with ~block_elements entries."""
  return int(np.clip(block_elements // max(num_gallery, 1) // 8 * 8, 8, 256))


def prepare_gallery(g, metric):
  """What every block needs from the gallery: (features, squared norms), on device."""
  check_metric(metric)
  g = jnp.asarray(g, jnp.float32)
  if metric == "cosine":
    g = _normalize(g)
  return g, jnp.sum(g * g, axis=1)


def _normalize(x):
  # torch.nn.functional.normalize: x / max(||x||, 1e-12).
  return x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("metric",))
def dot_block(q, g, g_sq, metric):
  """(q.g [len(q), len(g)], |q|^2, |g|^2): what `finish` turns into distances.

  Kernels that read a block once can finish it themselves, saving a pass over it.
  """
  q = q.astype(jnp.float32)
  if metric == "cosine":
    q = _normalize(q)
  return jnp.dot(q, g.T, precision=jax.lax.Precision.HIGHEST), jnp.sum(q * q, axis=1), g_sq


def finish(block, metric):
  """Distances from a `dot_block` output (metric given), or `block` itself (metric None)."""
  if metric is None:
    return block
  dot, q_sq, g_sq = block
  if metric == "cosine":
    return 1.0 - dot
  d2 = jnp.maximum(q_sq[:, None] + g_sq[None, :] - 2.0 * dot, 0.0)
  return d2 if metric == "sqeuclidean" else jnp.sqrt(d2)


def distance_block(q, g, g_sq, metric):
  """[len(q), len(g)] float32 distances; `g, g_sq` from `prepare_gallery`."""
  # Two jits: compiled together, XLA CPU fuses the epilogue into the matmul, 2x slower.
  return _finish(dot_block(q, g, g_sq, metric), metric)


_finish = jax.jit(finish, static_argnames=("metric",))


def pairwise_distance(q, g, metric="euclidean", block_elements=BLOCK_ELEMENTS):
  """The [len(q), len(g)] float32 distance matrix as a numpy array.

  Computed in blocks of about `block_elements` entries, so device memory stays
  bounded whatever the sizes; only the returned matrix is full size.
  """
  q = np.asarray(q, np.float32)
  gallery = prepare_gallery(g, metric)
  out = np.empty((len(q), gallery[0].shape[0]), np.float32)
  rows = chunk_rows(out.shape[1], block_elements)
  for start in range(0, len(q), rows):
    idx = np.minimum(np.arange(start, start + rows), len(q) - 1)  # last block padded: one shape
    out[idx] = np.asarray(distance_block(jnp.asarray(q[idx]), *gallery, metric))
  return out
