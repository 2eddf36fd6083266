"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li; CVPR 2017), in JAX.

Follows torchreid's `re_ranking` (the authors' code) step by step, with stable
ties: original distance = squared input distance, row i scaled by the max of
column i; the k-reciprocal set R(i, k1) grown by each member's R(c, round(k1/2))
that shares more than 2/3 of its items with it (Eq. 6); V(i) = Gaussian-kernel
weights on that set (Eq. 7), averaged over the k2 nearest rows (query expansion,
Eq. 11); Jaccard distance 1 - m / (2 - m) with m = sum_e min(V(i, e), V(g, e))
(Eq. 10); final = (1 - lambda) * Jaccard + lambda * original (Eq. 12).

Nothing N x N is stored (N = queries + gallery): distances are recomputed in row
blocks (one pass over all N rows, one over the query rows), V is sparse (at most
(k1 + 1)(round(k1/2) + 2) entries per row before expansion), and the Jaccard sums
run over an inverted index of the gallery rows. Memory is O(N k1^2 k2) plus a
block, so galleries far beyond the dense N x N limit work; time is dominated by
the N x (N + num_query) x d distance flops.
"""
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from reid_jax.metrics import distance, validate

BLOCK_ELEMENTS = 1 << 22  # distances per block of rows
ROWS_PER_STEP = 256  # rows per step of the sparse stages
PAIRS_PER_CALL = 1 << 22  # (query entry, gallery entry) pairs per Jaccard call
SEGMENT = 64  # gallery entries per segment of the inverted index


def _map_rows(fn, n):
  """fn(rows [ROWS_PER_STEP]) over all n rows (a lax.map inside a jit), stacked."""
  steps = -(-n // ROWS_PER_STEP)
  rows = jnp.minimum(jnp.arange(steps * ROWS_PER_STEP), n - 1).reshape(steps, ROWS_PER_STEP)
  out = lax.map(fn, rows)
  return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[:n], out)


@functools.partial(jax.jit, static_argnames=("k",))
def _scale_and_neighbours(dist, k):
  """Column max of the squared distances (the normaliser) and the k nearest items
  (ties in index order) of a block of columns."""
  d2 = jnp.square(dist)
  scale = jnp.max(d2, axis=1)
  return scale, lax.top_k(-(d2 / scale[:, None]), k)[1]


@functools.partial(jax.jit, static_argnames=("half",))
def _expansion_sets(ranks, half, min_overlap):
  """Sorted k-reciprocal expansion set of every row (torchreid's k_reciprocal_expansion_index),
  padded with N: R(i, k1) plus each member's R(c, half - 1) overlapping it by > 2/3."""
  n = len(ranks)
  recip = jnp.any(ranks[ranks] == jnp.arange(n)[:, None, None], axis=2)
  half_ranks = ranks[:, :half]
  half_recip = jnp.any(half_ranks[half_ranks] == jnp.arange(n)[:, None, None], axis=2)

  def grow(rows):
    fwd, fmask = ranks[rows], recip[rows]  # R(i, k1): [B, K]
    cand, cmask = half_ranks[fwd], half_recip[fwd]  # each member's R(c, k1/2): [B, K, H]
    member = jnp.any((cand[..., None] == fwd[:, None, None, :]) & fmask[:, None, None, :], axis=3)
    overlap = jnp.sum(member & cmask, axis=2)
    accept = fmask & (overlap >= min_overlap[jnp.sum(cmask, axis=2)])
    grown = jnp.where(accept[..., None] & cmask, cand, n).reshape(len(rows), -1)
    e = jnp.sort(jnp.concatenate([jnp.where(fmask, fwd, n), grown], axis=1), axis=1)
    e = jnp.where(jnp.pad(e[:, 1:] == e[:, :-1], ((0, 0), (1, 0))), n, e)  # duplicates -> N
    return jnp.sort(e, axis=1)

  return _map_rows(grow, n)


def _distances_to(source, sets):
  """Squared original distance from every row i to its set members: original[e, i]."""
  if isinstance(source, _Features):
    return _pair_distances(source.prepared.features, source.prepared.sq_norms, sets, source.metric)
  return jnp.square(source.pairs(np.arange(len(sets)), sets))


@functools.partial(jax.jit, static_argnames=("metric",))
def _pair_distances(x, x_sq, sets, metric):
  """Squared distances (the formulas of `distance.distance_block`) from each row of x to
  its [S] set members; x, x_sq from `distance.prepare_gallery`."""
  def block(rows):
    cols = jnp.minimum(sets[rows], len(x) - 1)
    dot = jnp.einsum("bd,bsd->bs", x[rows], x[cols], precision=lax.Precision.HIGHEST)
    if metric == "cosine":
      return jnp.square(1.0 - dot)
    d2 = jnp.maximum(x_sq[rows][:, None] + x_sq[cols] - 2.0 * dot, 0.0)
    return jnp.square(d2 if metric == "sqeuclidean" else jnp.sqrt(d2))

  return _map_rows(block, len(x))


@functools.partial(jax.jit, static_argnames=("k2",))
def _encode(d2, scale, sets, ranks, k2):
  """V (Eq. 7) and its local query expansion over the k2 nearest rows (Eq. 11), sparse:
  sorted column indices (padding N) and values."""
  n = len(ranks)
  w = jnp.where(sets < n, jnp.exp(-(d2 / scale[:, None])), 0.0)
  v_val = w / jnp.sum(w, axis=1, keepdims=True)
  if k2 == 1:
    return sets, v_val

  def expand(rows):
    near = ranks[rows, :k2]
    idx, val = sets[near].reshape(len(rows), -1), v_val[near].reshape(len(rows), -1)
    idx, val = lax.sort((idx, val), dimension=1, is_stable=True, num_keys=1)
    start = jnp.pad(idx[:, 1:] != idx[:, :-1], ((0, 0), (1, 0)), constant_values=True)
    seg = jnp.cumsum(start, axis=1) - 1  # [B, width]: the unique column each entry adds to
    width = idx.shape[1]
    row = jnp.arange(len(rows))[:, None]
    total = jnp.zeros((len(rows), width + 1), val.dtype).at[row, seg].add(val)
    first = jnp.full((len(rows), width + 1), n, idx.dtype).at[row, jnp.where(start, seg, width)].set(idx)
    return first[:, :width], jnp.where(first[:, :width] < n, total[:, :width] / k2, 0.0)

  return _map_rows(expand, n)


@functools.partial(jax.jit, static_argnames=("n",))
def _inverted_index(idx, val, n):
  """For each column e < n of the sparse rows (idx, val) [R, W]: its (row, value) pairs,
  in segments of SEGMENT. Returns nseg [n + 1] (0 for column n), first_seg [n + 1] and the
  rows (padding: R) and values of the segments, [S, SEGMENT] with S >= the segments used."""
  flat = idx.ravel()
  order = jnp.argsort(flat, stable=True)
  e = flat[order]
  slot = jnp.arange(flat.shape[0]) - jnp.searchsorted(e, e, side="left")
  count = jnp.zeros(n, jnp.int32).at[flat].add(1, mode="drop")  # padding (n) dropped
  nseg = jnp.append((count + SEGMENT - 1) // SEGMENT, 0)
  first_seg = jnp.cumsum(nseg) - nseg
  size = (flat.shape[0] // SEGMENT + n + 1) * SEGMENT  # sum_e ceil(count_e / SEGMENT) <= S
  at = jnp.where(e < n, first_seg[jnp.minimum(e, n)] * SEGMENT + slot, size)
  rows = jnp.full(size + 1, len(idx), jnp.int32).at[at].set(
      (order // idx.shape[1]).astype(jnp.int32))
  vals = jnp.zeros(size + 1, jnp.float32).at[at].set(val.ravel()[order])
  return nseg, first_seg, rows[:-1].reshape(-1, SEGMENT), vals[:-1].reshape(-1, SEGMENT)


@functools.partial(jax.jit, static_argnames=("num_gallery", "length"))
def _jaccard_terms(q_idx, q_val, nseg, first_seg, seg_rows, seg_vals, num_gallery, length):
  """For query rows (q_idx, q_val) [C, W]: the terms min(V(q, e), V(g, e)) of
  m = sum_e min(V(q, e), V(g, e)), and their flat [C, num_gallery] targets (padding:
  C * num_gallery), from at most `length` segments of the inverted index."""
  rows, width = q_idx.shape
  ends = jnp.cumsum(nseg[q_idx].ravel())
  at = jnp.arange(length)
  entry = jnp.minimum(jnp.searchsorted(ends, at, side="right"), ends.shape[0] - 1)
  seg = first_seg[q_idx.ravel()[entry]] + at - (ends[entry] - nseg[q_idx.ravel()[entry]])
  g = jnp.where((at < ends[-1])[:, None], seg_rows[seg], num_gallery)
  target = jnp.where(g < num_gallery, (entry // width)[:, None] * num_gallery + g,
                     rows * num_gallery)
  return target.ravel(), jnp.minimum(q_val.ravel()[entry][:, None], seg_vals[seg]).ravel()


@jax.jit
def _scatter_add(overlap, target, values):
  # A jit of its own: a scatter with its index computation fused in runs ~3x slower on CPU.
  return overlap.at[target].add(values, mode="drop")


@jax.jit
def _query_entries(v_idx, v_val, nseg, rows):
  """The sparse V rows of the queries `rows`, and how many index segments each visits."""
  q_idx = v_idx[rows]
  return q_idx, v_val[rows], jnp.sum(nseg[q_idx], axis=1)


@functools.partial(jax.jit, static_argnames=("num_q",))
def _final(overlap, dist, scale, rows, lambda_value, num_q):
  """Eq. 12 from the overlaps m [C * num_gallery] and the distances to all N items."""
  jaccard = 1.0 - overlap.reshape(len(rows), -1) / (2.0 - overlap.reshape(len(rows), -1))
  original = jnp.square(dist[:, num_q:]) / scale[rows][:, None]
  return jaccard * (1.0 - lambda_value) + original * lambda_value


class _Features:
  """Distances between the rows of x (queries, then gallery) under `metric`."""

  def __init__(self, x, metric):
    self.x, self.metric = x, metric
    self.prepared = distance.prepare_gallery(x, metric)

  def __len__(self):
    return len(self.x)

  def columns(self, rows):  # symmetric: row i is column i
    return distance.distance_block(self.x[rows], self.prepared)


class _Matrices:
  """torchreid's inputs; the original distance is [[q_q, q_g], [q_g.T, g_g]]."""

  def __init__(self, q_g, q_q, g_g):
    self.q_g, self.q_q, self.g_g = (np.asarray(a, np.float32) for a in (q_g, q_q, g_g))
    self.num_q = len(self.q_q)

  def __len__(self):
    return self.num_q + len(self.g_g)

  def columns(self, rows):  # columns i of the original distance, as rows
    rows, nq = np.asarray(rows), self.num_q
    out = np.empty((len(rows), len(self)), np.float32)
    q, g = rows < nq, rows >= nq
    out[q] = np.concatenate([self.q_q[:, rows[q]].T, self.q_g[rows[q]]], axis=1)
    out[g] = np.concatenate([self.q_g[:, rows[g] - nq].T, self.g_g[:, rows[g] - nq].T], axis=1)
    return jnp.asarray(out)

  def pairs(self, rows, cols):  # original[cols, i] for each row i
    nq = self.num_q
    a = np.minimum(np.asarray(cols), len(self) - 1)
    b = np.broadcast_to(np.asarray(rows)[:, None], a.shape)
    qa, qb = a < nq, b < nq
    ca, cb = np.minimum(a, nq - 1), np.minimum(b, nq - 1)
    ga, gb = np.maximum(a - nq, 0), np.maximum(b - nq, 0)
    return jnp.asarray(np.where(qa, np.where(qb, self.q_q[ca, cb], self.q_g[ca, gb]),
                                np.where(qb, self.q_g[cb, ga], self.g_g[ga, gb])))


def _check_k(k1, k2, n):
  validate.positive_int(k1, "k1"), validate.positive_int(k2, "k2")
  if not k2 <= k1 + 1 or n <= k1:
    raise ValueError(f"k1 and k2 must satisfy 1 <= k2 <= k1 + 1 < queries + gallery, got k1={k1}, "
                     f"k2={k2} with {n} queries + gallery")


class KReciprocal:
  """The k-reciprocal encoding of queries and gallery together; `final_rows` re-ranks.

  Built from features (`qf`, `gf`, `metric`) or from torchreid's three distance
  matrices (`KReciprocal.from_distances`).

  Inputs are checked first (`validate`): TypeError for non-real dtypes or non-integer
  k1 / k2; ValueError for arrays that are not 2-D, are empty, disagree in shape or
  dimension, or have NaN / inf entries, and for k1 / k2 out of range.
  """

  def __init__(self, qf, gf, metric="euclidean", k1=20, k2=6):
    qf, gf = validate.features(qf, "qf", "query"), validate.features(gf, "gf", "gallery")
    validate.same_dim(qf, "qf", gf, "gf")
    distance.check_metric(metric)
    _check_k(k1, k2, len(qf) + len(gf))
    validate.finite_features(qf, "qf"), validate.finite_features(gf, "gf")
    self._init(len(qf), _Features(np.concatenate([qf, gf]), metric), k1, k2)

  @classmethod
  def from_distances(cls, q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6):
    """From torchreid's [num_query, num_gallery], [num_query, num_query] and
    [num_gallery, num_gallery] distance matrices."""
    q_g_dist = validate.distances(q_g_dist, "q_g_dist")
    q_q_dist = validate.distances(q_q_dist, "q_q_dist", "query", "query")
    g_g_dist = validate.distances(g_g_dist, "g_g_dist", "gallery", "gallery")
    num_q, num_g = q_g_dist.shape
    validate.shape(q_q_dist, "q_q_dist", (num_q, num_q), "the shape of q_g_dist")
    validate.shape(g_g_dist, "g_g_dist", (num_g, num_g), "the shape of q_g_dist")
    _check_k(k1, k2, num_q + num_g)
    for x, name in ((q_g_dist, "q_g_dist"), (q_q_dist, "q_q_dist"), (g_g_dist, "g_g_dist")):
      validate.finite(x, name)
    self = cls.__new__(cls)
    self._init(num_q, _Matrices(q_g_dist, q_q_dist, g_g_dist), k1, k2)
    return self

  def _init(self, num_q, source, k1, k2):
    n = len(source)  # k1, k2: checked by the constructors (`_check_k`)
    self.num_q, self.n, self._source = num_q, n, source
    self._rows = distance.chunk_rows(n, n, BLOCK_ELEMENTS)
    blocks = (np.minimum(np.arange(s, s + self._rows), n - 1) for s in range(0, n, self._rows))
    scale, ranks = zip(*(_scale_and_neighbours(source.columns(r), k1 + 1) for r in blocks))
    self.scale, ranks = jnp.concatenate(scale)[:n], jnp.concatenate(ranks)[:n]
    half = round(k1 / 2) + 1  # np.around, as the reference
    min_overlap = jnp.asarray([math.floor(2.0 / 3 * s) + 1 for s in range(half + 1)], jnp.int32)
    sets = self._trim(_expansion_sets(ranks, half, min_overlap))
    self.v_idx, self.v_val = _encode(_distances_to(source, sets), self.scale, sets, ranks, k2)
    self.v_idx = self._trim(self.v_idx)
    self.v_val = self.v_val[:, :self.v_idx.shape[1]]
    self._index = _inverted_index(self.v_idx[num_q:], self.v_val[num_q:], n)

  def _trim(self, sets):
    """Drops the all-padding columns (sets are sorted, padding last)."""
    return sets[:, :max(int(np.asarray(jnp.sum(sets < self.n, axis=1).max())), 1)]

  def final_rows(self, rows, lambda_value=0.3):
    """Re-ranked [len(rows), num_gallery] distances of the queries `rows` (Eq. 12)."""
    validate.fraction(lambda_value, "lambda_value")
    rows, num_g = np.asarray(rows), self.n - self.num_q
    q_idx, q_val, per_row = _query_entries(self.v_idx, self.v_val, self._index[0], rows)
    q_idx, per_row = np.asarray(q_idx), np.asarray(per_row)
    length = max(PAIRS_PER_CALL // SEGMENT, 1 << int(per_row.max()).bit_length())
    overlap, start = jnp.zeros(len(rows) * num_g, jnp.float32), 0
    while start < len(rows):  # consecutive rows with at most `length` segments per call
      stop = start + max(int(np.searchsorted(np.cumsum(per_row[start:]), length, "right")), 1)
      part = np.where(((np.arange(len(rows)) >= start) & (np.arange(len(rows)) < stop))[:, None],
                      q_idx, self.n)  # column n has no segments
      overlap = _scatter_add(overlap, *_jaccard_terms(part, q_val, *self._index, num_g, length))
      start = stop
    return _final(overlap, self._source.columns(rows), self.scale, rows, lambda_value, self.num_q)


def _physical_memory():
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_memory(num_bytes):
  total = _physical_memory()
  if num_bytes > total // 2:
    raise MemoryError(
        f"the re-ranked distance matrix needs {num_bytes / 2**30:.1f} GiB, more than half of this "
        f"machine's {total / 2**30:.1f} GiB; use evaluate_features(..., rerank=True), which "
        "re-ranks and scores query blocks one at a time")


def _all_rows(reranker, lambda_value):
  num_g = reranker.n - reranker.num_q
  _check_memory(reranker.num_q * num_g * 4)
  out = np.empty((reranker.num_q, num_g), np.float32)
  for start in range(0, reranker.num_q, reranker._rows):
    idx = np.minimum(np.arange(start, start + reranker._rows), reranker.num_q - 1)
    out[idx] = np.asarray(reranker.final_rows(idx, lambda_value))
  return out


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
  """Re-ranked [num_query, num_gallery] distances from torchreid's three inputs
  (checked as in `KReciprocal`; lambda_value in [0, 1])."""
  validate.fraction(lambda_value, "lambda_value")
  return _all_rows(KReciprocal.from_distances(q_g_dist, q_q_dist, g_g_dist, k1, k2), lambda_value)


def re_ranking_features(qf, gf, metric="euclidean", k1=20, k2=6, lambda_value=0.3):
  """Re-ranked [num_query, num_gallery] distances of features under `metric`
  (checked as in `KReciprocal`; lambda_value in [0, 1])."""
  validate.fraction(lambda_value, "lambda_value")
  return _all_rows(KReciprocal(qf, gf, metric, k1, k2), lambda_value)
