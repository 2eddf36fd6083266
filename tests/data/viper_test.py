"""viper builder: the 10 seeded partitions of a full-size release of tiny BMPs, the
BMP -> PNG conversion, and its errors."""
import io
import logging
import re
import zipfile

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from reid_jax.data import image_checks, partitions, pipeline, viper
from reid_jax.data.manual import DatasetNotFoundError

NUM_IDS = 632
SPLITS = ("train", "query", "gallery")
LOADED = (0, 5, 9)  # the partitions read with load_split


def _bmp(pixels):
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, "BMP")
  return buffer.getvalue()


def _release(num_ids):
  """{path in VIPeR/: [H, W, 3] pixels} of `num_ids` identities named as in the release:
  identity numbers from 000..873 with gaps, a viewing angle per image."""
  rng = np.random.default_rng(num_ids)
  numbers = np.sort(rng.choice(874, num_ids, replace=False))
  angles = rng.choice([0, 45, 90, 135, 180], (num_ids, 2))
  return {f"{cam}/{n:03d}_{angle}.bmp": rng.integers(0, 256, (6, 3, 3), np.uint8)
          for n, pair in zip(numbers, angles) for cam, angle in zip(viper.CAMERAS, pair)}


def _write(manual_dir, images, as_zip=False, replace=None, extra=None):
  """Writes `images` as BMPs under VIPeR/ (or into VIPeR.v1.0.zip), the `replace`
  {path: bytes} instead of theirs, and the `extra` {path: bytes} files beside them."""
  files = {f"VIPeR/{path}": _bmp(pixels) for path, pixels in images.items()}
  files.update({f"VIPeR/{path}": data for path, data in (replace or {}).items()})
  files.update(extra or {})
  manual_dir.mkdir()
  if as_zip:
    with zipfile.ZipFile(manual_dir / viper.ARCHIVE, "w") as archive:
      for path, data in files.items():
        archive.writestr(path, data)
  else:
    for path, data in files.items():
      (manual_dir / path).parent.mkdir(parents=True, exist_ok=True)
      (manual_dir / path).write_bytes(data)
  return manual_dir


def _build(manual_dir, data_dir):
  builder = viper.Viper(data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def _stored(builder):
  """(filename, person_id, camera_id, roles, PNG bytes) of every stored image, by filename."""
  ds = builder.as_dataset(split=partitions.SPLIT, decoders={
      k: tfds.decode.SkipDecoding() for k in ("image", "mask")})
  return sorted((e["filename"].decode(), e["person_id"], e["camera_id"], tuple(e["roles"]),
                 e["image"]) for e in tfds.as_numpy(ds))


@pytest.fixture(scope="module")
def images():
  return _release(NUM_IDS)


@pytest.fixture(scope="module")
def built(images, tmp_path_factory):
  junk = {"VIPeR/README.txt": b"x", "VIPeR/cam_a/Thumbs.db": b"\0" * 8}
  manual_dir = _write(tmp_path_factory.mktemp("folder") / "manual", images, extra=junk)
  return _build(manual_dir, tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def stored(built):
  return _stored(built)


@pytest.fixture(scope="module")
def table(stored):
  """The columns of `stored`: filenames, person_ids, camera_ids, roles [N, 10], images."""
  filenames, person_ids, camera_ids, roles, images = zip(*stored)
  return {"filenames": np.array(filenames), "person_ids": np.array(person_ids),
          "camera_ids": np.array(camera_ids), "roles": np.array(roles),
          "images": np.array(images, dtype=object)}


@pytest.fixture(scope="module")
def splits(built):
  """load_split of three partitions (each reads the whole dataset: ~0.5 s)."""
  return {(k, split): pipeline.load_split(built, split, partition=k)
          for k in LOADED for split in SPLITS}


def test_every_partition_is_316_train_and_316_single_shot_test_identities(table):
  assert len(table["filenames"]) == 2 * NUM_IDS
  for k in range(viper.NUM_PARTITIONS):
    pids, cams = ({split: table[key][partitions.rows(table["roles"], split, k)]
                   for split in SPLITS} for key in ("person_ids", "camera_ids"))
    assert {split: len(pids[split]) for split in SPLITS} == {
        "train": 632, "query": 316, "gallery": 316}
    train_ids = np.unique(pids["train"])
    # The documented rule: the identities at the first 316 entries of the permutation train.
    np.testing.assert_array_equal(
        train_ids, np.sort(np.random.default_rng(k).permutation(NUM_IDS)[:316]) + 1)
    # Each train identity twice, once per camera.
    assert sorted(zip(pids["train"], cams["train"])) == [
        (pid, cam) for pid in train_ids for cam in (0, 1)]
    # Query cam_a, gallery cam_b, of the same 316 other identities; no image in both.
    assert set(cams["query"]) == {0} and set(cams["gallery"]) == {1}
    assert sorted(pids["query"]) == sorted(pids["gallery"])
    assert len(set(pids["query"])) == 316
    assert not set(pids["query"]) & set(train_ids)
    assert set(pids["query"]) | set(train_ids) == set(range(1, NUM_IDS + 1))
    assert set(table["roles"][:, k]) == {partitions.TRAIN, partitions.QUERY, partitions.GALLERY}


def test_load_split_reads_the_partition_and_numbers_train_labels(splits, table):
  for k in LOADED:
    for split in SPLITS:
      s = splits[k, split]
      assert sorted(s.filenames) == sorted(
          table["filenames"][partitions.rows(table["roles"], split, k)])
      if split == "train":
        # Labels 0..315 in person id order.
        np.testing.assert_array_equal(
            s.labels, np.searchsorted(np.unique(s.person_ids), s.person_ids))
        assert set(s.labels) == set(range(316))
      else:
        assert set(s.labels) == {-1}


def test_partitions_differ(table):
  train_sets = {tuple(np.unique(table["person_ids"][partitions.rows(table["roles"], "train", k)]))
                for k in range(viper.NUM_PARTITIONS)}
  assert len(train_sets) == viper.NUM_PARTITIONS


def test_the_ith_images_of_cam_a_and_cam_b_are_identity_i(table, images):
  found = {name: (pid, cam) for name, pid, cam in
           zip(table["filenames"], table["person_ids"], table["camera_ids"])}
  cam_a = sorted(p for p in images if p.startswith("cam_a/"))
  cam_b = sorted(p for p in images if p.startswith("cam_b/"))
  expected = {**{p: (i + 1, 0) for i, p in enumerate(cam_a)},
              **{p: (i + 1, 1) for i, p in enumerate(cam_b)}}
  assert found == expected
  assert all(a[6:9] == b[6:9] for a, b in zip(cam_a, cam_b))  # the same identity numbers


def test_images_are_the_bmp_pixels_as_png(table, images):
  for name, data in zip(table["filenames"], table["images"]):
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    np.testing.assert_array_equal(tf.io.decode_png(data).numpy(), images[name], err_msg=name)


def test_rebuilding_from_the_zip_stores_the_same_dataset(stored, images, tmp_path_factory):
  junk = {f"__MACOSX/VIPeR/cam_a/._{next(iter(images)).split('/')[1]}": b"fork",
          "VIPeR/README.txt": b"x"}
  manual_dir = _write(tmp_path_factory.mktemp("zip") / "manual", images, as_zip=True,
                      extra=junk)
  assert _stored(_build(manual_dir, tmp_path_factory.mktemp("tfds"))) == stored


def test_metadata_and_the_docstring_give_the_real_sizes(built):
  doc = viper.__doc__
  sizes = dict(re.findall(r"- (train|query|gallery): ([\d,]+) images", doc))
  official = {split: int(n.replace(",", "")) for split, n in sizes.items()}
  assert official == {"train": 632, "query": 316, "gallery": 316}
  assert "1,264 images (128x48 pixels) of 632 identities" in doc
  assert "`np.random.default_rng(k).permutation(632)`" in doc
  for b in (built, tfds.builder_from_directory(built.data_dir)):
    metadata = b.info.metadata
    assert metadata["official_num_images"] == official
    assert metadata["num_partitions"] == 10
    assert metadata["num_classes"] == 316
    assert metadata["num_cameras"] == 2
    assert metadata["has_masks"] is False
  assert built.info.splits[partitions.SPLIT].num_examples == 1264
  assert str(viper.Viper.VERSION) == "1.0.0"
  with pytest.raises(ValueError, match="has 10 partitions"):
    pipeline.load_split(built, "train", partition=10)


@pytest.mark.parametrize("content, state, missing", [
    (None, "It does not exist.", ["cam_a", "cam_b"]),
    ({"notes.txt": b"x"}, "It holds: notes.txt.", ["cam_a", "cam_b"]),
    ({"VIPeR/cam_a/000_45.bmp": b"x"}, "It holds: VIPeR.", ["cam_b"]),
])
def test_missing_release_names_the_missing_folders(tmp_path, content, state, missing):
  manual_dir = tmp_path / "manual"
  if content is not None:
    _write(manual_dir, {}, extra=content)
  with pytest.raises(DatasetNotFoundError) as error:
    _build(manual_dir, tmp_path / "tfds")
  message = str(error.value)
  assert message.startswith(f"VIPeR was not found in the manual directory {manual_dir}. {state}")
  for cam in viper.CAMERAS:
    assert (f"\n  {manual_dir}/VIPeR/{cam}\n" in message) == (cam in missing)
  assert f"{manual_dir}/VIPeR.v1.0.zip" in message


def _truncated_bmp():
  data = _bmp(np.random.default_rng(0).integers(0, 256, (16, 8, 3), np.uint8))
  return data[:len(data) // 2]


@pytest.mark.parametrize("as_zip", [False, True])
@pytest.mark.parametrize("data, why", [
    (b"not an image", "not an image format PIL knows"),
    (_truncated_bmp(), "image file is truncated"),
    (b"", "the file is empty"),
])
def test_corrupt_bmp_is_an_error_naming_the_file(tmp_path, as_zip, data, why):
  images = _release(6)
  bad = sorted(images)[-1]  # a cam_b image
  manual_dir = _write(tmp_path / "manual", images, as_zip=as_zip, replace={bad: data})
  with pytest.raises(image_checks.BadImageError) as error:
    _build(manual_dir, tmp_path / "tfds")
  where = manual_dir / ("VIPeR.v1.0.zip/VIPeR" if as_zip else "VIPeR")
  assert f"VIPeR: 1 of 12 images cannot be decoded: {where}/{bad}: " in str(error.value)
  assert why in str(error.value)


def test_unpaired_images_are_an_error_naming_them(tmp_path):
  images = _release(6)
  lone = sorted(p for p in images if p.startswith("cam_b/"))[2]
  del images[lone]
  manual_dir = _write(tmp_path / "manual", images)
  partner = sorted(p for p in images if p.startswith("cam_a/"))[2]
  with pytest.raises(ValueError, match="do not pair up") as error:
    _build(manual_dir, tmp_path / "tfds")
  assert f"image 3 is {partner} in cam_a/" in str(error.value)


def test_malformed_name_is_an_error_naming_the_file(tmp_path):
  manual_dir = _write(tmp_path / "manual", _release(4), extra={"VIPeR/cam_a/img1.bmp": b"x"})
  with pytest.raises(ValueError, match="malformed image name 'img1.bmp'") as error:
    _build(manual_dir, tmp_path / "tfds")
  assert f"{manual_dir}/VIPeR/cam_a/img1.bmp" in str(error.value)


def test_smaller_release_builds_with_a_warning(tmp_path, caplog):
  manual_dir = _write(tmp_path / "manual", _release(10))
  with caplog.at_level(logging.WARNING):
    builder = _build(manual_dir, tmp_path / "tfds")
  assert "partition 0 has {'train': 10, 'query': 5, 'gallery': 5} images" in caplog.text
  assert "the official release has {'train': 632, 'query': 316, 'gallery': 316}" in caplog.text
  assert builder.info.metadata["num_classes"] == 5
  for k in range(viper.NUM_PARTITIONS):
    np.testing.assert_array_equal(
        np.unique(pipeline.load_split(builder, "train", partition=k).person_ids),
        np.sort(np.random.default_rng(k).permutation(10)[:5]) + 1)
