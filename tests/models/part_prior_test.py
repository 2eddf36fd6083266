"""MPN's coarse prior (Sec. 3.2, Fig. 5) on hand-drawn masks, against jax.image.resize."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.models import layers, part_prior


def test_area_matrix_is_a_block_mean_when_sizes_divide():
  np.testing.assert_array_equal(part_prior._area_matrix(4, 2), [[.5, .5, 0, 0], [0, 0, .5, .5]])
  # 3 -> 2: each output covers 1.5 pixels.
  np.testing.assert_allclose(part_prior._area_matrix(3, 2), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])


def test_feature_mask_binarises_cell_coverage_and_dilates_one_column_right():
  # 8x4 image -> 4x2 map: every cell is 2x2 pixels.
  mask = np.zeros((1, 8, 4, 1), np.float32)
  mask[0, 2:4, 0:2] = 1           # cell (1, 0) fully on
  mask[0, 4, 0] = 1               # cell (2, 0): 1 of 4 pixels -> off
  mask[0, 6, 2:4] = 1             # cell (3, 1): 2 of 4 pixels -> on (>= 0.5)
  got = part_prior.feature_mask(jnp.asarray(mask), (4, 2))
  expected = np.array([[0, 0], [1, 1], [0, 0], [0, 1]], bool)  # (1, 1) from the dilation
  np.testing.assert_array_equal(got[0], expected)
  # The dilation only reaches right: a mask on the last column stays there.
  right = np.zeros((1, 8, 4), np.float32)
  right[0, :, 2:] = 1
  np.testing.assert_array_equal(part_prior.feature_mask(jnp.asarray(right), (4, 2))[0],
                                np.array([[0, 1]] * 4, bool))


@pytest.mark.parametrize("rows, expected", [
    ([1, 2, 3, 4], (1, 4, True)),          # inside the map
    ([0, 1, 2, 3, 4, 5], (0, 5, True)),    # touching both borders
    ([3, 4, 5], (3, 5, True)),             # touching the bottom, exactly half the height
    ([2], (0, 5, False)),                  # one row: too short to hold a body
    ([], (0, 5, False)),                   # empty
])
def test_vertical_bounds(rows, expected):
  mask = np.zeros((1, 6, 2), bool)
  mask[0, rows, 1] = True
  top, bottom, usable = part_prior.vertical_bounds(jnp.asarray(mask), min_rows=3)
  assert (int(top[0]), int(bottom[0]), bool(usable[0])) == expected


@pytest.mark.parametrize("top, bottom", [(1, 3), (0, 5), (2, 2), (0, 0), (4, 5)])
def test_row_resize_matrix_equals_bilinear_resize_of_the_cropped_rows(top, bottom):
  x = jax.random.normal(jax.random.key(0), (1, 6, 2, 3))
  weights = part_prior.row_resize_matrix(jnp.array([top]), jnp.array([bottom]), 6)
  got = jnp.einsum("bij,bjwc->biwc", weights, x)
  expected = jax.image.resize(x[:, top:bottom + 1], (1, 6, 2, 3), "linear")
  np.testing.assert_allclose(got, expected, atol=1e-6)


def test_row_resize_matrix_of_the_whole_map_is_the_identity():
  weights = part_prior.row_resize_matrix(jnp.array([0]), jnp.array([23]), 24)
  np.testing.assert_array_equal(weights[0], np.eye(24))


def _mask_with_rows(rows):
  """A 96x32 person mask on feature rows `rows` (16x16-pixel cells of a 6x2 map),
  covering half of each left cell: on after binarising, the dilation adds the right."""
  mask = np.zeros((1, 96, 32, 1), np.float32)
  mask[0, rows[0] * 16:(rows[-1] + 1) * 16, 0:8] = 1
  return jnp.asarray(mask)


def test_part_inputs_mask_multiplies_crops_and_resizes_back():
  features = jax.random.normal(jax.random.key(1), (1, 6, 2, 4))
  mask = _mask_with_rows([1, 2, 3, 4])
  m = np.zeros((1, 6, 2, 1), np.float32)
  m[0, 1:5] = 1                                          # both columns after the dilation
  expected = jax.image.resize((features * m)[:, 1:5], (1, 6, 2, 4), "linear")
  got = jax.jit(part_prior.part_inputs, static_argnums=2)(features, mask, "mask")
  np.testing.assert_allclose(got, expected, atol=1e-6)
  roi = part_prior.part_inputs(features, mask, "roi")
  np.testing.assert_allclose(roi, jax.image.resize(features[:, 1:5], (1, 6, 2, 4), "linear"),
                             atol=1e-6)


def test_part_inputs_mask_zeroes_the_background_inside_the_roi():
  features = jnp.ones((1, 6, 2, 1))
  mask = np.zeros((1, 96, 32, 1), np.float32)
  mask[0, :, 16:] = 1                                    # right column only, every row
  got = part_prior.part_inputs(features, jnp.asarray(mask), "mask")
  np.testing.assert_array_equal(got[0, :, :, 0], np.array([[0, 1]] * 6))


@pytest.mark.parametrize("rows", [[], [2]])
def test_an_unusable_mask_falls_back_to_the_whole_map(rows):
  features = jax.random.normal(jax.random.key(2), (1, 6, 2, 4))
  mask = np.zeros((1, 96, 32, 1), np.float32)
  for r in rows:
    mask[0, r * 16:(r + 1) * 16] = 1
  for prior in ("mask", "roi"):
    np.testing.assert_array_equal(part_prior.part_inputs(features, jnp.asarray(mask), prior),
                                  features)


def test_each_image_of_a_batch_gets_its_own_bounds():
  features = jax.random.normal(jax.random.key(3), (2, 6, 2, 4))
  mask = np.zeros((2, 96, 32, 1), np.float32)
  mask[0, 0:48] = 1                                      # rows 0..2
  mask[1, 32:96] = 1                                     # rows 2..5
  got = part_prior.part_inputs(features, jnp.asarray(mask), "roi")
  np.testing.assert_allclose(got[0], jax.image.resize(features[0, 0:3], (6, 2, 4), "linear"),
                             atol=1e-6)
  np.testing.assert_allclose(got[1], jax.image.resize(features[1, 2:6], (6, 2, 4), "linear"),
                             atol=1e-6)


def test_uniform_needs_no_mask_and_stripes_divide_evenly():
  features = jnp.arange(24 * 8, dtype=jnp.float32).reshape(1, 24, 8, 1)
  assert part_prior.part_inputs(features, None, "uniform") is features
  parts = part_prior.stripes(features, 6)
  assert [p.shape for p in parts] == [(1, 4, 8, 1)] * 6
  np.testing.assert_array_equal(jnp.concatenate(parts, axis=1), features)
  assert layers.stripe_bounds(8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]
  assert layers.stripe_bounds(8, 3) == [(0, 3), (2, 6), (5, 8)]


def test_unknown_prior_is_an_error():
  with pytest.raises(ValueError, match="Unknown prior 'pose'"):
    part_prior.part_inputs(jnp.zeros((1, 6, 2, 1)), None, "pose")
