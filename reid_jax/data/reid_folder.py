"""reid_folder: a re-ID dataset of your own images, read from a folder.

The dataset root is tfds' manual_dir (`tfds.download.DownloadConfig(manual_dir=root)`,
`tfds build reid_folder --manual_dir=root`, or `reid_jax.data.builder('reid_folder',
manual_dir=root)`). It holds one of two layouts.

1. Folders: a folder per split, a sub-folder per person, the camera before the first
   `_` of each file name; images `.jpg`, `.jpeg`, `.png` or `.bmp` (other files, and
   hidden ones, are skipped):

     root/
       train/alice/cam1_0001.jpg
       train/alice/cam2_0007.jpg
       train/bob/cam1_0003.png
       query/carol/cam1_0010.jpg
       gallery/carol/cam2_0042.jpg
       gallery/dave/cam1_0050.bmp

2. CSV: `train.csv`, `query.csv` and `gallery.csv` in the root, each with the header
   `path,person,camera`; paths are relative to the root, or absolute:

     path,person,camera
     images/0001.jpg,alice,cam1
     /data/extra/0002.png,bob,cam2

Persons and cameras are names. When every person name, over all splits, is a decimal
integer (digits only, e.g. `0042`), it is the person_id; otherwise the sorted distinct
names are numbered 1..n, one numbering for all splits, so query and gallery agree.
Cameras alike: the integer itself, else 0..n-1. The metadata maps the ids back to the
names (`person_names`, `camera_names`: {str(id): name}). Train labels index the sorted
train person ids; `filename` is the image's path relative to the root (as written in
the CSV). JPEG and PNG files are stored as they are; any other format PIL reads is
converted to an 8-bit RGB PNG, losslessly for RGB, grey and palette images (an alpha
channel is dropped). No person masks: every mask is a 1x1 black PNG.

Before anything is written the build rejects, naming the file (and CSV line): a missing
split folder or CSV, an empty split, a file without a camera, a CSV with another header,
a row without all three fields or naming a missing file, an image that does not decode,
and a query and gallery where no query has a gallery image of its person from another
camera (the Market-1501 protocol of Zheng et al., ICCV 2015, which ignores same-camera
matches, would drop every query).

tfds caches a built dataset by name and version in its data_dir: once `reid_folder` is
built there, building again with another manual_dir returns the first dataset. Build
each folder into its own data_dir (`data_dir=...`), or delete `<data_dir>/reid_folder/`
first. The metadata's `root` says which folder a built dataset came from.
"""
import csv
import dataclasses
import io

from absl import logging
from etils import epath
from PIL import Image
import tensorflow_datasets as tfds

from reid_jax.data import features, image_checks, manual, masks
from reid_jax.data.manual import DatasetNotFoundError

NAME = "reid_folder"
SPLITS = ("train", "query", "gallery")
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
HEADER = ["path", "person", "camera"]
_STORED_AS_IS = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG, PNG
_CACHE_NOTE = (
    "tfds caches the built dataset by name and version in its data_dir: to build another "
    "folder, give it its own data_dir (or delete `<data_dir>/reid_folder/` first).")


@dataclasses.dataclass(frozen=True)
class Entry:
  """One image: `filename` as the layout names it (relative to the root, or as the CSV
  writes it), `path` the file, `person` and `camera` names."""
  filename: str
  path: epath.Path
  person: str
  camera: str


def not_found_message(root):
  root = epath.Path(root)
  folders = "".join(f"\n  {root / s}/" for s in SPLITS)
  csvs = "".join(f"\n  {root / s}.csv" for s in SPLITS)
  return (f"{NAME}: no dataset in the manual directory {root}. {manual.state(root)}\n"
          f"Expected the folders{folders}\n(holding <person>/<camera>_<anything>.jpg) or the "
          f"CSV files{csvs}\n(header path,person,camera); or {manual.TAIL}")


def find_layout(root):
  """'csv' when a split CSV is there, else 'folders'; raises unless all three are."""
  csvs, folders = [root / f"{s}.csv" for s in SPLITS], [root / s for s in SPLITS]
  if any(p.is_file() for p in csvs):
    layout, missing = "csv", [str(p) for p in csvs if not p.is_file()]
  elif any(p.is_dir() for p in folders):
    layout, missing = "folders", [f"{p}/" for p in folders if not p.is_dir()]
  else:
    raise DatasetNotFoundError(not_found_message(root))
  if missing:
    raise DatasetNotFoundError(
        f"{NAME}: {root} holds the {layout} layout, but not"
        + "".join(f"\n  {p}" for p in missing) + "\nEvery split needs its own.")
  return layout


def _camera(filename, where):
  camera, underscore, _ = filename.partition("_")
  if not (underscore and camera):
    raise ValueError(f"{NAME}: {where} has no camera: name images <camera>_<anything>.jpg, "
                     "e.g. cam1_0001.jpg.")
  return camera


def _is_image(name):
  return name.lower().endswith(EXTENSIONS) and not name.startswith(".")


def folder_entries(root, split):
  """The images of `root/split/<person>/`, in path order."""
  entries = []
  for person in sorted((root / split).iterdir()):
    if not person.is_dir():
      if _is_image(person.name):
        raise ValueError(f"{NAME}: {person} is not in a person folder: expected "
                         f"{root / split}/<person>/<camera>_<anything>.jpg.")
      continue
    if person.name.startswith("."):  # .ipynb_checkpoints and the like
      continue
    for path in sorted(person.iterdir()):
      if _is_image(path.name) and path.is_file():
        entries.append(Entry(f"{split}/{person.name}/{path.name}", path, person.name,
                             _camera(path.name, path)))
  return entries


def csv_entries(root, split):
  """The rows of `root/split.csv`; raises naming the CSV file and line."""
  csv_path = root / f"{split}.csv"
  try:
    text = csv_path.read_bytes().decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise ValueError(f"{NAME}: {csv_path} is not UTF-8 text ({e.reason} at byte {e.start}): "
                     "save it as UTF-8.") from None
  reader = csv.reader(io.StringIO(text))
  header = [cell.strip() for cell in next(reader, [])]
  if header != HEADER:
    raise ValueError(f"{NAME}: {csv_path}, line 1: the header is {','.join(header)!r}; "
                     f"expected {','.join(HEADER)!r}.")
  entries, lines = [], {}
  for row in reader:
    where = f"{csv_path}, line {reader.line_num}"
    cells = [cell.strip() for cell in row]
    if not any(cells):
      continue
    if len(cells) != 3 or not all(cells[:2]):
      raise ValueError(f"{NAME}: {where}: expected the 3 fields path,person,camera, got "
                       f"{','.join(row)!r}.")
    filename, person, camera = cells
    if not camera:
      raise ValueError(f"{NAME}: {where}: {filename} has no camera (the camera cell is empty).")
    path = root / filename  # an absolute path stays as it is
    if not path.is_file():
      raise FileNotFoundError(f"{NAME}: {where}: {path} does not exist.")
    if filename in lines:
      raise ValueError(f"{NAME}: {where}: {filename} is already on line {lines[filename]}.")
    lines[filename] = reader.line_num
    entries.append(Entry(filename, path, person, camera))
  return entries


def numbering(kind, names, first):
  """name -> id: the integer itself when every name is one, else first, first + 1, ..."""
  distinct = sorted(set(names))
  if not all(name.isascii() and name.isdigit() for name in distinct):
    return {name: i for i, name in enumerate(distinct, first)}
  names_of = {}
  for name in distinct:
    if int(name) in names_of:
      raise ValueError(f"{NAME}: the {kind} names {names_of[int(name)]!r} and {name!r} are "
                       f"both the integer {int(name)}: rename one.")
    names_of[int(name)] = name
  return {name: i for i, name in names_of.items()}


def check_queries(query, gallery, person, camera):
  """Raises when no query has a gallery image of its person from another camera;
  warns when some have none."""
  cameras = {}
  for e in gallery:
    cameras.setdefault(person[e.person], set()).add(camera[e.camera])
  unmatched = [e for e in query if not cameras.get(person[e.person], set()) - {camera[e.camera]}]
  if len(unmatched) == len(query):
    names = lambda entries: ", ".join(sorted({e.camera for e in entries}))
    raise ValueError(
        f"{NAME}: no query image has a gallery image of its person from another camera, so "
        "the Market-1501 protocol, which ignores same-camera matches, would discard every "
        f"query. Query cameras: {names(query)}; gallery cameras: {names(gallery)}. Each query "
        "person needs gallery images from another camera than the query's.")
  if unmatched:
    logging.warning(
        "%s: %d of %d query images have no gallery image of their person from another camera; "
        "the evaluation skips them, e.g. %s.", NAME, len(unmatched), len(query),
        ", ".join(e.filename for e in unmatched[:5]))


def stored_bytes(path):
  """The file's bytes when JPEG or PNG, else the image as an RGB PNG; raises OSError
  when PIL cannot read it (so `image_checks` names the file)."""
  data = epath.Path(path).read_bytes()
  if not data or data.startswith(_STORED_AS_IS):
    return data
  try:
    with Image.open(io.BytesIO(data)) as image:
      rgb = image.convert("RGB")
  except Image.UnidentifiedImageError:
    raise OSError("not an image PIL can read") from None
  except (ValueError, SyntaxError, Image.DecompressionBombError) as e:  # plugins' own errors
    raise OSError(f"PIL cannot read it: {e}") from None
  buffer = io.BytesIO()
  rgb.save(buffer, "PNG")
  return buffer.getvalue()


class ReidFolder(tfds.core.GeneratorBasedBuilder):
  """Your own re-ID images: train / query / gallery from folders or CSV files."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Point the manual directory (`tfds.download.DownloadConfig(manual_dir=...)` or "
      "`tfds build reid_folder --manual_dir`) at your dataset root, holding either the "
      "folders train/, query/, gallery/ with <person>/<camera>_<anything>.jpg inside, or "
      "train.csv, query.csv, gallery.csv with the header path,person,camera (paths relative "
      f"to the root, or absolute). {_CACHE_NOTE}")

  def _info(self):
    return features.reid_info(self, None, __doc__)  # JPEG or PNG, each as its file has it

  def _split_generators(self, dl_manager):
    root = manual.directory(
        dl_manager, lambda path: DatasetNotFoundError(not_found_message(path)))
    layout = find_layout(root)
    read = csv_entries if layout == "csv" else folder_entries
    entries = {split: read(root, split) for split in SPLITS}
    for split, split_entries in entries.items():
      if not split_entries:
        where = root / f"{split}.csv" if layout == "csv" else root / split
        raise ValueError(f"{NAME}: the {split} split is empty: {where} holds no images.")
    everyone = [e for split_entries in entries.values() for e in split_entries]
    person = numbering("person", [e.person for e in everyone], 1)
    camera = numbering("camera", [e.camera for e in everyone], 0)
    check_queries(entries["query"], entries["gallery"], person, camera)
    image_checks.check_all(NAME, sorted({str(e.path) for e in everyone}), stored_bytes)
    train_ids = sorted({person[e.person] for e in entries["train"]})
    label = {pid: i for i, pid in enumerate(train_ids)}
    metadata = self.info.metadata
    metadata["num_classes"] = len(train_ids)
    metadata["num_cameras"] = len(set(camera.values()))
    metadata["has_masks"] = False
    metadata["layout"] = layout
    metadata["root"] = str(root)
    metadata["person_names"] = {str(i): name for name, i in person.items()}
    metadata["camera_names"] = {str(i): name for name, i in camera.items()}
    return {split: self._generate_examples(split_entries, person, camera,
                                           label if split == "train" else {})
            for split, split_entries in entries.items()}

  def _generate_examples(self, entries, person, camera, label):
    for e in entries:
      yield e.filename, {"image": stored_bytes(e.path), "mask": masks.read(None),
                         "person_id": person[e.person], "camera_id": camera[e.camera],
                         "label": label.get(person[e.person], -1), "filename": e.filename}
