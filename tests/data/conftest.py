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


# Each mask mode of `person_masks`: how a segmentation tool may write "non-zero on the person".
MASK_MODES = ("L", "RGB", "P", "I;16", "RGBA", "RGB;16", "1")
MASK_SIZES = ((16, 8), (32, 16), (8, 4), (5, 3))  # any size: the pipeline resizes masks


def _png(image):
  buffer = io.BytesIO()
  image.save(buffer, "PNG")
  return buffer.getvalue()


def mask_png(on, mode, rng):
  """Encodes the boolean [H, W] mask `on` as a PNG in `mode`, non-zero exactly on it."""
  h, w = on.shape
  if mode == "1":
    return _png(Image.fromarray(on))
  if mode == "L":
    return _png(Image.fromarray((rng.integers(1, 256, (h, w)) * on).astype(np.uint8)))
  if mode == "I;16":  # 1 and 256 vanish if the 16 bits are cut to their high or low byte
    values = rng.choice([1, 255, 256, 65535], (h, w)) * on
    image = Image.fromarray(values.astype(np.uint16))
    assert image.mode == "I;16"
    return _png(image)
  if mode == "P":  # black at index 0 only; faint colours elsewhere
    image = Image.fromarray((rng.integers(1, 4, (h, w)) * on).astype(np.uint8), "P")
    image.putpalette([0, 0, 0, 0, 0, 1, 7, 0, 0, 255, 255, 255])
    return _png(image)
  # RGB(A), 8 or 16 bits: one random channel is non-zero on the person.
  channels = 4 if mode == "RGBA" else 3
  pixels = np.zeros((h, w, channels), np.uint16 if mode == "RGB;16" else np.uint8)
  channel = rng.integers(channels, size=(h, w))
  pixels[on, channel[on]] = rng.integers(1, 256, on.sum())
  if mode == "RGB;16":  # PIL cannot write it; values below 256 vanish if cut to 8 bits
    pixels[on, channel[on]] = rng.choice([1, 255, 256, 65535], on.sum())
    return tf.io.encode_png(pixels).numpy()
  return _png(Image.fromarray(pixels, mode))


@pytest.fixture
def person_masks():
  """Returns make(names, skip=()) -> ({mask path: PNG bytes}, {mask path: expected mask}).

  Draws a mask for each (folder, file name) of `names` except those in `skip`,
  cycling through MASK_MODES and MASK_SIZES; mask paths are `folder/name.png`
  and the expected masks [H, W, 1] uint8 are 255 on the person, 0 elsewhere.
  """
  def make(names, skip=()):
    pngs, expected = {}, {}
    rng = np.random.default_rng(0)
    for i, (folder, name) in enumerate(n for n in names if n not in skip):
      on = rng.random(MASK_SIZES[i % len(MASK_SIZES)]) < 0.5
      path = f"{folder}/{name.rsplit('.', 1)[0]}.png"
      pngs[path] = mask_png(on, MASK_MODES[i % len(MASK_MODES)], rng)
      expected[path] = np.where(on, 255, 0).astype(np.uint8)[..., None]
    return pngs, expected
  return make


@pytest.fixture
def write_release(tmp_path):
  """Returns write(root, names, as_zip=False, extra=None, masks=None) -> (manual_dir, files).

  Writes a JPEG for each (folder, file name) of `names` under `root/`, plus the
  `extra` {path: bytes} files, into a fresh manual_dir, as files or as `root.zip`;
  `files` maps those paths to their bytes. The `masks` {path: bytes} files go to
  the folder `root_masks/` beside the release, whether it is a folder or a zip.
  """
  def write(root, names, as_zip=False, extra=None, masks=None):
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
    for path, data in (masks or {}).items():
      (manual_dir / f"{root}_masks" / path).parent.mkdir(parents=True, exist_ok=True)
      (manual_dir / f"{root}_masks" / path).write_bytes(data)
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
  """The examples of `split` as numpy dicts, with `raw_image` (`raw_mask`) the stored bytes."""
  raw_keys = [k for k in ("image", "mask") if k in builder.info.features]
  encoded = builder.as_dataset(split=split,
                               decoders={k: tfds.decode.SkipDecoding() for k in raw_keys})
  decoded = builder.as_dataset(split=split)
  examples = []
  for raw, example in zip(tfds.as_numpy(encoded), tfds.as_numpy(decoded)):
    for k in raw_keys:
      example[f"raw_{k}"] = raw[k]
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


@pytest.fixture
def check_masks():
  """Returns check(builder, expected) for a built Market-style release.

  `expected` maps mask paths (`folder/name.png`) to the expected [H, W, 1] uint8
  masks; every other image must have an empty (1x1 black) mask. Each mask is
  stored as a single-channel 8-bit PNG.
  """
  def check(builder, expected):
    for split, folder in market_layout.SPLIT_FOLDERS.items():
      for e in read_split(builder, split):
        path = f"{folder}/{e['filename'].rsplit('.', 1)[0]}.png"
        np.testing.assert_array_equal(
            e["mask"], expected.get(path, np.zeros((1, 1, 1), np.uint8)), err_msg=path)
        assert Image.open(io.BytesIO(e["raw_mask"])).mode == "L"
  return check
