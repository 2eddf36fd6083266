"""Top-k error: a hand-computed case with ties and NaNs, an argsort reference, jit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.metrics.classification import top_k_error

NAN = float("nan")
# Per row, the other classes scoring >= the true class ("outranking"); ties count against it:
SCORES = np.array([[3, 1, 2, 0],        # label 0: none               -> correct for every k
                   [3, 1, 2, 0],        # label 2: class 0            -> top-1 wrong
                   [1, 1, 0, 0],        # label 1: class 0, tied      -> top-1 wrong
                   [5, 5, 5, 5],        # label 3: all three, tied    -> wrong up to k = 3
                   [NAN, 0, 1, 2],      # label 0: a NaN true score   -> wrong for every k
                   [NAN, 0, 1, 2]],     # label 3: NaN outranks none  -> correct for every k
                  np.float32)
LABELS = np.array([0, 2, 1, 3, 0, 3])


@pytest.mark.parametrize("k, expected", [
    (1, [0, 1, 1, 1, 1, 0]),
    (2, [0, 0, 0, 1, 1, 0]),
    (3, [0, 0, 0, 1, 1, 0]),
    (4, [0, 0, 0, 0, 1, 0]),
])
def test_hand_computed_errors_with_ties_counted_against_the_true_class(k, expected):
  errors = top_k_error(SCORES, LABELS, k)
  assert errors.shape == (6,) and errors.dtype == jnp.float32
  np.testing.assert_array_equal(errors, expected)


def test_equals_argsort_membership_without_ties_and_jit_equals_eager():
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(64, 10)).astype(np.float32)
  labels = rng.integers(0, 10, size=64)
  ranked = np.argsort(-scores, axis=1)
  for k in (1, 3, 5, 10):
    expected = [float(label not in row[:k]) for row, label in zip(ranked, labels)]
    np.testing.assert_array_equal(top_k_error(scores, labels, k), expected)
    np.testing.assert_array_equal(jax.jit(top_k_error, static_argnums=2)(scores, labels, k),
                                  expected)
  assert float(top_k_error(scores, labels, 10).sum()) == 0  # k = C: always right


def test_a_constant_network_errs_everywhere_rather_than_winning_every_tie():
  errors = top_k_error(np.zeros((5, 100), np.float32), np.arange(5), 5)
  np.testing.assert_array_equal(errors, np.ones(5))
