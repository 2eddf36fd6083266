"""evaluate_scores: full and cascade ranking of pair scores through the block evaluator."""
import numpy as np
import pytest

from reid_jax import metrics


def _problem(num_q=7, num_g=23, dim=6, seed=0):
  rng = np.random.default_rng(seed)
  q_pids, g_pids = rng.integers(0, 4, num_q), rng.integers(0, 4, num_g)
  q_cams, g_cams = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
  scores = rng.normal(size=(num_q, num_g)).astype(np.float32)
  scores[0, 3] = scores[0, 5]  # a tie: ranks in gallery order
  qf, gf = rng.normal(size=(num_q, dim)), rng.normal(size=(num_g, dim))
  return scores, qf, gf, (q_pids, g_pids, q_cams, g_cams)


def _score_fn(scores, calls=None):
  def score(q, g):
    if calls is not None:
      calls.append(len(g))
    return scores[q, np.asarray(g)]
  return score


def _same(a, b):
  np.testing.assert_array_equal(a["cmc"], b["cmc"])
  assert a["mAP"] == b["mAP"] and a["mINP"] == b["mINP"]
  assert a["num_valid_queries"] == b["num_valid_queries"]


def _numpy_cmc_map(distmat, q_pids, g_pids, q_cams, g_cams, max_rank):
  """A plain numpy Market-1501 protocol (stable order, same id+camera removed)."""
  cmc, aps = [], []
  for i in range(len(q_pids)):
    order = np.argsort(distmat[i], kind="stable")
    keep = ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
    matches = (g_pids[order] == q_pids[i])[keep]
    if not matches.any():
      continue
    cmc.append(np.cumsum(matches)[:max_rank] > 0)
    hits = np.flatnonzero(matches)
    aps.append(np.mean((np.arange(len(hits)) + 1) / (hits + 1)))
  return np.mean(cmc, axis=0), np.mean(aps)


def test_full_mode_equals_ranking_by_minus_score():
  scores, _, _, labels = _problem()
  calls = []
  full = metrics.evaluate_scores(_score_fn(scores, calls), 23, *labels, mode="full",
                                 gallery_block=5, max_rank=10)
  _same(full, metrics.evaluate_rank(-scores, *labels, max_rank=10))
  cmc, ap = _numpy_cmc_map(-scores, *labels, max_rank=10)
  np.testing.assert_allclose(full["cmc"], cmc)
  np.testing.assert_allclose(full["mAP"], ap)
  assert set(calls) == {5}  # one shape per call, the last block padded


def test_cascade_with_top_k_at_least_the_gallery_equals_full():
  scores, qf, gf, labels = _problem(seed=1)
  full = metrics.evaluate_scores(_score_fn(scores), 23, *labels, mode="full", return_details=True)
  cascade = metrics.evaluate_scores(_score_fn(scores), 23, *labels, mode="cascade", top_k=100,
                                    qf=qf, gf=gf, return_details=True)
  _same(full, cascade)
  np.testing.assert_array_equal(full["ranked_indices"], cascade["ranked_indices"])


def test_cascade_reranks_only_each_querys_top_k_by_score():
  scores, qf, gf, labels = _problem(seed=2)
  k = 4
  calls = []
  cascade = metrics.evaluate_scores(_score_fn(scores, calls), 23, *labels, top_k=k, qf=qf, gf=gf,
                                    metric="euclidean", max_rank=20)
  assert set(calls) == {k}
  # The expected ranking, built by hand: first stage by Euclidean distance, its
  # first k re-sorted by decreasing score, the rest behind in first-stage order.
  first = np.linalg.norm(qf[:, None] - gf[None], axis=-1)
  rank_of = np.zeros_like(scores)
  for i in range(len(qf)):
    order = list(np.argsort(first[i], kind="stable"))
    head = sorted(order[:k], key=lambda g: (-scores[i, g], g))
    rank_of[i, head + order[k:]] = np.arange(23)
  cmc, ap = _numpy_cmc_map(rank_of, *labels, max_rank=20)
  np.testing.assert_allclose(cascade["cmc"], cmc)
  np.testing.assert_allclose(cascade["mAP"], ap)


def test_bad_scores_and_arguments_are_errors_naming_them():
  scores, qf, gf, labels = _problem()
  scores[4, 9] = np.nan
  with pytest.raises(ValueError, match="score of query 4 is not finite"):
    metrics.evaluate_scores(_score_fn(scores), 23, *labels, mode="full")
  with pytest.raises(ValueError, match="qf and gf"):
    metrics.evaluate_scores(_score_fn(scores), 23, *labels)
  with pytest.raises(ValueError, match="mode"):
    metrics.evaluate_scores(_score_fn(scores), 23, *labels, mode="all")
  with pytest.raises(ValueError, match="gf"):
    metrics.evaluate_scores(_score_fn(scores), 23, *labels, qf=qf, gf=gf[:5])
  with pytest.raises(ValueError, match="returned shape"):
    metrics.evaluate_scores(lambda q, g: np.zeros(3), 23, *labels, mode="full")
