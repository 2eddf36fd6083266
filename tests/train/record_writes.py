"""Runs `python -m reid_jax.main ARGS...` unchanged, listing the files it writes.

`python record_writes.py LOG DIR ARGS...` runs the module as `-m` does (runpy) with
an audit hook that appends to LOG, one per line, the path relative to DIR of every
file under DIR that Python code opens for writing or renames into place. Writes
done by C++ (TensorStore, TensorFlow's summary writer) are not seen. Used by
multihost_test.py to check which process writes what in a shared workdir.
"""
import os
import runpy
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR


def _recorder(log_fd, root):
  def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)) and args[2] & _WRITE_FLAGS:
      path = args[0]
    elif event == "os.rename":
      path = args[1]
    else:
      return
    path = os.path.abspath(os.fsdecode(path))
    if path.startswith(root + os.sep):
      os.write(log_fd, (os.path.relpath(path, root) + "\n").encode())
  return hook


if __name__ == "__main__":
  log, root, *args = sys.argv[1:]
  sys.addaudithook(_recorder(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
                             os.path.abspath(root)))
  sys.argv = [sys.argv[0], *args]
  runpy.run_module("reid_jax.main", run_name="__main__", alter_sys=True)
