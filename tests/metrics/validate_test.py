"""Input validation of every public entry point of reid_jax.metrics (`metrics/validate.py`).

Every bad input raises before any kernel runs, with a message that starts with the
name of the offending argument; valid inputs give the same results as before.
"""
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax import metrics
from reid_jax.metrics import rank, validate

NUM_Q, NUM_G, DIM = 6, 20, 8
LABELS = ("q_pids", "g_pids", "q_camids", "g_camids")


def case(seed=0):
  """(distmat, qf, gf, labels dict): small, every query with a true match."""
  rng = np.random.default_rng(seed)
  qf = rng.standard_normal((NUM_Q, DIM)).astype(np.float32)
  gf = rng.standard_normal((NUM_G, DIM)).astype(np.float32)
  labels = {"q_pids": np.arange(NUM_Q) % 3, "g_pids": np.arange(NUM_G) % 4,
            "q_camids": np.zeros(NUM_Q, np.int64), "g_camids": np.ones(NUM_G, np.int64)}
  return metrics.pairwise_distance(qf, gf), qf, gf, labels


def names(name):
  """pytest.raises(match=...) for a message that starts with the argument's name."""
  return rf"^{name}\b"


def rank_args(distmat=None, **overrides):
  d, _, _, labels = case()
  labels.update(overrides)
  return (d if distmat is None else distmat, *(labels[k] for k in LABELS))


def features_args(qf=None, gf=None, **overrides):
  _, q, g, labels = case()
  labels.update(overrides)
  return (q if qf is None else qf, g if gf is None else gf, *(labels[k] for k in LABELS))


@pytest.fixture
def no_kernels(monkeypatch):
  """Fails the test if a ranking kernel is dispatched: checks run on the host first."""
  def boom(*args, **kwargs):
    raise AssertionError("a kernel ran before the inputs were checked")
  monkeypatch.setattr(rank, "match_ranks", boom)
  monkeypatch.setattr(rank, "top_valid", boom)


# --- evaluate_rank -------------------------------------------------------------------------


@pytest.mark.parametrize("to_array", [np.asarray, jnp.asarray], ids=["numpy", "jax"])
def test_rank_non_finite_distances(no_kernels, to_array):
  d, *ids = rank_args()
  d = d.copy()
  d[0, 5], d[2, 1], d[4, 19] = np.nan, np.inf, -np.inf
  with pytest.raises(ValueError, match=r"^distmat has 3 non-finite entries \(first at \[0, 5\]\)$"):
    metrics.evaluate_rank(to_array(d), *ids)


def test_rank_float64_nan_and_huge_finite_distances(no_kernels):
  """The fast pass (row sums of squares) overflows on 1e200; the exact check still passes it."""
  d, *ids = rank_args()
  d = d.astype(np.float64) * 1e200
  d[3, 7] = np.nan
  with pytest.raises(ValueError, match=r"^distmat has 1 non-finite entries \(first at \[3, 7\]\)"):
    metrics.evaluate_rank(d, *ids)


@pytest.mark.parametrize("shape,what", [((0, NUM_G), "query"), ((NUM_Q, 0), "gallery")])
def test_rank_empty_query_or_gallery(no_kernels, shape, what):
  labels = case()[3]
  ids = [labels[k][:shape[0] if k.startswith("q") else shape[1]] for k in LABELS]
  with pytest.raises(ValueError, match=names("distmat") + f".*the {what} set is empty"):
    metrics.evaluate_rank(np.zeros(shape, np.float32), *ids)


@pytest.mark.parametrize("label", LABELS)
def test_rank_label_length_mismatch(no_kernels, label):
  labels = case()[3]
  with pytest.raises(ValueError, match=names(label) + r" has length \d+, but the number of "
                     + ("rows" if label.startswith("q") else "columns") + " of distmat"):
    metrics.evaluate_rank(*rank_args(**{label: labels[label][:-1]}))


@pytest.mark.parametrize("shape", [(NUM_Q * NUM_G,), (1, NUM_Q, NUM_G)])
def test_rank_distmat_ndim(no_kernels, shape):
  d, *ids = rank_args()
  with pytest.raises(ValueError, match=names("distmat") + " must be 2-D"):
    metrics.evaluate_rank(d.reshape(shape), *ids)


@pytest.mark.parametrize("label", LABELS)
def test_rank_label_ndim(no_kernels, label):
  labels = case()[3]
  with pytest.raises(ValueError, match=names(label) + " must be 1-D"):
    metrics.evaluate_rank(*rank_args(**{label: labels[label][:, None]}))


@pytest.mark.parametrize("max_rank", [0, -3])
def test_rank_max_rank_below_one(no_kernels, max_rank):
  with pytest.raises(ValueError, match=names("max_rank") + " must be >= 1"):
    metrics.evaluate_rank(*rank_args(), max_rank=max_rank)


@pytest.mark.parametrize("max_rank", [2.5, "5", True])
def test_rank_max_rank_not_an_integer(no_kernels, max_rank):
  with pytest.raises(TypeError, match=names("max_rank")):
    metrics.evaluate_rank(*rank_args(), max_rank=max_rank)


@pytest.mark.parametrize("dtype,to_array", [
    (np.complex64, np.asarray), (np.bool_, np.asarray), (object, np.asarray), (np.str_, np.asarray),
    (np.complex64, jnp.asarray), (np.bool_, jnp.asarray)])  # jax has no object or string arrays
def test_rank_non_real_distances(no_kernels, dtype, to_array):
  d, *ids = rank_args()
  with pytest.raises(TypeError, match=names("distmat") + " must have a real"):
    metrics.evaluate_rank(to_array(d.astype(dtype)), *ids)


@pytest.mark.parametrize("label", LABELS)
@pytest.mark.parametrize("dtype", [np.float64, np.bool_, np.str_, object, np.complex64])
def test_rank_non_integer_labels(no_kernels, label, dtype):
  """Floats are refused even when whole (documented in validate.py): convert explicitly."""
  labels = case()[3]
  with pytest.raises(TypeError, match=names(label) + " must have an integer dtype"):
    metrics.evaluate_rank(*rank_args(**{label: labels[label].astype(dtype)}))


def test_rank_labels_beyond_int32(no_kernels):
  labels = case()[3]
  with pytest.raises(ValueError, match=names("g_pids") + " has values outside int32"):
    metrics.evaluate_rank(*rank_args(g_pids=labels["g_pids"] + 2**40))


def test_rank_cuhk03_repeats(no_kernels):
  with pytest.raises(ValueError, match=names("num_repeats")):
    metrics.evaluate_rank(*rank_args(), protocol="cuhk03", num_repeats=0)


# --- evaluate_features ---------------------------------------------------------------------


@pytest.mark.parametrize("arg", ["qf", "gf"])
def test_features_non_finite(no_kernels, arg):
  _, qf, gf, _ = case()
  x = (qf if arg == "qf" else gf).copy()
  x[1, 3], x[2, 0] = np.nan, np.inf
  with pytest.raises(ValueError, match=names(arg) + r" has 2 non-finite entries \(first at \[1, 3\]\)"):
    metrics.evaluate_features(*features_args(**{arg: x}))


def test_features_overflowing_norms(no_kernels):
  """Finite features whose distances would overflow float32 (silently inf before)."""
  _, qf, _, _ = case()
  with pytest.raises(ValueError, match=names("qf") + " has 6 rows whose squared L2 norm exceeds"):
    metrics.evaluate_features(*features_args(qf=qf * 1e19))


def test_features_dimension_mismatch(no_kernels):
  _, _, gf, _ = case()
  with pytest.raises(ValueError, match=names("gf") + f" has feature dimension {DIM - 1}, but qf has {DIM}"):
    metrics.evaluate_features(*features_args(gf=gf[:, 1:]))


@pytest.mark.parametrize("arg,what", [("qf", "query"), ("gf", "gallery")])
def test_features_empty(no_kernels, arg, what):
  labels = case()[3]
  empty = {k: v[:0] for k, v in labels.items() if k.startswith(arg[0])}
  with pytest.raises(ValueError, match=names(arg) + f" has 0 rows: the {what} set is empty"):
    metrics.evaluate_features(*features_args(**{arg: np.zeros((0, DIM), np.float32)}, **empty))


@pytest.mark.parametrize("arg", ["qf", "gf"])
def test_features_ndim(no_kernels, arg):
  with pytest.raises(ValueError, match=names(arg) + " must be 2-D"):
    metrics.evaluate_features(*features_args(**{arg: np.zeros(DIM, np.float32)}))


@pytest.mark.parametrize("arg", ["qf", "gf"])
@pytest.mark.parametrize("dtype", [np.complex64, np.bool_, object, np.str_])
def test_features_non_real(no_kernels, arg, dtype):
  _, qf, gf, _ = case()
  x = (qf if arg == "qf" else gf).astype(dtype)
  with pytest.raises(TypeError, match=names(arg) + " must have a real"):
    metrics.evaluate_features(*features_args(**{arg: x}))


@pytest.mark.parametrize("label", LABELS)
def test_features_label_length_mismatch(no_kernels, label):
  labels = case()[3]
  source = r"len\(qf\)" if label.startswith("q") else r"len\(gf\)"
  with pytest.raises(ValueError, match=names(label) + r" has length \d+, but " + source):
    metrics.evaluate_features(*features_args(**{label: labels[label][:-1]}))


@pytest.mark.parametrize("label", LABELS)
def test_features_float_labels(no_kernels, label):
  labels = case()[3]
  with pytest.raises(TypeError, match=names(label)):
    metrics.evaluate_features(*features_args(**{label: labels[label].astype(np.float32)}))


def test_features_options(no_kernels):
  with pytest.raises(ValueError, match=names("max_rank")):
    metrics.evaluate_features(*features_args(), max_rank=0)
  with pytest.raises(ValueError, match=names("metric")):
    metrics.evaluate_features(*features_args(), metric="manhattan")
  with pytest.raises(ValueError, match=names("query_pooling")):
    metrics.evaluate_features(*features_args(), query_pooling="median")
  with pytest.raises(ValueError, match=names("lambda_value")):
    metrics.evaluate_features(*features_args(), rerank=True, lambda_value=float("nan"))


# --- distances, pooling, re-ranking --------------------------------------------------------


def test_pairwise_distance_checks():
  _, qf, gf, _ = case()
  bad = qf.copy()
  bad[4, 2] = np.nan
  with pytest.raises(ValueError, match=r"^q has 1 non-finite entries \(first at \[4, 2\]\)"):
    metrics.pairwise_distance(bad, gf)
  with pytest.raises(ValueError, match=names("g") + " has feature dimension"):
    metrics.pairwise_distance(qf, gf[:, :3])
  with pytest.raises(TypeError, match=names("g")):
    metrics.pairwise_distance(qf, gf.astype(np.complex64))
  with pytest.raises(ValueError, match=names("q") + " has 0 rows"):
    metrics.pairwise_distance(qf[:0], gf)
  with pytest.raises(ValueError, match=names("g") + " must be 2-D"):
    metrics.pairwise_distance(qf, gf[0])


def test_pool_queries_checks():
  _, qf, _, labels = case()
  bad = qf.copy()
  bad[0, 0] = -np.inf
  q_pids, q_camids = labels["q_pids"], labels["q_camids"]
  with pytest.raises(ValueError, match=names("qf") + " has 1 non-finite"):
    metrics.pool_queries(bad, q_pids, q_camids)
  with pytest.raises(ValueError, match=names("q_camids") + r" has length 5, but len\(qf\) is 6"):
    metrics.pool_queries(qf, q_pids, q_camids[:5])
  with pytest.raises(TypeError, match=names("q_pids")):
    metrics.pool_queries(qf, q_pids.astype(float), q_camids)
  with pytest.raises(TypeError, match=names("qf")):
    metrics.pool_queries(qf > 0, q_pids, q_camids)


def test_re_ranking_checks():
  _, qf, gf, _ = case()
  q_g, q_q, g_g = (metrics.pairwise_distance(a, b) for a, b in ((qf, gf), (qf, qf), (gf, gf)))
  bad = q_q.copy()
  bad[1, 2] = np.nan
  with pytest.raises(ValueError, match=r"^q_q_dist has 1 non-finite entries \(first at \[1, 2\]\)"):
    metrics.re_ranking(q_g, bad, g_g, k1=4, k2=2)
  with pytest.raises(ValueError, match=names("g_g_dist") + r" has shape \(19, 20\), expected \(20, 20\)"):
    metrics.re_ranking(q_g, q_q, g_g[1:], k1=4, k2=2)
  with pytest.raises(ValueError, match=names("q_g_dist") + " has 0 rows: the query set is empty"):
    metrics.re_ranking(q_g[:0], q_q[:0], g_g, k1=4, k2=2)
  with pytest.raises(TypeError, match=names("q_g_dist")):
    metrics.re_ranking(q_g.astype(np.complex64), q_q, g_g, k1=4, k2=2)
  with pytest.raises(ValueError, match=names("lambda_value")):
    metrics.re_ranking(q_g, q_q, g_g, k1=4, k2=2, lambda_value=1.5)
  bad_gf = gf.copy()
  bad_gf[7, 1] = np.inf
  with pytest.raises(ValueError, match=r"^gf has 1 non-finite entries \(first at \[7, 1\]\)"):
    metrics.re_ranking_features(qf, bad_gf, k1=4, k2=2)
  with pytest.raises(ValueError, match=names("gf") + " has feature dimension"):
    metrics.KReciprocal(qf, gf[:, :2], k1=4, k2=2)
  with pytest.raises(TypeError, match=names("k1")):
    metrics.KReciprocal(qf, gf, k1=4.0, k2=2)


# --- valid inputs: unchanged results -------------------------------------------------------


def assert_same(a, b):
  assert a["num_valid_queries"] == b["num_valid_queries"]
  np.testing.assert_array_equal(a["cmc"], b["cmc"])
  assert a["mAP"] == b["mAP"] and a["mINP"] == b["mINP"]


def test_valid_inputs_of_other_types_give_the_same_results():
  d, *ids = rank_args()
  expected = metrics.evaluate_rank(d, *ids, max_rank=10)
  assert expected["num_valid_queries"] == NUM_Q
  assert_same(metrics.evaluate_rank(d.tolist(), *ids, max_rank=10), expected)  # a nested list
  assert_same(metrics.evaluate_rank(jnp.asarray(d), *ids, max_rank=10), expected)
  assert_same(metrics.evaluate_rank(d, *(x.astype(np.int16) for x in ids), max_rank=np.int64(10)),
              expected)
  assert_same(metrics.evaluate_rank(d, *(jnp.asarray(x) for x in ids), max_rank=10), expected)
  ranks = np.argsort(np.argsort(d, axis=1), axis=1)  # integer distances, the same order
  assert_same(metrics.evaluate_rank(ranks.astype(np.uint16), *ids, max_rank=10), expected)


def test_huge_finite_distances_are_accepted():
  """float64 entries whose squares overflow: finite, so evaluated as the scaled-down matrix."""
  d, *ids = rank_args()
  d = d.astype(np.float64)
  assert_same(metrics.evaluate_rank(d * 1e200, *ids, max_rank=10), metrics.evaluate_rank(d, *ids, max_rank=10))


def test_valid_features_give_the_same_results():
  d, qf, gf, labels = case()
  ids = [labels[k] for k in LABELS]
  expected = metrics.evaluate_rank(d, *ids, max_rank=10)
  assert_same(metrics.evaluate_features(qf, gf, *ids, max_rank=10), expected)
  assert_same(metrics.evaluate_features(qf.astype(np.float64), gf.astype(np.float64), *ids, max_rank=10),
              expected)
  assert_same(metrics.evaluate_features(jnp.asarray(qf), jnp.asarray(gf), *ids, max_rank=10), expected)


# --- the checks themselves -----------------------------------------------------------------


def test_finite_reports_count_and_first_index():
  x = np.zeros((3, 4), np.float32)
  assert validate.finite(x, "x") is x
  assert validate.finite(np.full((2, 2), 10**9, np.int64), "x") is not None  # ints: not read
  x[2, 1], x[1, 3] = np.nan, np.inf
  for value in (x, jnp.asarray(x), x.astype(np.float16), x[None]):
    with pytest.raises(ValueError, match=r"^x has 2 non-finite entries \(first at \[(0, )?1, 3\]\)$"):
      validate.finite(value, "x")


def test_real_dtype_accepts_numbers_only():
  for dtype in (np.float16, np.float32, np.float64, np.int8, np.uint32, jnp.bfloat16):
    validate.real_dtype(np.zeros(2, dtype), "x")
  for dtype in (np.bool_, np.complex128, object, np.str_, np.bytes_, "datetime64[s]"):
    with pytest.raises(TypeError, match=names("x")):
      validate.real_dtype(np.zeros(2, dtype), "x")

