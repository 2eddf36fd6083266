"""Retrieval evaluation: CMC, mAP and mINP from a distance matrix or from features.

Protocols (README.md, "Evaluation"): `market` (Market-1501 / DukeMTMC /
MSMT17: every valid gallery item ranked) and `cuhk03` (classic single-shot CMC,
see `cuhk03.py`; AP and mINP as for `market`). AP is the mean precision at each
true match (torchreid's `eval_market1501`), mINP the mean of
num_matches / (rank of the hardest match + 1) (Ye et al., TPAMI 2021).

Queries are processed in blocks of rows, so no more than one block of the
distance matrix exists at a time when evaluating from features.
"""
import contextlib
import os
import threading
from concurrent import futures

import jax
import jax.numpy as jnp
import numpy as np
from threadpoolctl import threadpool_limits

from reid_jax.metrics import cuhk03, distance, multi_query, rank, validate
from reid_jax.metrics import rerank as rerank_lib

PROTOCOLS = ("market", "cuhk03")
TOP_K = 10  # gallery items per query in the ranked lists (MGN Fig. 4)
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
# Blocks evaluated concurrently; on CPU each block's product gets CPUS // WORKERS BLAS
# threads, so that the products and the ranking kernels share the cores rather than
# oversubscribe them (which slows the first, compiling pass by 5-10%).
WORKERS = min(4, CPUS)


def validated_labels(q_pids, g_pids, q_camids, g_camids, num_q, num_g, rows, cols):
  """The four label arrays, validated (`validate.ids`) against num_q queries and num_g
  gallery items; rows / cols say where those numbers come from."""
  return (validate.ids(q_pids, "q_pids", num_q, rows), validate.ids(g_pids, "g_pids", num_g, cols),
          validate.ids(q_camids, "q_camids", num_q, rows),
          validate.ids(g_camids, "g_camids", num_g, cols))


def validated_distances(distmat, q_pids, g_pids, q_camids, g_camids):
  """(distmat, q_pids, g_pids, q_camids, g_camids) validated: distmat [Q, G] real,
  2-D, non-empty and finite; the labels integer, of lengths Q (q_*) and G (g_*)."""
  distmat = validate.distances(distmat, "distmat")
  labels = validated_labels(q_pids, g_pids, q_camids, g_camids, *distmat.shape,
                            "the number of rows of distmat", "the number of columns of distmat")
  validate.finite(distmat, "distmat")
  return (distmat, *labels)


def validate_options(max_rank, protocol, num_repeats):
  validate.positive_int(max_rank, "max_rank")
  validate.choice(protocol, "protocol", PROTOCOLS)
  if protocol == "cuhk03":
    validate.positive_int(num_repeats, "num_repeats")


def _match_counts(q_pids, q_camids, g_pids, g_camids):
  """Per query, the number of gallery items with its id from another camera (junk: 0)."""
  low = min(q_camids.min(initial=0), g_camids.min(initial=0))
  num_cams = int(max(q_camids.max(initial=0), g_camids.max(initial=0))) - low + 1
  key = lambda pids, cams: pids.astype(np.int64) * num_cams + (cams - low)

  def count(keys, x):
    keys = np.sort(keys)
    return np.searchsorted(keys, x, "right") - np.searchsorted(keys, x, "left")

  n = count(g_pids, q_pids) - count(key(g_pids, g_camids), key(q_pids, q_camids))
  return np.where(q_pids == -1, 0, n)


def _match_indices(q_pids, q_camids, g_camids, by_id, width):
  """[len(q_pids), width] gallery indices of each query's true matches, ascending, 0-padded.

  by_id: (gallery indices sorted stably by id, their ids), from `_by_id`.
  """
  order, ids = by_id
  lo = np.searchsorted(ids, q_pids, "left")
  size = np.searchsorted(ids, q_pids, "right") - lo
  span = np.arange(max(int(size.max(initial=0)), 1))
  cand = order[np.minimum(lo[:, None] + span, len(order) - 1)]
  ok = (span < size[:, None]) & (g_camids[cand] != q_camids[:, None]) & (q_pids[:, None] != -1)
  first = np.argsort(~ok, axis=1, kind="stable")[:, :width]  # kept entries first, in order
  out = np.take_along_axis(np.where(ok, cand, 0), first, axis=1)
  return np.pad(out, ((0, 0), (0, width - out.shape[1]))).astype(np.int32)


def _by_id(g_pids):
  order = np.argsort(g_pids, kind="stable")
  return order, g_pids[order]


def _width(num_matches):
  """Power of two > the largest match count (the search needs a +inf pad); at least 16,
  which saves compiling narrower searches that would save little."""
  return max(16, 1 << int(num_matches).bit_length())


def _scores(ranks, num_matches):
  """AP and INP of each query from its match ranks (NaN when it has no match)."""
  m = np.arange(ranks.shape[1])
  used = m[None, :] < num_matches[:, None]
  r = ranks.astype(np.float64) + 1.0
  with np.errstate(invalid="ignore", divide="ignore"):
    ap = np.where(used, (m + 1.0) / r, 0.0).sum(1) / num_matches
    hardest = np.take_along_axis(r, np.maximum(num_matches - 1, 0)[:, None], axis=1)[:, 0]
    inp = num_matches / hardest
  return np.where(num_matches > 0, ap, np.nan), np.where(num_matches > 0, inp, np.nan)


def evaluate_blocks(rows_fn, rows, num_gallery, q_pids, g_pids, q_camids, g_camids, max_rank,
                    protocol, return_details, num_repeats, seed, context=contextlib.nullcontext,
                    metric=None):
  """The block loop shared by `evaluate_rank`, `evaluate_features` and
  `pairwise.evaluate_scores`.

  rows_fn(query indices, padded to `rows`) -> [rows, num_gallery] distances,
  or with `metric` a `distance.dot_block` output that the kernels finish themselves.
  Queries are visited by decreasing number of true matches, so each block's search
  width P stays small, and the widest kernel, compiled first, is not compiled at
  the end when no other block is left to overlap with; blocks run on a few threads
  (XLA and BLAS release the GIL).
  """
  num_q = len(q_pids)
  n = _match_counts(q_pids, q_camids, g_pids, g_camids)
  dev_g_pids, dev_g_camids = jnp.asarray(g_pids), jnp.asarray(g_camids)
  samples = cuhk03.sample_gallery(g_pids, num_repeats, seed) if protocol == "cuhk03" else None
  top_k = min(TOP_K, num_gallery)
  by_id = _by_id(g_pids)

  def block(idx):
    with context():
      pad = np.concatenate([idx, np.full(rows - len(idx), idx[0])])
      num = jnp.asarray(np.where(np.arange(rows) < len(idx), n[pad], 0).astype(np.int32))
      match_idx = jnp.asarray(_match_indices(q_pids[pad], q_camids[pad], g_camids, by_id,
                                             _width(n[idx].max())))
      d, pids = rows_fn(pad), jnp.asarray(q_pids[pad])
      out = [rank.match_ranks(d, match_idx, num, pids, dev_g_pids, metric)]
      if protocol == "cuhk03":
        out.append(cuhk03.single_shot_cmc(d, match_idx, num, pids, *samples, max_rank, metric))
      if return_details:
        out.append(rank.top_valid(d, pids, jnp.asarray(q_camids[pad]), dev_g_pids, dev_g_camids,
                                  top_k, metric))
      return [np.asarray(x)[:len(idx)] for x in out]

  order = np.argsort(-n, kind="stable")
  blocks = [order[start:start + rows] for start in range(0, num_q, rows)]
  first = np.zeros(num_q, np.int64)
  ap, inp = np.full(num_q, np.nan), np.full(num_q, np.nan)
  cmc_q = np.zeros((num_q, max_rank))
  top = np.zeros((num_q, top_k), np.int64)
  with futures.ThreadPoolExecutor(WORKERS) as pool:
    for idx, out in zip(blocks, pool.map(block, blocks)):
      first[idx] = out[0][:, 0]
      ap[idx], inp[idx] = _scores(out[0], n[idx])
      if protocol == "cuhk03":
        cmc_q[idx] = out[1]
      if return_details:
        top[idx] = out[-1]
  valid = n > 0
  if protocol == "market":
    cmc_q = first[:, None] <= np.arange(max_rank)[None, :]
  result = {"cmc": cmc_q[valid].mean(0) if valid.any() else np.zeros(max_rank),
            "mAP": float(np.mean(ap[valid])) if valid.any() else 0.0,
            "mINP": float(np.mean(inp[valid])) if valid.any() else 0.0,
            "num_valid_queries": int(valid.sum())}
  if return_details:
    result.update(ap=ap, inp=inp, ranked_indices=top, ranked_matches=g_pids[top] == q_pids[:, None])
  return result


def _thread_buffer(shape, dtype=np.float32):
  """A per-thread `distance.aligned_empty` buffer: each block thread reuses its own,
  as a block's kernels finish before its thread starts the next one."""
  local = threading.local()

  def get():
    if not hasattr(local, "buf"):
      local.buf = distance.aligned_empty(shape, dtype)
    return local.buf

  return get


def _host_rows(distmat, dtype, rows):
  """rows_fn for a numpy matrix: rows gathered into an aligned per-thread buffer,
  which the CPU backend then reads in place (no second copy)."""
  buffer = _thread_buffer((rows, distmat.shape[1]), dtype)

  def rows_fn(idx):
    buf = buffer()
    if distmat.dtype == dtype:
      np.take(distmat, idx, axis=0, out=buf, mode="clip")  # 'raise' would copy via a temporary
    else:
      buf[...] = distmat[idx]
    return jax.device_put(buf, may_alias=True)

  return rows_fn


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, protocol="market",
                  return_details=False, num_repeats=10, seed=0):
  """CMC / mAP / mINP of a [num_query, num_gallery] distance matrix (smaller = closer).

  Returns {'cmc': [max_rank] fractions, 'mAP', 'mINP', 'num_valid_queries'}; queries
  without a true match are skipped. protocol='cuhk03' averages the CMC over
  `num_repeats` single-shot galleries drawn with `seed`. With return_details also
  per-query 'ap', 'inp' (NaN when skipped), 'ranked_indices' [num_query, 10] (nearest
  valid gallery items) and 'ranked_matches' (whether each has the query's id).
  distmat may be a numpy or jax array (or anything np.asarray takes) of a real dtype;
  float64 is compared in float64.

  Inputs are checked first (`validate`): TypeError for a non-real distmat dtype or
  non-integer ids / cameras, ValueError for a distmat that is not 2-D, has no rows
  or columns, or has NaN / inf entries, for label lengths that differ from its rows
  (q_*) or columns (g_*), and for bad options.
  """
  distmat, q_pids, g_pids, q_camids, g_camids = validated_distances(
      distmat, q_pids, g_pids, q_camids, g_camids)
  validate_options(max_rank, protocol, num_repeats)
  num_q, num_g = distmat.shape
  wide = np.dtype(distmat.dtype) == np.float64 or (
      np.issubdtype(distmat.dtype, np.integer) and np.abs(distmat).max(initial=0) >= 2**24)
  dtype = np.float64 if wide else np.float32
  context = (lambda: jax.enable_x64(True)) if wide else contextlib.nullcontext
  rows = distance.chunk_rows(num_g, num_q)
  if isinstance(distmat, jax.Array):
    rows_fn = lambda idx: jnp.take(distmat, jnp.asarray(idx), axis=0).astype(dtype)
  else:
    rows_fn = _host_rows(np.asarray(distmat), dtype, rows)
  return evaluate_blocks(rows_fn, rows, num_g, q_pids, g_pids, q_camids, g_camids, max_rank,
                         protocol, return_details, num_repeats, seed, context)


def evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, metric="euclidean",
                      max_rank=50, protocol="market", query_pooling=None, rerank=False,
                      k1=20, k2=6, lambda_value=0.3, return_details=False, num_repeats=10,
                      seed=0):
  """`evaluate_rank` on features, streaming query blocks: the full distance matrix never exists.

  metric: 'euclidean', 'sqeuclidean' or 'cosine'. query_pooling: None, 'mean' or
  'max' pools the queries of each identity+camera into one (Market-1501 multi-query);
  the result then has the pooled queries' 'query_pids', 'query_camids' and
  'query_indices' (each one's first original query, e.g. for the ranked-list figure).
  rerank: k-reciprocal re-ranking (Zhong et al., CVPR 2017) with k1, k2, lambda_value
  on the `metric` distances of queries and gallery together.

  Inputs are checked first (`validate`): TypeError for non-real feature dtypes or
  non-integer ids / cameras, ValueError for features that are not 2-D, empty, of
  different dimensions, with NaN / inf entries or overflowing norms, for label
  lengths that differ from len(qf) (q_*) or len(gf) (g_*), and for bad options.
  """
  qf, gf = validate.features(qf, "qf", "query"), validate.features(gf, "gf", "gallery")
  validate.same_dim(qf, "qf", gf, "gf")
  q_pids, g_pids, q_camids, g_camids = validated_labels(q_pids, g_pids, q_camids, g_camids,
                                                        len(qf), len(gf), "len(qf)", "len(gf)")
  distance.check_metric(metric)
  validate_options(max_rank, protocol, num_repeats)
  if query_pooling:
    validate.choice(query_pooling, "query_pooling", multi_query.POOLINGS)
  if rerank:
    validate.fraction(lambda_value, "lambda_value")  # k1, k2: checked by KReciprocal
  validate.finite_features(qf, "qf"), validate.finite_features(gf, "gf")
  if query_pooling:
    qf, q_pids, q_camids, first = multi_query.pool(qf, q_pids, q_camids, query_pooling)
  rows = distance.chunk_rows(len(gf), len(qf))
  if rerank:
    reranker = rerank_lib.KReciprocal(qf, gf, metric, k1=k1, k2=k2)
    rows_fn, finish = (lambda idx: reranker.final_rows(idx, lambda_value)), None
  else:
    gallery = distance.prepare_gallery(gf, metric)
    buffer = _thread_buffer((rows, len(gf)))
    rows_fn = lambda idx: distance.dot_block(qf[idx], gallery, buffer() if gallery.on_host else None)
    finish = metric
  host_blas = not rerank and gallery.on_host
  with (threadpool_limits(max(1, CPUS // WORKERS), user_api="blas") if host_blas
        else contextlib.nullcontext()):
    out = evaluate_blocks(rows_fn, rows, len(gf), q_pids, g_pids, q_camids, g_camids, max_rank,
                          protocol, return_details, num_repeats, seed, metric=finish)
  if query_pooling:
    out.update(query_pids=q_pids, query_camids=q_camids, query_indices=first)
  return out
