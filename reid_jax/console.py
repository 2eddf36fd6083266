"""What a person reads while a network trains: one progress line, each evaluation, the result.

The console follows absl's log level. Below INFO (in notebooks and scripts, and in
`python -m reid_jax.main` unless one of absl's logging flags is given) the trainer
draws a `Progress` line on stderr and prints each evaluation; every scalar goes to
TensorBoard only. At INFO (`--verbosity=0`, `--alsologtostderr`, ...) the log is
absl's as usual: every library's INFO lines, and each scalar through clu's logging
writer. Imports nothing that imports TensorFlow, so `quiet_native_logs` can run first.
"""
import os
import re
import sys
import time

from absl import logging

_LOG_FLAG = re.compile(r"--?(v|verbosity|alsologtostderr|logtostderr)(=|$)")


def full_log_requested(argv):
  """Whether the command line `argv` gives one of absl's logging flags."""
  return any(_LOG_FLAG.match(arg) for arg in argv[1:])


def quiet_native_logs(argv=None):
  """Keeps TensorFlow's C++ INFO lines off stderr unless `argv` (default `sys.argv`)
  asks for the full log. Call before TensorFlow is imported (in a notebook, before
  the first cell that imports it); a variable the user has set is left as it is."""
  if full_log_requested(sys.argv if argv is None else argv):
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  # The oneDNN notice ignores TF_CPP_MIN_LOG_LEVEL. TensorFlow only runs the input
  # pipeline here, whose batches are the same with and without oneDNN.
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def use_console(argv):
  """After flag parsing: Python logging (absl, jax's backend probe, tfds, orbax) at
  WARNING unless `argv` gives a logging flag, so that `full_log()` is False."""
  if not full_log_requested(argv):
    logging.set_verbosity(logging.WARNING)


def full_log():
  """Whether absl logs INFO: then the log, not the console, reports progress."""
  return logging.level_info()


def _duration(seconds):
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
  """The training progress as one line on `stream` (default stderr):
  `step 300/1200 [######------------------]  25% | loss 3.251 | 141.2 img/s | ETA 1m05s`.

  Rewritten in place on a terminal or in a notebook; one line per update on a pipe
  or file. Silent when `show` is False (processes other than 0) or when `full_log()`;
  `note` then logs at INFO instead. Images/s and the ETA are measured between
  updates, from the end of the first step (so compilation is not counted) and
  from the end of each note (so evaluations are not counted).
  """

  def __init__(self, total_steps, batch_size, show=True, stream=None, clock=time.monotonic,
               bar_width=24):
    self.total_steps, self.batch_size, self.bar_width = total_steps, batch_size, bar_width
    self.show, self.clock = show, clock
    self.stream = stream or sys.stderr
    # Jupyter and Colab draw a carriage return in place, as a terminal does.
    self.in_place = self.stream.isatty() or type(self.stream).__module__.startswith("ipykernel")
    self._origin = None  # (step, time) the next rate is measured from
    self._pending = 0  # characters of an unfinished in-place line

  def _visible(self):
    return self.show and not full_log()

  def step(self, step, scalars=None):
    """After step `step` has run; draws the line when `scalars` (with 'loss') are given."""
    if not self._visible():
      return
    now = self.clock()
    if self._origin is None:
      self._origin = (step, now)
    if scalars is None:
      return
    parts = [self._bar(step), f"loss {scalars['loss']:.4g}"]
    origin_step, origin_time = self._origin
    if step > origin_step and now > origin_time:
      steps_per_s = (step - origin_step) / (now - origin_time)
      parts.append(f"{steps_per_s * self.batch_size:.1f} img/s")
      parts.append(f"ETA {_duration((self.total_steps - step) / steps_per_s)}")
      self._origin = (step, now)
    self._write(" | ".join(parts), final=step >= self.total_steps)

  def note(self, text):
    """A line of its own (an evaluation's result): below the progress line, or in the log."""
    if full_log():
      logging.info(text, stacklevel=2)  # the log line names the caller, not this module
    elif self.show:
      self._end_line()
      self.stream.write(text + "\n")
      self.stream.flush()
      self._origin = None

  def _bar(self, step):
    fraction = min(step / max(self.total_steps, 1), 1.0)
    done = int(fraction * self.bar_width)
    width = len(str(self.total_steps))
    return (f"step {step:>{width}}/{self.total_steps} "
            f"[{'#' * done}{'-' * (self.bar_width - done)}] {fraction:4.0%}")

  def _write(self, line, final):
    if self.in_place:
      self.stream.write("\r" + line.ljust(self._pending) + ("\n" if final else ""))
      self._pending = 0 if final else len(line)
    else:
      self.stream.write(line + "\n")
    self.stream.flush()

  def _end_line(self):
    if self._pending:
      self.stream.write("\n")
      self._pending = 0
