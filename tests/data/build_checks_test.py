"""Datasets are checked while they are built: an image the pipeline cannot decode
fails the build at once, naming the file, and leaves nothing behind."""
import io
import time

import numpy as np
from PIL import Image
import pytest

from reid_jax.data import image_checks, market1501

ROOT = "Market-1501-v15.09.15"
NAMES = [("bounding_box_train", "0002_c1s1_000451_03.jpg"),
         ("bounding_box_train", "0007_c2s1_000101_01.jpg"),
         ("query", "0003_c1s1_000151_00.jpg"),
         ("bounding_box_test", "0003_c2s1_000301_01.jpg")]
BAD = f"{ROOT}/bounding_box_train/0007_c2s1_000101_01.jpg"
JPEG_ERROR = "jpeg::Uncompress failed. Invalid JPEG data or crop window"


def _encoded(fmt, seed=0):
  pixels = np.random.default_rng(seed).integers(0, 256, (16, 8, 3), np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, fmt)
  return buffer.getvalue()


def _built_versions(data_dir):
  """Every folder under data_dir/market1501 (a version, or tfds' incomplete one)."""
  folder = data_dir / "market1501"
  return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("as_zip", [False, True])
def test_a_truncated_jpeg_fails_the_build_naming_it_and_a_fixed_release_builds(
    write_release, build_dataset, read_examples, tmp_path, as_zip):
  jpeg = _encoded("JPEG")
  manual_dir, files = write_release(ROOT, NAMES, as_zip=as_zip, extra={BAD: jpeg[:len(jpeg) // 2]})
  data_dir = tmp_path / "tfds"
  start = time.monotonic()
  with pytest.raises(image_checks.BadImageError) as error:
    build_dataset(market1501.Market1501, manual_dir, data_dir=data_dir)
  assert time.monotonic() - start < 20
  source = f"{manual_dir}/{ROOT}.zip/{ROOT}" if as_zip else f"{manual_dir}/{ROOT}"
  assert str(error.value) == (
      f"Market-1501: 1 of 4 images cannot be decoded: {source}/bounding_box_train/"
      f"0007_c2s1_000101_01.jpg: {JPEG_ERROR}. Replace or remove them and build again; "
      "nothing was written.")
  assert _built_versions(data_dir) == []  # no dataset, complete or not

  if as_zip:  # a fixed release: the zip written again with the whole file
    (manual_dir / f"{ROOT}.zip").unlink()
    manual_dir.rmdir()
    manual_dir, _ = write_release(ROOT, NAMES, as_zip=True, extra={BAD: jpeg})
  else:
    (manual_dir / BAD).write_bytes(jpeg)
  builder = build_dataset(market1501.Market1501, manual_dir, data_dir=data_dir)
  assert _built_versions(data_dir) == [str(market1501.Market1501.VERSION)]
  train = read_examples(builder, "train")
  assert [e["filename"] for e in train] == ["0002_c1s1_000451_03.jpg", "0007_c2s1_000101_01.jpg"]
  assert train[1]["raw_image"] == jpeg


def test_every_undecodable_file_is_listed_in_one_error(write_release, build_dataset, tmp_path):
  png = _encoded("PNG")
  extra = {BAD: b"",
           f"{ROOT}/query/0003_c1s1_000151_00.jpg": b"<html>not found</html>",
           f"{ROOT}/bounding_box_test/0003_c2s1_000301_01.jpg": png[:len(png) - 30],
           f"{ROOT}/bounding_box_test/0005_c2s1_000401_01.jpg": _encoded("BMP")}
  manual_dir, _ = write_release(ROOT, NAMES, extra=extra)
  with pytest.raises(image_checks.BadImageError) as error:
    build_dataset(market1501.Market1501, manual_dir)
  message = str(error.value)
  assert message.startswith("Market-1501: 4 of 5 images cannot be decoded: ")
  source = manual_dir / ROOT
  for name, why in [("bounding_box_train/0007_c2s1_000101_01.jpg", "the file is empty"),
                    ("query/0003_c1s1_000151_00.jpg", "not a JPEG or PNG image"),
                    ("bounding_box_test/0003_c2s1_000301_01.jpg", "Invalid PNG data"),
                    ("bounding_box_test/0005_c2s1_000401_01.jpg", "not a JPEG or PNG image")]:
    assert f"{source}/{name}: {why}" in message
  assert "0002_c1s1_000451_03.jpg" not in message
  assert (tmp_path / "tfds" / "market1501").exists() is False or not any(
      (tmp_path / "tfds" / "market1501").iterdir())


def test_decode_problem_accepts_what_the_pipeline_decodes():
  assert image_checks.decode_problem(_encoded("JPEG")) is None
  assert image_checks.decode_problem(_encoded("PNG")) is None
  assert image_checks.decode_problem(b"") == "the file is empty"
  assert image_checks.decode_problem(_encoded("GIF")) == "not a JPEG or PNG image"
  assert image_checks.decode_problem(_encoded("JPEG")[:200]) == JPEG_ERROR


def test_many_bad_files_are_counted_after_the_first_twenty():
  names = [f"{i:03d}.jpg" for i in range(25)]
  with pytest.raises(image_checks.BadImageError) as error:
    image_checks.check_all("Tiny", names, lambda name: b"", "/data/tiny")
  message = str(error.value)
  assert message.startswith("Tiny: 25 of 25 images cannot be decoded: /data/tiny/000.jpg: the "
                            "file is empty; ")
  assert "/data/tiny/019.jpg" in message and "/data/tiny/020.jpg" not in message
  assert "; and 5 more. Replace or remove them" in message
