"""Multi-query pooling of the queries of each identity + camera."""
import numpy as np
import pytest

from reid_jax import metrics


def test_pools_each_identity_camera_in_first_seen_order():
  qf = np.arange(12, dtype=np.float32).reshape(6, 2)
  q_pids = np.array([7, 3, 7, 3, 7, 5])
  q_camids = np.array([1, 0, 1, 2, 0, 0])
  pooled, pids, camids, first = metrics.pool_queries(qf, q_pids, q_camids, "mean")
  np.testing.assert_array_equal(first, [0, 1, 3, 4, 5])
  np.testing.assert_array_equal(pids, [7, 3, 3, 7, 5])
  np.testing.assert_array_equal(camids, [1, 0, 2, 0, 0])
  np.testing.assert_allclose(pooled, [(qf[0] + qf[2]) / 2, qf[1], qf[3], qf[4], qf[5]])
  pooled, *_ = metrics.pool_queries(-qf, q_pids, q_camids, "max")
  np.testing.assert_allclose(pooled[0], np.maximum(-qf[0], -qf[2]))


def test_unknown_pooling():
  with pytest.raises(ValueError, match="query_pooling"):
    metrics.pool_queries(np.zeros((2, 2)), [1, 1], [0, 0], "median")
