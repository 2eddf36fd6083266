"""reid_folder builder: a user's own images in the folder and CSV layouts, ids and
cameras from names, and every error it raises before writing anything."""
import io
import logging

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from reid_jax.data import image_checks, pipeline, reid_folder
from reid_jax.data.manual import DatasetNotFoundError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _image(seed, name):
  """Bytes of an 8x4 random image in the format of `name`'s extension."""
  pixels = np.random.default_rng(seed).integers(0, 256, (8, 4, 3), dtype=np.uint8)
  fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP"}[name.rsplit(".", 1)[-1]]
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, fmt)
  return buffer.getvalue()


def _write(root, paths, extra=None):
  """Writes an image at each of `paths` under `root`, and the `extra` {path: bytes or
  str}; returns {path: bytes} of the images."""
  files = {path: _image(i, path) for i, path in enumerate(paths)}
  for path, data in {**files, **(extra or {})}.items():
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
      (root / path).write_text(data, encoding="utf-8")
    else:
      (root / path).write_bytes(data)
  return files


def _rows(builder, read_examples, split):
  return [(e["filename"], e["person_id"], e["camera_id"], e["label"])
          for e in read_examples(builder, split)]


def _check_images(builder, read_examples, files):
  """Stored bytes: JPEG and PNG unchanged, anything else a PNG of the same pixels."""
  for split in reid_folder.SPLITS:
    for e in read_examples(builder, split):
      data = files[e["filename"]]
      original = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
      if e["filename"].endswith(".bmp"):
        assert e["raw_image"].startswith(PNG_SIGNATURE)
        np.testing.assert_array_equal(tf.io.decode_png(e["raw_image"]).numpy(), original)
        np.testing.assert_array_equal(e["image"], original)  # lossless
      else:
        assert e["raw_image"] == data
      np.testing.assert_array_equal(e["mask"], np.zeros((1, 1, 1), np.uint8))


FOLDERS = [
    "train/alice/cam-north_0001.jpg", "train/alice/cam-south_0002.jpg",
    "train/bob/cam-north_0003.png", "train/erin/cam-west_0004.bmp",
    "query/carol/cam-north_0010.jpg", "query/dave/cam-south_0011.jpeg",
    "gallery/carol/cam-south_0020.jpg", "gallery/carol/cam-north_0021.jpg",
    "gallery/dave/cam-west_0022.png", "gallery/frank/cam-north_0023.jpg",
]
# Not images of the dataset: skipped.
IGNORED = {"train/alice/Thumbs.db": b"\0", "train/.DS_Store": b"\0",
           "query/carol/notes.txt": b"x", "train/.ipynb_checkpoints/cam-north_9.jpg": b"x",
           "train/alice/._cam-north_0001.jpg": b"resource fork", "README.md": b"x"}


def test_folders_with_names(build_dataset, read_examples, tmp_path):
  root = tmp_path / "my_reid"
  files = _write(root, FOLDERS, IGNORED)
  builder = build_dataset(reid_folder.ReidFolder, root)
  # Persons alice..frank are 1..6 in every split; cameras north, south, west 0..2.
  assert _rows(builder, read_examples, "train") == [
      ("train/alice/cam-north_0001.jpg", 1, 0, 0), ("train/alice/cam-south_0002.jpg", 1, 1, 0),
      ("train/bob/cam-north_0003.png", 2, 0, 1), ("train/erin/cam-west_0004.bmp", 5, 2, 2)]
  assert _rows(builder, read_examples, "query") == [
      ("query/carol/cam-north_0010.jpg", 3, 0, -1), ("query/dave/cam-south_0011.jpeg", 4, 1, -1)]
  assert _rows(builder, read_examples, "gallery") == [
      ("gallery/carol/cam-north_0021.jpg", 3, 0, -1),
      ("gallery/carol/cam-south_0020.jpg", 3, 1, -1),
      ("gallery/dave/cam-west_0022.png", 4, 2, -1),
      ("gallery/frank/cam-north_0023.jpg", 6, 0, -1)]
  _check_images(builder, read_examples, files)
  for reloaded in (builder, tfds.builder_from_directory(builder.data_dir)):
    assert dict(reloaded.info.metadata) == {
        "num_classes": 3, "num_cameras": 3, "has_masks": False, "layout": "folders",
        "root": str(root),
        "person_names": {"1": "alice", "2": "bob", "3": "carol", "4": "dave", "5": "erin",
                         "6": "frank"},
        "camera_names": {"0": "cam-north", "1": "cam-south", "2": "cam-west"}}
  assert builder.VERSION == "1.0.0"


def test_folders_with_integer_names_keep_them(build_dataset, read_examples, tmp_path):
  root = tmp_path / "my_reid"
  files = _write(root, ["train/0003/1_000001.jpg", "train/0003/2_000002.jpg",
                        "train/0042/6_000003.png", "query/0010/1_000004.jpg",
                        "gallery/0010/2_000005.jpg", "gallery/0010/1_000006.jpg"])
  builder = build_dataset(reid_folder.ReidFolder, root)
  assert _rows(builder, read_examples, "train") == [
      ("train/0003/1_000001.jpg", 3, 1, 0), ("train/0003/2_000002.jpg", 3, 2, 0),
      ("train/0042/6_000003.png", 42, 6, 1)]
  assert _rows(builder, read_examples, "query") == [("query/0010/1_000004.jpg", 10, 1, -1)]
  assert _rows(builder, read_examples, "gallery") == [
      ("gallery/0010/1_000006.jpg", 10, 1, -1), ("gallery/0010/2_000005.jpg", 10, 2, -1)]
  _check_images(builder, read_examples, files)
  metadata = builder.info.metadata
  assert metadata["person_names"] == {"3": "0003", "10": "0010", "42": "0042"}
  assert metadata["camera_names"] == {"1": "1", "2": "2", "6": "6"}
  assert (metadata["num_classes"], metadata["num_cameras"]) == (2, 3)


def test_csv_layout(build_dataset, read_examples, tmp_path):
  root = tmp_path / "my_reid"
  elsewhere = tmp_path / "elsewhere" / "d.jpg"
  files = _write(root, ["images/a.jpg", "images/b.png", "images/q1.jpg", "images/g1.jpg",
                        "more/c.bmp"])
  files[str(elsewhere)] = _write(tmp_path, ["elsewhere/d.jpg"])["elsewhere/d.jpg"]
  # Persons '7', 'alice' and 'bob' are not all integers: 1, 2, 3; cameras '0', '3' are.
  _write(root, [], {
      "train.csv": f"path,person,camera\nimages/a.jpg,alice,3\n\n images/b.png , 7 ,0\n"
                   f"{elsewhere},alice,0\n",
      "query.csv": "\ufeffpath,person,camera\r\nimages/q1.jpg,bob,0\r\n",  # Excel: BOM, CRLF
      "gallery.csv": "path,person,camera\nimages/g1.jpg,bob,3\nmore/c.bmp,7,3\n",
      "images/notes.txt": "not listed"})
  builder = build_dataset(reid_folder.ReidFolder, root)
  assert _rows(builder, read_examples, "train") == [
      (str(elsewhere), 2, 0, 1), ("images/a.jpg", 2, 3, 1), ("images/b.png", 1, 0, 0)]
  assert _rows(builder, read_examples, "query") == [("images/q1.jpg", 3, 0, -1)]
  assert _rows(builder, read_examples, "gallery") == [
      ("images/g1.jpg", 3, 3, -1), ("more/c.bmp", 1, 3, -1)]
  _check_images(builder, read_examples, files)
  metadata = builder.info.metadata
  assert metadata["layout"] == "csv"
  assert metadata["root"] == str(root)
  assert metadata["person_names"] == {"1": "7", "2": "alice", "3": "bob"}
  assert metadata["camera_names"] == {"0": "0", "3": "3"}
  assert (metadata["num_classes"], metadata["num_cameras"], metadata["has_masks"]) == (
      2, 2, False)


def test_a_built_dataset_is_cached_by_data_dir(build_dataset, tmp_path):
  first, second = tmp_path / "first", tmp_path / "second"
  _write(first, FOLDERS)
  _write(second, FOLDERS[:-1])
  build_dataset(reid_folder.ReidFolder, first)
  # The same data_dir returns the dataset built first, as the docstring warns.
  assert build_dataset(reid_folder.ReidFolder, second).info.metadata["root"] == str(first)
  other = build_dataset(reid_folder.ReidFolder, second, data_dir=tmp_path / "tfds_second")
  assert other.info.metadata["root"] == str(second)
  assert other.info.splits["gallery"].num_examples == 3
  for text in (reid_folder.__doc__, reid_folder.ReidFolder.MANUAL_DOWNLOAD_INSTRUCTIONS):
    assert "caches" in text and "data_dir" in text and "<data_dir>/reid_folder/" in text
  # The library's loader refuses the stale dataset rather than train on the wrong images.
  with pytest.raises(ValueError) as error:
    pipeline.builder("reid_folder", str(tmp_path / "tfds"), str(second))
  assert str(error.value) == (
      f"reid_folder in {tmp_path / 'tfds' / 'reid_folder' / '1.0.0'} was built from {first}, not "
      f"from the manual_dir {second}: tfds keeps one such dataset per data_dir. Give this folder "
      f"its own data_dir, or delete {tmp_path / 'tfds' / 'reid_folder'} to rebuild.")
  assert pipeline.builder("reid_folder", str(tmp_path / "tfds"), str(first)).info.metadata[
      "root"] == str(first)


def _build_fails(build_dataset, tmp_path, root, error=ValueError):
  """Builds `root`, expecting `error`; checks nothing was written; returns its message."""
  with pytest.raises(error) as raised:
    build_dataset(reid_folder.ReidFolder, root)
  assert not list((tmp_path / "tfds").glob("reid_folder/*"))
  return str(raised.value)


@pytest.mark.parametrize("content, state", [
    (None, "It does not exist."),
    ({}, "It is empty."),
    ({"notes.txt": b"x"}, "It holds: notes.txt."),
])
def test_no_dataset_lists_both_layouts(build_dataset, tmp_path, content, state):
  root = tmp_path / "my_reid"
  if content is not None:
    root.mkdir()
    _write(root, [], content)
  message = _build_fails(build_dataset, tmp_path, root, DatasetNotFoundError)
  assert message.startswith(
      f"reid_folder: no dataset in the manual directory {root}. {state}\nExpected the folders\n"
      f"  {root}/train/\n  {root}/query/\n  {root}/gallery/\n")
  assert f"CSV files\n  {root}/train.csv\n  {root}/query.csv\n  {root}/gallery.csv\n" in message


def test_missing_split_folder(build_dataset, tmp_path):
  root = tmp_path / "my_reid"
  _write(root, [p for p in FOLDERS if not p.startswith("gallery/")])
  assert _build_fails(build_dataset, tmp_path, root, DatasetNotFoundError) == (
      f"reid_folder: {root} holds the folders layout, but not\n  {root}/gallery/\n"
      "Every split needs its own.")


def test_missing_csv(build_dataset, tmp_path):
  root = tmp_path / "my_reid"
  _write(root, ["train/alice/cam1_1.jpg"], {"train.csv": "path,person,camera\n"})
  assert _build_fails(build_dataset, tmp_path, root, DatasetNotFoundError) == (
      f"reid_folder: {root} holds the csv layout, but not\n  {root}/query.csv\n"
      f"  {root}/gallery.csv\nEvery split needs its own.")


@pytest.mark.parametrize("name", ["0005.jpg", "_0005.jpg"])
def test_file_without_camera_is_named(build_dataset, tmp_path, name):
  root = tmp_path / "my_reid"
  _write(root, FOLDERS + [f"gallery/frank/{name}"])
  assert _build_fails(build_dataset, tmp_path, root) == (
      f"reid_folder: {root}/gallery/frank/{name} has no camera: name images "
      "<camera>_<anything>.jpg, e.g. cam1_0001.jpg.")


def test_image_outside_a_person_folder_is_named(build_dataset, tmp_path):
  root = tmp_path / "my_reid"
  _write(root, FOLDERS + ["query/cam-north_0099.jpg"])
  assert _build_fails(build_dataset, tmp_path, root) == (
      f"reid_folder: {root}/query/cam-north_0099.jpg is not in a person folder: expected "
      f"{root}/query/<person>/<camera>_<anything>.jpg.")


CSVS = {"train.csv": "path,person,camera\na.jpg,alice,c1\nb.jpg,alice,c2\n",
        "query.csv": "path,person,camera\nq.jpg,bob,c1\n",
        "gallery.csv": "path,person,camera\ng.jpg,bob,c2\n"}


@pytest.mark.parametrize("gallery, error, message", [
    ("file,id,cam\ng.jpg,bob,c2\n", ValueError,
     "line 1: the header is 'file,id,cam'; expected 'path,person,camera'."),
    ("path,person\ng.jpg,bob\n", ValueError,
     "line 1: the header is 'path,person'; expected 'path,person,camera'."),
    ("path,person,camera\ng.jpg,bob,c2\nq.jpg,bob\n", ValueError,
     "line 3: expected the 3 fields path,person,camera, got 'q.jpg,bob'."),
    ("path,person,camera\ng.jpg,bob,c2\n,bob,c1\n", ValueError,
     "line 3: expected the 3 fields path,person,camera, got ',bob,c1'."),
    ("path,person,camera\ng.jpg,bob,c2,extra\n", ValueError,
     "line 2: expected the 3 fields path,person,camera, got 'g.jpg,bob,c2,extra'."),
    ("path,person,camera\ng.jpg,bob,c2\na.jpg,alice,\n", ValueError,
     "line 3: a.jpg has no camera (the camera cell is empty)."),
    ("path,person,camera\ng.jpg,bob,c2\n\nnope.jpg,bob,c1\n", FileNotFoundError,
     "line 4: {root}/nope.jpg does not exist."),
    ("path,person,camera\ng.jpg,bob,c2\ng.jpg,bob,c2\n", ValueError,
     "line 3: g.jpg is already on line 2."),
])
def test_csv_errors_name_the_file_and_line(build_dataset, tmp_path, gallery, error, message):
  root = tmp_path / "my_reid"
  _write(root, ["a.jpg", "b.jpg", "q.jpg", "g.jpg"], {**CSVS, "gallery.csv": gallery})
  assert _build_fails(build_dataset, tmp_path, root, error) == (
      f"reid_folder: {root}/gallery.csv, " + message.format(root=root))


def test_csv_not_in_utf8_is_named(build_dataset, tmp_path):
  root = tmp_path / "my_reid"
  _write(root, ["a.jpg", "b.jpg", "q.jpg", "g.jpg"],
         {**CSVS, "query.csv": "path,person,camera\nq.jpg,Bj\xf6rn,c1\n".encode("latin-1")})
  assert _build_fails(build_dataset, tmp_path, root) == (
      f"reid_folder: {root}/query.csv is not UTF-8 text (invalid start byte at byte 27): "
      "save it as UTF-8.")


def test_empty_split_folder(build_dataset, tmp_path):
  root = tmp_path / "my_reid"
  _write(root, [p for p in FOLDERS if not p.startswith("train/")], {"train/Thumbs.db": b"\0"})
  assert _build_fails(build_dataset, tmp_path, root) == (
      f"reid_folder: the train split is empty: {root}/train holds no images.")


def test_empty_split_csv(build_dataset, tmp_path):
  root = tmp_path / "my_reid"
  _write(root, ["a.jpg", "b.jpg", "q.jpg", "g.jpg"], {**CSVS, "query.csv": "path,person,camera\n"})
  assert _build_fails(build_dataset, tmp_path, root) == (
      f"reid_folder: the query split is empty: {root}/query.csv holds no images.")


@pytest.mark.parametrize("query, gallery, cameras", [
    # One camera only.
    (["query/carol/c1_1.jpg"], ["gallery/carol/c1_2.jpg", "gallery/dave/c1_3.jpg"],
     "Query cameras: c1; gallery cameras: c1."),
    # Each identity seen by one camera.
    (["query/carol/c1_1.jpg", "query/dave/c2_2.jpg"],
     ["gallery/carol/c1_3.jpg", "gallery/dave/c2_4.jpg", "gallery/erin/c3_5.jpg"],
     "Query cameras: c1, c2; gallery cameras: c1, c2, c3."),
    # The query persons are not in the gallery.
    (["query/carol/c1_1.jpg"], ["gallery/dave/c2_2.jpg"],
     "Query cameras: c1; gallery cameras: c2."),
])
def test_queries_without_any_cross_camera_match(build_dataset, tmp_path, query, gallery, cameras):
  root = tmp_path / "my_reid"
  _write(root, ["train/alice/c1_0.jpg"] + query + gallery)
  assert _build_fails(build_dataset, tmp_path, root) == (
      "reid_folder: no query image has a gallery image of its person from another camera, so "
      "the Market-1501 protocol, which ignores same-camera matches, would discard every query. "
      f"{cameras} Each query person needs gallery images from another camera than the query's.")


def test_warns_about_some_queries_without_a_cross_camera_match(
    build_dataset, tmp_path, caplog):
  root = tmp_path / "my_reid"
  _write(root, FOLDERS + ["query/frank/cam-north_0012.jpg"])  # frank: cam-north only
  with caplog.at_level(logging.WARNING):
    build_dataset(reid_folder.ReidFolder, root)
  assert ("reid_folder: 1 of 3 query images have no gallery image of their person from another "
          "camera; the evaluation skips them, e.g. query/frank/cam-north_0012.jpg.") in caplog.text


def test_integer_names_for_one_id_are_an_error(build_dataset, tmp_path):
  root = tmp_path / "my_reid"
  _write(root, ["train/3/1_a.jpg", "train/03/2_b.jpg", "query/4/1_c.jpg", "gallery/4/2_d.jpg"])
  assert _build_fails(build_dataset, tmp_path, root) == (
      "reid_folder: the person names '03' and '3' are both the integer 3: rename one.")


def test_undecodable_images_are_named(build_dataset, tmp_path):
  root = tmp_path / "my_reid"
  files = _write(root, FOLDERS)
  (root / FOLDERS[0]).write_bytes(files[FOLDERS[0]][:60])  # a cut JPEG
  (root / "train/erin/cam-west_0004.bmp").write_bytes(b"BM not really")
  (root / "gallery/dave/cam-west_0022.png").write_bytes(b"")
  message = _build_fails(build_dataset, tmp_path, root, image_checks.BadImageError)
  assert message.startswith("reid_folder: 3 of 10 images cannot be decoded: ")
  assert f"{root}/gallery/dave/cam-west_0022.png: the file is empty" in message
  assert f"{root}/train/alice/cam-north_0001.jpg: " in message
  assert f"{root}/train/erin/cam-west_0004.bmp: cannot be read (not an image PIL can read)" \
      in message
