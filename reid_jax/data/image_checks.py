"""Build-time image checks: every image a builder stores must decode in the pipeline.

The input pipeline (`augment.decode`) decodes JPEG with TF's JPEG decoder and
anything else as PNG. A builder calls `check_all` on every image before it
writes the first example, so a truncated, empty or non-image file fails the
build in seconds with one error listing every such file. tfds writes into a
temporary folder that it deletes when the build raises, so nothing half-written
is left behind and the next build (after the files are fixed) starts afresh.
"""
import concurrent.futures
import os
import re
from typing import Callable, Optional, Sequence

import tensorflow as tf

from reid_jax.data.batches import DataError

_LISTED = 20  # bad files named in the message; the rest are counted


class BadImageError(DataError):
  """Images of a dataset's release that the pipeline cannot decode."""


def decode_problem(data: bytes) -> Optional[str]:
  """None when the pipeline can decode `data` (JPEG or PNG bytes), else why not."""
  if not data:
    return "the file is empty"
  encoded = tf.constant(data)
  try:
    if tf.io.is_jpeg(encoded):
      tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
      tf.io.decode_png(encoded, channels=3)
    else:
      return "not a JPEG or PNG image"
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
    # Eager ops prefix the op's function and append its name: keep the reason.
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", e.message)
    return re.sub(r"\s*\[Op:.*$", "", message, flags=re.S).strip().rstrip(".") or type(e).__name__
  return None


def check_all(dataset: str, names: Sequence[str], read: Callable[[str], bytes],
              where: str = "") -> None:
  """Raises `BadImageError` listing every name in `names` whose bytes, `read(name)`,
  do not decode (see `decode_problem`); `where` (a folder or archive) prefixes the
  names in the message. Decodes in parallel threads (TF releases the GIL)."""
  def problem(name):
    try:
      return decode_problem(read(name))
    except OSError as e:
      return f"cannot be read ({e.strerror or e})"

  workers = min(32, (os.cpu_count() or 1) * 2)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    problems = list(pool.map(problem, names, chunksize=64))
  bad = [(name, why) for name, why in zip(names, problems) if why]
  if not bad:
    return
  prefix = f"{where.rstrip('/')}/" if where else ""
  listed = "; ".join(f"{prefix}{name}: {why}" for name, why in bad[:_LISTED])
  more = f"; and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
  raise BadImageError(
      f"{dataset}: {len(bad)} of {len(names)} images cannot be decoded: {listed}{more}. "
      "Replace or remove them and build again; nothing was written.")
