"""Retrieval metrics of a network that scores pairs (KPM) rather than embedding images.

The scores stream through the same exact block evaluator as distances
(`evaluation.evaluate_blocks`, as -score), one block of queries at a time, so the
query x gallery score matrix never exists whole. Two modes:

- 'full': every query x gallery pair is scored, `gallery_block` gallery items per
  call of the network.
- 'cascade': the gallery is first ranked by a cheap distance between features
  (`qf`, `gf`, `metric`); each query's `top_k` nearest are re-scored by the
  network and ranked by score ahead of the rest, which keep the first ranking
  (KPM's official evaluation, k = 75). With top_k >= the gallery size it ranks
  exactly as 'full'.

Ties in score rank in gallery order, as for distances.
"""
from typing import Callable

import numpy as np

from reid_jax.metrics import distance, evaluation, validate

MODES = ("cascade", "full")
# score_fn(query index, gallery indices [n]) -> [n] scores, higher = more likely the same person.
ScoreFn = Callable[[int, np.ndarray], np.ndarray]


def _checked(scores, query, n):
  scores = np.asarray(scores, np.float32)
  if scores.shape != (n,):
    raise ValueError(f"score_fn returned shape {scores.shape} for {n} gallery items of query "
                     f"{query}; expected ({n},).")
  if not np.all(np.isfinite(scores)):
    bad = int(np.flatnonzero(~np.isfinite(scores))[0])
    raise ValueError(f"The network's score of query {query} is not finite ({scores[bad]}) "
                     f"for {np.sum(~np.isfinite(scores))} of {n} gallery items.")
  return scores


def _full_row(score_fn, query, num_gallery, gallery_block):
  """-scores of every gallery item, scored `gallery_block` at a time (the last
  block padded with item 0, so the network sees one shape)."""
  row = np.empty(num_gallery, np.float32)
  for start in range(0, num_gallery, gallery_block):
    idx = np.arange(start, start + gallery_block)
    idx = np.where(idx < num_gallery, idx, 0)
    n = min(gallery_block, num_gallery - start)
    row[start:start + n] = -_checked(score_fn(query, idx), query, gallery_block)[:n]
  return row


def _cascade_row(score_fn, query, first_stage, top_k):
  """A distance row whose order is: the `top_k` nearest items of `first_stage` by
  decreasing score, then the others in `first_stage` order."""
  order = np.argsort(first_stage, kind="stable")
  candidates = order[:top_k]
  scores = _checked(score_fn(query, candidates), query, len(candidates))
  row = np.empty(len(first_stage), np.float32)
  # Positions after an integer above every -score: exact in float32 for any gallery
  # below 2**24 items, and behind every candidate.
  behind = np.floor(np.max(-scores)) + 1.0
  row[order] = behind + np.arange(len(order), dtype=np.float32)
  row[candidates] = -scores
  return row


def evaluate_scores(score_fn: ScoreFn, num_gallery, q_pids, g_pids, q_camids, g_camids,
                    mode="cascade", top_k=75, gallery_block=1024, qf=None, gf=None,
                    metric="euclidean", max_rank=50, protocol="market", return_details=False,
                    num_repeats=10, seed=0):
  """CMC / mAP / mINP (`evaluation.evaluate_rank`'s result) of a pair-scoring network.

  score_fn(q, g) -> [len(g)] float scores of query q against gallery items g (an
  int array), higher = more similar; it is called with `gallery_block` items in
  'full' mode and min(top_k, num_gallery) in 'cascade' mode. qf [num_query, D],
  gf [num_gallery, D]: the cascade's first-stage features, compared by `metric`.
  The other arguments are `evaluate_rank`'s. A non-finite score is a ValueError
  naming the query.
  """
  validate.choice(mode, "mode", MODES)
  validate.positive_int(top_k, "top_k")
  validate.positive_int(gallery_block, "gallery_block")
  validate.positive_int(num_gallery, "num_gallery")
  num_q = len(validate.as_array(q_pids))
  q_pids, g_pids, q_camids, g_camids = evaluation.validated_labels(
      q_pids, g_pids, q_camids, g_camids, num_q, num_gallery, "len(q_pids)", "num_gallery")
  evaluation.validate_options(max_rank, protocol, num_repeats)
  if mode == "cascade":
    if qf is None or gf is None:
      raise ValueError("mode='cascade' ranks by the features qf and gf first: pass both.")
    qf, gf = validate.features(qf, "qf", "query"), validate.features(gf, "gf", "gallery")
    validate.length(qf, "qf", num_q, "len(q_pids)")
    validate.length(gf, "gf", num_gallery, "num_gallery")
    distance.check_metric(metric)
    validate.finite_features(qf, "qf"), validate.finite_features(gf, "gf")
    gallery = distance.prepare_gallery(gf, metric)
    top_k = min(top_k, num_gallery)

  def rows_fn(idx):
    unique, where = np.unique(idx, return_inverse=True)  # the last block is padded
    if mode == "full":
      rows = [_full_row(score_fn, int(q), num_gallery, gallery_block) for q in unique]
    else:
      first = np.asarray(distance.distance_block(qf[unique], gallery))
      rows = [_cascade_row(score_fn, int(q), d, top_k) for q, d in zip(unique, first)]
    return np.stack(rows)[where]

  rows = distance.chunk_rows(num_gallery, num_q)
  return evaluation.evaluate_blocks(rows_fn, rows, num_gallery, q_pids, g_pids, q_camids,
                                    g_camids, max_rank, protocol, return_details, num_repeats,
                                    seed)
