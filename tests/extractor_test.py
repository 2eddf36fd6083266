"""FeatureExtractor: the evaluation's features and distances for any images."""
import io
import os

import jax
import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

import reid_jax
from reid_jax import (config_schema, data, evaluate, extractor, inference, models, sharding,
                      train)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, synthetic_data_dir):
  """A folder of 12 query images of synthetic_reid/small: 6 PNGs as stored (64x32) in
  `png/`, 6 JPEGs upscaled to 96x48 in `jpeg/` (so resizing is exercised)."""
  query = data.load_split(data.builder("synthetic_reid/small", synthetic_data_dir), "query")
  folder = tmp_path_factory.mktemp("images")
  for sub in ("png", "jpeg"):
    os.makedirs(folder / sub)
  for i in range(12):
    if i < 6:
      (folder / "png" / f"{i:02d}.png").write_bytes(query.images[i])
    else:
      buffer = io.BytesIO()
      image = PIL.Image.open(io.BytesIO(query.images[i])).convert("RGB").resize((48, 96))
      image.save(buffer, "JPEG", quality=90)
      (folder / "jpeg" / f"{i:02d}.jpg").write_bytes(buffer.getvalue())
  return str(folder)


@pytest.fixture(scope="module")
def tiny_mlfn():
  """(config, variables) of a tiny MLFN (random weights) at 64x32, batches of 8."""
  config = config_schema.base_config("mlfn")
  config.model_kwargs = dict(width=0.25, stage_blocks=(1, 1, 1, 1), groups=8, embed_dim=32)
  config.image_size, config.eval_batch_size = (64, 32), 8
  model = models.get_model("mlfn", 0, **config.model_kwargs)
  return config, train.init_variables(config, model, jax.random.key(0, impl="unsafe_rbg"),
                                      load_weights=False)


def _evaluation_features(config, variables, paths, flip):
  """`inference.extract_features` (the evaluator's) of the images at `paths`."""
  config = config.copy_and_resolve_references()
  config.flip_test = flip
  model = models.get_model(config.model, 0, **config.model_kwargs)
  split = extractor.FeatureExtractor.split([open(p, "rb").read() for p in paths], paths)
  return inference.extract_features(model, variables, split, config, sharding.create_mesh())


def _decoded(paths):
  """uint8 RGB arrays as PIL decodes the files (JPEGs as `augment.decode` does)."""
  return [np.asarray(PIL.Image.open(p).convert("RGB")) for p in paths]


def test_features_are_the_evaluations_from_paths_folder_arrays_and_datasets(tiny_mlfn,
                                                                            image_folder):
  config, variables = tiny_mlfn
  paths = extractor.list_images(image_folder)
  assert [os.path.relpath(p, image_folder) for p in paths] == (
      [f"jpeg/{i:02d}.jpg" for i in range(6, 12)] + [f"png/{i:02d}.png" for i in range(6)])
  by_flip = {}
  for flip in (False, True):
    expected = by_flip[flip] = _evaluation_features(config, variables, paths, flip)
    extract = reid_jax.FeatureExtractor(config, variables=variables, flip=flip)
    assert expected.shape == (12, 32) and expected.dtype == np.float32
    np.testing.assert_array_equal(extract(image_folder), expected)
    np.testing.assert_array_equal(extract(paths), expected)
    np.testing.assert_array_equal(extract(_decoded(paths)), expected)   # sizes differ: a list
    np.testing.assert_array_equal(extract(tf.data.Dataset.from_tensor_slices(
        [open(p, "rb").read() for p in paths])), expected)
  assert np.abs(by_flip[True] - by_flip[False]).max() > 1e-4
  pngs = np.stack(_decoded(paths[6:]))
  np.testing.assert_array_equal(
      extract(tf.data.Dataset.from_tensor_slices({"image": pngs})), expected[6:])
  np.testing.assert_allclose(extract(paths[::-1]), expected[::-1], rtol=1e-6, atol=1e-6)


def test_a_workdir_without_a_run_is_an_error_naming_it(tmp_path):
  with pytest.raises(evaluate.WorkdirError, match=f"The workdir {tmp_path / 'no'} does not exist"):
    extractor.FeatureExtractor(str(tmp_path / "no"))
  with pytest.raises(evaluate.WorkdirError,
                     match=f"Cannot read the run's config {tmp_path}/config.json: No such file"):
    extractor.FeatureExtractor(tmp_path)


def test_arrays_that_are_not_rgb_uint8_images_are_an_error_naming_the_image(tiny_mlfn):
  config, variables = tiny_mlfn
  extract = extractor.FeatureExtractor(config, variables=variables)
  images = [np.zeros((64, 32, 3), np.uint8), np.zeros((64, 32), np.uint8)]
  with pytest.raises(ValueError, match=r"images\[1\]: expected an HWC RGB uint8 image, got "
                                       r"uint8 \(64, 32\)"):
    extract(images)


def test_unreadable_files_are_all_named_or_skipped(tiny_mlfn, image_folder, tmp_path):
  config, variables = tiny_mlfn
  folder = tmp_path / "mixed"
  os.makedirs(folder)
  good = extractor.list_images(image_folder)[:3]
  for i, path in enumerate(good):
    (folder / f"{i}_good.jpg").write_bytes(open(path, "rb").read())
  jpeg = open(good[0], "rb").read()
  (folder / "3_truncated.jpg").write_bytes(jpeg[:len(jpeg) // 2])
  (folder / "4_empty.png").write_bytes(b"")
  (folder / "5_notes.png").write_text("not an image")
  (folder / "readme.txt").write_text("not listed: not an image name")
  extract = extractor.FeatureExtractor(config, variables=variables)
  with pytest.raises(extractor.UnreadableImagesError) as error:
    extract(str(folder))
  message = str(error.value)
  assert message.startswith("Cannot read 3 image(s): ")
  for name in ("3_truncated.jpg", "4_empty.png", "5_notes.png"):
    assert str(folder / name) in message
  assert "\n" not in message and "good" not in message
  features, kept, bad = extract.from_files(str(folder), skip_bad=True)
  assert [os.path.basename(p) for p in kept] == ["0_good.jpg", "1_good.jpg", "2_good.jpg"]
  assert [os.path.basename(p) for p, _ in bad] == ["3_truncated.jpg", "4_empty.png",
                                                   "5_notes.png"]
  np.testing.assert_array_equal(features, extract(good))


@pytest.fixture(scope="module")
def query_split(synthetic_data_dir):
  return data.load_split(data.builder("synthetic_reid/small", synthetic_data_dir), "query")


def test_kpm_distances_are_minus_its_score_of_every_pair(query_split):
  config = config_schema.base_config("kpm")
  config.model_kwargs = dict(width=0.25, stage_blocks=(1, 1, 1, 1))
  config.image_size, config.eval_batch_size, config.pairwise.gallery_block = (64, 32), 8, 3
  model = models.get_model("kpm", 0, **config.model_kwargs)
  variables = train.init_variables(config, model, jax.random.key(0, impl="unsafe_rbg"),
                                   load_weights=False)
  extract = extractor.FeatureExtractor(config, variables=variables)
  query, gallery = query_split.take(np.arange(2)), query_split.take(np.arange(2, 9))
  dist = extract.distances(query, gallery)

  (batch,) = data.eval_dataset(query_split.take(np.arange(9)), 9, (64, 32)).as_numpy_iterator()
  @jax.jit
  def scores(images):
    encoded = model.apply(variables, images, method="encode")
    take = lambda rows: jax.tree.map(lambda a: a[rows], encoded)
    return model.apply(variables, take(slice(0, 2)), take(slice(2, 9)), method="score")

  assert dist.shape == (2, 7)   # 7 gallery images in blocks of 3
  np.testing.assert_allclose(dist, -np.asarray(scores(batch["image"])), rtol=1e-5, atol=1e-5)
