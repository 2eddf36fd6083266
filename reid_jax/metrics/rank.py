"""Ranks of each query's true matches, without sorting the gallery.

Market-1501 protocol (README.md, "Evaluation"): gallery items with the
query's identity and camera, and junk items (id -1), are removed; equal
distances keep gallery order (as a stable argsort does). CMC needs the rank of
the first true match and AP / mINP the ranks of all of them, so instead of an
argsort of every row we count, for each match j, the valid items that come
before it: rank(j) = #{valid k : (d_k, k) < (d_j, j)}.

Per query the matches' (distance, index) pairs are sorted (P of them, a power of
two, padded with +inf); every gallery item finds its bucket among them by a
branch-free binary search whose pivots are picked with selects (vectorised, no
gathers), and one histogram of the buckets per row gives all ranks at once:
O(G log P) per query instead of the O(G log G) of an argsort.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax

from reid_jax.metrics import distance

# Binary-search levels whose pivot is chosen by selects (2^level candidates);
# deeper levels (512 or more matches) gather it instead.
MUX_LEVELS = 9
# Query rows searched per loop step: their codes stay a small, reused temporary
# rather than a [C, G / 2] array in fresh memory (page faults cost as much as the search).
GROUP_ROWS = 8


def _pivot(values, before, level, num):
  """values[:, pivot] at the search node that the previous levels' bits lead to."""
  step = num >> (level + 1)

  def pick(lvl, base):
    if lvl == level:
      return values[:, base + step - 1][:, None]
    return jnp.where(before[lvl], pick(lvl + 1, base + (num >> (lvl + 1))), pick(lvl + 1, base))

  return pick(0, 0)


def _buckets(d, t, j, offset):
  """For each item k of d [C, G]: #{m : (t_m, j_m) < (d_k, offset + k)}, with (t, j) [C, P] sorted."""
  num = t.shape[1]
  k = lax.broadcasted_iota(jnp.int32, d.shape, 1) + offset
  bits, pos = [], jnp.zeros(d.shape, jnp.int32)
  for level in range(num.bit_length() - 1):
    step = num >> (level + 1)
    if level < MUX_LEVELS:
      thr, thj = _pivot(t, bits, level, num), _pivot(j, bits, level, num)
    else:
      at = pos + step - 1
      thr = jnp.take_along_axis(t, at, axis=1, mode="promise_in_bounds")
      thj = jnp.take_along_axis(j, at, axis=1, mode="promise_in_bounds")
    before = (thr < d) | ((thr == d) & (thj < k))
    bits.append(before)
    pos = pos + jnp.where(before, step, 0)
  return pos


def _row_histogram(codes, size):
  """Counts of each value in [0, size) of a row of codes; codes come in pairs
  (a * size + b), which halves the (scalar) scatter work."""
  pairs = jnp.zeros(size * size, jnp.int32).at[codes].add(1, mode="promise_in_bounds")
  pairs = pairs.reshape(size, size)
  return pairs.sum(axis=1, dtype=jnp.int32) + pairs.sum(axis=0, dtype=jnp.int32)


@functools.partial(jax.jit, static_argnames=("metric",))
def match_ranks(d, match_idx, num_matches, q_pids, g_pids, metric=None):
  """0-based ranks of each query's true matches among its valid gallery items.

  d: [C, G] distances (or a `distance.dot_block` output and its metric);
  match_idx: [C, P] gallery indices of the true matches (same id, other camera;
  the first num_matches of each row are used), P a power of two > num_matches;
  q_pids [C], g_pids [G] (junk is -1).
  Returns [C, P] int32 ranks, ascending; entries from num_matches on are padding.
  """
  rows, num = match_idx.shape
  t, j = _thresholds(d, match_idx, num_matches, g_pids.shape[0], metric)
  group = min(GROUP_ROWS, rows)
  starts = jnp.minimum(jnp.arange(0, rows, group), rows - group)  # the last group overlaps

  def counts(start):
    take = lambda x: lax.dynamic_slice_in_dim(x, start, group)
    part = take(d) if metric is None else (take(d[0]), take(d[1]), d[2])
    # The barrier keeps XLA from fusing the search into the (scalar) scatter loop.
    codes = lax.optimization_barrier(_codes(part, take(t), take(j), take(q_pids), g_pids, metric))
    return jax.vmap(lambda row: _row_histogram(row, num + 1))(codes)

  hist = lax.map(counts, starts).reshape(-1, num + 1)
  at = (starts[:, None] + jnp.arange(group)).reshape(-1)
  hist = jnp.zeros((rows, num + 1), jnp.int32).at[at].set(hist, mode="promise_in_bounds")
  return jnp.arange(num, dtype=jnp.int32) + jnp.cumsum(hist[:, :num], axis=1)


def _thresholds(d, match_idx, num_matches, num_g, metric):
  """Each row's (distance, index) of its true matches, sorted; padding (+inf, num_g)."""
  used = jnp.arange(match_idx.shape[1])[None, :] < num_matches[:, None]
  t = jnp.take_along_axis(distance.finish(d, metric), match_idx, axis=1)
  t = jnp.where(used, jnp.where(t == 0, jnp.zeros((), t.dtype), t), jnp.inf)  # sort puts -0.0 first
  return lax.sort((t, jnp.where(used, match_idx, num_g)), dimension=1, num_keys=2)


def _codes(d, t, j, q_pids, g_pids, metric):
  """Bucket of every valid non-match (matches and removed items: the spare bucket P),
  items k and H + k packed in one code a * (P + 1) + b: [C, H], H = ceil(G / 2)."""
  num_g, num = g_pids.shape[0], t.shape[1]

  # Contiguous halves, each finished from its own columns: a strided pairing of
  # neighbours keeps XLA:CPU from vectorising the search, 3x slower.
  def half(start, stop):
    other = (g_pids[None, start:stop] != q_pids[:, None]) & (g_pids[None, start:stop] != -1)
    part = distance.finish(distance.columns(d, start, stop), metric)
    return jnp.where(other, _buckets(part, t, j, start), num)

  size = (num_g + 1) // 2
  low, high = half(0, size), half(size, num_g)
  high = jnp.pad(high, ((0, 0), (0, size - high.shape[1])), constant_values=num)
  return low * (num + 1) + high


@functools.partial(jax.jit, static_argnames=("k", "metric"))
def top_valid(d, q_pids, q_camids, g_pids, g_camids, k, metric=None):
  """Indices [C, k] of each query's k nearest valid gallery items (ties in gallery order)."""
  d = distance.finish(d, metric)
  junk = (g_pids[None, :] == -1) | ((g_pids[None, :] == q_pids[:, None])
                                    & (g_camids[None, :] == q_camids[:, None]))
  d = jnp.where(d == 0, jnp.zeros((), d.dtype), d)  # top_k orders -0.0 and +0.0; numpy ties them
  return lax.top_k(-jnp.where(junk, jnp.inf, d), k)[1]
