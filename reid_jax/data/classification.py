"""tfds image-classification datasets (tfds' own `cifar100`, `imagenet2012`, ...) as the
training and evaluation batches of `config.task='classification'`.

Reading (why random access): batch `step` of a run is, as in the re-ID pipeline, a
pure function of (seed, step): `samplers.RandomSampler` draws the example indices
(an epoch is a seeded permutation of the split) and each image's augmentation is
seeded by (seed, step, position). The examples are then read by index from tfds'
random-access data source (`builder.as_data_source`, ArrayRecord files), so a run
resumes at any step by reading only that step's examples, and no split is ever held
in memory (ImageNet's 1.28M JPEGs stay on disk, each read when a batch needs it).
The alternative, a deterministic sequential read of TFRecord files (a fixed
file-shuffle seed and a seeded shuffle buffer), would resume by reading and
discarding every example before the step (up to an epoch of ImageNet, ~140 GB)
and shuffles only within the buffer. The price is the file format: `builder`
prepares a dataset as ArrayRecord (tfds' `file_format='array_record'`); one
already prepared as TFRecord is refused, naming the folder to delete and the `tfds
convert_format` command that adds ArrayRecord files beside it instead.

Training: decoded, resized to `config.image_size`, randomly flipped and
pad-and-cropped (`config.augment.flip` / `pad`; for CIFAR the 4-pixel pad, random
32x32 crop and flip of He et al.'s residual networks, which MLFN Sec. 4.1 follows:
"augmented as in [9]"), ImageNet-normalised and, if configured, randomly erased.
Evaluation: the test split (`eval_split_name`) decoded and resized only, every
image once in order, in fixed-size batches whose padding is masked by `valid`, as
`pipeline.eval_dataset`. Both iterate through `batches.Batches`, whose errors name
the image that does not decode.
"""
import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from reid_jax.data import augment, manual, samplers
from reid_jax.data.batches import Batches, DataError, ordered_batches
from reid_jax.data.pipeline import _local_rows

# The labelled split a classification dataset is evaluated on: 'test', except where
# the labelled test images are the 'validation' split (ImageNet's test labels are not public).
EVAL_SPLITS = {"imagenet2012": "validation"}
# Features naming an example in error messages: imagenet2012's file names, cifar100's ids.
_NAME_FEATURES = ("file_name", "id")


def eval_split_name(dataset):
  """The split `dataset` ('cifar100', 'imagenet2012', ...) is evaluated on."""
  return EVAL_SPLITS.get(dataset.split("/")[0], "test")


def builder(dataset, data_dir="", manual_dir=""):
  """The tfds builder of `dataset`, prepared as ArrayRecord the first time (see the
  module docstring); imagenet2012 reads its archives from `manual_dir`, and their
  absence is a `manual.DatasetNotFoundError` with tfds' instructions."""
  try:
    b = tfds.builder(dataset, data_dir=data_dir or None, file_format="array_record")
  except ValueError:  # prepared before in another format: `load_split` says what to do
    b = tfds.builder(dataset, data_dir=data_dir or None)
  try:
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir or None))
  except AssertionError as e:  # tfds' check of the manual directory, naming what belongs there
    if "Manual directory" not in str(e):
      raise
    raise manual.DatasetNotFoundError(f"{dataset}: {e}") from None
  return b


class _Column:
  """`column[i]`: feature `key` of example i, read from the data source when asked
  (`Batches` names a failing batch's images with these)."""

  def __init__(self, source, key):
    self._source, self._key = source, key

  def __getitem__(self, i):
    if self._key is None:
      return f"#{int(i)}"
    value = self._source[int(i)][self._key]
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode() if isinstance(value, bytes) else value


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of a classification dataset, read by index on demand.

  `source[i]` is example i: {'image': encoded JPEG/PNG bytes, 'label': class, ...}.
  `images`, `filenames` and `masks` (None) are what `batches.Batches` reads of a split.
  """
  source: Any
  num_classes: int
  name: str = ""
  dataset: str = ""
  name_feature: str | None = None
  masks = None

  def __len__(self):
    return len(self.source)

  @property
  def images(self):
    return _Column(self.source, "image")

  @property
  def filenames(self):
    return _Column(self.source, self.name_feature)

  def describe(self):
    """E.g. "split 'test' of cifar100"."""
    return f"split {self.name!r} of {self.dataset}"


def load_split(dataset_builder, split):
  """`split` (e.g. 'train', or `eval_split_name(...)`) of a prepared builder whose
  `label` is a `tfds.features.ClassLabel`; raises DataError when it has none, or
  is not stored in a random-access format."""
  info = dataset_builder.info
  name = dataset_builder.name
  label = info.features["label"] if "label" in info.features else None
  if not isinstance(label, tfds.features.ClassLabel):
    raise DataError(f"{name} has no ClassLabel feature 'label': task='classification' "
                     f"reads one. Its features: {sorted(info.features)}.")
  try:
    source = dataset_builder.as_data_source(
        split, decoders={"image": tfds.decode.SkipDecoding()})
  except NotImplementedError:
    raise DataError(
        f"{name} is prepared at {dataset_builder.data_dir} as {info.file_format.value}, "
        "which has no random access; task='classification' reads examples by index from "
        "ArrayRecord files. Delete that folder or choose another --config.data_dir, and it "
        "is prepared again as ArrayRecord; or add ArrayRecord files beside it with `tfds "
        f"convert_format --dataset_version_dir={dataset_builder.data_dir} "
        "--out_file_format=array_record` (which needs apache-beam installed).") from None
  if not len(source):
    raise DataError(f"Split {split!r} of {name} is empty.")
  feature = next((f for f in _NAME_FEATURES if f in info.features), None)
  return Split(source, label.num_classes, split, name, feature)


def train_dataset(split, config, start_step=0, shard=None):
  """Training batches of `config.batch_size` random images from step `start_step + 1`
  on (`samplers.RandomSampler` over `split`; this process's rows of each global batch).

  Yields dicts: `image` [b, H, W, 3] float32, `label` [b] int32.
  """
  size = tuple(config.image_size)
  sampler = samplers.RandomSampler(len(split), config.batch_size, config.seed)
  rows, local = _local_rows(sampler.batch_size, shard)
  aug = config.augment

  def examples():
    step = start_step
    while True:
      for pos, i in enumerate(sampler.batch(step)[rows], start=rows.start):
        example = split.source[int(i)]
        # Per-image seed: a function of (seed, step, position in the global batch).
        seed = np.array([config.seed, step * sampler.batch_size + pos], np.int64)
        yield example["image"], example["label"], seed
      step += 1

  spec = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64), tf.TensorSpec([2], tf.int64))

  def transform(encoded, label, seed):
    crop_seed, erase_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    (image,) = augment.flip_and_crop([augment.decode(encoded, 3, size)], crop_seed, aug.flip,
                                     aug.pad)
    image = augment.normalize(image)
    if aug.random_erasing:
      image = augment.random_erasing(image, erase_seed, aug.random_erasing)
    return {"image": tf.cast(image, tf.float32), "label": tf.cast(label, tf.int32)}

  ds = tf.data.Dataset.from_generator(examples, output_signature=spec)
  ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(split, batch_size, image_size, shard=None):
  """Every image of `split` once, in order, in global batches of `batch_size`; the
  last padded with copies of example 0 whose `valid` is False.

  Yields dicts: `image` [b, H, W, 3] float32 (resized and normalised, unaugmented),
  `label` [b] int32, `index` [b] (position in the split), `valid` [b] bool.
  """
  rows, local = _local_rows(batch_size, shard)
  n = len(split)
  padded = -(-n // batch_size) * batch_size
  size = tuple(image_size)

  def examples():
    for start in range(0, padded, batch_size):
      for i in range(start + rows.start, start + rows.stop):
        example = split.source[i if i < n else 0]
        yield example["image"], example["label"], i, i < n

  spec = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64),
          tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.bool))

  def transform(encoded, label, index, valid):
    image = augment.normalize(augment.decode(encoded, 3, size))
    return {"image": tf.cast(image, tf.float32), "label": tf.cast(label, tf.int32),
            "index": index, "valid": valid}

  ds = tf.data.Dataset.from_generator(examples, output_signature=spec)
  ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(local).prefetch(tf.data.AUTOTUNE)


def train_batches(split, config, start_step=0, shard=None):
  """`train_dataset` as numpy dicts (`batches.Batches`): its i-th batch is step
  start_step + i + 1's, as the trainer counts."""
  sampler = samplers.RandomSampler(len(split), config.batch_size, config.seed)
  rows, _ = _local_rows(sampler.batch_size, shard)
  return Batches(train_dataset(split, config, start_step, shard), split, tuple(config.image_size),
                 lambda i: list(sampler.batch(start_step + i)[rows]),
                 lambda i: f"the batch of step {start_step + i + 1}")


def eval_batches(split, batch_size, image_size, shard=None):
  """`eval_dataset` as numpy dicts (`batches.Batches`)."""
  return ordered_batches(eval_dataset(split, batch_size, image_size, shard), split, batch_size,
                         image_size, shard)
