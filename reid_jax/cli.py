"""What the after-training entry points (`extract`, `search`, `export`) share: loading a
workdir, finding images, a progress bar, and exiting with a one-line error.
Defines no flags; each entry point defines its own."""
import contextlib
import os
import sys

import numpy as np
import tensorflow as tf
import tqdm

from reid_jax import checkpoints, config_schema, data, evaluate, extractor


def load(workdir, **kwargs):
  """`FeatureExtractor(workdir, **kwargs)`; exits with one line if the workdir cannot serve."""
  tf.config.set_visible_devices([], "GPU")  # tf.data only: leave accelerators to JAX
  checkpoints.quiet_logs()
  try:
    return extractor.FeatureExtractor(workdir, **kwargs)
  except (evaluate.WorkdirError, config_schema.ConfigError, data.DataError) as e:
    sys.exit(f"error: {e}")


def image_paths(images, flag):
  """The image files `images` names (a folder or one file); exits naming `flag` if none."""
  if not os.path.exists(images):
    sys.exit(f"error: {flag}={images}: no such file or folder.")
  paths = extractor.list_images(images) if os.path.isdir(images) else [images]
  if not paths:
    sys.exit(f"error: {flag}={images}: no .jpg, .jpeg or .png files in it.")
  return paths


class ProgressBar:
  """`progress(done, total)` for `FeatureExtractor`, drawn on stderr."""

  def __init__(self, what):
    self.what, self.bar = what, None

  def __call__(self, done, total):
    if self.bar is None:
      self.bar = tqdm.tqdm(total=total, desc=self.what, unit="img", file=sys.stderr)
    self.bar.update(done - self.bar.n)
    if done == total:
      self.bar.close()


def read(extract, paths, skip_bad):
  """`extract.read(paths, skip_bad)`'s split, reporting skipped files on stderr; exits
  with one line listing the unreadable files without `skip_bad` (or if none is readable)."""
  try:
    split, bad = extract.read(paths, skip_bad)
  except extractor.UnreadableImagesError as e:
    sys.exit(f"error: {e}" + ("" if skip_bad else " (--skip_bad leaves them out)."))
  for path, reason in bad:
    print(f"skipped {path}: {reason}", file=sys.stderr)
  return split, bad


def features(extract, paths, skip_bad, what="features"):
  """(features [N, D], the N paths read, [(path, reason)] skipped) as `read` reads them,
  with a progress bar."""
  split, bad = read(extract, paths, skip_bad)
  return extract.features_of_split(split, ProgressBar(what)), list(split.filenames), bad


def check_out_folder(path, flag="--out"):
  """Exits naming `flag` when the folder that is to hold `path` does not exist."""
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    sys.exit(f"error: {flag}={path}: the folder {folder} does not exist.")


@contextlib.contextmanager
def exit_on_write_error(path, flag="--out"):
  """Within the block, an OSError exits with one line naming `flag`."""
  try:
    yield
  except OSError as e:
    sys.exit(f"error: {flag}={path}: {e.strerror or e}.")


def write_npz_atomically(path, **arrays):
  """`np.savez` to a temporary file beside `path`, renamed to `path` once complete."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
