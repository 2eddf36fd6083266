"""Iterating the input pipelines safely: numpy batches whose errors name the file.

`train_batches` and `eval_batches` iterate `pipeline.train_dataset` /
`eval_dataset` as numpy dicts. An error inside the pipeline raises `DataError` at
once, naming the image that cannot be decoded, and frees the tf.data iterator on
the spot; any other way out of training frees it at exit at the latest. Both
matter: the iterator's threads call back into Python (the sampler is a
generator), so an iterator left for the interpreter's teardown (say, held by the
frames of an uncaught exception's traceback) can deadlock the exit.
"""
import atexit
import gc
import re
import weakref

import tensorflow as tf

from reid_jax.data import augment
from reid_jax.data.pipeline import _local_rows, eval_dataset, train_dataset, train_sampler


class DataError(ValueError):
  """The input pipeline failed, e.g. on an image that cannot be decoded."""


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
  return ordered_batches(eval_dataset(split, batch_size, image_size, shard), split, batch_size,
                         image_size, shard)


def ordered_batches(dataset, split, batch_size, image_size, shard=None):
  """`Batches` over `dataset`, the tf.data batches of every image of `split` in order
  (this process's rows of each global batch of `batch_size`, the last one padded)."""
  rows, _ = _local_rows(batch_size, shard)
  n = len(split)

  def items(i):
    return [k for k in range(i * batch_size + rows.start, i * batch_size + rows.stop) if k < n]

  return Batches(dataset, split, tuple(image_size), items,
                 lambda i: f"the evaluation batch of images {i * batch_size} to "
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
