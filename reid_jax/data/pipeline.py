"""tf.data input pipelines over the tfds re-ID datasets.

Training: identity-balanced P x K batches (`samplers.PKSampler`) or random
batches (`samplers.RandomSampler`, `config.sampler='random'`) over the training
set enlarged by offline translation (`config.augment.offline_copies`), decoded,
resized, translated, flipped, pad-and-cropped, ImageNet-normalised and randomly
erased; the person mask, when present, moves with its image. Evaluation: every
image once, in split order, in fixed-size batches whose padding is masked by
`valid`. Both split each global batch across processes (multi-host): process i
feeds rows [i * B / n, (i + 1) * B / n) of it.

`train_batches` and `eval_batches` iterate them as numpy dicts. An error inside the
pipeline raises `DataError` at once, naming the image that cannot be decoded, and
frees the tf.data iterator on the spot; any other way out of training frees it at
exit at the latest. Both matter: the iterator's threads call back into Python (the
sampler is a generator), so an iterator left for the interpreter's teardown (say,
held by the frames of an uncaught exception's traceback) can deadlock the exit.
"""
import atexit
import dataclasses
import gc
import re
import weakref

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from reid_jax.data import augment, samplers


@dataclasses.dataclass(frozen=True)
class Split:
  """One split held in memory still encoded (decoding happens in the pipeline)."""
  images: np.ndarray       # object array of encoded JPEG/PNG bytes
  masks: np.ndarray | None  # encoded person masks; None where the dataset has none
  person_ids: np.ndarray
  camera_ids: np.ndarray
  labels: np.ndarray       # contiguous class index in train, -1 elsewhere
  filenames: np.ndarray
  name: str = ""           # e.g. 'train', for error messages
  dataset: str = ""        # e.g. 'market1501', for error messages

  def __len__(self):
    return len(self.images)

  def describe(self):
    """E.g. "split 'train' of market1501"."""
    where = f"split {self.name!r}" if self.name else "the split"
    return f"{where} of {self.dataset}" if self.dataset else where


class DataError(ValueError):
  """The input pipeline failed, e.g. on an image that cannot be decoded."""


def builder(dataset, data_dir="", manual_dir=""):
  """The prepared tfds builder of `dataset` (e.g. 'market1501', 'synthetic_reid/small').

  Generates synthetic_reid, or reads a real dataset from `manual_dir` the first
  time; tfds writes to a temporary folder and renames it, so an interrupted build
  leaves nothing half-done.
  """
  b = tfds.builder(dataset, data_dir=data_dir or None)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir or None))
  return b


def load_split(dataset_builder, split):
  """Reads `split` into a `Split` without decoding the images.

  Masks are read when the builder's metadata says `has_masks` (datasets without
  masks store a 1x1 black placeholder, left out here: `masks` is None); datasets
  built before that key existed have masks iff their features have `mask`.
  """
  features = dataset_builder.info.features
  has_masks = (dataset_builder.info.metadata or {}).get("has_masks", "mask" in features)
  skip = {k: tfds.decode.SkipDecoding() for k in ("image", "mask") if k in features}
  ds = dataset_builder.as_dataset(split=split, decoders=skip, shuffle_files=False)
  columns = {k: [] for k in ("image", "person_id", "camera_id", "label", "filename")}
  if has_masks:
    columns["mask"] = []
  for ex in tfds.as_numpy(ds):
    for k in columns:
      columns[k].append(ex[k])
  if not columns["image"]:
    raise ValueError(f"Split {split!r} of {dataset_builder.info.full_name} is empty.")
  as_object = lambda xs: np.array(xs, dtype=object)
  return Split(
      images=as_object(columns["image"]),
      masks=as_object(columns["mask"]) if has_masks else None,
      person_ids=np.array(columns["person_id"], np.int64),
      camera_ids=np.array(columns["camera_id"], np.int64),
      labels=np.array(columns["label"], np.int64),
      filenames=np.array([f.decode() for f in columns["filename"]]),
      name=split, dataset=_dataset_name(dataset_builder))


def _dataset_name(dataset_builder):
  """'market1501', 'synthetic_reid/small': the name `builder` takes, without version."""
  config = dataset_builder.builder_config
  return f"{dataset_builder.name}/{config.name}" if config else dataset_builder.name


def _local_rows(global_batch, shard):
  index, count = shard or (jax.process_index(), jax.process_count())
  if global_batch % count:
    raise ValueError(f"Global batch {global_batch} does not divide among {count} processes.")
  local = global_batch // count
  return slice(index * local, (index + 1) * local), local


def train_size(split, config):
  """Items in the training set enlarged by offline translation: len(split) * copies.

  Item j is copy j // len(split) of image j % len(split) (copy 0 the image itself).
  """
  return len(split) * config.augment.offline_copies


def train_sampler(split, config):
  """The batch sampler `config.sampler` names over the `train_size` items of `split`
  (with one copy, exactly the split's images)."""
  if config.sampler == "random":
    return samplers.RandomSampler(train_size(split, config), config.batch_size, config.seed)
  labels = np.tile(split.labels, config.augment.offline_copies)
  return samplers.PKSampler(labels, config.p_identities, config.k_instances, config.seed)


def train_dataset(split, config, start_step=0, shard=None):
  """This process's share of the training batches from `start_step` on.

  `shard` = (process index, process count) defaults to this JAX process's. The
  sampler draws items of the enlarged training set (`train_size`); item j is image
  j % n translated by its fixed `augment.offline_shift` for copy j // n (MPN Sec.
  5.1), after decoding and resizing and before the random augmentations.

  Yields dicts: `image` [b, H, W, 3] float32, `label` [b] int32 and, when the
  dataset has person masks, `mask` [b, H, W, 1] float32 in {0, 1}, pixel-aligned
  with the image through translation, flip and pad-and-crop, and left unerased.
  """
  size = tuple(config.image_size)
  sampler = train_sampler(split, config)
  global_batch = sampler.batch_size
  rows, local = _local_rows(global_batch, shard)
  has_mask = split.masks is not None
  aug = config.augment
  n = len(split)

  def examples():
    step = start_step
    while True:
      for pos, j in enumerate(sampler.batch(step)[rows], start=rows.start):
        i, copy = j % n, j // n
        # Per-image seed: a function of (seed, step, position in the global batch).
        seed = np.array([config.seed, step * global_batch + pos], np.int64)
        shift = augment.offline_shift(config.seed, i, copy, size, aug.offline_max_shift)
        yield (split.images[i], split.masks[i] if has_mask else b"", split.labels[i], seed,
               np.array(shift, np.int64))
      step += 1

  spec = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string),
          tf.TensorSpec([], tf.int64), tf.TensorSpec([2], tf.int64), tf.TensorSpec([2], tf.int64))

  def transform(encoded, encoded_mask, label, seed, shift):
    flip_seed, erase_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    planes = [augment.decode(encoded, 3, size)]
    if has_mask:
      planes.append(augment.decode(encoded_mask, 1, size, "nearest") / 255.0)
    if aug.offline_copies > 1:
      planes = augment.translate(planes, shift[0], shift[1])
    planes = augment.flip_and_crop(planes, flip_seed, aug.flip, aug.pad)
    image = augment.normalize(planes[0])
    if aug.random_erasing:
      image = augment.random_erasing(image, erase_seed, aug.random_erasing)
    out = {"image": tf.cast(image, tf.float32), "label": tf.cast(label, tf.int32)}
    if has_mask:
      out["mask"] = planes[1]
    return out

  ds = tf.data.Dataset.from_generator(examples, output_signature=spec)
  ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(split, batch_size, image_size, shard=None):
  """Every image of `split` once, in order, in global batches of `batch_size`.

  The last batch is padded with copies of image 0 whose `valid` is False, so the
  jitted feature extractor sees one shape and no image is dropped or counted twice.
  Yields dicts with `image`, `index` (position in the split), `valid` and, when the
  split has person masks, `mask` [b, H, W, 1] float32 in {0, 1} (resized 'nearest',
  unaugmented).
  """
  rows, local = _local_rows(batch_size, shard)
  n = len(split)
  padded = -(-n // batch_size) * batch_size
  size = tuple(image_size)
  has_mask = split.masks is not None

  def examples():
    for start in range(0, padded, batch_size):
      for i in range(start + rows.start, start + rows.stop):
        k = i if i < n else 0
        yield split.images[k], split.masks[k] if has_mask else b"", i, i < n

  spec = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string),
          tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.bool))

  def transform(encoded, encoded_mask, index, valid):
    image = augment.normalize(augment.decode(encoded, 3, size))
    out = {"image": tf.cast(image, tf.float32), "index": index, "valid": valid}
    if has_mask:
      out["mask"] = augment.decode(encoded_mask, 1, size, "nearest") / 255.0
    return out

  ds = tf.data.Dataset.from_generator(examples, output_signature=spec)
  ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(local).prefetch(tf.data.AUTOTUNE)


def train_batches(split, config, start_step=0, shard=None):
  """`train_dataset` as an iterator of numpy dicts (see `Batches`): its i-th batch is
  step start_step + i's, so a decoding error names the image of that step's batch."""
  sampler = train_sampler(split, config)
  rows, _ = _local_rows(sampler.batch_size, shard)
  n = len(split)

  def items(i):
    return [j % n for j in sampler.batch(start_step + i)[rows]]

  return Batches(train_dataset(split, config, start_step, shard), split, tuple(config.image_size),
                 items, lambda i: f"the batch of step {start_step + i + 1}")  # train.py's count


def eval_batches(split, batch_size, image_size, shard=None):
  """`eval_dataset` as an iterator of numpy dicts (see `Batches`)."""
  rows, _ = _local_rows(batch_size, shard)
  n = len(split)

  def items(i):
    return [k for k in range(i * batch_size + rows.start, i * batch_size + rows.stop) if k < n]

  return Batches(eval_dataset(split, batch_size, image_size, shard), split, tuple(image_size),
                 items, lambda i: f"the evaluation batch of images {i * batch_size} to "
                                  f"{min(n, (i + 1) * batch_size) - 1}")


_open_batches = weakref.WeakSet()


@atexit.register
def _close_open_batches():
  """Frees the tf.data iterators still open while the interpreter can still run their
  threads' calls into Python; left to its teardown, freeing one can deadlock."""
  for batches in list(_open_batches):
    batches.close()
  gc.collect()  # and those of pipelines failed outside `Batches`, held in error frames


class Batches:
  """Numpy batches of a tf.data pipeline over `split` that fails as `DataError`.

  When the pipeline fails, the images of the failing batch (`items(i)`: the split
  indices of the i-th) are decoded again one by one to name the one(s) at fault;
  `where(i)` describes that batch when none is. Either way the tf.data iterator is
  freed before `DataError` is raised (and before any other exception from it goes
  on, without tf's frames, which hold the iterator), and `close()` or the exit of
  the interpreter frees an open one.
  """

  def __init__(self, dataset, split, image_size, items, where):
    self._iterator = iter(dataset)
    self._split, self._image_size, self._items, self._where = split, image_size, items, where
    self._count = 0
    _open_batches.add(self)

  def __iter__(self):
    return self

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def close(self, collect=False):
    """Frees the tf.data iterator (its threads and its generator) now.

    `collect` also collects garbage, in case a reference cycle (say, through the
    frames of tf's error) still holds the iterator.
    """
    self._iterator = None
    _open_batches.discard(self)
    if collect:
      gc.collect()

  def __next__(self):
    if self._iterator is None:
      raise StopIteration
    try:
      batch = next(self._iterator)
    except StopIteration:
      self.close()
      raise
    except tf.errors.OpError as e:
      error = e.message  # raised below, outside this block: `e` holds tf's frames
    except BaseException as e:
      e.__traceback__ = None  # tf's frames hold the iterator
      self.close(collect=True)
      raise
    else:
      self._count += 1
      return tf.nest.map_structure(lambda t: t.numpy(), batch)
    index = self._count
    self.close(collect=True)
    raise DataError(self._diagnose(index, error))

  def _diagnose(self, index, error):
    """The message of `DataError` for a failure on batch `index` with tf's `error`."""
    split = self._split
    bad = []
    for i in dict.fromkeys(self._items(index)):  # each image once, in batch order
      for what, encoded, channels in (("image", split.images[i], 3),
                                      ("person mask of image", None if split.masks is None
                                       else split.masks[i], 1)):
        reason = None if encoded is None else _decode_error(encoded, channels, self._image_size)
        if reason:
          bad.append(f"{what} {split.filenames[i]} of {split.describe()}: {reason}")
    if bad:
      return "Cannot decode " + "; cannot decode ".join(bad)
    return f"Input pipeline of {split.describe()} failed on {self._where(index)}: {_one_line(error)}"


def _decode_error(encoded, channels, size):
  """Why `augment.decode` fails on `encoded` (one line), or None if it does not."""
  try:
    augment.decode(tf.constant(encoded, tf.string), channels, size)
  except tf.errors.OpError as e:
    return _one_line(e.message)
  return None


def _one_line(message):
  """tf's error `message` on one line, without its graph node annotations (and, from
  a failing Python generator, the Python traceback after the error itself)."""
  message = message.split("Traceback (most recent call last):")[0]
  message = re.sub(r"\{\{function_node [^}]*\}\}|\[\[.*?\]\]|\[Op:[^\]]*\].*", " ", message,
                   flags=re.S)
  return " ".join(message.split()) or "unknown error"
