"""The manual directory: where a builder finds a dataset's official files, the one
error every builder raises when they are not there, and reading a release kept as
its zip or as the folder the zip extracts to."""
import contextlib
import zipfile
from typing import Sequence

from etils import epath


class DatasetNotFoundError(FileNotFoundError):
  """The official archive, folder or file is not where tfds looks for it."""


TAIL = ("point tfds.download.DownloadConfig(manual_dir=...) or `tfds build --manual_dir` at "
        "the folder that holds them.")


def state(manual_dir) -> str:
  """'It does not exist.', 'It is empty.' or 'It holds: a, b.'"""
  manual_dir = epath.Path(manual_dir)
  if not manual_dir.exists():
    return "It does not exist."
  entries = sorted(p.name for p in manual_dir.iterdir())
  return f"It holds: {', '.join(entries)}." if entries else "It is empty."


def not_found(name: str, manual_dir, wanted: Sequence[str], url: str) -> DatasetNotFoundError:
  """The error for `name`'s missing files: `wanted` are the paths (relative to the
  manual directory) that belong there, each printed in full."""
  manual_dir = epath.Path(manual_dir)
  paths = "".join(f"\n  {manual_dir / w}" for w in wanted)
  return DatasetNotFoundError(
      f"{name} was not found in the manual directory {manual_dir}. {state(manual_dir)}\n"
      f"Put its official files there:{paths}\n(from {url}), or {TAIL}")


def directory(dl_manager, error):
  """tfds' manual_dir; tfds asserts it exists and is not empty, and that assertion
  becomes `error(path)` (a `DatasetNotFoundError` saying what belongs there)."""
  try:
    return dl_manager.manual_dir
  except AssertionError as e:
    raise error(dl_manager._manual_dir) from e  # pylint: disable=protected-access


@contextlib.contextmanager
def reader(source):
  """Yields read(member) -> bytes of a release `source`: a zip (members are its paths)
  or a folder (members are paths below it)."""
  if source.is_file():
    with zipfile.ZipFile(source.open("rb")) as archive:
      yield archive.read
  else:
    yield lambda member: (source / member).read_bytes()
