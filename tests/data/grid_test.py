"""grid builder: the 10 trials of features_and_partitions.mat over a full-size release
of tiny JPEGs, and its errors."""
import io
import logging
import re

import numpy as np
from PIL import Image
import pytest
import scipy.io
import tensorflow as tf
import tensorflow_datasets as tfds

from reid_jax.data import grid, image_checks, partitions, pipeline
from reid_jax.data.manual import DatasetNotFoundError

NUM_IDS, NUM_DISTRACTORS = 250, 775
SPLITS = ("train", "query", "gallery")
LOADED = (0, 9)  # the partitions read with load_split
FIELDS = ("probeImIdx", "galleryImIdx", "personIdx")  # of each trial's struct, in this order


def _jpeg(rng):
  buffer = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (8, 4, 3), np.uint8)).save(buffer, "JPEG", quality=90)
  return buffer.getvalue()


def _release(num_ids, num_distractors):
  """{path in underground_reid/: JPEG bytes} named as in the release,
  `IIII_C_frame_x_y_w_h.jpeg`: each identity in probe/ and, from another camera, in
  gallery/; the distractors (0000) in gallery/."""
  rng = np.random.default_rng(num_ids)
  files = {}
  def add(folder, pid, camera):
    x, y, w, h = rng.integers(1, 300, 4)
    files[f"{folder}/{pid:04d}_{camera}_{25000 + 3 * len(files)}_{x}_{y}_{w}_{h}.jpeg"] = _jpeg(rng)
  for pid in range(1, num_ids + 1):
    probe_camera, gallery_camera = rng.choice(np.arange(1, 9), 2, replace=False)
    add("probe", pid, probe_camera)
    add("gallery", pid, gallery_camera)
  for _ in range(num_distractors):
    add("gallery", 0, rng.integers(1, 9))
  return files


def _mat(num_ids):
  """features_and_partitions.mat (MATLAB v5) as the release has it: `trainIdxAll` and
  `testIdxAll`, 1x10 cells of 1x1 structs with FIELDS, MATLAB doubles in row vectors
  (image indices: 2p - 1 for identity p's gallery image, 2p for its probe image)."""
  rng = np.random.default_rng(7)
  cells = {name: np.empty((1, grid.NUM_PARTITIONS), object)
           for name in ("trainIdxAll", "testIdxAll")}
  for k in range(grid.NUM_PARTITIONS):
    order = rng.permutation(np.arange(1, num_ids + 1))
    for name, ids in (("trainIdxAll", order[:num_ids // 2]), ("testIdxAll", order[num_ids // 2:])):
      ids = np.sort(ids).astype(np.float64)[None]
      trial = np.empty((1, 1), [(field, object) for field in FIELDS])
      trial[0, 0] = (2 * ids, 2 * ids - 1, ids)
      cells[name][0, k] = trial
  buffer = io.BytesIO()
  scipy.io.savemat(buffer, cells)
  return buffer.getvalue()


def _write(manual_dir, files, mat):
  manual_dir.mkdir()
  for path, data in {**files, grid.MAT: mat}.items():
    if data is not None:
      (manual_dir / grid.FOLDER / path).parent.mkdir(parents=True, exist_ok=True)
      (manual_dir / grid.FOLDER / path).write_bytes(data)
  return manual_dir


def _build(manual_dir, data_dir):
  builder = grid.Grid(data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def _stored(builder):
  """(filename, person_id, camera_id, roles, JPEG bytes) of every stored image, by filename."""
  ds = builder.as_dataset(split=partitions.SPLIT, decoders={
      k: tfds.decode.SkipDecoding() for k in ("image", "mask")})
  return sorted((e["filename"].decode(), e["person_id"], e["camera_id"], tuple(e["roles"]),
                 e["image"]) for e in tfds.as_numpy(ds))


@pytest.fixture(scope="module")
def files():
  return _release(NUM_IDS, NUM_DISTRACTORS)


@pytest.fixture(scope="module")
def manual_dir(files, tmp_path_factory):
  junk = {"README.txt": b"x", "sample.m": b"% x", "probe/Thumbs.db": b"\0" * 8}
  return _write(tmp_path_factory.mktemp("release") / "manual", {**files, **junk}, _mat(NUM_IDS))


@pytest.fixture(scope="module")
def built(manual_dir, tmp_path_factory):
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
def torchreid_train_ids(manual_dir):
  """The training identities of each trial, read from the .mat as torchreid reads them."""
  trials = scipy.io.loadmat(manual_dir / grid.FOLDER / grid.MAT)["trainIdxAll"][0]
  return [trials[k][0][0][2][0].astype(int).tolist() for k in range(grid.NUM_PARTITIONS)]


def test_every_partition_is_its_trial_with_the_distractors_in_the_gallery(
    table, torchreid_train_ids):
  folders = np.array([name.split("/")[0] for name in table["filenames"]])
  distractors = set(table["filenames"][table["person_ids"] == 0])
  assert len(table["filenames"]) == 1275 and len(distractors) == NUM_DISTRACTORS
  for k in range(grid.NUM_PARTITIONS):
    rows = {split: partitions.rows(table["roles"], split, k) for split in SPLITS}
    pids = {split: table["person_ids"][r] for split, r in rows.items()}
    assert {split: len(r) for split, r in rows.items()} == {
        "train": 250, "query": 125, "gallery": 900}
    train_ids = torchreid_train_ids[k]
    assert len(train_ids) == 125
    # Train: the probe and the gallery image of each of the trial's identities.
    assert sorted(zip(pids["train"], folders[rows["train"]])) == [
        (pid, folder) for pid in train_ids for folder in ("gallery", "probe")]
    # Query: the probes of the other 125; gallery: their gallery images and every distractor.
    test_ids = sorted(set(range(1, NUM_IDS + 1)) - set(train_ids))
    assert sorted(pids["query"]) == test_ids
    assert set(folders[rows["query"]]) == {"probe"}
    assert set(folders[rows["gallery"]]) == {"gallery"}
    assert sorted(pids["gallery"][pids["gallery"] > 0]) == test_ids
    assert set(table["filenames"][rows["gallery"]][pids["gallery"] == 0]) == distractors
    assert set(table["roles"][:, k]) == {partitions.TRAIN, partitions.QUERY, partitions.GALLERY}


def test_load_split_reads_the_partition_and_numbers_train_labels(built, table):
  for k in LOADED:
    for split in SPLITS:
      s = pipeline.load_split(built, split, partition=k)
      assert sorted(s.filenames) == sorted(
          table["filenames"][partitions.rows(table["roles"], split, k)])
      if split == "train":  # labels 0..124 in person id order
        np.testing.assert_array_equal(
            s.labels, np.searchsorted(np.unique(s.person_ids), s.person_ids))
        assert set(s.labels) == set(range(125))
      else:
        assert set(s.labels) == {-1}


def test_partitions_differ(table):
  train_sets = {tuple(np.unique(table["person_ids"][partitions.rows(table["roles"], "train", k)]))
                for k in range(grid.NUM_PARTITIONS)}
  assert len(train_sets) == grid.NUM_PARTITIONS


def test_ids_cameras_and_jpeg_bytes_come_from_the_release(table, files):
  assert sorted(table["filenames"]) == sorted(files)
  for name, pid, camera, data in zip(
      table["filenames"], table["person_ids"], table["camera_ids"], table["images"]):
    pid_text, camera_text = name.split("/")[1].split("_")[:2]
    assert (pid, camera) == (int(pid_text), int(camera_text) - 1)
    assert data == files[name]  # stored as it is
    np.testing.assert_array_equal(tf.io.decode_jpeg(data).numpy(),
                                  tf.io.decode_jpeg(files[name]).numpy())
  assert set(table["camera_ids"]) == set(range(8))


def test_rebuilding_stores_the_same_dataset(manual_dir, stored, tmp_path_factory):
  assert _stored(_build(manual_dir, tmp_path_factory.mktemp("tfds"))) == stored


def test_metadata_and_the_docstring_give_the_real_sizes(built):
  doc = grid.__doc__
  sizes = dict(re.findall(r"- (train|query|gallery): ([\d,]+) images", doc))
  official = {split: int(n.replace(",", "")) for split, n in sizes.items()}
  assert official == {"train": 250, "query": 125, "gallery": 900}
  assert "1,275 images of 250" in doc
  assert "`probe/`: 250 JPEGs" in doc and "`gallery/`: 1,025 JPEGs" in doc
  assert "775 distractors" in doc
  for b in (built, tfds.builder_from_directory(built.data_dir)):
    metadata = b.info.metadata
    assert metadata["official_num_images"] == official
    assert metadata["num_partitions"] == 10
    assert metadata["num_classes"] == 125
    assert metadata["num_cameras"] == 8
    assert metadata["has_masks"] is False
  assert built.info.splits[partitions.SPLIT].num_examples == 1275
  assert str(grid.Grid.VERSION) == "1.0.0"


@pytest.fixture
def small_release():
  return _release(6, 4)


@pytest.mark.parametrize("drop, missing", [
    ((), None),  # no manual directory at all
    (("probe", "gallery", grid.MAT), grid.WANTED),
    ((grid.MAT,), [f"{grid.FOLDER}/{grid.MAT}"]),
    (("probe",), [f"{grid.FOLDER}/probe/"]),
])
def test_missing_files_are_named_in_full(tmp_path, small_release, drop, missing):
  manual_dir = tmp_path / "manual"
  if missing is not None:
    kept = {p: d for p, d in small_release.items() if p.split("/")[0] not in drop}
    _write(manual_dir, {**kept, "README.txt": b"x"}, None if grid.MAT in drop else _mat(6))
  with pytest.raises(DatasetNotFoundError) as error:
    _build(manual_dir, tmp_path / "tfds")
  message = str(error.value)
  assert message.startswith(f"GRID was not found in the manual directory {manual_dir}. ")
  for wanted in grid.WANTED:
    path = f"\n  {manual_dir}/{wanted.rstrip('/')}\n"
    assert (path in message) == (missing is None or wanted in missing), wanted


@pytest.mark.parametrize("data, why", [
    (b"not an image", "not a JPEG or PNG image"),
    (b"", "the file is empty"),
])
def test_corrupt_jpeg_is_an_error_naming_the_file(tmp_path, small_release, data, why):
  bad = sorted(p for p in small_release if p.startswith("gallery/"))[-1]
  manual_dir = _write(tmp_path / "manual", {**small_release, bad: data}, _mat(6))
  with pytest.raises(image_checks.BadImageError) as error:
    _build(manual_dir, tmp_path / "tfds")
  assert f"GRID: 1 of 16 images cannot be decoded: {manual_dir}/{grid.FOLDER}/{bad}: {why}" \
      in str(error.value)


def _two_field_trials():
  trials = np.empty((1, 10), object)
  for k in range(10):
    trials[0, k] = {"probeImIdx": np.arange(3.0), "galleryImIdx": np.arange(3.0)}
  return {"trainIdxAll": trials}


@pytest.mark.parametrize("mat, match", [
    (b"not a mat file", "cannot read .* as a MATLAB file"),
    ({"ftrset": np.zeros((2, 3))}, "holds no `trainIdxAll` of 10 trials"),
    (_two_field_trials(), r"trial 0 of `trainIdxAll` in .* is not a struct of probeImIdx, "
                          r"galleryImIdx and personIdx \(it has \('probeImIdx', 'galleryImIdx'\)\)"),
])
def test_unreadable_partitions_are_an_error_naming_the_file(tmp_path, small_release, mat, match):
  if isinstance(mat, dict):  # a MATLAB file without the trials torchreid reads
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, mat)
    mat = buffer.getvalue()
  manual_dir = _write(tmp_path / "manual", small_release, mat)
  with pytest.raises(ValueError, match=match) as error:
    _build(manual_dir, tmp_path / "tfds")
  assert f"{manual_dir}/{grid.FOLDER}/{grid.MAT}" in str(error.value)


@pytest.mark.parametrize("name", [
    "0007_9_25000_1_2_3_4.jpeg",  # GRID has cameras 1..8
    "7_1_25000_1_2_3_4.jpeg",     # identity not on 4 digits
    "0000_1_25000_1_2_3_4.jpeg",  # a distractor among the probes
])
def test_malformed_probe_name_is_an_error_naming_the_file(tmp_path, small_release, name):
  manual_dir = _write(tmp_path / "manual", {**small_release, f"probe/{name}": b"x"}, _mat(6))
  with pytest.raises(ValueError, match=re.escape(f"{manual_dir}/{grid.FOLDER}/probe/{name}")):
    _build(manual_dir, tmp_path / "tfds")


def test_smaller_release_builds_with_a_warning(tmp_path, small_release, caplog):
  manual_dir = _write(tmp_path / "manual", small_release, _mat(6))
  with caplog.at_level(logging.WARNING):
    builder = _build(manual_dir, tmp_path / "tfds")
  assert "partition 0 has {'train': 6, 'query': 3, 'gallery': 7} images" in caplog.text
  assert "the official release has {'train': 250, 'query': 125, 'gallery': 900}" in caplog.text
  assert builder.info.metadata["num_classes"] == 3
