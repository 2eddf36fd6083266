"""Losses against small cases computed by hand."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from reid_jax import losses

# Points (0,0) and (3,0) of identity 0, (0,4) and (6,8) of identity 1. Euclidean
# distances: ab=3, ac=4, ad=10, bc=5, bd=sqrt(73), cd=sqrt(52).
POINTS = jnp.array([[0., 0.], [3., 0.], [0., 4.], [6., 8.]])
LABELS = jnp.array([0, 0, 1, 1])
# Hardest positive / negative per anchor: a (b=3, c=4), b (a=3, c=5),
# c (d=sqrt52, a=4), d (c=sqrt52, b=sqrt73).
GAPS = np.array([3 - 4, 3 - 5, np.sqrt(52) - 4, np.sqrt(52) - np.sqrt(73)])


def test_cross_entropy_matches_hand_computation():
  logits = jnp.array([[2., 1., 0.], [0., 0., 3.]])
  labels = jnp.array([0, 1])
  log_z = [np.log(np.exp(2) + np.exp(1) + 1), np.log(2 + np.exp(3))]
  expected = ((log_z[0] - 2) + (log_z[1] - 0)) / 2
  np.testing.assert_allclose(losses.cross_entropy(logits, labels).mean(), expected, rtol=1e-6)


def test_cross_entropy_label_smoothing_spreads_eps_over_all_classes():
  logits = jnp.array([[2., 1., 0.]])
  eps = 0.3
  log_p = np.array([2., 1., 0.]) - np.log(np.exp(2) + np.exp(1) + 1)
  targets = np.array([1 - eps + eps / 3, eps / 3, eps / 3])
  np.testing.assert_allclose(losses.cross_entropy(logits, jnp.array([0]), eps),
                             -(targets * log_p).sum(), rtol=1e-6)


def test_pairwise_distances():
  d = losses.pairwise_distances(POINTS, POINTS)
  np.testing.assert_allclose(d[0], [0, 3, 4, 10], atol=1e-5)
  np.testing.assert_allclose(d[1, 3], np.sqrt(73), rtol=1e-6)
  c = losses.pairwise_distances(jnp.array([[1., 0.]]), jnp.array([[2., 0.], [0., 5.], [-1., 0.]]),
                                "cosine")
  np.testing.assert_allclose(c, [[0, 1, 2]], atol=1e-6)
  with pytest.raises(ValueError, match="manhattan"):
    losses.pairwise_distances(POINTS, POINTS, "manhattan")


def test_batch_hard_triplet_picks_hardest_positive_and_negative():
  loss = losses.batch_hard_triplet(POINTS, LABELS, margin=1.2).mean()
  # Only a (1.2 + 3 - 4 = 0.2) and c (1.2 + sqrt52 - 4) violate the margin.
  np.testing.assert_allclose(loss, (0.2 + 1.2 + np.sqrt(52) - 4) / 4, rtol=1e-6)
  np.testing.assert_allclose(losses.batch_hard_triplet(POINTS, LABELS, margin=10.0),
                             GAPS + 10, rtol=1e-6)


def test_batch_hard_triplet_soft_margin_is_softplus_of_the_gap():
  loss = losses.batch_hard_triplet(POINTS, LABELS, margin=1.2, soft_margin=True)
  np.testing.assert_allclose(loss, np.log1p(np.exp(GAPS)), rtol=1e-6)


def test_batch_hard_triplet_cosine():
  # Cosine distances: ab = bc = 1 - 1/sqrt2, ac = cd = 1, ad = 2, bd = 1 + 1/sqrt2.
  # Gaps: a -1/sqrt2, b 0, c 1/sqrt2, d -1/sqrt2; the scale of b must not matter.
  points = jnp.array([[1., 0.], [5., 5.], [0., 1.], [-1., 0.]])
  loss = losses.batch_hard_triplet(points, LABELS, margin=0.3, metric="cosine")
  np.testing.assert_allclose(loss, [0, 0.3, 0.3 + 1 / np.sqrt(2), 0], atol=1e-6)
  soft = losses.batch_hard_triplet(points, LABELS, metric="cosine", soft_margin=True)
  gaps = np.array([-1, 0, 1, -1]) / np.sqrt(2)
  np.testing.assert_allclose(soft, np.log1p(np.exp(gaps)), rtol=1e-6)


def test_batch_hard_triplet_gradient_only_reaches_hardest_pairs():
  # A far-away singleton identity is nobody's hardest negative; its own triplet
  # is far inside the margin, so it gets exactly zero gradient.
  points = jnp.concatenate([POINTS, jnp.array([[100., 100.]])])
  labels = jnp.concatenate([LABELS, jnp.array([2])])
  grads = jax.grad(lambda x: losses.batch_hard_triplet(x, labels, 1.2).sum())(points)
  assert np.all(np.isfinite(grads))
  np.testing.assert_array_equal(grads[4], 0.0)
  assert np.abs(grads[:4]).sum() > 0


def test_batch_hard_triplet_without_negatives_is_zero_with_finite_gradient():
  labels = jnp.zeros(4, jnp.int32)
  for soft in (False, True):
    loss, grads = jax.value_and_grad(lambda x: losses.batch_hard_triplet(
        x, labels, 1.2, "euclidean", soft).sum())(POINTS)
    assert loss == 0.0
    assert np.all(np.isfinite(grads))


def test_per_example_losses_keep_their_batch_shape_and_jit_equals_eager():
  logits = jax.random.normal(jax.random.key(0), (3, 4, 5))   # [H, B, C]
  labels = jnp.array([0, 4, 2, 1])
  ce = losses.cross_entropy(logits, labels, 0.1)
  assert ce.shape == (3, 4)
  np.testing.assert_allclose(ce[2], losses.cross_entropy(logits[2], labels, 0.1), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(losses.cross_entropy)(logits, labels, 0.1), ce, rtol=1e-6)
  triplet = losses.batch_hard_triplet(POINTS, LABELS, 1.2)
  assert triplet.shape == (4,)
  np.testing.assert_allclose(jax.jit(losses.batch_hard_triplet)(POINTS, LABELS, 1.2), triplet,
                             rtol=1e-6)


# W_G of a 3-input, 2-output layer in Flax layout [d_in, d_out]: its groups are rows.
KERNEL_G = jnp.array([[3., 4.], [0., 0.], [1., -1.]])


def test_group_lasso_sums_the_l2_norms_of_the_input_groups():
  np.testing.assert_allclose(losses.group_lasso(KERNEL_G), 5 + 0 + np.sqrt(2), rtol=1e-6)
  # The empty group is at the kink: its (sub)gradient is 0, the others' w / ||w||.
  grad = jax.grad(losses.group_lasso)(KERNEL_G)
  np.testing.assert_allclose(grad, [[0.6, 0.8], [0, 0], [2 ** -0.5, -(2 ** -0.5)]], rtol=1e-6)
  np.testing.assert_allclose(jax.jit(losses.group_lasso)(KERNEL_G), losses.group_lasso(KERNEL_G))


# W_L with m = 2 stripes of d_l = 2 inputs each and 2 outputs.
KERNEL_L = jnp.array([[1., 0.], [-2., 1.], [0., 3.], [4., -1.]])


def test_exclusive_group_lasso_sums_squared_l1_norms_per_output_and_stripe():
  # Output 0: stripe 0 |1| + |-2| = 3, stripe 1 |0| + |4| = 4; output 1: 1 and 4.
  expected = 3 ** 2 + 4 ** 2 + 1 ** 2 + 4 ** 2
  np.testing.assert_allclose(losses.exclusive_group_lasso(KERNEL_L, 2), expected, rtol=1e-6)
  # One group of everything: (sum |w|) per output, squared.
  np.testing.assert_allclose(losses.exclusive_group_lasso(KERNEL_L, 1), 7 ** 2 + 5 ** 2, rtol=1e-6)
  # d/dw (sum |w|)^2 = 2 * (group's L1) * sign(w).
  grad = jax.grad(losses.exclusive_group_lasso)(KERNEL_L, 2)
  np.testing.assert_allclose(grad, [[6., 0.], [-6., 2.], [0., 8.], [8., -8.]], rtol=1e-6)
  with pytest.raises(ValueError, match="does not split into 3 groups"):
    losses.exclusive_group_lasso(KERNEL_L, 3)


def test_group_sparsity_gradients_pass_check_grads():
  # Away from the kinks (no zero entries or groups) both terms are smooth.
  w = jax.random.uniform(jax.random.key(0), (8, 6), minval=0.2, maxval=1.0)
  w = w * jnp.where(jax.random.bernoulli(jax.random.key(1), 0.5, w.shape), 1.0, -1.0)
  check_grads(losses.group_lasso, (w,), order=2, modes=["rev"], atol=1e-2, rtol=1e-2)
  check_grads(lambda k: losses.exclusive_group_lasso(k, 4), (w,), order=2, modes=["rev"],
              atol=1e-2, rtol=1e-2)


def test_active_mean_averages_over_violating_triplets_only():
  np.testing.assert_allclose(losses.active_mean(jnp.array([0.0, 0.3, 0.0, 0.5])), 0.4)
  assert float(losses.active_mean(jnp.zeros(4))) == 0.0
  grad = jax.grad(lambda v: losses.active_mean(v))(jnp.array([0.0, 0.3, 0.5]))
  np.testing.assert_allclose(grad, [0.5, 0.5, 0.5])  # the count is a constant


def test_cosine_distance_per_row():
  x = jnp.array([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
  y = jnp.array([[0.0, 2.0], [6.0, 8.0], [1.0, 1.0]])
  np.testing.assert_allclose(losses.cosine_distance(x, y), [1.0, 0.0, 1.0], atol=1e-6)
  assert np.all(np.isfinite(jax.grad(lambda a: losses.cosine_distance(a, y).sum())(x)))


def test_class_mean_alignment_is_eq8_with_one_term_per_identity():
  # Identity 7: two images, identity 3: one image (unequal counts count each identity once).
  h = jnp.array([[1.0, 0.0], [1.0, 2.0], [0.0, 1.0]])
  g = jnp.array([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
  labels = jnp.array([7, 7, 3])
  # Identity 7: means (1, 1) and (1, 1): distance 0. Identity 3: (0, 1) vs (1, 0): distance 1.
  np.testing.assert_allclose(losses.class_mean_alignment(h, g, labels), 0.5, atol=1e-6)
  # Sample-wise (Eq. 9) is stricter: image 0 is 45 degrees from its g.
  expected = np.mean([1 - 1 / np.sqrt(2), 1 - 3 / np.sqrt(10), 1.0])
  np.testing.assert_allclose(losses.sample_alignment(h, g), expected, atol=1e-6)
