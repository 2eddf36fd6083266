"""msmt17: MSMT17 (Wei et al., "Person Transfer GAN to Bridge Domain Gap for Person
Re-Identification", CVPR 2018).

4,101 identities filmed by 15 cameras (12 outdoor, 3 indoor) of a campus over four
days, boxes from Faster R-CNN. The release splits them as torchreid 0.2.5 reads it
(`torchreid.reid.data.datasets.image.msmt17`), with list_val added to train as
the papers do (torchreid's `combineall`):
- train (`list_train.txt` + `list_val.txt`): 32,621 images of 1,041 identities;
- query (`list_query.txt`): 11,659 images of the 3,060 test identities;
- gallery (`list_gallery.txt`): 82,161 images of the 3,060 test identities.
Each list line reads `<path> <person id>`, the path relative to the image folder,
e.g. `0000/0000_000_01_0303morning_0015_0.jpg 0`; its third `_` field is the
camera, 01..15 (camera_id 0..14). Person ids are the release's own, 0-based and
numbered separately in train and test: id 0 is a person here, not a distractor;
there is no junk. Train labels index the sorted train ids; `filename` is the path
as listed.
Two releases, one builder config each:
- `v1` (default): `MSMT17_V1/` with the images in `train/` and `test/`;
- `v2`: `MSMT17_V2/`, the same images with blurred faces, in `mask_train_v2/` and
  `mask_test_v2/`.
Both hold the four list files. Read from tfds' manual_dir, as the extracted folder
(`<manual_dir>/MSMT17_V1/`) or as the official zip (`<manual_dir>/MSMT17_V1.zip`,
which extracts to that folder); the JPEGs are stored as they are. No person
masks: every mask is a 1x1 black PNG.
"""
import contextlib
import dataclasses
import re
import zipfile

from absl import logging
from etils import epath
import tensorflow_datasets as tfds

from reid_jax.data import features, image_checks, manual, masks
from reid_jax.data.manual import DatasetNotFoundError

NAME = "MSMT17"
URL = "http://www.pkuvmc.com/publications/msmt17.html"
LISTS = {"train": ("list_train.txt", "list_val.txt"), "query": ("list_query.txt",),
         "gallery": ("list_gallery.txt",)}
NUM_IMAGES = {"train": 32621, "query": 11659, "gallery": 82161}
NUM_TRAIN_IDS = 1041
NUM_CAMERAS = 15
EXAMPLE = "0000/0000_000_01_0303morning_0015_0.jpg 0"
_LINE = re.compile(r"(?P<path>\S+)\s+(?P<pid>[0-9]+)")


@dataclasses.dataclass(eq=False)
class Msmt17Config(tfds.core.BuilderConfig):
  """Where one release keeps its files."""
  folder: str = "MSMT17_V1"  # the release folder; the zip is `<folder>.zip`
  train_dir: str = "train"   # images of list_train and list_val
  test_dir: str = "test"     # images of list_query and list_gallery

  def image_dir(self, split):
    return self.train_dir if split == "train" else self.test_dir

  def wanted(self):
    """The paths inside the release that must exist (folders end with '/')."""
    return [name for names in LISTS.values() for name in names] + [
        f"{self.train_dir}/", f"{self.test_dir}/"]


@dataclasses.dataclass(frozen=True)
class Record:
  """One listed image: `filename` as its list gives it, `path` inside the release."""
  filename: str
  path: str
  person_id: int
  camera_id: int
  label: int = -1


class _Folder:
  """The extracted release folder."""

  def __init__(self, root):
    self.root = root
    self.where = str(root)

  def has(self, path):
    return (self.root / path).is_dir() if path.endswith("/") else (self.root / path).is_file()

  def read(self, path):
    return (self.root / path).read_bytes()


class _Zip:
  """The official zip; its members sit under `<folder>/` (or at the top level)."""

  def __init__(self, archive, path, folder):
    names = archive.namelist()
    self._prefix = f"{folder}/" if any(n.startswith(f"{folder}/") for n in names) else ""
    self._archive = archive
    self._names = names
    self._files = set(names)
    self.where = f"{path}/{self._prefix}".rstrip("/")

  def has(self, path):
    if path.endswith("/"):  # zips need not hold entries for folders
      return any(n.startswith(self._prefix + path) for n in self._names)
    return self._prefix + path in self._files

  def read(self, path):
    return self._archive.read(self._prefix + path)


def not_found_message(config, manual_dir):
  manual_dir = epath.Path(manual_dir)
  wanted = ",".join(config.wanted())
  message = (f"{NAME} ({config.folder}) was not found in the manual directory {manual_dir}. "
             f"{manual.state(manual_dir)}\nPut its extracted folder there as\n"
             f"  {manual_dir / config.folder}/{{{wanted}}}\nor the official zip as\n"
             f"  {manual_dir / config.folder}.zip\n(from {URL}), or {manual.TAIL}")
  for other in Msmt17.BUILDER_CONFIGS:
    if other.folder != config.folder and any(
        p.exists() for p in (manual_dir / other.folder, manual_dir / f"{other.folder}.zip")):
      message += f"\nIt holds {other.folder}: build `msmt17/{other.name}` for that release."
  return message


@contextlib.contextmanager
def open_release(config, manual_dir):
  """Yields the release (`_Folder` or `_Zip`), with every list file and image folder."""
  folder, archive = manual_dir / config.folder, manual_dir / f"{config.folder}.zip"
  with contextlib.ExitStack() as stack:
    if folder.is_dir():
      release = _Folder(folder)
    elif archive.is_file():
      release = _Zip(stack.enter_context(zipfile.ZipFile(archive.open("rb"))), archive,
                     config.folder)
    else:
      raise DatasetNotFoundError(not_found_message(config, manual_dir))
    missing = [f"{release.where}/{p}" for p in config.wanted() if not release.has(p)]
    if missing:
      raise DatasetNotFoundError(
          f"{NAME} ({config.folder}): the release in {manual_dir} is incomplete; missing:"
          + "".join(f"\n  {p}" for p in missing)
          + f"\nExtract the official {config.folder}.zip (from {URL}) again.")
    yield release


def read_list(release, config, split, list_name):
  """(`Record`, 'list file, line n') of each line of a list; raises on a malformed line
  or a listed image that is missing, naming the list file and line."""
  items, missing = [], []
  image_dir = config.image_dir(split)
  for number, line in enumerate(release.read(list_name).decode().splitlines(), 1):
    if not line.strip():
      continue
    where = f"{release.where}/{list_name}, line {number}"
    match = _LINE.fullmatch(line.strip())
    fields = match["path"].split("_") if match else []  # torchreid: path.split('_')[2]
    if len(fields) < 3 or not re.fullmatch(r"[0-9]+", fields[2]) or not (
        1 <= int(fields[2]) <= NUM_CAMERAS):
      raise ValueError(
          f"{NAME}: malformed line {line!r} in {where}: expected `<path> <person id>` like "
          f"{EXAMPLE!r}, the path's third '_' field a camera 01..{NUM_CAMERAS}.")
    path = f"{image_dir}/{match['path']}"
    if not release.has(path):
      missing.append(f"{where} lists {release.where}/{path}")
    items.append((Record(match["path"], path, int(match["pid"]), int(fields[2]) - 1), where))
  if missing:
    more = f"; {len(missing)} images it lists are missing" if len(missing) > 1 else ""
    raise DatasetNotFoundError(
        f"{NAME}: {missing[0]}, which does not exist{more}. Extract the official "
        f"{config.folder}.zip again.")
  return items


def records(release, config):
  """Maps each split to its `Record`s; train labels index the sorted train ids."""
  split_records, seen = {}, {}
  for split, list_names in LISTS.items():
    split_records[split] = []
    for list_name in list_names:
      for r, where in read_list(release, config, split, list_name):
        if r.path in seen:
          raise ValueError(f"{NAME}: {release.where}/{r.path} is listed twice: "
                           f"{seen[r.path]} and {where}.")
        seen[r.path] = where
        split_records[split].append(r)
  train_ids = sorted({r.person_id for r in split_records["train"]})
  label = {pid: i for i, pid in enumerate(train_ids)}
  split_records["train"] = [dataclasses.replace(r, label=label[r.person_id])
                            for r in split_records["train"]]
  return split_records


def warn_on_counts(config, split_records):
  """Logs a warning when the split sizes differ from the official release."""
  found = {split: len(r) for split, r in split_records.items()}
  train_ids = len({r.person_id for r in split_records["train"]})
  if found != NUM_IMAGES or train_ids != NUM_TRAIN_IDS:
    logging.warning(
        "%s (%s): found %s images and %d train identities; the official release has %s and "
        "%d. Building from what was found.", NAME, config.folder, found, train_ids, NUM_IMAGES,
        NUM_TRAIN_IDS)


class Msmt17(tfds.core.GeneratorBasedBuilder):
  """MSMT17: 1,041 train / 3,060 test identities, 15 cameras, Market-1501 protocol."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      Msmt17Config(name="v1", description="MSMT17_V1: train/, test/."),
      Msmt17Config(name="v2", folder="MSMT17_V2", train_dir="mask_train_v2",
                   test_dir="mask_test_v2",
                   description="MSMT17_V2 (faces blurred): mask_train_v2/, mask_test_v2/."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "v1"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Request MSMT17 from its authors ({URL}) and place either the zip `MSMT17_V1.zip` or "
      "the folder it extracts to, `MSMT17_V1/` (holding train/, test/ and list_train.txt, "
      "list_val.txt, list_query.txt, list_gallery.txt), in the manual directory; for the "
      "`v2` config, `MSMT17_V2.zip` or `MSMT17_V2/` (mask_train_v2/, mask_test_v2/ and the "
      "same lists). The manual directory is `<data_dir>/downloads/manual/` by default, or "
      "the folder given by `tfds.download.DownloadConfig(manual_dir=...)` / "
      "`tfds build --manual_dir`.")

  def _info(self):
    return features.reid_info(self, "jpeg", __doc__, URL)

  def _split_generators(self, dl_manager):
    config = self.builder_config
    manual_dir = manual.directory(
        dl_manager, lambda path: DatasetNotFoundError(not_found_message(config, path)))
    with open_release(config, manual_dir) as release:
      split_records = records(release, config)
      warn_on_counts(config, split_records)
      image_checks.check_all(NAME, [r.path for recs in split_records.values() for r in recs],
                             release.read, release.where)
    self.info.metadata["num_classes"] = len({r.person_id for r in split_records["train"]})
    self.info.metadata["num_cameras"] = NUM_CAMERAS
    self.info.metadata["has_masks"] = False
    self.info.metadata["official_num_images"] = dict(NUM_IMAGES)
    self.info.metadata["person_ids_per_split"] = True  # train and test each count from 0
    return {split: self._generate_examples(manual_dir, recs)
            for split, recs in split_records.items()}

  def _generate_examples(self, manual_dir, split_records):
    with open_release(self.builder_config, manual_dir) as release:
      for r in split_records:
        yield r.path, {"image": release.read(r.path), "mask": masks.read(None),
                       "person_id": r.person_id, "camera_id": r.camera_id,
                       "label": r.label, "filename": r.filename}
