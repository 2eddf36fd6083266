"""Query-gallery distances, computed in query chunks so memory stays bounded.

`euclidean` is the true L2 distance, `sqeuclidean` its square (torchreid's
"euclidean"), `cosine` is 1 - cos(q, g) on L2-normalised features (torchreid's
"cosine"). Every block is a `dot_block` finished by `finish`, so
`pairwise_distance` and the streaming evaluators see identical values.

On the CPU backend the product q.g^T is numpy's BLAS sgemm, written into a
64-byte aligned buffer that XLA then reads in place: OpenBLAS runs this product
about 10% faster than XLA:CPU's dot (2048-d, 256-512 query rows), and a reused
buffer spares the page faults of a fresh 100 MB output per block. Other backends
run a jitted jnp.dot; the finishing epilogue is jitted everywhere.
"""
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from reid_jax.metrics import validate

METRICS = ("euclidean", "sqeuclidean", "cosine")
# Entries of one distance block (128 MB of float32). Its largest intermediate in the
# evaluator, 16-bit codes for half the entries, then stays within glibc's 32 MiB mmap
# threshold: its memory is reused, not faulted in afresh for every block.
BLOCK_ELEMENTS = 1 << 25
MAX_ROWS = 512


class Gallery(NamedTuple):
  """What every block needs from the gallery, from `prepare_gallery`."""
  features: Any  # [G, D] float32, L2-normalised for cosine: numpy on CPU, else on device
  sq_norms: jax.Array  # [G] squared norms of `features`
  metric: str

  @property
  def on_host(self):
    return isinstance(self.features, np.ndarray)


def check_metric(metric):
  validate.choice(metric, "metric", METRICS)


def chunk_rows(num_gallery, num_queries=None, block_elements=BLOCK_ELEMENTS):
  """Queries per block: at most MAX_ROWS and ~block_elements entries; with num_queries,
  evened out so that the last block is (nearly) full."""
  rows = int(np.clip(block_elements // max(num_gallery, 1), 8, MAX_ROWS))
  if num_queries:
    rows = -(-num_queries // -(-num_queries // rows))
  return rows


def aligned_empty(shape, dtype=np.float32):
  """An uninitialised numpy array at a 64-byte boundary, which XLA:CPU uses without a copy."""
  size = int(np.prod(shape)) * np.dtype(dtype).itemsize
  raw = np.empty(size + 64, np.uint8)
  start = -raw.ctypes.data % 64
  return raw[start:start + size].view(dtype).reshape(shape)


def _normalize(x, xp):
  # torch.nn.functional.normalize: x / max(||x||, 1e-12).
  norm = xp.sqrt(xp.sum(x * x, axis=1, keepdims=True))
  return x / xp.maximum(norm, xp.float32(1e-12))


def _on_host():
  return jax.default_backend() == "cpu"


def prepare_gallery(g, metric):
  """The gallery side of every block: features (normalised for cosine) and squared norms."""
  check_metric(metric)
  if not _on_host():
    g = jnp.asarray(g, jnp.float32)
    g = _normalize(g, jnp) if metric == "cosine" else g
    return Gallery(g, jnp.sum(g * g, axis=1), metric)
  g = np.ascontiguousarray(g, np.float32)
  g = _normalize(g, np) if metric == "cosine" else g
  return Gallery(g, jnp.asarray(np.einsum("ij,ij->i", g, g)), metric)


@functools.partial(jax.jit, static_argnames=("metric",))
def _device_dot(q, g, g_sq, metric):
  q = q.astype(jnp.float32)
  if metric == "cosine":
    q = _normalize(q, jnp)
  return jnp.dot(q, g.T, precision=jax.lax.Precision.HIGHEST), jnp.sum(q * q, axis=1), g_sq


def dot_block(q, gallery, out=None):
  """(q.g [len(q), len(g)], |q|^2, |g|^2): what `finish` turns into distances.

  Kernels that read a block once can finish it themselves, saving a pass over it.
  out: on the CPU backend, an `aligned_empty` [len(q), len(g)] float32 buffer for
  the product (streaming callers reuse one; it must outlive the returned block).
  """
  if not gallery.on_host:
    return _device_dot(jnp.asarray(q), gallery.features, gallery.sq_norms, gallery.metric)
  q = np.asarray(q, np.float32)
  if gallery.metric == "cosine":
    q = _normalize(q, np)
  if out is None:
    out = aligned_empty((len(q), len(gallery.features)))
  np.matmul(q, gallery.features.T, out=out)
  dot = jax.device_put(out, may_alias=True)
  return dot, jnp.asarray(np.einsum("ij,ij->i", q, q)), gallery.sq_norms


def finish(block, metric):
  """Distances from a `dot_block` output (metric given), or `block` itself (metric None)."""
  if metric is None:
    return block
  dot, q_sq, g_sq = block
  if metric == "cosine":
    return 1.0 - dot
  d2 = jnp.maximum(q_sq[:, None] + g_sq[None, :] - 2.0 * dot, 0.0)
  return d2 if metric == "sqeuclidean" else jnp.sqrt(d2)


def columns(block, start, stop):
  """Gallery columns [start, stop) of a `dot_block` output or of a distance block."""
  if isinstance(block, tuple):
    dot, q_sq, g_sq = block
    return dot[:, start:stop], q_sq, g_sq[start:stop]
  return block[:, start:stop]


# A jit of its own: compiled with the dot, XLA:CPU fuses the epilogue into it, 2x slower.
_finish = jax.jit(finish, static_argnames=("metric",))


def distance_block(q, gallery, out=None):
  """[len(q), len(g)] float32 distances to a `prepare_gallery` gallery."""
  return _finish(dot_block(q, gallery, out), gallery.metric)


def pairwise_distance(q, g, metric="euclidean", block_elements=BLOCK_ELEMENTS):
  """The [len(q), len(g)] float32 distance matrix as a numpy array.

  Computed in blocks of about `block_elements` entries, so memory beyond the
  returned matrix stays bounded whatever the sizes. Inputs are checked first
  (`validate`): TypeError for non-real dtypes; ValueError for q / g that are not
  2-D, are empty, differ in dimension, or have NaN / inf entries or overflowing norms.
  """
  q, g = validate.features(q, "q", "query"), validate.features(g, "g", "gallery")
  validate.same_dim(q, "q", g, "g")
  check_metric(metric)
  validate.finite_features(q, "q"), validate.finite_features(g, "g")
  gallery = prepare_gallery(g, metric)
  out = np.empty((len(q), len(gallery.features)), np.float32)
  rows = chunk_rows(out.shape[1], len(q), block_elements)
  buffer = aligned_empty((rows, out.shape[1])) if gallery.on_host else None
  for start in range(0, len(q), rows):
    idx = np.minimum(np.arange(start, start + rows), len(q) - 1)  # last block padded: one shape
    out[idx] = np.asarray(distance_block(q[idx], gallery, buffer))
  return out
