"""tf.data input pipelines over the tfds re-ID datasets.

Training: identity-balanced P x K batches (`samplers.PKSampler`) or random
batches (`samplers.RandomSampler`, `config.sampler='random'`) over the training
set enlarged by offline translation (`config.augment.offline_copies`), decoded,
resized, translated, flipped, pad-and-cropped, ImageNet-normalised and randomly
erased; the person mask, when present, moves with its image. Evaluation: every
image once, in split order, in fixed-size batches whose padding is masked by
`valid`. Both split each global batch across processes (multi-host): process i
feeds rows [i * B / n, (i + 1) * B / n) of it.
The trainer and evaluator iterate them through `batches` (errors that name the
file and never hang).
"""
import dataclasses
import os

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from reid_jax.data import augment, partitions, samplers


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

  def take(self, indices):
    """The split of the images at `indices` (in that order)."""
    arrays = {f.name: getattr(self, f.name)[indices] for f in dataclasses.fields(self)
              if isinstance(getattr(self, f.name), np.ndarray)}
    return dataclasses.replace(self, **arrays)

  def describe(self):
    """E.g. "split 'train' of market1501"."""
    where = f"split {self.name!r}" if self.name else "the split"
    return f"{where} of {self.dataset}" if self.dataset else where


def builder(dataset, data_dir="", manual_dir=""):
  """The prepared tfds builder of `dataset` (e.g. 'market1501', 'synthetic_reid/small').

  Generates synthetic_reid, or reads a real dataset from `manual_dir` the first
  time; tfds writes to a temporary folder and renames it, so an interrupted build
  leaves nothing half-done.
  """
  b = tfds.builder(dataset, data_dir=data_dir or None)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir or None))
  root = (b.info.metadata or {}).get("root")  # a user's own folder (reid_folder)
  if root and manual_dir and os.path.abspath(root) != os.path.abspath(manual_dir):
    raise ValueError(
        f"{dataset} in {b.data_dir} was built from {root}, not from the manual_dir {manual_dir}: "
        "tfds keeps one such dataset per data_dir. Give this folder its own data_dir, or delete "
        f"{os.path.dirname(b.data_dir)} to rebuild.")
  return b


def load_split(dataset_builder, split, partition=0):
  """Reads `split` ('train', 'query' or 'gallery') into a `Split` without decoding
  the images; of a multi-partition dataset, the split of `partition` (see
  `partitions`), else `partition` must be 0.

  Masks are read when the builder's metadata says `has_masks` (datasets without
  masks store a 1x1 black placeholder, left out here: `masks` is None); datasets
  built before that key existed have masks iff their features have `mask`.
  """
  return load_splits(dataset_builder, (split,), partition)[split]


def load_splits(dataset_builder, splits, partition=0):
  """{split: `load_split(dataset_builder, split, partition)`} for each of `splits`; the
  one stored split of a multi-partition dataset is read once for all of them."""
  info = dataset_builder.info
  name = dataset_name(dataset_builder)
  count = partitions.num_partitions(info)
  if not (isinstance(partition, int) and 0 <= partition < count):
    raise ValueError(f"{name} has {count} partition{'s' if count > 1 else ''} (0"
                     f"{f' to {count - 1}' if count > 1 else ''}); there is no partition "
                     f"{partition!r}.")
  if "roles" in info.features:
    stored, roles = _read(dataset_builder, partitions.SPLIT, name)
    out = {split: _partition_split(stored, roles, split, partition) for split in splits}
  else:
    out = {split: _read(dataset_builder, split, name)[0] for split in splits}
  for split, loaded in out.items():
    if not len(loaded):
      raise ValueError(f"Split {split!r} of {loaded.dataset} is empty.")
  return out


def _read(dataset_builder, stored, name):
  """(the tfds split `stored` as a `Split`, its roles [N, partitions] or None)."""
  info = dataset_builder.info
  has_masks = (info.metadata or {}).get("has_masks", "mask" in info.features)
  skip = {k: tfds.decode.SkipDecoding() for k in ("image", "mask") if k in info.features}
  ds = dataset_builder.as_dataset(split=stored, decoders=skip, shuffle_files=False)
  columns = {k: [] for k in ("image", "person_id", "camera_id", "label", "filename")}
  if has_masks:
    columns["mask"] = []
  if "roles" in info.features:
    columns["roles"] = []
  for ex in tfds.as_numpy(ds):
    for k in columns:
      columns[k].append(ex[k])
  as_object = lambda xs: np.array(xs, dtype=object)
  split = Split(
      images=as_object(columns["image"]),
      masks=as_object(columns["mask"]) if has_masks else None,
      person_ids=np.array(columns["person_id"], np.int64),
      camera_ids=np.array(columns["camera_id"], np.int64),
      labels=np.array(columns["label"], np.int64),
      filenames=np.array([f.decode() for f in columns["filename"]]),
      name=stored, dataset=name)
  if "roles" not in columns:
    return split, None
  return split, np.array(columns["roles"], np.uint8).reshape(len(split), -1)


def _partition_split(stored, roles, split, partition):
  """The images of `split` in `partition` of a multi-partition dataset's `stored`
  images, train identities numbered 0..n-1."""
  out = stored.take(partitions.rows(roles, split, partition))
  labels = partitions.train_labels(out.person_ids) if split == "train" else -np.ones(len(out))
  return dataclasses.replace(out, labels=labels.astype(np.int64), name=split,
                             dataset=f"{stored.dataset} partition {partition}")


def dataset_name(dataset_builder):
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
