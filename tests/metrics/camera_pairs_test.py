"""Rank-1 per (query camera, gallery camera) pair (`metrics.camera_pair_rank1`): a
hand-computed table, and every entry equal to `evaluate_rank`'s rank-1 on the
gallery restricted to that camera."""
import numpy as np
import pytest

from reid_jax import metrics
from reid_jax.metrics import camera_pairs


def test_hand_computed_table():
  # Gallery: cam 1 holds ids 1, 2; cam 2 holds ids 1, 2 and junk; cam 0 holds id 2.
  g_pids, g_cams = np.array([1, 2, 1, 2, -1, 2]), np.array([1, 1, 2, 2, 2, 0])
  q_pids, q_cams = np.array([1, 2, 1]), np.array([0, 0, 1])
  distmat = np.array([[0.5, 0.4, 0.1, 0.3, 0.0, 0.2],   # q0: cam 1 wrong, cam 2 right
                      [0.3, 0.3, 0.1, 0.2, 0.0, 0.1],   # q1: tie in cam 1 -> id 1 first: wrong; cam 2 wrong
                      [0.9, 0.1, 0.6, 0.6, 0.0, 0.5]])  # q2 (cam 1): cam 2 tie -> id 1 first: right
  table = metrics.camera_pair_rank1(distmat, q_pids, g_pids, q_cams, g_cams)
  np.testing.assert_array_equal(table["query_cameras"], [0, 1])
  np.testing.assert_array_equal(table["gallery_cameras"], [0, 1, 2])
  # Query camera 0 (q0, q1): gallery cam 0 only holds id 2 from q1's own camera: removed.
  np.testing.assert_array_equal(table["num_queries"], [[0, 2, 2], [0, 0, 1]])
  np.testing.assert_array_equal(table["rank1"], [[np.nan, 0.0, 0.5], [np.nan, np.nan, 1.0]])
  assert "| cam 0 | - | 0.0 (2) | 50.0 (2) |" in camera_pairs.to_markdown(table)
  assert "0,2,0.500000,2\n" in camera_pairs.to_csv(table) and "1,0,,0\n" in camera_pairs.to_csv(table)


@pytest.mark.parametrize("seed", [0, 1])
def test_each_entry_is_rank1_on_that_cameras_gallery(seed):
  rng = np.random.default_rng(seed)
  q, g = 50, 80
  distmat = rng.integers(0, 6, (q, g)).astype(np.float32)  # many ties
  q_pids, g_pids = rng.integers(-1, 10, q), rng.integers(-1, 10, g)
  q_cams, g_cams = rng.integers(0, 3, q), rng.integers(0, 4, g)
  table = metrics.camera_pair_rank1(distmat, q_pids, g_pids, q_cams, g_cams)
  for a, qc in enumerate(table["query_cameras"]):
    for b, gc in enumerate(table["gallery_cameras"]):
      rows, cols = q_cams == qc, g_cams == gc
      ref = metrics.evaluate_rank(distmat[rows][:, cols], q_pids[rows], g_pids[cols],
                                  q_cams[rows], g_cams[cols], max_rank=1)
      assert table["num_queries"][a, b] == ref["num_valid_queries"]
      if ref["num_valid_queries"]:
        assert table["rank1"][a, b] == pytest.approx(ref["cmc"][0], abs=1e-12)
      else:
        assert np.isnan(table["rank1"][a, b])
  assert np.all(np.isnan(np.diag(table["rank1"][:, :len(table["query_cameras"])])))


def test_bad_input_names_the_argument():
  with pytest.raises(ValueError, match="g_camids"):
    metrics.camera_pair_rank1(np.zeros((2, 3)), [1, 2], [1, 2, 3], [0, 1], [0, 1])
