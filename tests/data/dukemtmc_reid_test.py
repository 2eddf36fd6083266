"""dukemtmc_reid builder: records and person masks from a tiny release in the official naming,
and its errors."""
import pytest

from reid_jax.data import dukemtmc_reid, market_layout

ROOT = "DukeMTMC-reID"
NAMES = [
    ("bounding_box_train", "0001_c2_f0046182.jpg"),
    ("bounding_box_train", "0001_c5_f0051341.jpg"),
    ("bounding_box_train", "0009_c8_f0000001.jpg"),
    ("query", "0005_c1_f0049004.jpg"),
    ("bounding_box_test", "0005_c3_f0049110.jpg"),
    ("bounding_box_test", "0007_c7_f0100000.jpg"),  # a distractor: its own id, one camera
]
EXPECTED = {
    "train": [("0001_c2_f0046182.jpg", 1, 1, 0), ("0001_c5_f0051341.jpg", 1, 4, 0),
              ("0009_c8_f0000001.jpg", 9, 7, 1)],
    "query": [("0005_c1_f0049004.jpg", 5, 0, -1)],
    "gallery": [("0005_c3_f0049110.jpg", 5, 2, -1), ("0007_c7_f0100000.jpg", 7, 6, -1)],
}


@pytest.mark.parametrize("as_zip", [False, True])
def test_builds_exact_records(write_release, build_dataset, check_records, check_masks, as_zip):
  extra = {f"{ROOT}/README.md": b"x", f"{ROOT}/query/Thumbs.db": b"\0"}
  manual_dir, files = write_release(ROOT, NAMES, as_zip=as_zip, extra=extra)
  builder = build_dataset(dukemtmc_reid.DukemtmcReid, manual_dir)
  check_records(builder, files, ROOT, EXPECTED)
  assert builder.info.metadata["num_classes"] == 2
  assert builder.info.metadata["num_cameras"] == 8
  assert builder.info.metadata["official_num_images"] == {
      "train": 16522, "query": 2228, "gallery": 17661}
  for count in ("16,522", "2,228", "17,661", "702 identities"):
    assert count in dukemtmc_reid.__doc__
  check_masks(builder, {})
  assert builder.info.metadata["has_masks"] is False
  assert builder.info.metadata["mask_folder"] == f"{manual_dir}/{ROOT}_masks"


def test_builds_with_masks_from_the_mask_folder(
    write_release, build_dataset, check_masks, person_masks):
  masks, expected = person_masks(NAMES, skip=[NAMES[0]])
  manual_dir, _ = write_release(ROOT, NAMES, as_zip=True, masks=masks)
  builder = build_dataset(dukemtmc_reid.DukemtmcReid, manual_dir)
  check_masks(builder, expected)
  assert builder.info.metadata["has_masks"] is True
  assert builder.info.metadata["mask_folder"] == f"{manual_dir}/{ROOT}_masks"
  assert builder.info.metadata["num_masks"] == {"train": 2, "query": 1, "gallery": 2}
  assert dukemtmc_reid.DukemtmcReid.RELEASE_NOTES["1.1.0"] == (
      "Optional person masks from DukeMTMC-reID_masks/.")


def test_missing_dataset_says_where_to_put_it(build_dataset, tmp_path):
  manual_dir = tmp_path / "manual"
  (manual_dir / "Market-1501-v15.09.15.zip").parent.mkdir()
  (manual_dir / "Market-1501-v15.09.15.zip").write_bytes(b"x")
  with pytest.raises(market_layout.DatasetNotFoundError) as error:
    build_dataset(dukemtmc_reid.DukemtmcReid, manual_dir)
  message = str(error.value)
  assert message.startswith(f"DukeMTMC-reID was not found in the manual directory {manual_dir}. "
                            "It holds: Market-1501-v15.09.15.zip.")
  assert f"{manual_dir}/DukeMTMC-reID.zip" in message
  assert f"{manual_dir}/DukeMTMC-reID/{{bounding_box_train,query,bounding_box_test}}/" in message


@pytest.mark.parametrize("name", ["0002_c1s1_000451_03.jpg", "0001_c9_f0046182.jpg"])
def test_malformed_filename_is_an_error_naming_the_file(
    write_release, build_dataset, name):
  manual_dir, _ = write_release(ROOT, NAMES + [("bounding_box_test", name)], as_zip=True)
  with pytest.raises(ValueError, match=f"malformed image name '{name}'") as error:
    build_dataset(dukemtmc_reid.DukemtmcReid, manual_dir)
  assert f"DukeMTMC-reID.zip/{ROOT}/bounding_box_test/{name}" in str(error.value)
