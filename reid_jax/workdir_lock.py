"""One run per workdir: an advisory lock held for the whole run.

Two runs writing and rotating the same checkpoints corrupt each other's resume
point, so `hold(workdir)` takes an exclusive `flock` on `<workdir>/.lock` and
writes the holder (pid, host) into it. The kernel releases the lock when the
process ends, however it ends (SIGKILL included), so a lock is never stale.
"""
import contextlib
import fcntl
import json
import os
import socket

LOCK_FILE = ".lock"


class WorkdirLockedError(RuntimeError):
  """Another live process holds the workdir."""


def _holder(path):
  try:
    with open(path) as f:
      holder = json.load(f)
    return f"pid {holder['pid']} on host {holder['host']}"
  except (OSError, ValueError, KeyError):
    return "another process"


@contextlib.contextmanager
def hold(workdir):
  """Holds `workdir` for the duration of the `with` block; raises
  WorkdirLockedError naming the holder when another process holds it."""
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirLockedError(
          f"The workdir {workdir} is in use by {_holder(path)} (lock {path}); wait for that "
          "run to end or stop it, or use another --workdir.") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
    os.fsync(fd)
    yield
  finally:
    os.close(fd)  # closing releases the lock
