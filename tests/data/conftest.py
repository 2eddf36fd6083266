"""Fixtures for the dataset builder tests: tiny releases on disk, building, reading back."""
import io
import zipfile

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from reid_jax.data import market_layout


def _jpeg(seed):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, "JPEG", quality=90)
  return buffer.getvalue()


@pytest.fixture
def write_release(tmp_path):
  """Returns write(root, names, as_zip=False, extra=None) -> (manual_dir, {path: bytes}).

  Writes a JPEG for each (folder, file name) of `names` under `root/`, plus the
  `extra` {path: bytes} files, into a fresh manual_dir, as files or as `root.zip`.
  """
  def write(root, names, as_zip=False, extra=None):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    files = {f"{root}/{folder}/{name}": _jpeg(i) for i, (folder, name) in enumerate(names)}
    files.update(extra or {})
    if as_zip:
      with zipfile.ZipFile(manual_dir / f"{root}.zip", "w") as archive:
        for path, data in files.items():
          archive.writestr(path, data)
    else:
      for path, data in files.items():
        (manual_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (manual_dir / path).write_bytes(data)
    return manual_dir, files
  return write


@pytest.fixture
def build_dataset(tmp_path):
  """Returns build(builder_cls, manual_dir=None, config=None, data_dir=None) -> prepared builder."""
  def build(builder_cls, manual_dir=None, config=None, data_dir=None):
    builder = builder_cls(data_dir=data_dir or tmp_path / "tfds", config=config)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder
  return build


def read_split(builder, split):
  """The examples of `split` as numpy dicts, with `raw_image` the stored bytes."""
  encoded = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
  decoded = builder.as_dataset(split=split)
  examples = []
  for raw, example in zip(tfds.as_numpy(encoded), tfds.as_numpy(decoded)):
    example["raw_image"] = raw["image"]
    example["filename"] = example["filename"].decode()
    examples.append(example)
  return sorted(examples, key=lambda e: e["filename"])


@pytest.fixture
def read_examples():
  """Returns read_split(builder, split) (see its docstring)."""
  return read_split


@pytest.fixture
def check_records():
  """Returns check(builder, files, root, expected) for a built Market-style release.

  `expected` maps each split to its (filename, person_id, camera_id, label) rows
  in filename order; `files` maps release paths to the JPEG bytes written.
  """
  def check(builder, files, root, expected):
    for split, rows in expected.items():
      examples = read_split(builder, split)
      assert [(e["filename"], e["person_id"], e["camera_id"], e["label"])
              for e in examples] == rows
      for e in examples:
        jpeg = files[f"{root}/{market_layout.SPLIT_FOLDERS[split]}/{e['filename']}"]
        assert e["raw_image"] == jpeg  # passed through, not re-encoded
        # tfds decodes with TF's default (fast) IDCT; the accurate one matches PIL exactly.
        np.testing.assert_array_equal(e["image"], tf.io.decode_jpeg(jpeg).numpy())
        np.testing.assert_array_equal(
            tf.io.decode_jpeg(e["raw_image"], dct_method="INTEGER_ACCURATE").numpy(),
            np.asarray(Image.open(io.BytesIO(jpeg))))
  return check
