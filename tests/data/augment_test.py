"""augment: the offline translation offsets and `translate`."""
import numpy as np
import pytest
import tensorflow as tf

from reid_jax.data import augment


def test_offline_shift_is_zero_for_copy_0_and_a_pure_function_in_range():
  size, max_shift = (256, 128), 0.1
  assert all(augment.offline_shift(s, i, 0, size, max_shift) == (0, 0)
             for s in range(3) for i in range(50))
  shifts = np.array([augment.offline_shift(7, i, c, size, max_shift)
                     for i in range(400) for c in range(1, 5)])
  again = np.array([augment.offline_shift(7, i, c, size, max_shift)
                    for i in range(400) for c in range(1, 5)])
  np.testing.assert_array_equal(shifts, again)
  # Integers uniform over [-25, 25] x [-12, 12] (0.1 * 256 = 25.6, 0.1 * 128 = 12.8).
  assert shifts.dtype.kind == "i"
  assert (shifts[:, 0].min(), shifts[:, 0].max()) == (-25, 25)
  assert (shifts[:, 1].min(), shifts[:, 1].max()) == (-12, 12)
  assert abs(shifts.mean(0)).max() < 1.5
  # Copies of one image differ, and the seed matters.
  assert len({augment.offline_shift(7, 3, c, size, max_shift) for c in range(1, 5)}) > 1
  other = np.array([augment.offline_shift(8, i, 1, size, max_shift) for i in range(400)])
  assert (other != shifts[::4]).any()


@pytest.mark.parametrize("dy, dx", [(0, 0), (3, -2), (-5, 4), (-1, -1)])
def test_translate_shifts_every_plane_and_fills_zeros(dy, dx):
  rng = np.random.default_rng(0)
  image = rng.uniform(1, 255, (12, 8, 3)).astype(np.float32)
  mask = rng.integers(0, 2, (12, 8, 1)).astype(np.float32)
  out = augment.translate([tf.constant(image), tf.constant(mask)],
                          tf.constant(dy, tf.int64), tf.constant(dx, tf.int64))
  for before, after in zip((image, mask), out):
    expected = np.zeros_like(before)
    h, w = before.shape[:2]
    expected[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        before[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    np.testing.assert_array_equal(after.numpy(), expected)
