"""evaluate_features: the streaming evaluator equals evaluate_rank on the full matrices."""
import numpy as np
import pytest

from reid_jax import metrics
from reid_jax.metrics import distance


def features_case(seed, num_q=60, num_g=300, dim=16, num_ids=25):
  rng = np.random.default_rng(seed)
  centers = rng.standard_normal((num_ids, dim))
  q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)
  g_pids[rng.random(num_g) < 0.1] = -1
  qf = centers[q_pids] + rng.standard_normal((num_q, dim))
  gf = centers[np.maximum(g_pids, 0)] + rng.standard_normal((num_g, dim))
  cams = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
  return qf.astype(np.float32), gf.astype(np.float32), q_pids, g_pids, *cams


def assert_same(a, b):
  assert a["num_valid_queries"] == b["num_valid_queries"]
  np.testing.assert_allclose(a["cmc"], b["cmc"], rtol=0, atol=1e-6)
  assert abs(a["mAP"] - b["mAP"]) < 1e-6 and abs(a["mINP"] - b["mINP"]) < 1e-6


@pytest.mark.parametrize("metric", metrics.METRICS)
def test_equals_evaluate_rank(metric):
  qf, gf, *ids = features_case(0)
  result = metrics.evaluate_features(qf, gf, *ids, metric=metric, max_rank=20)
  assert_same(result, metrics.evaluate_rank(metrics.pairwise_distance(qf, gf, metric), *ids, max_rank=20))
  assert result["mAP"] > 0.3  # clustered identities: far from chance


@pytest.mark.parametrize("metric", metrics.METRICS)
def test_accelerator_path(monkeypatch, metric):
  """The jnp.dot path of GPU / TPU (here on CPU) agrees with the BLAS path and with itself."""
  qf, gf, *ids = features_case(2)
  host = metrics.pairwise_distance(qf, gf, metric)
  monkeypatch.setattr(distance, "_on_host", lambda: False)
  assert not distance.prepare_gallery(gf, metric).on_host
  device = metrics.pairwise_distance(qf, gf, metric)
  np.testing.assert_allclose(device, host, rtol=1e-5, atol=1e-5)
  result = metrics.evaluate_features(qf, gf, *ids, metric=metric, max_rank=20)
  assert_same(result, metrics.evaluate_rank(device, *ids, max_rank=20))


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_multi_query(pooling):
  qf, gf, q_pids, g_pids, q_camids, g_camids = features_case(1, num_q=90)
  groups = {}
  for i, key in enumerate(zip(q_pids, q_camids)):
    groups.setdefault(key, []).append(i)
  pool = np.mean if pooling == "mean" else np.max
  pooled = np.stack([pool(qf[members], axis=0) for members in groups.values()])
  pids, cams = np.array([k[0] for k in groups]), np.array([k[1] for k in groups])
  assert len(pooled) < len(qf)
  expected = metrics.evaluate_rank(metrics.pairwise_distance(pooled, gf), pids, g_pids, cams, g_camids)
  result = metrics.evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, query_pooling=pooling)
  assert_same(result, expected)
  np.testing.assert_array_equal(result["query_pids"], pids)
  np.testing.assert_array_equal(result["query_camids"], cams)
  np.testing.assert_array_equal(result["query_indices"], [members[0] for members in groups.values()])


def test_rerank():
  qf, gf, *ids = features_case(2)
  result = metrics.evaluate_features(qf, gf, *ids, rerank=True, k1=10, k2=3, lambda_value=0.4)
  reranked = metrics.re_ranking_features(qf, gf, k1=10, k2=3, lambda_value=0.4)
  assert_same(result, metrics.evaluate_rank(reranked, *ids))
  assert result["mAP"] != metrics.evaluate_features(qf, gf, *ids)["mAP"]


def test_ranked_lists():
  qf, gf, q_pids, g_pids, q_camids, g_camids = features_case(3)
  result = metrics.evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, return_details=True)
  top = result["ranked_indices"]
  assert top.shape == (len(qf), 10)
  d = metrics.pairwise_distance(qf, gf)
  for q in range(len(qf)):
    assert np.all(np.diff(d[q, top[q]]) >= 0)  # nearest first
    removed = (g_pids[top[q]] == q_pids[q]) & (g_camids[top[q]] == q_camids[q])
    assert not np.any((g_pids[top[q]] == -1) | removed)
  np.testing.assert_array_equal(result["ranked_matches"], g_pids[top] == q_pids[:, None])
