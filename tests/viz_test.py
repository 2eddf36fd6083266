"""Report figures: the files exist, are PNGs, and the ranked list's borders say match/mismatch."""
import numpy as np
import pytest
from PIL import Image

from reid_jax import viz


def test_plot_cmc(tmp_path):
  path = viz.plot_cmc({"ours": np.linspace(0.5, 1.0, 50), "baseline": np.linspace(0.3, 0.9, 50)},
                      str(tmp_path / "eval" / "cmc.png"), title="Market-1501")
  image = Image.open(path)
  assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200


def test_plot_ranked_lists(tmp_path):
  rng = np.random.default_rng(0)
  queries = rng.integers(0, 255, (2, 40, 20, 3), dtype=np.uint8)
  gallery = rng.integers(0, 255, (30, 50, 25, 3), dtype=np.uint8)  # another size: resized
  ranked = np.array([[3, 1, 4], [1, 5, 9]])
  matches = np.array([[True, False, False], [False, True, True]])
  path = viz.plot_ranked_lists(queries, gallery, ranked, matches, str(tmp_path / "ranked.png"),
                               image_size=(32, 16), border=3, gap=10)
  image = np.asarray(Image.open(path).convert("RGB"))
  cell_h, cell_w = 32 + 6, 16 + 6
  assert image.shape == (2 * cell_h + 3, 4 * cell_w + 10, 3)
  for row in range(2):
    for col in range(3):
      corner = image[row * (cell_h + 3), 10 + cell_w * (col + 1)]  # top-left pixel of the border
      expected = viz.MATCH_COLOR if matches[row, col] else viz.MISMATCH_COLOR
      np.testing.assert_array_equal(corner, expected)


def test_ranked_lists_shape_mismatch(tmp_path):
  with pytest.raises(ValueError, match="agree"):
    viz.plot_ranked_lists(np.zeros((2, 8, 4, 3), np.uint8), np.zeros((5, 8, 4, 3), np.uint8),
                          np.zeros((3, 2), int), np.zeros((3, 2), bool), str(tmp_path / "x.png"))


def test_plot_matching_writes_one_row_per_pair_and_checks_the_map_shapes(tmp_path):
  images = np.full((2, 64, 32, 3), 128, np.uint8)
  beta = np.zeros((2, 8, 8), np.float32)
  beta[:, :, 7] = 1.0
  alpha = 1 + np.eye(8, dtype=np.float32)[[0, 5]]
  path = viz.plot_matching(images, images, beta, alpha, (4, 2), [(0, 0), (2, 1)],
                           str(tmp_path / "matching.png"))
  image = Image.open(path)
  width, height = image.size
  assert image.format == "PNG" and height > 200 and 1.0 < width / height < 1.6  # 2 rows x 5 panels
  with pytest.raises(ValueError, match="do not fit"):
    viz.plot_matching(images, images, beta[:, :4], alpha, (4, 2), [(0, 0)], str(tmp_path / "x.png"))


def test_plot_roc_and_camera_pairs(tmp_path):
  roc = {"fpr": np.array([0.0, 1e-3, 0.2]), "tpr": np.array([0.3, 0.6, 1.0]),
         "thresholds": np.array([0.1, 0.2, 0.5]), "num_positives": 10, "num_negatives": 5000}
  path = viz.plot_roc(roc, str(tmp_path / "eval" / "roc.png"), marks={1e-3: 0.6})
  image = Image.open(path)
  assert image.format == "PNG" and image.size[0] > 300
  table = {"query_cameras": np.array([1, 2]), "gallery_cameras": np.array([1, 2, 3]),
           "rank1": np.array([[np.nan, 0.5, 1.0], [0.25, np.nan, 0.0]]),
           "num_queries": np.array([[0, 2, 1], [4, 0, 3]])}
  path = viz.plot_camera_pairs(table, str(tmp_path / "pairs.png"))
  assert Image.open(path).format == "PNG"
