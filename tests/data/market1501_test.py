"""market1501 builder: records and person masks from a tiny release in the official naming,
and its errors."""
import logging

import pytest
import tensorflow_datasets as tfds

from reid_jax.data import market1501, market_layout

ROOT = "Market-1501-v15.09.15"
NAMES = [
    ("bounding_box_train", "0002_c1s1_000451_03.jpg"),
    ("bounding_box_train", "0002_c3s1_001001_01.jpg"),
    ("bounding_box_train", "0010_c6s2_012345_02.jpg"),
    ("bounding_box_train", "0007_c2s1_000101_01.jpg"),
    ("query", "0003_c1s1_000151_00.jpg"),
    ("query", "0005_c4s2_000201_00.jpg"),
    ("bounding_box_test", "0003_c2s1_000301_01.jpg"),
    ("bounding_box_test", "-1_c1s1_000401_00.jpg"),
    ("bounding_box_test", "0000_c3s1_000501_02.jpg"),
    ("bounding_box_test", "0005_c5s3_001111_01.jpg"),
]
# (filename, person_id, camera_id, label) per split, in filename order.
EXPECTED = {
    "train": [("0002_c1s1_000451_03.jpg", 2, 0, 0), ("0002_c3s1_001001_01.jpg", 2, 2, 0),
              ("0007_c2s1_000101_01.jpg", 7, 1, 1), ("0010_c6s2_012345_02.jpg", 10, 5, 2)],
    "query": [("0003_c1s1_000151_00.jpg", 3, 0, -1), ("0005_c4s2_000201_00.jpg", 5, 3, -1)],
    "gallery": [("-1_c1s1_000401_00.jpg", -1, 0, -1), ("0000_c3s1_000501_02.jpg", 0, 2, -1),
                ("0003_c2s1_000301_01.jpg", 3, 1, -1), ("0005_c5s3_001111_01.jpg", 5, 4, -1)],
}


@pytest.mark.parametrize("as_zip", [False, True])
def test_builds_exact_records(
    write_release, build_dataset, check_records, check_masks, tmp_path, as_zip):
  junk = {f"{ROOT}/bounding_box_train/Thumbs.db": b"\0" * 8, f"{ROOT}/readme.txt": b"x"}
  if as_zip:  # the official zip also holds gt_bbox/; macOS zips add __MACOSX/
    junk[f"{ROOT}/gt_bbox/0001_c1s1_001051_00.jpg"] = b"not an image"
    junk[f"__MACOSX/{ROOT}/query/._0003_c1s1_000151_00.jpg"] = b"resource fork"
  manual_dir, files = write_release(ROOT, NAMES, as_zip=as_zip, extra=junk)
  builder = build_dataset(market1501.Market1501, manual_dir)
  check_records(builder, files, ROOT, EXPECTED)
  check_masks(builder, {})  # no mask folder: every mask is empty
  metadata = builder.info.metadata
  assert metadata["num_classes"] == 3
  assert metadata["num_cameras"] == 6
  assert metadata["has_masks"] is False
  assert metadata["mask_folder"] == f"{manual_dir}/{ROOT}_masks"
  assert metadata["num_masks"] == {"train": 0, "query": 0, "gallery": 0}
  # The real release's sizes, as the module docstring states them.
  assert metadata["official_num_images"] == {"train": 12936, "query": 3368, "gallery": 19732}
  for count in ("12,936", "3,368", "19,732", "751 identities"):
    assert count in market1501.__doc__
  # The metadata is saved with the dataset and survives reloading it.
  for reloaded in (market1501.Market1501(data_dir=tmp_path / "tfds"),
                   tfds.builder_from_directory(builder.data_dir)):
    assert reloaded.info.metadata["num_classes"] == 3
    assert reloaded.info.metadata["has_masks"] is False
    assert reloaded.info.metadata["mask_folder"] == f"{manual_dir}/{ROOT}_masks"


@pytest.mark.parametrize("as_zip", [False, True])
def test_builds_with_masks_from_the_mask_folder(
    write_release, build_dataset, check_records, check_masks, person_masks, tmp_path, caplog,
    as_zip):
  unmasked = ("query", "0005_c4s2_000201_00.jpg")
  masks, expected = person_masks(NAMES, skip=[unmasked])
  # Not masks: other files in the folder are ignored.
  masks.update({"bounding_box_train/Thumbs.db": b"\0", "notes.txt": b"x"})
  manual_dir, files = write_release(ROOT, NAMES, as_zip=as_zip, masks=masks)
  with caplog.at_level(logging.WARNING):
    builder = build_dataset(market1501.Market1501, manual_dir)
  check_records(builder, files, ROOT, EXPECTED)
  check_masks(builder, expected)  # the image without a mask file gets an empty one
  for reloaded in (builder, tfds.builder_from_directory(builder.data_dir)):
    metadata = reloaded.info.metadata
    assert metadata["has_masks"] is True
    assert metadata["mask_folder"] == f"{manual_dir}/{ROOT}_masks"
    assert metadata["num_masks"] == {"train": 4, "query": 1, "gallery": 4}
  assert f"1 of 10 images have no mask in {manual_dir}/{ROOT}_masks" in caplog.text
  assert f"{manual_dir}/{ROOT}_masks/query/0005_c4s2_000201_00.png" in caplog.text


def test_mask_folder_without_any_matching_mask_is_an_error(
    write_release, build_dataset, person_masks):
  masks, _ = person_masks(NAMES)
  # A wrong layout: the masks one folder too deep.
  manual_dir, _ = write_release(ROOT, NAMES, masks={f"{ROOT}/{p}": m for p, m in masks.items()})
  folder = f"{manual_dir}/{ROOT}_masks"
  with pytest.raises(FileNotFoundError, match=f"the mask folder {folder} holds no mask") as error:
    build_dataset(market1501.Market1501, manual_dir)
  assert f"It holds: {ROOT}." in str(error.value)
  assert f"{folder}/bounding_box_train/0002_c1s1_000451_03.png" in str(error.value)


@pytest.mark.parametrize("data", [b"not a png", b"\x89PNG\r\n\x1a\n truncated"])
def test_undecodable_mask_is_an_error_naming_the_file(
    write_release, build_dataset, person_masks, data):
  masks, _ = person_masks(NAMES)
  masks["bounding_box_test/0003_c2s1_000301_01.png"] = data
  manual_dir, _ = write_release(ROOT, NAMES, as_zip=True, masks=masks)
  path = f"{manual_dir}/{ROOT}_masks/bounding_box_test/0003_c2s1_000301_01.png"
  with pytest.raises(ValueError, match=f"Cannot decode the person mask {path} as an image"):
    build_dataset(market1501.Market1501, manual_dir)


def test_manual_download_instructions_describe_the_mask_folder():
  instructions = market1501.Market1501.MANUAL_DOWNLOAD_INSTRUCTIONS
  assert f"`{ROOT}_masks/bounding_box_train/0002_c1s1_000451_03.png`" in instructions
  assert market1501.Market1501.VERSION == "1.2.0"
  assert "decode" in market1501.Market1501.RELEASE_NOTES["1.2.0"]


def test_warns_when_counts_differ_from_the_official_release(
    write_release, build_dataset, caplog):
  manual_dir, _ = write_release(ROOT, NAMES)
  with caplog.at_level(logging.WARNING):
    build_dataset(market1501.Market1501, manual_dir)
  assert "the official release has" in caplog.text
  assert "'train': 12936" in caplog.text


@pytest.mark.parametrize("content, state", [
    (None, "It does not exist."),
    ({}, "It is empty."),
    ({"notes.txt": b"x"}, "It holds: notes.txt."),
    ({f"{ROOT}/readme.txt": b"x"}, f"It holds: {ROOT}."),
])
def test_missing_dataset_says_where_to_put_it(build_dataset, tmp_path, content, state):
  manual_dir = tmp_path / "manual"
  if content is not None:
    manual_dir.mkdir()
    for path, data in content.items():
      (manual_dir / path).parent.mkdir(parents=True, exist_ok=True)
      (manual_dir / path).write_bytes(data)
  with pytest.raises(market_layout.DatasetNotFoundError) as error:
    build_dataset(market1501.Market1501, manual_dir)
  message = str(error.value)
  assert message.startswith(f"Market-1501 was not found in the manual directory {manual_dir}. ")
  assert state in message
  assert f"{manual_dir}/Market-1501-v15.09.15.zip" in message
  assert f"{manual_dir}/Market-1501-v15.09.15/{{bounding_box_train,query,bounding_box_test}}/" \
      in message


def test_incomplete_release_names_the_missing_folder(write_release, build_dataset):
  manual_dir, _ = write_release(ROOT, [n for n in NAMES if n[0] != "query"])
  with pytest.raises(market_layout.DatasetNotFoundError,
                     match=f"No JPEG images in query/ of {manual_dir / ROOT}"):
    build_dataset(market1501.Market1501, manual_dir)


@pytest.mark.parametrize("name", [
    "0002_c1_000451.jpg",         # Duke-style name
    "2_c1s1_000451_03.jpg",       # id not on 4 digits
    "0002_c7s1_000451_03.jpg",    # Market has cameras c1..c6
])
def test_malformed_filename_is_an_error_naming_the_file(
    write_release, build_dataset, name):
  manual_dir, _ = write_release(ROOT, NAMES + [("query", name)])
  with pytest.raises(ValueError, match=f"malformed image name '{name}'") as error:
    build_dataset(market1501.Market1501, manual_dir)
  assert f"{manual_dir / ROOT}/query/{name}" in str(error.value)


def test_junk_in_train_is_an_error(write_release, build_dataset):
  manual_dir, _ = write_release(ROOT, NAMES + [("bounding_box_train", "-1_c1s1_000001_00.jpg")])
  with pytest.raises(ValueError, match="junk or distractor id -1 in the train split"):
    build_dataset(market1501.Market1501, manual_dir)
