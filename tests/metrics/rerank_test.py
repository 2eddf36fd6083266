"""k-reciprocal re-ranking against a numpy port of torchreid's re_ranking (stable sorts)."""
import numpy as np
import pytest

from reid_jax import metrics
from reid_jax.metrics import rerank


def reference_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
  """torchreid.utils.rerank.re_ranking (Zhong et al.'s code), argsorts made stable."""
  original_dist = np.concatenate([np.concatenate([q_q_dist, q_g_dist], axis=1),
                                  np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0)
  original_dist = np.power(original_dist, 2).astype(np.float32)
  original_dist = np.transpose(1. * original_dist / np.max(original_dist, axis=0))
  V = np.zeros_like(original_dist).astype(np.float32)
  initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)
  query_num, all_num = q_g_dist.shape[0], original_dist.shape[0]
  half = int(np.around(k1 / 2.)) + 1
  for i in range(all_num):
    forward_k_neigh_index = initial_rank[i, :k1 + 1]
    backward_k_neigh_index = initial_rank[forward_k_neigh_index, :k1 + 1]
    fi = np.where(backward_k_neigh_index == i)[0]
    k_reciprocal_index = forward_k_neigh_index[fi]
    k_reciprocal_expansion_index = k_reciprocal_index
    for candidate in k_reciprocal_index:
      candidate_forward_k_neigh_index = initial_rank[candidate, :half]
      candidate_backward_k_neigh_index = initial_rank[candidate_forward_k_neigh_index, :half]
      fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
      candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
      if len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)) > 2. / 3 * len(
          candidate_k_reciprocal_index):
        k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index,
                                                 candidate_k_reciprocal_index)
    k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
    weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
    V[i, k_reciprocal_expansion_index] = 1. * weight / np.sum(weight)
  original_dist = original_dist[:query_num, ]
  if k2 != 1:
    V_qe = np.zeros_like(V, dtype=np.float32)
    for i in range(all_num):
      V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
    V = V_qe
  invIndex = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
  jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
  for i in range(query_num):
    temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
    indNonZero = np.where(V[i, :] != 0)[0]
    indImages = [invIndex[ind] for ind in indNonZero]
    for j in range(len(indNonZero)):
      temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(
          V[i, indNonZero[j]], V[indImages[j], indNonZero[j]])
    jaccard_dist[i] = 1 - temp_min / (2. - temp_min)
  final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
  return final_dist[:query_num, query_num:]


def clustered_features(rng, num_q, num_g, dim=16, num_ids=12, noise=0.6):
  """Identity-clustered features, so that k-reciprocal sets are large and expansion happens."""
  centers = rng.standard_normal((num_ids, dim))
  q = centers[rng.integers(0, num_ids, num_q)] + noise * rng.standard_normal((num_q, dim))
  g = centers[rng.integers(0, num_ids, num_g)] + noise * rng.standard_normal((num_g, dim))
  return q.astype(np.float32), g.astype(np.float32)


@pytest.mark.parametrize("k1,k2,lambda_value", [(20, 6, 0.3), (7, 1, 0.5)])
def test_dense_inputs_match_reference(k1, k2, lambda_value):
  rng = np.random.default_rng(k1)
  qf, gf = clustered_features(rng, 30, 150)
  q_g, q_q, g_g = (metrics.pairwise_distance(a, b) for a, b in ((qf, gf), (qf, qf), (gf, gf)))
  expected = reference_re_ranking(q_g, q_q, g_g, k1, k2, lambda_value)
  result = metrics.re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lambda_value)
  assert result.shape == (30, 150) and result.dtype == np.float32
  np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)
  assert np.abs(result - q_g ** 2 / (q_g ** 2).max()).max() > 0.05  # re-ranking changed something


def test_ties_break_in_index_order():
  """Quantised distances: many equal values in every top-k; stable order on both sides."""
  rng = np.random.default_rng(1)
  qf, gf = clustered_features(rng, 25, 120)
  q_g, q_q, g_g = (np.round(metrics.pairwise_distance(a, b) * 2) / 2
                   for a, b in ((qf, gf), (qf, qf), (gf, gf)))
  np.testing.assert_allclose(metrics.re_ranking(q_g, q_q, g_g, k1=10, k2=3),
                             reference_re_ranking(q_g, q_q, g_g, 10, 3), rtol=0, atol=1e-5)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_features_match_reference(metric):
  rng = np.random.default_rng(2)
  qf, gf = clustered_features(rng, 30, 150)
  q_g, q_q, g_g = (metrics.pairwise_distance(a, b, metric) for a, b in ((qf, gf), (qf, qf), (gf, gf)))
  np.testing.assert_allclose(metrics.re_ranking_features(qf, gf, metric, k1=20, k2=6),
                             reference_re_ranking(q_g, q_q, g_g, 20, 6), rtol=0, atol=1e-5)


def test_too_large_output_says_so(monkeypatch):
  monkeypatch.setattr(rerank, "_physical_memory", lambda: 2**12)  # a 4 KiB machine
  rng = np.random.default_rng(3)
  with pytest.raises(MemoryError, match="evaluate_features"):
    metrics.re_ranking_features(*clustered_features(rng, 30, 150), k1=7, k2=1)


def test_invalid_k():
  with pytest.raises(ValueError, match="k2"):
    metrics.KReciprocal(np.zeros((3, 2)), np.zeros((30, 2)), k1=4, k2=6)
