"""Ctrl-C and SIGTERM as one exception the training loop can end cleanly on.

`as_exception()` turns SIGINT and SIGTERM (a scheduler's preemption notice) into
`Interrupted` in the main thread for the duration of a `with` block, so the loop
can let the checkpoint in flight finish and say which step is safe to resume
from, instead of dying with a traceback from every thread. A second signal
while that happens abandons the write (orbax only ever renames a complete
checkpoint into place).

The handler also records the signal: an exception raised while Python runs a
callback it cannot propagate from (a garbage-collection callback, a weakref
finaliser) is printed and dropped, so the loop calls `check()` once per step.
Within `deferred()` (the start of an asynchronous checkpoint save, whose event loop
would be torn down under a worker thread) a signal is only recorded, and raised
by the next `check()`.
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


_pending = []
_deferring = []


def _raise(signum, frame):
  del frame
  _pending.append(signum)
  if not _deferring:
    raise Interrupted(signum)


@contextlib.contextmanager
def deferred():
  """Signals inside the block are recorded for `check()` instead of raised."""
  _deferring.append(True)
  try:
    yield
  finally:
    _deferring.pop()


def check():
  """Raises `Interrupted` for a signal whose exception was dropped, if any."""
  if _pending:
    raise Interrupted(_pending[-1])


@contextlib.contextmanager
def as_exception():
  """Within the block SIGINT and SIGTERM raise `Interrupted` (main thread only;
  elsewhere the block changes nothing)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  _pending.clear()
  previous = {s: signal.signal(s, _raise) for s in SIGNALS}
  try:
    yield
  except Interrupted:
    _pending.clear()
    raise
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
