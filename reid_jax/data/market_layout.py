"""The Market-1501 release layout, shared by the Market-1501 and DukeMTMC-reID builders.

Both official releases hold three folders of JPEGs, `bounding_box_train/`
(train), `query/` and `bounding_box_test/` (gallery), whose file names start with
the person id and the camera. `MarketStyleBuilder` finds them in tfds'
manual_dir, as the official zip or as its extracted folder, parses the names and
passes the JPEG bytes through unchanged. Person masks are optional: a folder
`<folder>_masks/` beside the release gives each image a mask (see `masks`).
"""
import dataclasses
import re
import zipfile

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from reid_jax.data import features, image_checks, manual, masks
from reid_jax.data.manual import DatasetNotFoundError

SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


@dataclasses.dataclass(frozen=True)
class Layout:
  """What tells one Market-style release from another."""
  name: str               # e.g. 'Market-1501'
  archive: str            # the official zip
  folder: str             # the folder the zip extracts to
  pattern: str            # file name regex with groups 'pid' and 'cam' (1-based)
  example: str            # a well-formed file name, for error messages
  num_cameras: int
  num_images: dict        # split -> number of images in the official release
  num_train_ids: int
  url: str

  def instructions(self):
    folders = ", ".join(f"{f}/" for f in SPLIT_FOLDERS.values())
    return (
        f"Download the official {self.name} release ({self.url}) and place either the zip "
        f"`{self.archive}` or the folder it extracts to, `{self.folder}/` (holding {folders}), "
        "in the manual directory: `<data_dir>/downloads/manual/` by default, or the folder "
        "given by `tfds.download.DownloadConfig(manual_dir=...)` / `tfds build --manual_dir`. "
        f"Optionally, person masks go beside it in `{self.folder}{masks.SUFFIX}/`: one PNG "
        "per image at the image's path in the release with `.png` for `.jpg` (e.g. "
        f"`{self.folder}{masks.SUFFIX}/{SPLIT_FOLDERS['train']}/"
        f"{self.example.rsplit('.', 1)[0]}.png`), any non-zero pixel marking the person.")


@dataclasses.dataclass(frozen=True)
class Record:
  """One image: `member` is its path in the release folder or in the zip."""
  filename: str
  person_id: int
  camera_id: int
  label: int
  member: str


def not_found_message(layout, manual_dir):
  manual_dir = epath.Path(manual_dir)
  return (
      f"{layout.name} was not found in the manual directory {manual_dir}. "
      f"{manual.state(manual_dir)}\n"
      f"Put the official zip there as\n  {manual_dir / layout.archive}\n"
      f"or its extracted folder as\n  {manual_dir / layout.folder}/"
      f"{{{','.join(SPLIT_FOLDERS.values())}}}/\n"
      f"(from {layout.url}), or {manual.TAIL}")


def locate(layout, manual_dir):
  """Returns the folder holding the split folders (preferred), or the zip; else raises."""
  for root in (manual_dir / layout.folder, manual_dir):
    if any((root / folder).is_dir() for folder in SPLIT_FOLDERS.values()):
      return root
  if (manual_dir / layout.archive).is_file():
    return manual_dir / layout.archive
  raise DatasetNotFoundError(not_found_message(layout, manual_dir))


def _is_image(name):
  # Skips Thumbs.db and the like, and macOS '._*' resource forks.
  return name.lower().endswith(".jpg") and not name.startswith(".")


def list_members(source):
  """Maps each split to the sorted paths of its JPEGs in `source` (a folder or a zip)."""
  members = {split: [] for split in SPLIT_FOLDERS}
  split_of = {folder: split for split, folder in SPLIT_FOLDERS.items()}
  if source.is_file():  # the zip
    with zipfile.ZipFile(source.open("rb")) as archive:
      for name in archive.namelist():
        parts = name.split("/")
        if len(parts) >= 2 and parts[-2] in split_of and "__MACOSX" not in parts:
          if _is_image(parts[-1]):
            members[split_of[parts[-2]]].append(name)
  else:
    for split, folder in SPLIT_FOLDERS.items():
      if (source / folder).is_dir():
        members[split] = [f"{folder}/{p.name}" for p in (source / folder).iterdir()
                          if _is_image(p.name)]
  for split, names in members.items():
    if not names:
      raise DatasetNotFoundError(
          f"No JPEG images in {SPLIT_FOLDERS[split]}/ of {source}: expected the official "
          f"folders {', '.join(f'{f}/' for f in SPLIT_FOLDERS.values())}.")
  return {split: sorted(names) for split, names in members.items()}


def parse(layout, member, source):
  """Returns (person_id, 0-based camera_id) from a file name; raises naming the file."""
  filename = member.rsplit("/", 1)[-1]
  match = re.fullmatch(layout.pattern, filename)
  camera = int(match["cam"]) if match else 0
  if not match or not 1 <= camera <= layout.num_cameras:
    raise ValueError(
        f"{layout.name}: malformed image name {filename!r} ({source}/{member}); expected "
        f"names like {layout.example!r} with cameras c1..c{layout.num_cameras}.")
  return int(match["pid"]), camera - 1


def records(layout, source):
  """Maps each split to its `Record`s; train labels index the sorted train ids."""
  parsed = {split: [(m, *parse(layout, m, source)) for m in members]
            for split, members in list_members(source).items()}
  for member, pid, _ in parsed["train"]:
    if pid <= 0:
      raise ValueError(f"{layout.name}: junk or distractor id {pid} in the train split: "
                       f"{source}/{member}.")
  train_ids = np.unique([pid for _, pid, _ in parsed["train"]]).tolist()
  label = {pid: i for i, pid in enumerate(train_ids)}
  return {split: [Record(m.rsplit("/", 1)[-1], pid, cam,
                         label[pid] if split == "train" else -1, m) for m, pid, cam in items]
          for split, items in parsed.items()}


def warn_on_counts(layout, split_records):
  """Logs a warning when the split sizes differ from the official release."""
  found = {split: len(r) for split, r in split_records.items()}
  train_ids = len({r.person_id for r in split_records["train"]})
  if found != layout.num_images or train_ids != layout.num_train_ids:
    logging.warning(
        "%s: found %s images and %d train identities; the official release has %s and %d. "
        "Building from what was found.", layout.name, found, train_ids, layout.num_images,
        layout.num_train_ids)


class MarketStyleBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Builds train/query/gallery from a Market-style release in the manual_dir.

  Every example has a `mask`: from `<manual_dir>/<folder>_masks/` when that folder
  exists, else a 1x1 black PNG; the metadata says which (`has_masks`, `num_masks`,
  `mask_folder`). Subclasses set `LAYOUT`, `VERSION` and `MANUAL_DOWNLOAD_INSTRUCTIONS`.
  """
  LAYOUT: Layout

  def _info(self):
    return features.reid_info(self, "jpeg", type(self).__doc__, self.LAYOUT.url)

  def _split_generators(self, dl_manager):
    manual_dir = manual.directory(
        dl_manager, lambda path: DatasetNotFoundError(not_found_message(self.LAYOUT, path)))
    source = locate(self.LAYOUT, manual_dir)
    split_records = records(self.LAYOUT, source)
    warn_on_counts(self.LAYOUT, split_records)
    with manual.reader(source) as read:
      image_checks.check_all(self.LAYOUT.name, [r.member for recs in split_records.values()
                                                for r in recs], read, str(source))
    self.info.metadata["num_classes"] = len({r.person_id for r in split_records["train"]})
    self.info.metadata["num_cameras"] = self.LAYOUT.num_cameras
    self.info.metadata["official_num_images"] = dict(self.LAYOUT.num_images)
    mask_folder = manual_dir / f"{self.LAYOUT.folder}{masks.SUFFIX}"
    split_masks = masks.find(self.LAYOUT.name, mask_folder, {
        split: [f"{SPLIT_FOLDERS[split]}/{r.filename}" for r in recs]
        for split, recs in split_records.items()})
    self.info.metadata["has_masks"] = split_masks is not None
    if split_masks is None:
      split_masks = {split: [None] * len(recs) for split, recs in split_records.items()}
    self.info.metadata["mask_folder"] = str(mask_folder)
    self.info.metadata["num_masks"] = {
        split: sum(m is not None for m in paths) for split, paths in split_masks.items()}
    return {split: self._generate_examples(source, recs, split_masks[split])
            for split, recs in split_records.items()}

  def _generate_examples(self, source, split_records, mask_paths):
    with manual.reader(source) as read:
      for r, mask in zip(split_records, mask_paths):
        yield r.filename, {"image": read(r.member), "mask": masks.read(mask),
                           "person_id": r.person_id, "camera_id": r.camera_id,
                           "label": r.label, "filename": r.filename}
