"""Test features of a trained network for any images: files, a folder, arrays, tf.data.

`FeatureExtractor` loads a workdir's config (`config.json`) and latest
checkpoint and runs the evaluation's own path: the images become a `data.Split`
of encoded images (arrays are encoded as lossless PNG), `data.eval_batches`
decodes, resizes and normalises them, and `inference.extract_features` runs the
jitted network over the mesh, flip-averaged when the config's `flip_test` says
so. The features are therefore exactly those `reid_jax.evaluate` would compute.
"""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf

from reid_jax import data, evaluate, inference, metrics, models, sharding
from reid_jax.data import augment
from reid_jax.data import batches as batches_lib

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class UnreadableImagesError(data.DataError):
  """Images that cannot be read or decoded; `bad` lists (path, reason) for each."""

  def __init__(self, bad):
    self.bad = list(bad)
    listing = "; ".join(f"{path}: {reason}" for path, reason in self.bad)
    super().__init__(f"Cannot read {len(self.bad)} image(s): {listing}")


def read_config(workdir):
  """The config a run was trained with, from `<workdir>/config.json` (lists as tuples)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isdir(workdir):
    raise evaluate.WorkdirError(f"The workdir {workdir} does not exist.")
  try:
    with open(path) as f:
      stored = json.load(f)
  except OSError as e:
    raise evaluate.WorkdirError(f"Cannot read the run's config {path}: {e.strerror}.") from None
  except ValueError as e:
    raise evaluate.WorkdirError(f"The run's config {path} is not valid JSON: {e}.") from None
  return ml_collections.ConfigDict(_tuples(stored))


def _tuples(tree):
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return tuple(_tuples(v) for v in tree)
  return tree


def list_images(folder):
  """The JPEG/PNG files under `folder` (recursively), sorted by their relative path."""
  found = []
  for root, _, names in os.walk(folder):
    found += [os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
  return sorted(found, key=lambda p: os.path.relpath(p, folder))


def read_images(paths):
  """(encoded bytes of each path, [(path, reason)] of those that cannot be read or decoded)."""
  encoded, bad = [], []
  for path in paths:
    try:
      with open(path, "rb") as f:
        encoded.append(f.read())
    except OSError as e:
      encoded.append(b"")
      bad.append((path, e.strerror or str(e)))
  unread = {p for p, _ in bad}
  for i in undecodable(encoded):
    if paths[i] not in unread:
      reason = batches_lib._decode_error(encoded[i], 3, (16, 16))
      bad.append((paths[i], reason or "not a JPEG or PNG image"))
  order = {p: i for i, p in enumerate(paths)}
  return encoded, sorted(bad, key=lambda b: order[b[0]])


def undecodable(encoded):
  """Indices of the encoded images `augment.decode` fails on (one parallel tf.data pass)."""
  ds = tf.data.Dataset.from_tensor_slices((np.arange(len(encoded)), np.array(encoded, object)))
  ds = ds.map(lambda i, x: (i, augment.decode(x, 3, (16, 16))),
              num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  decoded = {int(i) for i, _ in ds.as_numpy_iterator()}
  return [i for i in range(len(encoded)) if i not in decoded]


def _png(images):
  """Lossless PNG bytes of each HWC uint8 image."""
  ds = tf.data.Dataset.from_generator(lambda: iter(images), output_signature=tf.TensorSpec(
      [None, None, 3], tf.uint8)).map(tf.io.encode_png)
  return list(ds.as_numpy_iterator())


def _check_arrays(images):
  for i, image in enumerate(images):
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f"images[{i}]: expected an HWC RGB uint8 image, got {image.dtype} "
                       f"{image.shape}")


class FeatureExtractor:
  """A trained network's test features: `extractor(images) -> [N, D]` float32, in input order.

  workdir_or_config: a workdir written by `reid_jax.main` (its `config.json` and
    latest checkpoint), or a config; with a config, `workdir` names the checkpoint's
    workdir, or `variables` ({'params', 'batch_stats'}) are used as they are.
  flip: average each feature with its mirrored image's (default: the config's
    `flip_test`); batch_size: images per jitted call (default `eval_batch_size`).
  Attributes: `config`, `model`, `spec` (its `NetworkSpec`), `variables`, `mesh`,
  `step` (the checkpoint's; None for given variables).
  """

  def __init__(self, workdir_or_config, *, workdir=None, variables=None, flip=None,
               batch_size=None):
    if isinstance(workdir_or_config, (str, os.PathLike)):
      workdir = os.fspath(workdir_or_config)
      config = read_config(workdir)
    else:
      config = ml_collections.ConfigDict(_tuples(workdir_or_config.to_dict()))
    if flip is not None:
      config.flip_test = bool(flip)
    if batch_size is not None:
      config.eval_batch_size = int(batch_size)
    self.config, self.mesh = config, sharding.create_mesh()
    self.spec = models.get_spec(config.model)
    if variables is None:
      if workdir is None:
        raise ValueError("FeatureExtractor needs a workdir or variables with a config.")
      self.variables, self.step, self.model = evaluate._read_checkpoint(config, workdir, self.mesh)
    else:
      self.model = models.get_model(config.model, 0, dtype=jnp.dtype(config.dtype),
                                    **config.model_kwargs)
      self.variables = jax.device_put({k: variables[k] for k in ("params", "batch_stats")
                                       if k in variables}, sharding.replicated(self.mesh))
      self.step = None

  @property
  def image_size(self):
    """(height, width) every image is resized to."""
    return tuple(self.config.image_size)

  def __call__(self, images):
    """[N, D] float32 features of `images`, in order.

    images: a folder (its `list_images`), one image file, a sequence of file paths,
    uint8 RGB images ([N, H, W, 3] or a sequence of [H, W, 3] of any sizes), or a
    tf.data dataset of such images or of encoded JPEG/PNG strings (or of dicts
    holding them as 'image'). Unreadable files raise `UnreadableImagesError`
    listing them all.
    """
    if isinstance(images, tf.data.Dataset):
      encoded = self._encode_dataset(images)
    elif isinstance(images, (str, os.PathLike)) or (
        len(images) and isinstance(images[0], (str, os.PathLike))):
      return self.from_files(images)[0]
    else:
      _check_arrays(images)
      encoded = _png(images)
    if not encoded:
      raise ValueError("No images to extract features from.")
    names = [f"image {i}" for i in range(len(encoded))]
    return self.features_of_split(self.split(encoded, names))

  def from_files(self, paths, skip_bad=False):
    """(features [N, D], the N paths read, [(path, reason)] of the files left out).

    paths: a folder, one file or a sequence of files; see `read` for unreadable ones.
    """
    split, bad = self.read(paths, skip_bad)
    return self.features_of_split(split), list(split.filenames), bad

  def read(self, paths, skip_bad=False):
    """(`split` of the readable images, [(path, reason)] of the others).

    paths: a folder, one file or a sequence of files. Without `skip_bad`, any
    unreadable file raises `UnreadableImagesError` naming them all; with it, they
    are left out and reported (and it is raised only if none is readable).
    """
    if isinstance(paths, (str, os.PathLike)):
      paths = list_images(paths) if os.path.isdir(paths) else [paths]
    paths = [os.fspath(p) for p in paths]
    encoded, bad = read_images(paths)
    skipped = {p for p, _ in bad}
    kept = [i for i, p in enumerate(paths) if p not in skipped]
    if (bad and not skip_bad) or not kept:
      raise UnreadableImagesError(bad)
    return self.split([encoded[i] for i in kept], [paths[i] for i in kept]), bad

  def features_of_split(self, split, progress=None):
    """[len(split), D] features, 16 batches per pass of the evaluation pipeline;
    `progress(done, total)` is called after each pass."""
    chunk = 16 * self.config.eval_batch_size
    parts = []
    for start in range(0, len(split), chunk):
      part = split.take(np.arange(start, min(start + chunk, len(split))))
      parts.append(inference.extract_features(self.model, self.variables, part, self.config,
                                              self.mesh))
      if progress:
        progress(start + len(part), len(split))
    return np.concatenate(parts)

  def distances(self, query, gallery):
    """[Q, G] float32 distances between the images of two splits (`read`), the
    network's own: for an embedding network the config's `eval.metric` between test
    features; for a pairwise one (KPM) minus its score of every pair, as
    `config.pairwise.mode='full'` evaluates, `pairwise.gallery_block` pairs per call."""
    if self.spec.evaluation == "embedding":
      return metrics.pairwise_distance(self.features_of_split(query),
                                       self.features_of_split(gallery), self.config.eval.metric)
    encoded_q, encoded_g = (jax.device_put(inference.encode_split(
        self.model, self.variables, split, self.config, self.mesh),
        sharding.replicated(self.mesh)) for split in (query, gallery))
    score, block = evaluate._score_fn(self.model), self.config.pairwise.gallery_block
    blocks = [np.arange(start, min(start + block, len(gallery)), dtype=np.int32)
              for start in range(0, len(gallery), block)]
    return -np.stack([np.concatenate([
        np.asarray(score(self.variables, encoded_q, encoded_g, np.int32(q), g)) for g in blocks])
        for q in range(len(query))])

  @staticmethod
  def split(encoded, names):
    """An unlabelled `data.Split` of encoded images (person and camera ids -1)."""
    unknown = np.full(len(encoded), -1, np.int64)
    return data.Split(images=np.array(encoded, object), masks=None,
                      person_ids=unknown, camera_ids=unknown, labels=unknown,
                      filenames=np.array(names), name="images")

  @staticmethod
  def _encode_dataset(ds):
    if isinstance(ds.element_spec, dict):
      ds = ds.map(lambda ex: ex["image"])
    if ds.element_spec.dtype == tf.uint8:
      ds = ds.map(tf.io.encode_png, num_parallel_calls=tf.data.AUTOTUNE)
    elif ds.element_spec.dtype != tf.string or ds.element_spec.shape.rank != 0:
      raise ValueError(f"The dataset yields {ds.element_spec}: expected [H, W, 3] uint8 images "
                       "or scalar strings of encoded JPEG/PNG images (alone or as 'image').")
    return list(ds.as_numpy_iterator())
