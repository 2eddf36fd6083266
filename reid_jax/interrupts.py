"""Ctrl-C and SIGTERM as one exception the training loop can end cleanly on.

`as_exception()` turns SIGINT and SIGTERM (a scheduler's preemption notice) into
`Interrupted` in the main thread for the duration of a `with` block, so the loop
can let the checkpoint in flight finish and say which step is safe to resume
from, instead of dying with a traceback from every thread. A second signal
while that happens abandons the write (orbax only ever renames a complete
checkpoint into place).
"""
import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
  """A signal ended the run; `signum` is the signal, `message` says where to resume."""

  def __init__(self, signum, message=""):
    super().__init__(message or f"Interrupted by {signal.Signals(signum).name}.")
    self.signum = signum


def _raise(signum, frame):
  del frame
  raise Interrupted(signum)


@contextlib.contextmanager
def as_exception():
  """Within the block SIGINT and SIGTERM raise `Interrupted` (main thread only;
  elsewhere the block changes nothing)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = {s: signal.signal(s, _raise) for s in SIGNALS}
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
