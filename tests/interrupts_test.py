"""interrupts: a signal whose exception Python drops still ends the block."""
import gc
import signal

import pytest

from reid_jax import interrupts


class _SignalsWhileCollected:
  """Raises SIGTERM from its finaliser, where Python prints and drops exceptions."""

  def __del__(self):
    signal.raise_signal(signal.SIGTERM)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_signal_dropped_inside_a_finaliser_is_raised_by_check():
  with pytest.raises(interrupts.Interrupted) as caught:
    with interrupts.as_exception():
      obj = _SignalsWhileCollected()
      del obj  # the handler's exception is dropped ("Exception ignored in ...")
      gc.collect()
      interrupts.check()
  assert caught.value.signum == signal.SIGTERM
  interrupts.check()  # handled: nothing pending any more


def test_check_is_silent_without_a_signal_and_handlers_are_restored():
  before = signal.getsignal(signal.SIGTERM)
  with interrupts.as_exception():
    interrupts.check()
  assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_inside_deferred_is_raised_by_the_next_check():
  with pytest.raises(interrupts.Interrupted) as caught:
    with interrupts.as_exception():
      with interrupts.deferred():
        signal.raise_signal(signal.SIGINT)
        reached = True
      assert reached
      interrupts.check()
  assert caught.value.signum == signal.SIGINT
