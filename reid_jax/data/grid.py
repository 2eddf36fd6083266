"""grid: GRID, the QMUL underGround Re-IDentification dataset (Loy, Xiang and Gong,
"Multi-Camera Activity Correlation Analysis", CVPR 2009, and "Time-Delayed
Correlation Analysis for Multi-Camera Activity Understanding", IJCV 2010).

People seen by 8 disjoint cameras of an underground station: 1,275 images of 250
identities seen by two cameras and of 775 people seen by one. The official
release, `underground_reid.zip`, extracts to `underground_reid/` holding
- `probe/`: 250 JPEGs, one of each identity 0001..0250;
- `gallery/`: 1,025 JPEGs: one more of each of the 250 identities, from another
  camera, and 775 distractors (`0000_*`, person_id 0);
- `features_and_partitions.mat` (MATLAB v5): its `trainIdxAll` is a 1x10 cell of
  structs with the fields probeImIdx, galleryImIdx and personIdx; personIdx of
  trial k lists the 125 training identities (torchreid reads it as
  `trainIdxAll[0][k][0][0][2]`).
Names read `IIII_C_...jpeg`, e.g. `0005_2_25100_229_94_99_249.jpeg`: identity,
camera 1..8 (camera_id C - 1); `filename` is the image's path in the release, e.g.
`probe/0005_2_25100_229_94_99_249.jpeg`.

Protocol (the 10 trials of the .mat, from Liu, Gong, Loy and Lin, "Person
Re-Identification: What Features are Important?", ECCV 2012 Workshops; as in
torchreid): partition k is trial k, with
- train: 250 images (probe and gallery) of the trial's 125 identities;
- query: 125 images (the probe images of the other 125 identities);
- gallery: 900 images (their 125 gallery images and the 775 distractors, which are
  in the gallery of every partition).
Every image is stored once, in the split `images` with its `roles` (see
`partitions`); `pipeline.load_split(builder, split, partition=k)` reads one
partition's split. The JPEGs are stored as they are. Read from tfds' manual_dir:
the folder `underground_reid/`. GRID has no person masks: every mask is a 1x1
black PNG.
"""
import dataclasses
import re

import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from reid_jax.data import features, image_checks, manual, masks, partitions
from reid_jax.data.manual import DatasetNotFoundError

NAME = "GRID"
FOLDER = "underground_reid"
PROBE, GALLERY = "probe", "gallery"
MAT = "features_and_partitions.mat"
WANTED = (f"{FOLDER}/{PROBE}/", f"{FOLDER}/{GALLERY}/", f"{FOLDER}/{MAT}")
URL = "http://personal.ie.cuhk.edu.hk/~ccloy/downloads_qmul_underground_reid.html"
NUM_CAMERAS = 8
NUM_PARTITIONS = 10
OFFICIAL_NUM_IMAGES = {"train": 250, "query": 125, "gallery": 900}  # in every partition
_IMAGE_NAME = re.compile(r"(?P<pid>\d{4})_(?P<cam>\d)_.*\.jpeg", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Record:
  """One image: `member` is its path in the release folder, e.g. 'probe/0005_2_...jpeg'."""
  member: str
  person_id: int
  camera_id: int


def locate(manual_dir):
  """The release folder in `manual_dir`; else raises naming the missing paths."""
  missing = [w for w in WANTED if not (manual_dir / w).exists()]
  if missing:
    raise manual.not_found(NAME, manual_dir, missing, URL)
  return manual_dir / FOLDER


def _parse(member, source):
  filename = member.rsplit("/", 1)[-1]
  match = _IMAGE_NAME.fullmatch(filename)
  camera = int(match["cam"]) if match else 0
  if not match or not 1 <= camera <= NUM_CAMERAS:
    raise ValueError(
        f"{NAME}: malformed image name {filename!r} ({source}/{member}); expected names like "
        f"'0005_2_25100_229_94_99_249.jpeg' (identity, camera 1..{NUM_CAMERAS}, ...).")
  person_id = int(match["pid"])
  if person_id == 0 and member.startswith(PROBE):
    raise ValueError(f"{NAME}: a distractor (identity 0000) among the probes: {source}/{member}.")
  return Record(member, person_id, camera - 1)


def records(source):
  """The `Record`s of the probe images, then of the gallery images, each in name order."""
  out = []
  for folder in (PROBE, GALLERY):
    names = sorted(p.name for p in (source / folder).iterdir()
                   if p.name.lower().endswith(".jpeg") and not p.name.startswith("."))
    if not names:
      raise DatasetNotFoundError(f"{NAME}: no JPEG images (*.jpeg) in {source / folder}/.")
    out += [_parse(f"{folder}/{name}", source) for name in names]
  return out


def train_identities(mat_path):
  """The training identities of each trial: personIdx, the third field of each struct of
  `trainIdxAll` in the .mat."""
  try:
    with mat_path.open("rb") as f:
      trials = scipy.io.loadmat(f).get("trainIdxAll")
  except (ValueError, scipy.io.matlab.MatReadError) as e:
    raise ValueError(f"{NAME}: cannot read {mat_path} as a MATLAB file: {e}") from e
  if trials is None or trials.size != NUM_PARTITIONS:
    raise ValueError(f"{NAME}: {mat_path} holds no `trainIdxAll` of {NUM_PARTITIONS} trials.")
  out = []
  for k, trial in enumerate(trials.ravel()):
    # The third field, personIdx, read by position as torchreid reads the real file.
    if len(trial.dtype.names or ()) < 3:
      raise ValueError(f"{NAME}: trial {k} of `trainIdxAll` in {mat_path} is not a struct of "
                       f"probeImIdx, galleryImIdx and personIdx (it has {trial.dtype.names}).")
    out.append(np.asarray(trial.item()[2]).ravel().astype(np.int64))
  return out


def roles(split_records, trials):
  """[num images, NUM_PARTITIONS] uint8: the roles of each image in each partition."""
  person_ids = np.array([r.person_id for r in split_records])
  is_probe = np.array([r.member.startswith(PROBE) for r in split_records])
  test_role = np.where(is_probe, partitions.QUERY, partitions.GALLERY)
  return np.stack([np.where(np.isin(person_ids, ids), partitions.TRAIN, test_role)
                   for ids in trials], axis=1).astype(np.uint8)


class Grid(tfds.core.GeneratorBasedBuilder):
  """GRID: 250 identities + 775 distractors, 8 cameras; the 10 benchmark 125/125 trials."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download the official GRID release `underground_reid.zip` ({URL}), extract it and "
      f"place the folder `{FOLDER}/` (holding {PROBE}/, {GALLERY}/ and {MAT}) in the manual "
      "directory: `<data_dir>/downloads/manual/` by default, or the folder given by "
      "`tfds.download.DownloadConfig(manual_dir=...)` / `tfds build --manual_dir`.")

  def _info(self):
    return features.reid_info(self, "jpeg", type(self).__doc__, URL, NUM_PARTITIONS)

  def _split_generators(self, dl_manager):
    manual_dir = manual.directory(
        dl_manager, lambda path: manual.not_found(NAME, path, WANTED, URL))
    source = locate(manual_dir)
    trials = train_identities(source / MAT)
    split_records = records(source)
    image_checks.check_all(NAME, [r.member for r in split_records],
                           lambda member: (source / member).read_bytes(), str(source))
    image_roles = roles(split_records, trials)
    partitions.warn_on_counts(NAME, image_roles, OFFICIAL_NUM_IMAGES)
    found_ids = [r.person_id for r in split_records]
    self.info.metadata.update({
        "num_partitions": NUM_PARTITIONS,
        # The most training identities of any partition (125 in each, officially).
        "num_classes": max(len(np.intersect1d(ids, found_ids)) for ids in trials),
        "num_cameras": NUM_CAMERAS,
        "has_masks": False,
        "official_num_images": dict(OFFICIAL_NUM_IMAGES),
    })
    return {partitions.SPLIT: self._generate_examples(source, split_records, image_roles)}

  def _generate_examples(self, source, split_records, image_roles):
    for r, roles_of_image in zip(split_records, image_roles):
      yield r.member, {"image": (source / r.member).read_bytes(), "mask": masks.EMPTY,
                       "person_id": r.person_id, "camera_id": r.camera_id, "label": -1,
                       "filename": r.member, "roles": roles_of_image}
