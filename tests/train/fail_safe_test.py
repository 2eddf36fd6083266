"""Training that fails safe: non-finite steps, interrupts, a second run on the same workdir."""
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from reid_jax import checkpoints, sharding

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _main(*flags, **kwargs):
  return subprocess.Popen([sys.executable, "-m", "reid_jax.main", *flags], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _flags(workdir, data_dir, *extra):
  return ("--config=configs/mlfn.py:synthetic", f"--workdir={workdir}",
          f"--config.data_dir={data_dir}", "--config.eval_at_start=False",
          "--config.eval_every_steps=0", *extra)


def test_a_non_finite_step_stops_the_run_and_keeps_only_finite_checkpoints(
    tmp_path, synthetic_data_dir):
  workdir = tmp_path / "w"
  run = _main(*_flags(workdir, synthetic_data_dir, "--config.optimizer=sgd",
                      "--config.learning_rate=1e6", "--config.num_train_steps=40",
                      "--config.checkpoint_every_steps=1", "--config.keep_checkpoints=2",
                      "--config.log_every_steps=1"))
  _, stderr = run.communicate(timeout=600)
  assert run.returncode == 1, stderr[-3000:]
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("error: step ") and "the loss or its gradients are not finite (" in last
  assert "cross_entropy=" in last and "The update was not applied" in last
  assert "Traceback" not in stderr
  assert not os.path.exists(workdir / "metrics.json")     # no result from a diverged run
  step_dir, step = checkpoints.find(str(workdir))
  assert f"the latest checkpoint, step {step}, holds finite weights" in last
  variables = checkpoints.read_variables(step_dir, sharding.create_mesh())
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(variables))


def test_a_skipped_step_changes_nothing_but_the_step(tiny_mlfn_step):
  state, step, mesh = tiny_mlfn_step
  images = np.random.default_rng(0).normal(size=(8, 64, 32, 3)).astype(np.float32)
  images[3, 5, 5, 0] = np.nan
  batch = sharding.global_batch(mesh, {"image": images,
                                       "label": np.repeat(np.arange(4), 2).astype(np.int32)})
  before = jax.device_get(state)
  after, metrics = step(state, batch, jax.random.key(1))
  assert not bool(metrics["finite"]) and int(after.step) == 1
  for old, new in zip(jax.tree.leaves((before.params, before.batch_stats, before.opt_state)),
                      jax.tree.leaves(jax.device_get((after.params, after.batch_stats,
                                                      after.opt_state)))):
    np.testing.assert_array_equal(old, new)


def _wait_for(path, process, timeout=300):
  start = time.monotonic()
  while not os.path.exists(path):
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.monotonic() - start < timeout
    time.sleep(0.5)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_says_where_to_resume_and_a_second_run_is_refused(
    tmp_path, synthetic_data_dir, signum):
  workdir = tmp_path / "w"
  flags = _flags(workdir, synthetic_data_dir, "--config.num_train_steps=100000",
                 "--config.checkpoint_every_steps=3", "--config.log_every_steps=3")
  first = _main(*flags)
  try:
    _wait_for(workdir / "checkpoints" / "3", first)
    second = _main(*flags)
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 1
    assert f"error: The workdir {workdir} is in use by pid {first.pid} on host" in stderr
    first.send_signal(signum)
    _, stderr = first.communicate(timeout=120)
  finally:
    first.kill()
  assert first.returncode == 128 + signum, stderr[-3000:]
  assert "Traceback" not in stderr
  last = stderr.strip().splitlines()[-1]
  name = signal.Signals(signum).name
  assert last.startswith(f"Interrupted by {name} during step ")
  _, step = checkpoints.find(str(workdir))
  assert f"the checkpoint of step {step} is complete: rerun the same command" in last
