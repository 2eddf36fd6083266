"""msmt17 builder: records from tiny V1 and V2 releases (folder and zip) in the official
naming, and its errors."""
import logging
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from reid_jax.data import image_checks, msmt17
from reid_jax.data.manual import DatasetNotFoundError

# (list file, listed path, person id); the image folder follows from the list.
LISTED = [
    ("list_train.txt", "0000/0000_000_01_0303morning_0015_0.jpg", 0),
    ("list_train.txt", "0000/0000_001_05_0303morning_0036_1.jpg", 0),
    ("list_train.txt", "0001/0001_000_15_0303noon_0052_0.jpg", 1),
    ("list_train.txt", "0005/0005_003_02_0303afternoon_0001_2.jpg", 5),
    ("list_val.txt", "0001/0001_001_07_0303noon_0102_0.jpg", 1),
    ("list_val.txt", "0007/0007_000_10_0302morning_0800_1.jpg", 7),
    ("list_query.txt", "0000/0000_000_04_0113morning_0011_0.jpg", 0),
    ("list_query.txt", "0002/0002_001_11_0114noon_0520_1.jpg", 2),
    ("list_gallery.txt", "0000/0000_002_09_0113morning_0300_0.jpg", 0),
    ("list_gallery.txt", "0002/0002_000_12_0114noon_0100_0.jpg", 2),
    ("list_gallery.txt", "0003/0003_000_14_0113afternoon_0009_2.jpg", 3),
]
# (filename, person_id, camera_id, label) per split, in filename order.
EXPECTED = {
    "train": [("0000/0000_000_01_0303morning_0015_0.jpg", 0, 0, 0),
              ("0000/0000_001_05_0303morning_0036_1.jpg", 0, 4, 0),
              ("0001/0001_000_15_0303noon_0052_0.jpg", 1, 14, 1),
              ("0001/0001_001_07_0303noon_0102_0.jpg", 1, 6, 1),
              ("0005/0005_003_02_0303afternoon_0001_2.jpg", 5, 1, 2),
              ("0007/0007_000_10_0302morning_0800_1.jpg", 7, 9, 3)],
    "query": [("0000/0000_000_04_0113morning_0011_0.jpg", 0, 3, -1),
              ("0002/0002_001_11_0114noon_0520_1.jpg", 2, 10, -1)],
    "gallery": [("0000/0000_002_09_0113morning_0300_0.jpg", 0, 8, -1),
                ("0002/0002_000_12_0114noon_0100_0.jpg", 2, 11, -1),
                ("0003/0003_000_14_0113afternoon_0009_2.jpg", 3, 13, -1)],
}
RELEASES = {"v1": ("MSMT17_V1", "train", "test"),
            "v2": ("MSMT17_V2", "mask_train_v2", "mask_test_v2")}


def _write(write_release, config="v1", as_zip=False, lines=None, skip=()):
  """Writes the fixture release; `lines` replaces list files' text, `skip` drops files."""
  root, train_dir, test_dir = RELEASES[config]
  image_dir = lambda list_name: train_dir if list_name in ("list_train.txt",
                                                           "list_val.txt") else test_dir
  texts = {name: "" for name in ("list_train.txt", "list_val.txt", "list_query.txt",
                                 "list_gallery.txt")}
  for list_name, path, pid in LISTED:
    texts[list_name] += f"{path} {pid}\n"
  texts.update(lines or {})
  extra = {f"{root}/{name}": text.encode() for name, text in texts.items() if name not in skip}
  extra[f"{root}/readme.txt"] = b"not listed"
  names = [(f"{image_dir(list_name)}/{path.split('/')[0]}", path.split("/")[1])
           for list_name, path, _ in LISTED]
  manual_dir, files = write_release(root, names, as_zip=as_zip, extra=extra)
  return manual_dir, files, root


def _official_sizes_in_docstring():
  found = re.findall(r"- (train|query|gallery) \(.*?\): ([\d,]+) images", msmt17.__doc__)
  return {split: int(n.replace(",", "")) for split, n in found}


@pytest.mark.parametrize("config", ["v1", "v2"])
@pytest.mark.parametrize("as_zip", [False, True])
def test_builds_exact_records(write_release, build_dataset, read_examples, config, as_zip):
  manual_dir, files, root = _write(write_release, config, as_zip)
  builder = build_dataset(msmt17.Msmt17, manual_dir, config=config)
  _, train_dir, test_dir = RELEASES[config]
  for split, rows in EXPECTED.items():
    examples = read_examples(builder, split)
    assert [(e["filename"], e["person_id"], e["camera_id"], e["label"])
            for e in examples] == rows
    for e in examples:
      jpeg = files[f"{root}/{train_dir if split == 'train' else test_dir}/{e['filename']}"]
      assert e["raw_image"] == jpeg  # passed through, not re-encoded
      np.testing.assert_array_equal(e["image"], tf.io.decode_jpeg(jpeg).numpy())
      np.testing.assert_array_equal(e["mask"], np.zeros((1, 1, 1), np.uint8))
  for reloaded in (builder, tfds.builder_from_directory(builder.data_dir)):
    metadata = reloaded.info.metadata
    assert metadata["num_classes"] == 4
    assert metadata["num_cameras"] == 15
    assert metadata["has_masks"] is False
    assert metadata["official_num_images"] == {"train": 32621, "query": 11659, "gallery": 82161}
  assert _official_sizes_in_docstring() == metadata["official_num_images"]
  assert "32,621 images of 1,041 identities" in msmt17.__doc__
  assert "3,060 test identities" in msmt17.__doc__
  assert builder.builder_config.name == config
  assert msmt17.Msmt17.VERSION == "1.0.0"


def test_v1_is_the_default_config():
  assert msmt17.Msmt17().builder_config.name == "v1"


def test_warns_when_counts_differ_from_the_official_release(
    write_release, build_dataset, caplog):
  manual_dir, _, _ = _write(write_release)
  with caplog.at_level(logging.WARNING):
    build_dataset(msmt17.Msmt17, manual_dir)
  assert "found {'train': 6, 'query': 2, 'gallery': 3} images and 4 train identities" \
      in caplog.text
  assert "'train': 32621" in caplog.text


@pytest.mark.parametrize("as_zip", [False, True])
def test_missing_list_file_is_named_with_its_full_path(write_release, build_dataset, as_zip):
  manual_dir, _, root = _write(
      write_release, as_zip=as_zip, skip=("list_val.txt", "list_gallery.txt"))
  where = f"{manual_dir}/{root}.zip/{root}" if as_zip else f"{manual_dir}/{root}"
  with pytest.raises(DatasetNotFoundError) as error:
    build_dataset(msmt17.Msmt17, manual_dir)
  assert str(error.value) == (
      f"MSMT17 (MSMT17_V1): the release in {manual_dir} is incomplete; missing:\n"
      f"  {where}/list_val.txt\n  {where}/list_gallery.txt\n"
      f"Extract the official MSMT17_V1.zip (from {msmt17.URL}) again.")


def test_missing_release_says_where_to_put_it(build_dataset, tmp_path):
  manual_dir = tmp_path / "manual"
  (manual_dir / "MSMT17_V2").mkdir(parents=True)
  with pytest.raises(DatasetNotFoundError) as error:
    build_dataset(msmt17.Msmt17, manual_dir)
  message = str(error.value)
  assert message.startswith(
      f"MSMT17 (MSMT17_V1) was not found in the manual directory {manual_dir}. "
      "It holds: MSMT17_V2.\n")
  assert (f"{manual_dir}/MSMT17_V1/{{list_train.txt,list_val.txt,list_query.txt,"
          "list_gallery.txt,train/,test/}") in message
  assert f"{manual_dir}/MSMT17_V1.zip" in message
  assert message.endswith("It holds MSMT17_V2: build `msmt17/v2` for that release.")


@pytest.mark.parametrize("line, number", [
    ("0002/0002_000_12_0114noon_0100_0.jpg", 3),        # no person id
    ("0002/0002_000_12_0114noon_0100_0.jpg two", 3),    # not an integer
    ("0002/0002_000_16_0114noon_0100_0.jpg 2", 3),      # cameras are 01..15
    ("0002/0002_000_00_0114noon_0100_0.jpg 2", 3),
    ("0002/0002.jpg 2", 3),                             # no camera field
])
@pytest.mark.parametrize("as_zip", [False, True])
def test_malformed_list_line_names_the_list_file_and_line(
    write_release, build_dataset, line, number, as_zip):
  gallery = [f"{path} {pid}" for name, path, pid in LISTED if name == "list_gallery.txt"]
  gallery.insert(number - 1, line)
  manual_dir, _, root = _write(
      write_release, as_zip=as_zip, lines={"list_gallery.txt": "\n".join(gallery) + "\n"})
  where = f"{manual_dir}/{root}.zip/{root}" if as_zip else f"{manual_dir}/{root}"
  with pytest.raises(ValueError) as error:
    build_dataset(msmt17.Msmt17, manual_dir)
  assert str(error.value).startswith(
      f"MSMT17: malformed line {line!r} in {where}/list_gallery.txt, line {number}: ")


def test_listed_image_that_does_not_exist_names_the_list_file_and_line(
    write_release, build_dataset):
  missing = ["0009/0009_000_03_0113morning_0001_0.jpg 9",
             "0009/0009_001_03_0113morning_0002_0.jpg 9"]
  text = "".join(f"{p} {pid}\n" for n, p, pid in LISTED if n == "list_query.txt")
  manual_dir, _, root = _write(
      write_release, lines={"list_query.txt": text + "\n".join(missing) + "\n"})
  with pytest.raises(DatasetNotFoundError) as error:
    build_dataset(msmt17.Msmt17, manual_dir)
  assert str(error.value) == (
      f"MSMT17: {manual_dir}/{root}/list_query.txt, line 3 lists "
      f"{manual_dir}/{root}/test/0009/0009_000_03_0113morning_0001_0.jpg, which does not "
      "exist; 2 images it lists are missing. Extract the official MSMT17_V1.zip again.")


def test_image_listed_twice_is_an_error(write_release, build_dataset):
  text = "".join(f"{p} {pid}\n" for n, p, pid in LISTED if n == "list_val.txt")
  manual_dir, _, root = _write(
      write_release, lines={"list_val.txt": text + "0000/0000_000_01_0303morning_0015_0.jpg 0\n"})
  with pytest.raises(ValueError, match="is listed twice") as error:
    build_dataset(msmt17.Msmt17, manual_dir)
  assert (f"{root}/list_train.txt, line 1 and {manual_dir}/{root}/list_val.txt, line 3"
          in str(error.value))


@pytest.mark.parametrize("as_zip", [False, True])
def test_corrupt_image_is_an_error_naming_the_file(write_release, build_dataset, tmp_path, as_zip):
  manual_dir, _, root = _write(write_release)
  path = manual_dir / root / "test/0003/0003_000_14_0113afternoon_0009_2.jpg"
  path.write_bytes(path.read_bytes()[:100])
  if as_zip:  # the same release, zipped
    shutil.make_archive(str(manual_dir / root), "zip", manual_dir, root)
    shutil.rmtree(manual_dir / root)
  where = f"{manual_dir}/{root}.zip/{root}" if as_zip else f"{manual_dir}/{root}"
  with pytest.raises(image_checks.BadImageError) as error:
    build_dataset(msmt17.Msmt17, manual_dir)
  assert f"MSMT17: 1 of 11 images cannot be decoded: {where}/test/0003/" in str(error.value)
  assert not list((tmp_path / "tfds").glob("msmt17/v1/*"))  # nothing written
