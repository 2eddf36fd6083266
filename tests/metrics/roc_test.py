"""The verification ROC (`metrics.roc_curve`, `metrics.tpr_at_fpr`): a hand-computed
case with ties and junk, and a brute-force sweep over every threshold."""
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax import metrics

# Query 0 (id 1, cam 0): gallery 0 is its match (0.1), gallery 1 has its id and camera
# (removed), gallery 4 is junk. Query 3 has id -1: none of its pairs counts.
DISTMAT = np.array([[0.1, 0.5, 0.3, 0.7, 0.0],
                    [0.4, 0.2, 0.6, 0.3, 0.9],
                    [0.3, 0.8, 0.8, 0.3, 0.0],
                    [0.0, 0.0, 0.0, 0.0, 0.0]])
Q_PIDS, Q_CAMS = np.array([1, 2, 3, -1]), np.array([0, 0, 0, 0])
G_PIDS, G_CAMS = np.array([1, 1, 2, 3, -1]), np.array([1, 0, 1, 1, 1])


def test_hand_computed_curve_counts_ties_as_accepted():
  roc = metrics.roc_curve(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
  # Positives 0.1, 0.6, 0.3; negatives 0.3 0.7 | 0.4 0.2 0.3 | 0.3 0.8 0.8.
  assert roc["num_positives"] == 3 and roc["num_negatives"] == 8
  np.testing.assert_allclose(roc["thresholds"], [0.1, 0.3, 0.6])
  np.testing.assert_allclose(roc["tpr"], [1 / 3, 2 / 3, 1])
  np.testing.assert_allclose(roc["fpr"], [0, 4 / 8, 5 / 8])  # d <= 0.3: 0.2 and three 0.3s
  got = metrics.tpr_at_fpr(roc, (0.0, 0.4, 0.5, 0.6, 0.625, 1.0))
  assert got == pytest.approx({0.0: 1 / 3, 0.4: 1 / 3, 0.5: 2 / 3, 0.6: 2 / 3, 0.625: 1.0, 1.0: 1.0})


def brute_force(distmat, q_pids, g_pids, q_cams, g_cams):
  """(TPR, FPR) at every distinct distance and at -inf, from the full masks."""
  counted = (q_pids[:, None] != -1) & (g_pids[None, :] != -1)
  same = q_pids[:, None] == g_pids[None, :]
  pos = distmat[counted & same & (q_cams[:, None] != g_cams[None, :])]
  neg = distmat[counted & ~same]
  t = np.concatenate([[-np.inf], np.unique(distmat)])
  return t, (pos[None, :] <= t[:, None]).mean(1), (neg[None, :] <= t[:, None]).mean(1), pos


@pytest.mark.parametrize("ties", [True, False])
def test_equals_a_brute_force_threshold_sweep(ties):
  rng = np.random.default_rng(int(ties))
  q, g = 40, 60
  distmat = (rng.integers(0, 12, (q, g)) if ties else rng.random((q, g))).astype(np.float32)
  q_pids, g_pids = rng.integers(-1, 8, q), rng.integers(-1, 8, g)
  q_cams, g_cams = rng.integers(0, 3, q), rng.integers(0, 3, g)
  roc = metrics.roc_curve(jnp.asarray(distmat), q_pids, g_pids, q_cams, g_cams)
  t, tpr, fpr, pos = brute_force(distmat, q_pids, g_pids, q_cams, g_cams)
  np.testing.assert_array_equal(roc["thresholds"], np.unique(pos))
  at = np.searchsorted(t, roc["thresholds"])
  np.testing.assert_allclose(roc["tpr"], tpr[at], rtol=0, atol=1e-12)
  np.testing.assert_allclose(roc["fpr"], fpr[at], rtol=0, atol=1e-12)
  targets = (0.0, 1e-3, 0.01, 0.05, 0.2, 0.5, 1.0)
  expected = {f: float(tpr[fpr <= f].max()) for f in targets}
  assert metrics.tpr_at_fpr(roc, targets) == pytest.approx(expected, abs=1e-12)


def test_degenerate_sets_and_bad_input():
  none = metrics.roc_curve(DISTMAT[:1], [5], G_PIDS, [0], G_CAMS)  # no positive pair
  assert none["num_positives"] == 0 and len(none["thresholds"]) == 0
  assert np.isnan(metrics.tpr_at_fpr(none)[1e-3])
  only = metrics.roc_curve(DISTMAT[:1, :1], [1], [1], [0], [1])  # no negative pair
  np.testing.assert_array_equal(only["fpr"], [0.0])
  with pytest.raises(ValueError, match="q_pids"):
    metrics.roc_curve(DISTMAT, Q_PIDS[:2], G_PIDS, Q_CAMS, G_CAMS)
  with pytest.raises(ValueError, match="distmat"):
    metrics.roc_curve(np.full((2, 5), np.nan), Q_PIDS[:2], G_PIDS, Q_CAMS[:2], G_CAMS)
  with pytest.raises(ValueError, match="FPR target must be in"):
    metrics.tpr_at_fpr(none, (2.0,))
