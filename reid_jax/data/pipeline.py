"""tf.data input pipelines over the tfds re-ID datasets.

Training: identity-balanced P x K batches (`samplers.PKSampler`) or random
batches (`samplers.RandomSampler`, `config.sampler='random'`), decoded, resized,
flipped, pad-and-cropped, ImageNet-normalised and randomly erased. Evaluation:
every image once, in split order, in fixed-size batches whose padding is masked by
`valid`. Both split each global batch across processes (multi-host): process i
feeds rows [i * B / n, (i + 1) * B / n) of it.
"""
import dataclasses

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from reid_jax.data import augment, samplers


@dataclasses.dataclass(frozen=True)
class Split:
  """One split held in memory still encoded (decoding happens in the pipeline)."""
  images: np.ndarray       # object array of encoded JPEG/PNG bytes
  masks: np.ndarray | None  # encoded person masks (synthetic_reid only)
  person_ids: np.ndarray
  camera_ids: np.ndarray
  labels: np.ndarray       # contiguous class index in train, -1 elsewhere
  filenames: np.ndarray

  def __len__(self):
    return len(self.images)


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
  """Reads `split` into a `Split` without decoding the images."""
  features = dataset_builder.info.features
  skip = {k: tfds.decode.SkipDecoding() for k in ("image", "mask") if k in features}
  ds = dataset_builder.as_dataset(split=split, decoders=skip, shuffle_files=False)
  columns = {k: [] for k in ("image", "mask", "person_id", "camera_id", "label", "filename")}
  for ex in tfds.as_numpy(ds):
    for k in columns:
      if k in ex:
        columns[k].append(ex[k])
  if not columns["image"]:
    raise ValueError(f"Split {split!r} of {dataset_builder.info.full_name} is empty.")
  as_object = lambda xs: np.array(xs, dtype=object)
  return Split(
      images=as_object(columns["image"]),
      masks=as_object(columns["mask"]) if columns["mask"] else None,
      person_ids=np.array(columns["person_id"], np.int64),
      camera_ids=np.array(columns["camera_id"], np.int64),
      labels=np.array(columns["label"], np.int64),
      filenames=np.array([f.decode() for f in columns["filename"]]))


def _local_rows(global_batch, shard):
  index, count = shard or (jax.process_index(), jax.process_count())
  if global_batch % count:
    raise ValueError(f"Global batch {global_batch} does not divide among {count} processes.")
  local = global_batch // count
  return slice(index * local, (index + 1) * local), local


def train_sampler(split, config):
  """The batch sampler `config.sampler` names over `split`."""
  if config.sampler == "random":
    return samplers.RandomSampler(len(split), config.batch_size, config.seed)
  return samplers.PKSampler(split.labels, config.p_identities, config.k_instances, config.seed)


def train_dataset(split, config, start_step=0, shard=None):
  """This process's share of the training batches from `start_step` on.

  `shard` = (process index, process count) defaults to this JAX process's.

  Yields dicts: `image` [b, H, W, 3] float32, `label` [b] int32 and, when the
  dataset has person masks, `mask` [b, H, W, 1] float32 in [0, 1].
  """
  size = tuple(config.image_size)
  sampler = train_sampler(split, config)
  global_batch = sampler.batch_size
  rows, local = _local_rows(global_batch, shard)
  has_mask = split.masks is not None

  def examples():
    step = start_step
    while True:
      for pos, i in enumerate(sampler.batch(step)[rows], start=rows.start):
        # Per-image seed: a function of (seed, step, position in the global batch).
        seed = np.array([config.seed, step * global_batch + pos], np.int64)
        yield (split.images[i], split.masks[i] if has_mask else b"", split.labels[i], seed)
      step += 1

  spec = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.string),
          tf.TensorSpec([], tf.int64), tf.TensorSpec([2], tf.int64))
  aug = config.augment

  def transform(encoded, encoded_mask, label, seed):
    flip_seed, erase_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    planes = [augment.decode(encoded, 3, size)]
    if has_mask:
      planes.append(augment.decode(encoded_mask, 1, size, "nearest") / 255.0)
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
  Yields dicts with `image`, `index` (position in the split) and `valid`.
  """
  rows, local = _local_rows(batch_size, shard)
  n = len(split)
  padded = -(-n // batch_size) * batch_size
  size = tuple(image_size)

  def examples():
    for start in range(0, padded, batch_size):
      for i in range(start + rows.start, start + rows.stop):
        yield split.images[i if i < n else 0], i, i < n

  spec = (tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.bool))

  def transform(encoded, index, valid):
    image = augment.normalize(augment.decode(encoded, 3, size))
    return {"image": tf.cast(image, tf.float32), "index": index, "valid": valid}

  ds = tf.data.Dataset.from_generator(examples, output_signature=spec)
  ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(local).prefetch(tf.data.AUTOTUNE)
