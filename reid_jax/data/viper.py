"""viper: VIPeR (Gray, Brennan and Tao, "Evaluating Appearance Models for
Recognition, Reacquisition, and Tracking", PETS 2007).

632 pedestrians, each seen once by each of two outdoor cameras from different
viewpoints: 1,264 images (128x48 pixels) of 632 identities, 2 cameras. The
official release, `VIPeR.v1.0.zip`, holds `VIPeR/cam_a/` and `VIPeR/cam_b/`, one
BMP per identity in each, named `NNN_A.bmp` (NNN: the identity's number, 000 to
873 with gaps; A: the viewing angle), e.g. `cam_a/000_45.bmp`, `cam_b/001_90.bmp`.
As in torchreid, the i-th image of cam_a and the i-th of cam_b in name order are
identity i (their numbers must agree): person_id i + 1 (1..632), camera_id 0
(cam_a) or 1 (cam_b); `filename` is the image's path in the release, e.g.
`cam_a/000_45.bmp`.

Protocol (Gray et al.; torchreid): 10 random partitions of the identities into
316 train and 316 test; single-shot test, cam_a images as query, cam_b images as
gallery. Partition k (0..9) takes `np.random.default_rng(k).permutation(632)`: the
identity indices of its first 316 entries train, the other 316 test. That is this
library's fixed choice (torchreid draws unseeded partitions), so results are
comparable between runs and machines. Each partition has
- train: 632 images of 316 identities (both cameras);
- query: 316 images (cam_a of the 316 test identities);
- gallery: 316 images (cam_b of the same identities).
Every image is stored once, in the split `images` with its `roles` (see
`partitions`); `pipeline.load_split(builder, split, partition=k)` reads one
partition's split. The BMPs are converted to PNG losslessly. Read from tfds'
manual_dir: the folder `VIPeR/` (holding cam_a/ and cam_b/) or the zip
`VIPeR.v1.0.zip`. VIPeR has no person masks: every mask is a 1x1 black PNG.
"""
import io
import re
import zipfile

from etils import epath
import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from reid_jax.data import features, image_checks, manual, masks, partitions
from reid_jax.data.manual import DatasetNotFoundError

NAME = "VIPeR"
FOLDER = "VIPeR"
ARCHIVE = "VIPeR.v1.0.zip"
CAMERAS = ("cam_a", "cam_b")  # camera_id 0 and 1
URL = "https://vision.soe.ucsc.edu/node/178"
NUM_PARTITIONS = 10
OFFICIAL_NUM_IMAGES = {"train": 632, "query": 316, "gallery": 316}  # in every partition
_IMAGE_NAME = re.compile(r"(?P<number>\d+)_\d+\.bmp", re.IGNORECASE)


def train_identities(num_ids, partition):
  """The 0-based identity indices that train in `partition`: the first half of
  `np.random.default_rng(partition).permutation(num_ids)`."""
  return np.random.default_rng(partition).permutation(num_ids)[:num_ids // 2]


def roles(num_ids):
  """[num_ids, 2 cameras, NUM_PARTITIONS] uint8: the roles of each identity's images."""
  out = np.empty((num_ids, len(CAMERAS), NUM_PARTITIONS), np.uint8)
  out[:, 0], out[:, 1] = partitions.QUERY, partitions.GALLERY
  for k in range(NUM_PARTITIONS):
    out[train_identities(num_ids, k), :, k] = partitions.TRAIN
  return out


def to_png(data):
  """Image bytes PIL reads (the release's BMPs) -> RGB PNG bytes with the same pixels.

  Raises OSError saying why PIL cannot decode them (`image_checks.check_all`
  reports it against the file's name).
  """
  if not data:
    raise OSError("the file is empty")
  try:
    with Image.open(io.BytesIO(data)) as image:
      pixels = np.asarray(image.convert("RGB"))
  except Image.UnidentifiedImageError as e:
    raise OSError("PIL cannot decode it: not an image format PIL knows") from e
  except (OSError, ValueError) as e:  # truncated or inconsistent headers
    raise OSError(f"PIL cannot decode it: {e}") from e
  return tf.io.encode_png(pixels).numpy()


def _not_found(manual_dir, missing):
  error = manual.not_found(NAME, manual_dir, missing, URL)
  return DatasetNotFoundError(
      f"{error}\nThe official zip works as well, as\n  {epath.Path(manual_dir) / ARCHIVE}")


def locate(manual_dir):
  """The release folder (preferred) or the zip in `manual_dir`; else raises naming
  the missing camera folders."""
  folder = manual_dir / FOLDER
  missing = [f"{FOLDER}/{cam}/" for cam in CAMERAS if not (folder / cam).is_dir()]
  if not missing:
    return folder
  if len(missing) == len(CAMERAS) and (manual_dir / ARCHIVE).is_file():
    return manual_dir / ARCHIVE
  raise _not_found(manual_dir, missing)


def _is_bmp(name):
  # Skips Thumbs.db and the like, and macOS '._*' resource forks.
  return name.lower().endswith(".bmp") and not name.startswith(".")


def list_members(source):
  """Maps each camera folder to the sorted paths of its BMPs in `source` (folder or zip)."""
  members = {cam: [] for cam in CAMERAS}
  if source.is_file():  # the zip
    with zipfile.ZipFile(source.open("rb")) as archive:
      for name in archive.namelist():
        parts = name.split("/")
        if len(parts) >= 2 and parts[-2] in members and "__MACOSX" not in parts:
          if _is_bmp(parts[-1]):
            members[parts[-2]].append(name)
  else:
    for cam in CAMERAS:
      members[cam] = [f"{cam}/{p.name}" for p in (source / cam).iterdir() if _is_bmp(p.name)]
  for cam, names in members.items():
    if not names:
      raise DatasetNotFoundError(f"{NAME}: no BMP images in {cam}/ of {source}.")
  return {cam: sorted(names) for cam, names in members.items()}


def _number(member, source):
  filename = member.rsplit("/", 1)[-1]
  match = _IMAGE_NAME.fullmatch(filename)
  if not match:
    raise ValueError(f"{NAME}: malformed image name {filename!r} ({source}/{member}); "
                     "expected names like '000_45.bmp' (identity number, viewing angle).")
  return int(match["number"])


def pairs(source, members):
  """The (cam_a, cam_b) paths of each identity, the i-th of each folder in name
  order (as torchreid pairs them); raises unless their identity numbers agree."""
  cam_a, cam_b = (members[cam] for cam in CAMERAS)
  numbers_a, numbers_b = ([_number(m, source) for m in members[cam]] for cam in CAMERAS)
  for i in range(max(len(cam_a), len(cam_b))):
    a = cam_a[i] if i < len(cam_a) else None
    b = cam_b[i] if i < len(cam_b) else None
    if a is None or b is None or numbers_a[i] != numbers_b[i]:
      raise ValueError(
          f"{NAME}: the images of cam_a/ and cam_b/ in {source} do not pair up: each "
          "identity needs one image `NNN_angle.bmp` in each folder, with the same NNN. In "
          f"name order, image {i + 1} is {a or 'missing'} in cam_a/ and {b or 'missing'} "
          "in cam_b/.")
  return list(zip(cam_a, cam_b))


class Viper(tfds.core.GeneratorBasedBuilder):
  """VIPeR: 632 identities, 2 cameras; 10 random 316/316 partitions, single-shot."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download the official VIPeR release `{ARCHIVE}` ({URL}) and place either the zip or "
      f"the folder it extracts to, `{FOLDER}/` (holding cam_a/ and cam_b/), in the manual "
      "directory: `<data_dir>/downloads/manual/` by default, or the folder given by "
      "`tfds.download.DownloadConfig(manual_dir=...)` / `tfds build --manual_dir`.")

  def _info(self):
    return features.reid_info(self, "png", type(self).__doc__, URL, NUM_PARTITIONS)

  def _split_generators(self, dl_manager):
    manual_dir = manual.directory(
        dl_manager, lambda path: _not_found(path, [f"{FOLDER}/{cam}/" for cam in CAMERAS]))
    source = locate(manual_dir)
    image_pairs = pairs(source, list_members(source))
    with manual.reader(source) as read:
      image_checks.check_all(NAME, [m for pair in image_pairs for m in pair],
                             lambda member: to_png(read(member)), str(source))
    image_roles = roles(len(image_pairs))
    partitions.warn_on_counts(NAME, image_roles.reshape(-1, NUM_PARTITIONS), OFFICIAL_NUM_IMAGES)
    self.info.metadata.update({
        "num_partitions": NUM_PARTITIONS,
        "num_classes": len(image_pairs) // 2,
        "num_cameras": len(CAMERAS),
        "has_masks": False,
        "official_num_images": dict(OFFICIAL_NUM_IMAGES),
    })
    return {partitions.SPLIT: self._generate_examples(source, image_pairs, image_roles)}

  def _generate_examples(self, source, image_pairs, image_roles):
    with manual.reader(source) as read:
      for i, pair in enumerate(image_pairs):
        for camera, member in enumerate(pair):
          filename = "/".join(member.split("/")[-2:])
          yield filename, {"image": to_png(read(member)), "mask": masks.EMPTY,
                           "person_id": i + 1, "camera_id": camera, "label": -1,
                           "filename": filename, "roles": image_roles[i, camera]}
