"""pairwise_distance against float64 numpy, across block boundaries."""
import numpy as np
import pytest

from reid_jax import metrics
from reid_jax.metrics import distance


def reference_distance(q, g, metric):
  q, g = q.astype(np.float64), g.astype(np.float64)
  if metric == "cosine":
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    return 1.0 - q @ g.T
  d2 = ((q[:, None, :] - g[None, :, :]) ** 2).sum(-1)
  return np.sqrt(d2) if metric == "euclidean" else d2


@pytest.mark.parametrize("metric", metrics.METRICS)
def test_matches_numpy(metric):
  rng = np.random.default_rng(0)
  q, g = rng.standard_normal((22, 16)), rng.standard_normal((40, 16))
  q[3] = 0.0  # a zero feature: cosine treats it as torch's normalize does
  g[5] = q[4]  # an exact duplicate: distance 0, never negative
  # 320 entries per block: blocks of 8 query rows, the last one (6 rows) padded.
  d = metrics.pairwise_distance(q, g, metric, block_elements=8 * 40)
  assert d.dtype == np.float32 and d.shape == (22, 40)
  expected = reference_distance(q, g, metric)
  # |q|^2 + |g|^2 - 2 q.g in float32: absolute error ~1e-6 |x|^2 on squared distances.
  far = expected > (0.1 if metric == "euclidean" else 0.0)
  np.testing.assert_allclose(d[far], expected[far], rtol=1e-5, atol=1e-4)
  assert d.min() >= 0.0 or metric == "cosine"
  assert d[4, 5] == pytest.approx(0.0, abs=1e-2 if metric == "euclidean" else 1e-4)


@pytest.mark.parametrize("num_q,num_g", [(11659, 82161), (3368, 15913), (5, 10), (1000, 10**7)])
def test_chunk_rows(num_q, num_g):
  rows = distance.chunk_rows(num_g, num_q)
  blocks = -(-num_q // rows)
  assert 1 <= rows <= distance.MAX_ROWS and (rows * num_g <= distance.BLOCK_ELEMENTS or rows <= 8)
  assert blocks * rows - num_q < blocks  # the last block nearly full
  assert blocks == -(-num_q // distance.chunk_rows(num_g))  # no more blocks than needed


def test_unknown_metric():
  with pytest.raises(ValueError, match="metric"):
    metrics.pairwise_distance(np.zeros((1, 2)), np.zeros((1, 2)), "manhattan")
