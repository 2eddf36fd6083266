"""Optional person masks for the Market-style builders, read from `<folder>_masks/`.

A mask folder sits beside the release in tfds' manual_dir and holds one PNG per
image at the image's path inside the release, with `.png` for `.jpg`, e.g.
`Market-1501-v15.09.15_masks/bounding_box_train/0002_c1s1_000451_03.png`.
Any non-zero pixel marks the person; a mask may be greyscale, RGB(A) or palette,
of any bit depth and size. Each is stored as a single-channel uint8 PNG (255 on
the person); an image without a mask gets `EMPTY`, a 1x1 black PNG.
"""
from absl import logging
from etils import epath
import numpy as np
import tensorflow as tf

SUFFIX = "_masks"
NUM_LISTED = 5  # missing masks named in the warning


def _encode(mask):
  return tf.io.encode_png(mask).numpy()


EMPTY = _encode(np.zeros((1, 1, 1), np.uint8))


def binarize(data):
  """PNG bytes -> single-channel uint8 PNG bytes, 255 where any channel is non-zero.

  Decoded at 16 bits, so no bit depth loses a non-zero value; a palette image
  counts by its colours (and transparency), as every viewer shows it.
  """
  pixels = tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy()
  if pixels.ndim != 3:
    raise ValueError(f"expected one image, got an array of shape {pixels.shape}")
  return _encode(np.where(pixels.any(axis=-1, keepdims=True), 255, 0).astype(np.uint8))


def mask_path(image_path):
  """'bounding_box_train/x.jpg' -> 'bounding_box_train/x.png'."""
  return image_path.rsplit(".", 1)[0] + ".png"


def find(name, mask_folder, image_paths):
  """Maps each split to the mask path (or None) of each of its images, or returns None.

  `image_paths` maps each split to the paths of its images inside the release.
  Returns None when `mask_folder` does not exist; logs one warning for the images
  without a mask; raises when no image has one (a wrong layout).
  """
  mask_folder = epath.Path(mask_folder)
  if not mask_folder.is_dir():
    return None
  wanted = {p: mask_path(p) for paths in image_paths.values() for p in paths}
  listed = {}
  for folder in {m.rsplit("/", 1)[0] for m in wanted.values()}:
    if (mask_folder / folder).is_dir():
      listed[folder] = {p.name for p in (mask_folder / folder).iterdir()}
  found = {p for p, m in wanted.items()
           if m.rsplit("/", 1)[-1] in listed.get(m.rsplit("/", 1)[0], ())}
  if not found:
    entries = sorted(p.name for p in mask_folder.iterdir())
    state = f"It holds: {', '.join(entries[:NUM_LISTED])}." if entries else "It is empty."
    raise FileNotFoundError(
        f"{name}: the mask folder {mask_folder} holds no mask for any image. {state} "
        f"Expected one PNG per image at its path in the release, e.g.\n"
        f"  {mask_folder / next(iter(wanted.values()))}\n"
        "Move the masks there, or remove the folder to build without masks.")
  missing = [mask_folder / m for p, m in wanted.items() if p not in found]
  if missing:
    logging.warning(
        "%s: %d of %d images have no mask in %s and get an empty one, e.g. %s.", name,
        len(missing), len(wanted), mask_folder, ", ".join(map(str, missing[:NUM_LISTED])))
  return {split: [mask_folder / wanted[p] if p in found else None for p in paths]
          for split, paths in image_paths.items()}


def read(path):
  """The binarised mask of the PNG at `path` (`EMPTY` for None); raises naming the file."""
  if path is None:
    return EMPTY
  try:
    return binarize(epath.Path(path).read_bytes())
  except (tf.errors.InvalidArgumentError, ValueError) as e:
    raise ValueError(f"Cannot decode the person mask {path} as an image: {e}") from e
