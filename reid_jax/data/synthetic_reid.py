"""synthetic_reid: procedurally drawn pedestrians seen by several cameras.

The embedded default dataset: generated on the machine, no download. An
identity is an appearance (`pedestrians.Identity`); a camera changes the colour
cast, exposure, background, viewpoint, framing, occlusion, blur and noise
(`pedestrians.Camera`). Splits follow Market-1501: train and test identities are
disjoint; every test identity has one query per camera it appears in and the rest
of its images in the gallery, which also holds distractors (person_id 0) and junk
fragments (person_id -1). Every image comes with a coarse person mask.

Each image is drawn from a random generator seeded by the config's seed and the
image's own indices only, so the data is a function of VERSION and the config.
"""
import dataclasses
import functools
import io

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from reid_jax.data import features, pedestrians

# Seed namespaces: every random draw is keyed by (config seed, namespace, indices).
_PIDS, _IDENTITY, _CAMERA, _PLAN, _SHOT, _DISTRACTOR, _JUNK = range(7)


@dataclasses.dataclass(eq=False)
class SyntheticReidConfig(tfds.core.BuilderConfig):
  """Sizes of a synthetic_reid variant; images per identity include its queries."""
  num_train_ids: int = 120
  num_test_ids: int = 100
  min_images_per_id: int = 8
  max_images_per_id: int = 12
  num_cameras: int = 6
  height: int = 64
  width: int = 32
  num_distractors: int = 100
  num_junk: int = 40
  seed: int = 0

  def __post_init__(self):
    # Every identity needs two cameras, and every test camera a query and a gallery image.
    if self.num_cameras < 2 or not 4 <= self.min_images_per_id <= self.max_images_per_id:
      raise ValueError(
          f"SyntheticReidConfig {self.name!r}: needs num_cameras >= 2 and "
          f"4 <= min_images_per_id <= max_images_per_id, got {self.num_cameras}, "
          f"{self.min_images_per_id}, {self.max_images_per_id}.")


@dataclasses.dataclass(frozen=True)
class _Item:
  """One image to draw: `index` numbers the images of a person, distractors or junk."""
  filename: str
  person_id: int
  camera_id: int
  label: int
  index: int


def _filename(pid, cam, index):
  return f"{pid:04d}_c{cam + 1}_{index:03d}.png" if pid >= 0 else f"-1_c{cam + 1}_{index:03d}.png"


def _rng(config, *keys):
  return np.random.default_rng([config.seed, *keys])


def _cameras_and_counts(config, pid, test):
  """The cameras an identity appears in and its image count in each.

  A test identity gets at least two images per camera (a query and a gallery
  image) and at least two cameras, so every query has a cross-camera match.
  """
  rng = _rng(config, _PLAN, pid)
  n = int(rng.integers(config.min_images_per_id, config.max_images_per_id + 1))
  per_camera = 2 if test else 1
  k = int(rng.integers(2, min(config.num_cameras, n // per_camera) + 1))
  cameras = np.sort(rng.choice(config.num_cameras, k, replace=False))
  counts = per_camera + rng.multinomial(n - k * per_camera, rng.dirichlet(np.ones(k)))
  return cameras, counts


def split_ids(config):
  """The sorted train and test person ids: disjoint, not contiguous (as in Market)."""
  pids = _rng(config, _PIDS).permutation(config.num_train_ids + config.num_test_ids) + 1
  return np.sort(pids[:config.num_train_ids]), np.sort(pids[config.num_train_ids:])


def plan(config):
  """Lists the items of each split: {'train'|'query'|'gallery': [_Item]}."""
  train_pids, test_pids = split_ids(config)
  splits = {"train": [], "query": [], "gallery": []}
  for test, pids in ((False, train_pids), (True, test_pids)):
    for label, pid in enumerate(pids):
      index = 0
      for cam, count in zip(*_cameras_and_counts(config, pid, test)):
        for j in range(count):
          split = "train" if not test else "query" if j == 0 else "gallery"
          splits[split].append(_Item(_filename(pid, cam, index), int(pid), int(cam),
                                     -1 if test else label, index))
          index += 1
  for kind, pid, n in ((_DISTRACTOR, 0, config.num_distractors), (_JUNK, -1, config.num_junk)):
    for index in range(n):
      cam = int(_rng(config, kind, index).integers(config.num_cameras))
      splits["gallery"].append(_Item(_filename(pid, cam, index), pid, cam, -1, index))
  return splits


def identity(config, pid):
  return _identity(config.seed, pid)


@functools.lru_cache(maxsize=None)
def _identity(seed, pid):
  return pedestrians.sample_identity(np.random.default_rng([seed, _IDENTITY, pid]))


def cameras(config):
  return [pedestrians.sample_camera(_rng(config, _CAMERA, c)) for c in range(config.num_cameras)]


def draw(config, item, cams):
  """Renders one item: returns (image (H, W, 3), mask (H, W, 1)), both uint8."""
  size = (config.height, config.width)
  if item.person_id > 0:
    rng = _rng(config, _SHOT, item.person_id, item.index)
    shot = pedestrians.sample_shot(cams[item.camera_id], rng)
    return pedestrians.render(identity(config, item.person_id), shot, *size)
  kind = _DISTRACTOR if item.person_id == 0 else _JUNK
  rng = _rng(config, kind, item.index)
  rng.integers(config.num_cameras)  # the camera, drawn by `plan`
  shot = pedestrians.sample_shot(cams[item.camera_id], rng)
  if kind == _JUNK:  # a fragment of a test identity's image
    pid = int(rng.choice(split_ids(config)[1]))
    return pedestrians.fragment(*pedestrians.render(identity(config, pid), shot, *size), rng)
  if rng.random() < 0.5:  # background clutter only
    return pedestrians.render(None, shot, *size)
  # A stranger (an identity from no split), badly off-centre.
  shot = dataclasses.replace(shot, dx=rng.choice([-1, 1]) * rng.uniform(0.3, 0.5))
  return pedestrians.render(pedestrians.sample_identity(rng), shot, *size)


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(buffer, "PNG")
  return buffer.getvalue()


class SyntheticReid(tfds.core.GeneratorBasedBuilder):
  """Procedural pedestrians under camera changes, with Market-1501-style splits.

  Images (train / query / gallery incl. distractors and junk):
  `small` and `small_128x64`: 1,234 / 339 / 807 (100 + 40);
  `large`: 13,477 / 2,993 / 17,310 (2,800 + 3,800).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SyntheticReidConfig(
          name="small", description="64x32, 120 train / 100 test ids, 6 cameras: tests and CPU."),
      SyntheticReidConfig(
          name="small_128x64", height=128, width=64,
          description="The `small` people and cameras at 128x64."),
      SyntheticReidConfig(
          name="large", num_train_ids=751, num_test_ids=750, min_images_per_id=10,
          max_images_per_id=26, height=256, width=128, num_distractors=2800, num_junk=3800,
          description="Market-1501-like size at 256x128: 751 train / 750 test ids."),
  ]

  def _info(self):
    return features.reid_info(self, "png", __doc__)

  def _split_generators(self, dl_manager):
    del dl_manager  # generated, nothing to download
    config = self.builder_config
    self.info.metadata["num_classes"] = config.num_train_ids
    self.info.metadata["num_cameras"] = config.num_cameras
    self.info.metadata["has_masks"] = True  # drawn with every image
    self.info.metadata["mask_folder"] = ""
    self.info.metadata["num_masks"] = {split: len(items) for split, items in plan(config).items()}
    return {split: self._generate_examples(items) for split, items in plan(config).items()}

  def _generate_examples(self, items):
    config = self.builder_config
    cams = cameras(config)
    for item in items:
      image, mask = draw(config, item, cams)
      yield item.filename, {
          "image": _png(image), "mask": _png(mask), "person_id": item.person_id,
          "camera_id": item.camera_id, "label": item.label, "filename": item.filename,
      }
