"""cuhk03 builder: the new and classic protocols from a full-size, tiny-image cuhk-03.mat
(MATLAB v7.3 written with h5py) and new-protocol configs (MATLAB v5), and its errors."""
import itertools
import logging
import re
import shutil
import types

import h5py
import numpy as np
import pytest
import scipy.io
import tensorflow as tf
import tensorflow_datasets as tfds

from reid_jax.data import cuhk03, manual, partitions, pipeline

PAIR_SIZES = (843, 440, 77, 58, 49)  # identities per camera pair, as in the release
H, W = 6, 4
BOXES = ("labeled", "detected")
NEW_SPLITS = ("train", "query", "gallery")
MATLAB_HEADER = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5"


def _cells(boxes, gid):
  """The cells (0-4 view 1, 5-9 view 2) of identity `gid` that hold an image."""
  shift = 0 if boxes == "labeled" else 3
  if gid % 50 == 0:  # some identities are seen in one view only
    return [0, 3]
  return [0, 5] + [1] * ((gid + shift) % 7 == 0) + [9] * ((gid + shift) % 11 == 0)


def _identities():
  """(gid, 0-based pair, 0-based pid) in .mat order."""
  return [(gid, pair, pid) for gid, (pair, pid) in enumerate(
      ((pair, pid) for pair, n in enumerate(PAIR_SIZES) for pid in range(n)), start=1)]


def _write_v73(path, boxes_pixels, testsets):
  """Writes cuhk-03.mat as MATLAB does: cells of object references into `#refs#`,
  arrays transposed, empty cells as 2-element uint64 arrays flagged MATLAB_empty
  (one per camera pair, shared by its empty cells, to write the file fast)."""
  with h5py.File(path, "w", userblock_size=512) as mat:
    refs, names = mat.create_group("#refs#"), (f"{i:x}" for i in itertools.count())

    def store(array, matlab_class, group=refs, name=None):
      data = group.create_dataset(name or next(names), data=array)
      data.attrs["MATLAB_class"] = matlab_class
      return data.ref

    def empty():
      ref = store(np.zeros(2, np.uint64), np.bytes_(b"double"))
      mat[ref].attrs["MATLAB_empty"] = np.uint8(1)
      return ref

    for boxes, pixels in boxes_pixels.items():
      pair_refs = []
      for pair, n in enumerate(PAIR_SIZES):
        cells = np.empty((10, n), h5py.ref_dtype)  # MATLAB's [n, 10], transposed
        no_image = empty()
        for pid in range(n):
          for index in range(10):
            name = f"{pair + 1}_{pid + 1:03d}_{1 + (index >= 5)}_{index + 1:02d}.png"
            cells[index, pid] = (store(pixels[name].T, np.bytes_(b"uint8")) if name in pixels
                                 else no_image)
        pair_refs.append(store(cells, np.bytes_(b"cell")))
      store(np.array([pair_refs], h5py.ref_dtype), np.bytes_(b"cell"), mat, boxes)
    split_refs = [store(np.array(pairs, np.float64).T, np.bytes_(b"double")) for pairs in testsets]
    store(np.array([split_refs], h5py.ref_dtype), np.bytes_(b"cell"), mat, "testsets")
  with open(path, "r+b") as f:
    f.write(MATLAB_HEADER.ljust(116) + b"\0" * 8 + b"\x00\x02IM")


def _column(values, dtype=np.float64):
  return np.array(values, dtype).reshape(-1, 1)


def _write_new_protocol(path, records, train_ids, rng):
  """A new-protocol config (Zhong et al.): its fields, shapes and 1-based indices."""
  names = [records[i][0] for i in rng.permutation(len(records))]  # filelist in its own order
  info = dict(records)
  train, query, gallery, seen = [], [], [], set()
  for i, name in enumerate(names, start=1):
    gid, camera = info[name]
    if gid in train_ids:
      train.append(i)
    elif (gid, camera) in seen:
      gallery.append(i)
    else:  # the first image of each test identity in each camera is a query
      seen.add((gid, camera))
      query.append(i)
  filelist = np.empty((len(names), 1), object)
  filelist[:, 0] = names
  scipy.io.savemat(path, {
      "filelist": filelist, "labels": _column([info[n][0] for n in names]),
      "camId": _column([info[n][1] % 2 + 1 for n in names]), "train_idx": _column(train),
      "query_idx": _column(query), "gallery_idx": _column(gallery)})
  return {split: sorted(names[i - 1] for i in idx)
          for split, idx in zip(NEW_SPLITS, (train, query, gallery))}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  """All 1,467 identities at 6x4 pixels: cuhk03_release/cuhk-03.mat and the new-protocol
  configs in manual/; `flat/` holds the same cuhk-03.mat directly."""
  root = tmp_path_factory.mktemp("cuhk03")
  rng = np.random.default_rng(0)
  pixels, info = {}, {}
  for boxes in BOXES:
    pixels[boxes], info[boxes] = {}, {}
    for gid, pair, pid in _identities():
      for index in _cells(boxes, gid):
        view = 1 + (index >= 5)
        name = f"{pair + 1}_{pid + 1:03d}_{view}_{index + 1:02d}.png"
        pixels[boxes][name] = rng.integers(0, 256, (H, W, 3), np.uint8)
        info[boxes][name] = (gid, 2 * pair + view - 1)
  tests = [set(rng.choice(np.arange(1, 1468), 100, replace=False).tolist()) for _ in range(20)]
  pair_of = {gid: (pair + 1, pid + 1) for gid, pair, pid in _identities()}  # 1-based
  testsets = [[pair_of[gid] for gid in rng.permutation(sorted(ids))] for ids in tests]
  manual_dir = root / "manual"
  (manual_dir / cuhk03.FOLDER).mkdir(parents=True)
  _write_v73(manual_dir / cuhk03.FOLDER / cuhk03.MAT, pixels, testsets)
  (root / "flat").mkdir()
  (root / "flat" / cuhk03.MAT).symlink_to(manual_dir / cuhk03.FOLDER / cuhk03.MAT)
  train_ids = set(rng.choice(np.arange(1, 1468), 767, replace=False).tolist())
  new = {boxes: _write_new_protocol(
      manual_dir / f"cuhk03_new_protocol_config_{boxes}.mat",
      sorted(info[boxes].items()), train_ids, rng) for boxes in BOXES}
  return types.SimpleNamespace(root=root, manual_dir=manual_dir, pixels=pixels, info=info,
                               tests=tests, train_ids=train_ids, new=new)


class _Records(logging.Handler):

  def __init__(self):
    super().__init__(logging.WARNING)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def built(release, tmp_path_factory):
  """Returns get(config) -> (builder, warnings): each config built once per module."""
  data_dir, cache = tmp_path_factory.mktemp("tfds"), {}

  def get(config):
    if config not in cache:
      manual_dir = release.root / "flat" if config == "labeled_classic" else release.manual_dir
      records = _Records()
      logging.getLogger().addHandler(records)
      try:
        builder = cuhk03.Cuhk03(data_dir=data_dir, config=config)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
      finally:
        logging.getLogger().removeHandler(records)
      cache[config] = builder, records.messages
    return cache[config]
  return get


def _rows(split):
  return sorted(zip(split.filenames.tolist(), split.person_ids.tolist(),
                    split.camera_ids.tolist(), split.labels.tolist()))


def _check_pixels(names, encoded, pixels):
  for name, data in zip(names, encoded):
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    np.testing.assert_array_equal(tf.io.decode_png(data).numpy(), pixels[name], err_msg=name)


@pytest.mark.parametrize("boxes", BOXES)
def test_new_protocol_splits(built, release, boxes):
  builder, _ = built(boxes)
  info, expected = release.info[boxes], release.new[boxes]
  train_ids = sorted({info[n][0] for n in expected["train"]})
  assert len(train_ids) == 767
  label = {gid: i for i, gid in enumerate(train_ids)}
  test_ids = set()
  for split in NEW_SPLITS:
    loaded = pipeline.load_split(builder, split)
    assert _rows(loaded) == [
        (n, *info[n], label[info[n][0]] if split == "train" else -1) for n in expected[split]]
    _check_pixels(loaded.filenames, loaded.images, release.pixels[boxes])
    if split != "train":
      test_ids |= set(loaded.person_ids.tolist())
  assert len(test_ids) == 700 and not test_ids & set(train_ids)
  assert builder.info.metadata["num_classes"] == 767
  assert "num_partitions" not in builder.info.metadata
  assert "protocol" not in builder.info.metadata


@pytest.mark.parametrize("boxes", BOXES)
def test_classic_partitions(built, release, boxes):
  builder, _ = built(f"{boxes}_classic")
  info = release.info[boxes]
  stored = list(tfds.as_numpy(builder.as_dataset(
      split=partitions.SPLIT, decoders={"image": tfds.decode.SkipDecoding()})))
  stored.sort(key=lambda e: e["filename"])
  names = [e["filename"].decode() for e in stored]
  assert names == sorted(info)  # every image once
  assert [(e["person_id"], e["camera_id"], e["label"]) for e in stored] == [
      (*info[n], -1) for n in names]
  _check_pixels(names, [e["image"] for e in stored], release.pixels[boxes])
  np.testing.assert_array_equal(np.stack([e["roles"] for e in stored]), [
      [6 if info[n][0] in ids else 1 for ids in release.tests] for n in names])
  for k in (0, 19) if boxes == "labeled" else (7,):
    test = release.tests[k]
    train_ids = sorted({gid for gid, _ in info.values()} - test)
    assert len(train_ids) == 1367 and len(test) == 100
    label = {gid: i for i, gid in enumerate(train_ids)}
    train = pipeline.load_split(builder, "train", partition=k)
    assert _rows(train) == sorted(
        (n, *info[n], label[info[n][0]]) for n in info if info[n][0] not in test)
    for split in ("query", "gallery"):  # the test set is both, as in torchreid
      loaded = pipeline.load_split(builder, split, partition=k)
      assert _rows(loaded) == [(n, *info[n], -1) for n in sorted(info) if info[n][0] in test]
      assert set(loaded.person_ids.tolist()) == test


@pytest.mark.parametrize("config", ["labeled", "detected", "labeled_classic", "detected_classic"])
def test_metadata_states_the_real_sizes(built, config):
  builder, warnings = built(config)
  metadata = builder.info.metadata
  boxes, classic = config.split("_")[0], config.endswith("_classic")
  official = ({"images": {"labeled": 14096, "detected": 14097}[boxes]} if classic else
              {"labeled": {"train": 7368, "query": 1400, "gallery": 5328},
               "detected": {"train": 7365, "query": 1400, "gallery": 5332}}[boxes])
  for reloaded in (builder, tfds.builder_from_directory(builder.data_dir)):
    assert reloaded.info.metadata["official_num_images"] == official
    assert reloaded.info.metadata["num_cameras"] == 10
    assert reloaded.info.metadata["has_masks"] is False
    if classic:
      assert reloaded.info.metadata["num_partitions"] == 20
      assert reloaded.info.metadata["protocol"] == "cuhk03"
  doc = " ".join(cuhk03.__doc__.split())
  if classic:
    assert "20 partitions (the .mat's `testsets`) of 1,367 train / 100 test identities" in doc
    assert "Every image (14,096 labeled, 14,097 detected)" in doc
  else:
    sizes = ", ".join(f"{s} {n:,}" for s, n in official.items())
    assert f"{boxes}: {sizes} images" in doc
    assert "767 train / 700 test identities" in doc
  assert "1,467 identities" in doc
  assert cuhk03.Cuhk03.VERSION == "1.0.0"
  assert metadata["num_cameras"] == 10
  # The tiny fixture has fewer images than the release: one warning says so.
  warnings = [m for m in warnings if m.startswith("CUHK03")]
  assert len(warnings) == 1
  assert f"CUHK03 ({config}): found " in warnings[0]
  assert "of 1467 identities; the official release has" in warnings[0]


@pytest.mark.parametrize("config, present, missing", [
    ("labeled", [], ["cuhk03_release/cuhk-03.mat", "cuhk03_new_protocol_config_labeled.mat"]),
    ("detected", ["cuhk03_new_protocol_config_detected.mat"], ["cuhk03_release/cuhk-03.mat"]),
    ("detected", ["cuhk03_release/cuhk-03.mat", "cuhk03_new_protocol_config_labeled.mat"],
     ["cuhk03_new_protocol_config_detected.mat"]),
    ("labeled_classic", [], ["cuhk03_release/cuhk-03.mat"]),
    ("detected_classic", ["cuhk03_new_protocol_config_detected.mat"],
     ["cuhk03_release/cuhk-03.mat"]),
])
def test_missing_files_are_named_with_their_path(build_dataset, tmp_path, config, present,
                                                 missing):
  manual_dir = tmp_path / "manual"
  manual_dir.mkdir()
  for path in present:
    (manual_dir / path).parent.mkdir(parents=True, exist_ok=True)
    (manual_dir / path).write_bytes(b"x")
  with pytest.raises(manual.DatasetNotFoundError) as error:
    build_dataset(cuhk03.Cuhk03, manual_dir, config=config)
  message = str(error.value)
  assert message.startswith(f"CUHK03 was not found in the manual directory {manual_dir}. ")
  assert re.findall(r"^  (.*)$", message, re.M) == [f"{manual_dir}/{m}" for m in missing]
  assert ("It is empty." if not present else
          f"It holds: {', '.join(sorted({p.split('/')[0] for p in present}))}.") in message


def _manual_with(release, tmp_path, boxes="labeled", **fields):
  """A manual dir with the release's cuhk-03.mat and its new-protocol config changed by `fields`."""
  manual_dir = tmp_path / "manual"
  manual_dir.mkdir()
  (manual_dir / cuhk03.MAT).symlink_to(release.manual_dir / cuhk03.FOLDER / cuhk03.MAT)
  name = f"cuhk03_new_protocol_config_{boxes}.mat"
  config = scipy.io.loadmat(release.manual_dir / name)
  for key, change in fields.items():
    config[key] = change(config[key])
  scipy.io.savemat(manual_dir / name, {k: v for k, v in config.items() if not k.startswith("__")})
  return manual_dir, config


def _set(index, value):
  def change(array):
    array = array.copy()
    array[index, 0] = value
    return array
  return change


@pytest.mark.parametrize("name, why", [
    ("1_001_2_10.png", "has no image in"),  # well-formed, but the cell is empty
    ("1_001_1_01.jpg", "is not a CUHK03 image name like '1_001_1_01.png'"),
])
def test_filelist_entry_without_image_is_an_error_naming_it(
    release, build_dataset, tmp_path, name, why):
  manual_dir, config = _manual_with(release, tmp_path, filelist=_set(4, name))
  with pytest.raises(ValueError) as error:
    build_dataset(cuhk03.Cuhk03, manual_dir)
  message = str(error.value)
  assert message.startswith(
      f"{manual_dir}/cuhk03_new_protocol_config_labeled.mat does not match "
      f"{manual_dir}/cuhk-03.mat:")
  assert f"filelist 5: {name!r} {why}" in message
  assert len(message.splitlines()) == 2


def test_the_person_id_of_the_new_protocol_is_the_configs_label(release, build_dataset, tmp_path):
  manual_dir, config = _manual_with(release, tmp_path, labels=_set(2, 9999))
  name = str(config["filelist"][2, 0][0])
  builder = build_dataset(cuhk03.Cuhk03, manual_dir)
  person = {}
  for split in ("train", "query", "gallery"):
    loaded = pipeline.load_split(builder, split)
    person.update(zip(loaded.filenames.tolist(), loaded.person_ids.tolist()))
  # As torchreid reads it: the config's label, whatever cuhk-03.mat's running order says.
  assert person[name] == 9999 != release.info["labeled"][name][0]


def test_unreadable_mat_is_an_error_naming_it(build_dataset, tmp_path):
  manual_dir = tmp_path / "manual"
  (manual_dir / cuhk03.FOLDER).mkdir(parents=True)
  (manual_dir / cuhk03.FOLDER / cuhk03.MAT).write_bytes(b"MATLAB 5.0 MAT-file, truncated")
  path = manual_dir / cuhk03.FOLDER / cuhk03.MAT
  with pytest.raises(ValueError, match=re.escape(f"Cannot read {path} as a MATLAB v7.3 (HDF5)")):
    build_dataset(cuhk03.Cuhk03, manual_dir, config="labeled_classic")


def test_image_that_is_not_uint8_rgb_is_an_error_naming_it(release, build_dataset, tmp_path):
  manual_dir = tmp_path / "manual"
  manual_dir.mkdir()
  shutil.copy(release.manual_dir / cuhk03.FOLDER / cuhk03.MAT, manual_dir / cuhk03.MAT)
  with h5py.File(manual_dir / cuhk03.MAT, "r+") as mat:
    bad = mat.create_dataset("#refs#/not_uint8", data=np.zeros((3, W, H), np.float64))
    mat[mat["detected"][0, 1]][5, 2] = bad.ref  # pair 2, person 3, image 6
  with pytest.raises(ValueError, match=re.escape(
      f"{manual_dir}/cuhk-03.mat: image 2_003_2_06.png (detected) is float64 of shape "
      f"({H}, {W}, 3); expected uint8 (H, W, 3).")):
    build_dataset(cuhk03.Cuhk03, manual_dir, config="detected_classic")


def test_new_protocol_config_may_lie_in_the_release_folder(tmp_path):
  files = [f"{cuhk03.FOLDER}/{cuhk03.MAT}",
           f"{cuhk03.FOLDER}/cuhk03_new_protocol_config_labeled.mat",
           "cuhk03_new_protocol_config_detected.mat"]
  for path in files:
    (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / path).write_bytes(b"x")
  needed = [cuhk03.MAT, "cuhk03_new_protocol_config_labeled.mat",
            "cuhk03_new_protocol_config_detected.mat"]
  assert cuhk03.locate(tmp_path, needed) == {name: tmp_path / path
                                             for name, path in zip(needed, files)}
