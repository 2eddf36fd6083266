"""One run per workdir: a second holder is refused with the first one named."""
import os
import socket
import subprocess
import sys

import pytest

from reid_jax import workdir_lock


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from reid_jax import workdir_lock\n"
       f"with workdir_lock.hold({str(tmp_path)!r}):\n  print('held', flush=True); time.sleep(60)"],
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(workdir_lock.WorkdirLockedError,
                       match=f"in use by pid {holder.pid} on host {socket.gethostname()}"):
      with workdir_lock.hold(str(tmp_path)):
        pass
  finally:
    holder.kill()
    holder.wait()
  # The kernel released the killed holder's lock: the workdir is free again.
  with workdir_lock.hold(str(tmp_path)):
    assert os.path.exists(tmp_path / workdir_lock.LOCK_FILE)


def test_the_lock_is_released_when_the_block_ends(tmp_path):
  with workdir_lock.hold(str(tmp_path)):
    with pytest.raises(workdir_lock.WorkdirLockedError, match=f"pid {os.getpid()}"):
      with workdir_lock.hold(str(tmp_path)):
        pass
  with workdir_lock.hold(str(tmp_path)):   # free again
    pass
