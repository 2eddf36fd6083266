"""evaluate_rank against an independent per-query numpy loop (torchreid's eval_market1501)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax import metrics
from reid_jax.metrics import rank


def reference_market(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
  """torchreid's eval_market1501 with a stable argsort, junk (-1) removed, and mINP.

  Returns (cmc, mAP, mINP, num_valid, per-query top-10 kept gallery indices)."""
  all_cmc, all_ap, all_inp, top = [], [], [], []
  for q in range(len(distmat)):
    order = np.argsort(distmat[q], kind="stable")
    remove = ((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q])) | (g_pids[order] == -1)
    kept = order[~remove]
    top.append(kept[:10])
    raw_cmc = (g_pids[kept] == q_pids[q]).astype(np.int64)
    if not raw_cmc.any():
      continue
    cmc = raw_cmc.cumsum()
    hardest = np.flatnonzero(raw_cmc).max()
    all_inp.append(cmc[hardest] / (hardest + 1.0))
    cmc[cmc > 1] = 1
    all_cmc.append(np.pad(cmc, (0, max(0, max_rank - len(cmc))), mode="edge")[:max_rank])
    precision = raw_cmc.cumsum() / (np.arange(len(raw_cmc)) + 1.0)
    all_ap.append((precision * raw_cmc).sum() / raw_cmc.sum())
  return np.mean(all_cmc, 0), np.mean(all_ap), np.mean(all_inp), len(all_ap), top


def reference_cuhk03_cmc(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, repeats, seed):
  """Single-shot CMC: per repeat, each identity keeps its visible image of smallest key, keys =
  jax.random.uniform(jax.random.key(seed), (repeats, num_gallery), float32), the documented draw."""
  keys = np.asarray(jax.random.uniform(jax.random.key(seed), (repeats, len(g_pids)), jnp.float32))
  all_cmc = []
  for q in range(len(distmat)):
    visible = (g_pids != -1) & ~((g_pids == q_pids[q]) & (g_camids == q_camids[q]))
    if not (visible & (g_pids == q_pids[q])).any():
      continue
    cmc = np.zeros(max_rank)
    for r in range(repeats):
      picked = [np.flatnonzero(visible & (g_pids == p))[np.argmin(keys[r][visible & (g_pids == p)])]
                for p in np.unique(g_pids[visible])]
      picked = np.array(sorted(picked, key=lambda i: (distmat[q, i], i)))
      hit = np.flatnonzero(g_pids[picked] == q_pids[q])[0]
      cmc += np.arange(max_rank) >= hit
    all_cmc.append(cmc / repeats)
  return np.mean(all_cmc, 0)


def random_case(rng, num_q=150, num_g=400, num_ids=40, num_cams=4, levels=None):
  """Gallery with junk (-1) and distractors (0); some queries without any valid match."""
  g_pids = rng.integers(1, num_ids, num_g)
  g_pids[rng.random(num_g) < 0.1] = -1
  g_pids[rng.random(num_g) < 0.1] = 0
  q_pids = rng.integers(1, num_ids + 10, num_q)  # ids >= num_ids never appear in the gallery
  g_camids, q_camids = rng.integers(0, num_cams, num_g), rng.integers(0, num_cams, num_q)
  d = rng.random((num_q, num_g)).astype(np.float32)
  if levels:  # coarse values: many exact ties
    d = np.round(d * levels) / levels
  return d, q_pids, g_pids, q_camids, g_camids


def assert_matches_reference(result, d, q_pids, g_pids, q_camids, g_camids, max_rank=50):
  cmc, m_ap, m_inp, num_valid, _ = reference_market(d, q_pids, g_pids, q_camids, g_camids, max_rank)
  assert result["num_valid_queries"] == num_valid
  assert result["cmc"].shape == (max_rank,)
  np.testing.assert_allclose(result["cmc"], cmc, rtol=0, atol=1e-6)
  assert abs(result["mAP"] - m_ap) < 1e-6
  assert abs(result["mINP"] - m_inp) < 1e-6


@pytest.mark.parametrize("levels", [None, 8])
def test_market_matches_reference(levels):
  rng = np.random.default_rng(0 if levels is None else 1)
  case = random_case(rng, levels=levels)
  result = metrics.evaluate_rank(*case)
  assert 0 < result["num_valid_queries"] < len(case[0])  # both kinds of queries present
  assert_matches_reference(result, *case)


def test_fewer_queries_than_a_search_group_and_odd_gallery():
  rng = np.random.default_rng(7)
  case = random_case(rng, num_q=5, num_g=401, num_ids=10)
  assert_matches_reference(metrics.evaluate_rank(*case), *case)


def test_single_camera_gallery_and_zero_distances():
  rng = np.random.default_rng(2)
  d, q_pids, g_pids, q_camids, _ = random_case(rng, levels=4)
  g_camids = np.zeros(len(g_pids), np.int64)  # queries from camera 0 have no valid match
  d[:, ::7] = 0.0
  d[:, ::14] = -0.0  # ties with +0.0, as in numpy
  result = metrics.evaluate_rank(d, q_pids, g_pids, q_camids, g_camids, max_rank=20)
  assert_matches_reference(result, d, q_pids, g_pids, q_camids, g_camids, max_rank=20)


def test_many_matches_per_query():
  """Large identities: wide searches (P = 128 and 256), pivots chosen by selects."""
  rng = np.random.default_rng(3)
  d, q_pids, g_pids, q_camids, g_camids = random_case(rng, num_q=20, num_ids=3, levels=16)
  result = metrics.evaluate_rank(d, q_pids, g_pids, q_camids, g_camids)
  assert_matches_reference(result, d, q_pids, g_pids, q_camids, g_camids)


def test_gathered_pivots(monkeypatch):
  """Levels beyond MUX_LEVELS gather their pivots; both kinds must agree with the reference."""
  monkeypatch.setattr(rank, "MUX_LEVELS", 1)
  match_ranks = jax.jit(rank.match_ranks.__wrapped__)  # retrace with the patched constant
  rng = np.random.default_rng(4)
  d, q_pids, g_pids, q_camids, g_camids = random_case(rng, num_q=16, num_g=200, num_ids=8, levels=8)
  valid = (g_pids[None] == q_pids[:, None]) & (g_camids[None] != q_camids[:, None])
  num = valid.sum(1)
  match_idx = np.zeros((len(d), 64), np.int32)
  for q in range(len(d)):
    match_idx[q, :num[q]] = np.flatnonzero(valid[q])
  ranks = np.asarray(match_ranks(jnp.asarray(d), jnp.asarray(match_idx), jnp.asarray(num, jnp.int32),
                                 jnp.asarray(q_pids, jnp.int32), jnp.asarray(g_pids, jnp.int32)))
  for q in range(len(d)):
    order = np.argsort(d[q], kind="stable")
    keep = (g_pids[order] != -1) & ~((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))
    np.testing.assert_array_equal(ranks[q, :num[q]], np.flatnonzero(g_pids[order[keep]] == q_pids[q]))


def test_float64_distances_keep_their_precision():
  rng = np.random.default_rng(5)
  d, q_pids, g_pids, q_camids, g_camids = random_case(rng, num_q=60)
  d = 1.0 + rng.permuted(np.tile(np.arange(d.shape[1]), (len(d), 1)), axis=1) * 1e-12  # equal in float32
  result = metrics.evaluate_rank(d, q_pids, g_pids, q_camids, g_camids)
  assert_matches_reference(result, d, q_pids, g_pids, q_camids, g_camids)
  rounded = metrics.evaluate_rank(d.astype(np.float32), q_pids, g_pids, q_camids, g_camids)
  assert result["mAP"] != rounded["mAP"]


def test_jax_array_input_and_details():
  rng = np.random.default_rng(6)
  d, q_pids, g_pids, q_camids, g_camids = random_case(rng, levels=8)
  result = metrics.evaluate_rank(jnp.asarray(d), q_pids, g_pids, q_camids, g_camids, return_details=True)
  assert_matches_reference(result, d, q_pids, g_pids, q_camids, g_camids)
  *_, top = reference_market(d, q_pids, g_pids, q_camids, g_camids, 50)
  np.testing.assert_array_equal(result["ranked_indices"], np.stack(top))
  np.testing.assert_array_equal(result["ranked_matches"], g_pids[np.stack(top)] == q_pids[:, None])
  valid = ~np.isnan(result["ap"])
  assert valid.sum() == result["num_valid_queries"]
  assert abs(np.mean(result["ap"][valid]) - result["mAP"]) < 1e-12


def test_cuhk03_single_shot():
  rng = np.random.default_rng(7)
  d, q_pids, g_pids, q_camids, g_camids = random_case(rng, num_q=40, num_g=200, num_ids=20, num_cams=2)
  result = metrics.evaluate_rank(d, q_pids, g_pids, q_camids, g_camids, max_rank=20,
                                 protocol="cuhk03", num_repeats=4, seed=3)
  cmc = reference_cuhk03_cmc(d, q_pids, g_pids, q_camids, g_camids, 20, 4, 3)
  np.testing.assert_allclose(result["cmc"], cmc, rtol=0, atol=1e-6)
  _, m_ap, m_inp, num_valid, _ = reference_market(d, q_pids, g_pids, q_camids, g_camids, 20)
  assert result["num_valid_queries"] == num_valid
  assert abs(result["mAP"] - m_ap) < 1e-6 and abs(result["mINP"] - m_inp) < 1e-6


def test_invalid_arguments():
  d = np.zeros((2, 3), np.float32)
  ids = np.zeros(2, np.int64), np.zeros(3, np.int64)
  with pytest.raises(ValueError, match="protocol"):
    metrics.evaluate_rank(d, *ids, *ids, protocol="duke")
  with pytest.raises(ValueError, match="g_pids"):
    metrics.evaluate_rank(d, ids[0], ids[0], *ids)
