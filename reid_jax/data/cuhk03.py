"""cuhk03: CUHK03 (Li et al., "DeepReID: Deep Filter Pairing Neural Network for Person
Re-identification", CVPR 2014), in its classic protocol and in the new 767/700 protocol
of Zhong et al. ("Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017).

The release's `cuhk-03.mat` holds 1,467 identities, each seen by the two cameras of
one of 5 camera pairs (843, 440, 77, 58 and 49 identities), up to 5 images per
camera: 14,096 manually `labeled` boxes and 14,097 DPM-`detected` ones (the paper's
text counts 13,164 images of 1,360 identities, as torchreid's docstring does).
- `labeled` (default) and `detected`: the new protocol, 767 train / 700 test
  identities; labeled: train 7,368, query 1,400, gallery 5,328 images; detected:
  train 7,365, query 1,400, gallery 5,332 images.
- `labeled_classic` and `detected_classic`: the classic protocol's 20 partitions
  (the .mat's `testsets`) of 1,367 train / 100 test identities, whose test images
  are both query and gallery and are evaluated single-shot
  (`config.eval.protocol='cuhk03'`). Every image (14,096 labeled, 14,097 detected)
  is stored once, in the split `images`, with its `roles` (see `partitions`).
Files in tfds' manual_dir: `cuhk-03.mat` (MATLAB v7.3) from the official
`cuhk03_release.zip`, as it extracts (`cuhk03_release/cuhk-03.mat`) or directly in
the manual_dir; for the new protocol also `cuhk03_new_protocol_config_labeled.mat`
or `cuhk03_new_protocol_config_detected.mat` (Zhong et al.), in the manual_dir or
in `cuhk03_release/`. The images are PNG-encoded from the .mat's arrays and named
as torchreid names them, `{pair}_{pid:03d}_{view}_{index:02d}.png` (all 1-based;
images 1-5 of an identity are view 1, 6-10 view 2); person_id numbers the
identities 1..1,467 in .mat order (the new protocol: its config's `labels`, as
torchreid reads them) and camera_id = 2 * (pair - 1) + (view - 1).
"""
import contextlib
import dataclasses
import os
import re

from absl import logging
import h5py
import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from reid_jax.data import features, manual, masks, partitions

URL = "https://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html"
NEW_PROTOCOL_URL = "https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP"
FOLDER = "cuhk03_release"  # what cuhk03_release.zip extracts to
MAT = "cuhk-03.mat"
NUM_IDS = 1467
NUM_CAMERAS = 10  # the two views of each of the 5 camera pairs
NUM_PARTITIONS = 20
NUM_IMAGES = {"labeled": 14096, "detected": 14097}
NEW_PROTOCOL_IMAGES = {"labeled": {"train": 7368, "query": 1400, "gallery": 5328},
                       "detected": {"train": 7365, "query": 1400, "gallery": 5332}}
NEW_PROTOCOL_FIELDS = ("filelist", "labels", "train_idx", "query_idx", "gallery_idx")
IMAGE_NAME = re.compile(r"[1-5]_\d{3}_[12]_\d{2}\.png")
EXAMPLE_NAME = "1_001_1_01.png"
_LISTED = 20  # problems named in an error message; the rest are counted


@dataclasses.dataclass(eq=False)
class Cuhk03Config(tfds.core.BuilderConfig):
  """Which boxes ('labeled' or 'detected') under which protocol."""
  boxes: str = "labeled"
  classic: bool = False

  @property
  def protocol_file(self):
    return f"cuhk03_new_protocol_config_{self.boxes}.mat"

  @property
  def needed(self):
    return [MAT] if self.classic else [MAT, self.protocol_file]

  @property
  def official_num_images(self):
    if self.classic:
      return {partitions.SPLIT: NUM_IMAGES[self.boxes]}
    return NEW_PROTOCOL_IMAGES[self.boxes]


@dataclasses.dataclass(frozen=True)
class Image:
  """One image of cuhk-03.mat: cell [index, pid] of camera pair `pair` (0-based)."""
  filename: str
  person_id: int
  camera_id: int
  pair: int
  index: int
  pid: int


def not_found(manual_dir, names):
  """The error for the missing files `names` (cuhk-03.mat named in `cuhk03_release/`)."""
  wanted = [f"{FOLDER}/{name}" if name == MAT else name for name in names]
  url = URL if names == [MAT] else f"{URL} and {NEW_PROTOCOL_URL}"
  return manual.not_found("CUHK03", manual_dir, wanted, url)


def locate(manual_dir, names):
  """Maps each of `names` to its path in `manual_dir/cuhk03_release/` or `manual_dir/`."""
  found = {}
  for name in names:
    for path in (manual_dir / FOLDER / name, manual_dir / name):
      if path.is_file():
        found[name] = path
        break
  missing = [name for name in names if name not in found]
  if missing:
    raise not_found(manual_dir, missing)
  return found


@contextlib.contextmanager
def open_mat(path):
  """cuhk-03.mat, a MATLAB v7.3 (HDF5) file, opened with h5py."""
  try:
    mat = h5py.File(os.fspath(path), "r")
  except OSError as e:
    raise ValueError(f"Cannot read {path} as a MATLAB v7.3 (HDF5) file: {e}") from e
  with mat:
    yield mat


def cell(mat, key, path):
  """The object references of the top-level cell array `key`, in MATLAB order."""
  if key not in mat:
    raise ValueError(f"{path} has no {key!r}: it is not CUHK03's {MAT} "
                     f"(it holds {', '.join(sorted(mat.keys()))}).")
  return mat[key][()].ravel()  # h5py's C order is MATLAB's column-major order


def index_images(mat, boxes, path):
  """(name -> `Image` in .mat order, identities per camera pair); reads no pixels.

  h5py shows MATLAB arrays transposed: a pair is [10, num_pids], an image
  [3, W, H]; an empty cell (a 2-element array) has no image, as in torchreid.
  """
  images, pair_sizes, person_id = {}, [], 0
  for pair, pair_ref in enumerate(cell(mat, boxes, path)):
    cells = mat[pair_ref][()]
    pair_sizes.append(cells.shape[1])
    for pid in range(cells.shape[1]):
      person_id += 1
      count = len(images)
      for index in range(cells.shape[0]):
        data = mat[cells[index, pid]]
        if data.ndim < 3 or data.size == 0:
          continue
        view = 1 if index < 5 else 2
        name = f"{pair + 1}_{pid + 1:03d}_{view}_{index + 1:02d}.png"
        if data.ndim != 3 or data.shape[0] != 3 or data.dtype != np.uint8:
          raise ValueError(f"{path}: image {name} ({boxes}) is {data.dtype} of shape "
                           f"{data.shape[::-1]}; expected uint8 (H, W, 3).")
        images[name] = Image(name, person_id, 2 * pair + view - 1, pair, index, pid)
      if len(images) == count:
        raise ValueError(f"{path}: {boxes} camera pair {pair + 1}, person {pid + 1} has no image.")
  return images, pair_sizes


def classic_test_ids(mat, path, pair_sizes):
  """The person ids of each classic partition's test set, from `testsets` (Li et al.)."""
  first_id = 1 + np.concatenate([[0], np.cumsum(pair_sizes)])
  tests = []
  for k, ref in enumerate(cell(mat, "testsets", path)):
    ids = set()
    for pair, pid in mat[ref][()].T.astype(np.int64):  # [100, 2] 1-based (pair, pid)
      if not (1 <= pair <= len(pair_sizes) and 1 <= pid <= pair_sizes[pair - 1]):
        raise ValueError(f"{path}: testsets {{{k + 1}}} names camera pair {pair}, person {pid}, "
                         f"which has no images (identities per pair: {pair_sizes}).")
      ids.add(int(first_id[pair - 1] + pid - 1))
    tests.append(ids)
  if len(tests) != NUM_PARTITIONS:
    raise ValueError(f"{path}: {len(tests)} testsets; CUHK03's classic protocol has "
                     f"{NUM_PARTITIONS}.")
  return tests


def load_new_protocol(path):
  """The fields of a new-protocol config (MATLAB v5), checked to be there."""
  try:
    config = scipy.io.loadmat(os.fspath(path))
  except (ValueError, OSError, scipy.io.matlab.MatReadError) as e:
    raise ValueError(f"Cannot read {path} as a MATLAB file: {e}") from e
  missing = [f for f in NEW_PROTOCOL_FIELDS if f not in config]
  if missing:
    raise ValueError(f"{path} lacks {', '.join(missing)}: it is not a CUHK03 new-protocol "
                     f"config (fields {', '.join(NEW_PROTOCOL_FIELDS)}).")
  return config


def _listed(problems):
  more = f"\n  ... and {len(problems) - _LISTED} more" if len(problems) > _LISTED else ""
  return "".join(f"\n  {p}" for p in problems[:_LISTED]) + more


def new_protocol_rows(path, images, mat_path):
  """{split: [(Image, label)]} of the new protocol, as torchreid's `_extract_new_split`.

  `train_idx`, `query_idx` and `gallery_idx` index (1-based) `filelist`, whose
  names are looked up in cuhk-03.mat and whose `labels` are their person ids;
  train labels number the train person ids in sorted order.
  """
  config = load_new_protocol(path)
  filelist = [str(np.ravel(entry)[0]) for entry in config["filelist"].ravel()]
  labels = config["labels"].ravel().astype(np.int64)
  split_idx = {split: config[f"{split}_idx"].ravel().astype(np.int64) - 1
               for split in ("train", "query", "gallery")}
  problems = [f"{split}_idx {i + 1} is not an entry of the {len(filelist)}-entry filelist"
              for split, idx in split_idx.items() for i in idx if not 0 <= i < len(filelist)]
  if len(labels) != len(filelist):
    problems.append(f"{len(labels)} labels for {len(filelist)} filelist entries")
  if problems:
    raise ValueError(f"{path} is not a consistent new-protocol config:{_listed(problems)}")
  for i in sorted(set(np.concatenate(list(split_idx.values())).tolist())):
    name, image = filelist[i], images.get(filelist[i])
    if image is None and not IMAGE_NAME.fullmatch(name):
      problems.append(f"filelist {i + 1}: {name!r} is not a CUHK03 image name like "
                      f"{EXAMPLE_NAME!r}")
    elif image is None:
      problems.append(f"filelist {i + 1}: {name!r} has no image in {mat_path}")
  if problems:
    raise ValueError(f"{path} does not match {mat_path}:{_listed(problems)}")
  train_ids = np.unique(labels[split_idx["train"]]).tolist()
  label = {pid: i for i, pid in enumerate(train_ids)}
  # The person is the config's label, as torchreid reads it (it need not follow the
  # running order of cuhk-03.mat).
  image = lambda i: dataclasses.replace(images[filelist[i]], person_id=int(labels[i]))
  return {split: [(image(i), label[labels[i]] if split == "train" else -1) for i in idx]
          for split, idx in split_idx.items()}


def warn_on_counts(config, split_rows):
  """Logs a warning when the images or identities differ from the official release."""
  found = {split: len(rows) for split, rows in split_rows.items()}
  ids = len({row[0].person_id for rows in split_rows.values() for row in rows})
  if found != config.official_num_images or ids != NUM_IDS:
    logging.warning(
        "CUHK03 (%s): found %s images of %d identities; the official release has %s of %d. "
        "Building from what was found.", config.name, found, ids, config.official_num_images,
        NUM_IDS)


class Cuhk03(tfds.core.GeneratorBasedBuilder):
  """CUHK03: 1,467 identities, 10 cameras (5 pairs), labeled or detected boxes.

  New protocol (`labeled`, `detected`): 767 train / 700 test identities.
  Classic (`labeled_classic`, `detected_classic`): 20 partitions of 1,367 train /
  100 test identities, evaluated with `config.eval.protocol='cuhk03'`.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      Cuhk03Config(name="labeled", description="Labeled boxes, new 767/700 protocol."),
      Cuhk03Config(name="detected", boxes="detected",
                   description="Detected boxes, new 767/700 protocol."),
      Cuhk03Config(name="labeled_classic", classic=True,
                   description="Labeled boxes, the classic protocol's 20 partitions."),
      Cuhk03Config(name="detected_classic", boxes="detected", classic=True,
                   description="Detected boxes, the classic protocol's 20 partitions."),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download the official CUHK03 release `cuhk03_release.zip` ({URL}) and extract it in "
      f"the manual directory (`<data_dir>/downloads/manual/` by default, or the folder given "
      "by `tfds.download.DownloadConfig(manual_dir=...)` / `tfds build --manual_dir`), so "
      f"that it holds `{FOLDER}/{MAT}` (or put `{MAT}` directly there). The configs "
      "`labeled` and `detected` (the new protocol) also need "
      "`cuhk03_new_protocol_config_labeled.mat` / `cuhk03_new_protocol_config_detected.mat` "
      f"({NEW_PROTOCOL_URL}) in the manual directory or in `{FOLDER}/`.")

  def _info(self):
    classic = self.builder_config.classic
    return features.reid_info(self, "png", type(self).__doc__, URL,
                              NUM_PARTITIONS if classic else None)

  def _split_generators(self, dl_manager):
    config = self.builder_config
    manual_dir = manual.directory(dl_manager, lambda path: not_found(path, config.needed))
    paths = locate(manual_dir, config.needed)
    with open_mat(paths[MAT]) as mat:
      images, pair_sizes = index_images(mat, config.boxes, paths[MAT])
      tests = classic_test_ids(mat, paths[MAT], pair_sizes) if config.classic else None
    if config.classic:
      both = partitions.QUERY | partitions.GALLERY
      split_rows = {partitions.SPLIT: [
          (image, -1, np.array([both if image.person_id in ids else partitions.TRAIN
                                for ids in tests], np.uint8)) for image in images.values()]}
    else:
      split_rows = {split: [(image, label, None) for image, label in rows] for split, rows
                    in new_protocol_rows(paths[config.protocol_file], images, paths[MAT]).items()}
    warn_on_counts(config, split_rows)
    metadata = self.info.metadata
    metadata["num_cameras"] = NUM_CAMERAS
    metadata["has_masks"] = False
    metadata["official_num_images"] = config.official_num_images
    if config.classic:
      metadata["num_partitions"] = NUM_PARTITIONS
      metadata["protocol"] = "cuhk03"
    else:
      metadata["num_classes"] = len({image.person_id for image, _, _ in split_rows["train"]})
    return {split: self._generate_examples(paths[MAT], rows) for split, rows in split_rows.items()}

  def _generate_examples(self, mat_path, rows):
    with open_mat(mat_path) as mat:
      pairs = [mat[ref][()] for ref in cell(mat, self.builder_config.boxes, mat_path)]
      for image, label, roles in rows:
        pixels = mat[pairs[image.pair][image.index, image.pid]][()].T  # (H, W, 3)
        example = {"image": np.ascontiguousarray(pixels), "mask": masks.EMPTY,
                   "person_id": image.person_id, "camera_id": image.camera_id,
                   "label": label, "filename": image.filename}
        if roles is not None:
          example["roles"] = roles
        yield image.filename, example
