"""Multi-host training for real: two processes on localhost, two CPU devices each.

`python -m reid_jax.main --distributed --coordinator_address=127.0.0.1:PORT
--num_processes=2 --process_id=I` trains, checkpoints, evaluates and resumes in one
shared workdir (gloo collectives), and must do what `python -m reid_jax.main` on four
devices does: the same global batches on a mesh of four devices.
"""
import dataclasses
import glob
import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORD_WRITES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "record_writes.py")
# Per group of processes started together: a healthy group ends in one to two
# minutes on two cores, under four on two saturated ones.
TIMEOUT_S = 450
# The losses are float32, and gloo sums across processes in another order than XLA
# sums across the devices of one process: they agree to a few ulps.
RTOL = 1e-5
# Written by process 0 alone ("eval/": every report in it).
PROCESS_0_FILES = ("config.json", "metrics.json", ".lock", "eval/")


@dataclasses.dataclass(frozen=True)
class Command:
  argv: list
  env: dict
  logs: str  # prefix of its .out, .err (and .writes) files


@dataclasses.dataclass(frozen=True)
class Run:
  """A process that ended with status 0."""
  pid: int
  stdout: str
  stderr: str
  writes: frozenset  # what it wrote under the workdir, relative to it (record_writes.py)


def _read(path):
  """The text of `path`, or "" when nothing was written there."""
  try:
    with open(path) as f:
      return f.read()
  except FileNotFoundError:
    return ""


def _run_together(commands):
  """Starts the `commands` at once and returns their `Run`s once all have ended.

  The moment one fails, or after TIMEOUT_S, every one still running is killed (a
  process whose peer died would wait for it in a collective) and the test fails
  with their logs.
  """
  procs = []
  try:
    for c in commands:
      with open(f"{c.logs}.out", "w") as out, open(f"{c.logs}.err", "w") as err:
        procs.append(subprocess.Popen(c.argv, cwd=ROOT, env=c.env, stdout=out, stderr=err))
    deadline, timed_out = time.monotonic() + TIMEOUT_S, False
    while not timed_out:
      codes = [p.poll() for p in procs]
      if None not in codes or any(codes):  # all ended, or one failed
        break
      time.sleep(0.2)
      timed_out = time.monotonic() > deadline
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  failed = [f"{c.logs}: exit {p.returncode}\n{_read(c.logs + '.err')[-3000:]}"
            for c, p in zip(commands, procs) if p.returncode]
  assert not failed, (f"timed out after {TIMEOUT_S} s\n" if timed_out else "") + "\n".join(failed)
  return [Run(p.pid, _read(c.logs + ".out"), _read(c.logs + ".err"),
              frozenset(_read(c.logs + ".writes").splitlines()))
          for c, p in zip(commands, procs)]


def _flags(workdir, data_dir, steps):
  """conftest's `tiny_mlfn_config` on the command line, evaluated at steps 0 and `steps`."""
  return ["--config=configs/mlfn.py:synthetic", f"--workdir={workdir}",
          f"--config.data_dir={data_dir}", f"--config.num_train_steps={steps}",
          "--config.p_identities=4", "--config.k_instances=2", "--config.eval_batch_size=200",
          "--config.model_kwargs.embed_dim=32", "--config.checkpoint_every_steps=2",
          "--config.eval_every_steps=0", "--config.eval_at_start=True",
          "--config.log_every_steps=1", "--verbosity=0"]  # the log holds each step's loss


def _env(devices, **extra):
  return dict(os.environ, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)


def _one_process(workdir, data_dir, steps, logs):
  """`python -m reid_jax.main` on four devices."""
  return Command([sys.executable, "-m", "reid_jax.main", *_flags(workdir, data_dir, steps)],
                 _env(4), str(logs))


def _two_processes(workdir, data_dir, steps, logs):
  """`python -m reid_jax.main --distributed ...` as processes 0 and 1, two devices each.

  Without the persistent compilation cache: on CPU only process 0 ever finds its
  programs there (process 1's keys differ, and only process 0 writes), so process 0
  would reach the first collective while process 1 still compiles, and gloo gives
  a late process 30 s to join.
  """
  port = _free_port()
  env = _env(2, JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", JAX_ENABLE_COMPILATION_CACHE="false",
             JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}")  # not every interface
  return [Command([sys.executable, RECORD_WRITES, f"{logs}.{i}.writes", str(workdir),
                   *_flags(workdir, data_dir, steps), "--distributed",
                   f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                   f"--process_id={i}"], env, f"{logs}.{i}") for i in range(2)]


def _free_port():
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _event_losses(workdir, pid):
  """{step: loss} of the TensorBoard events file that process `pid` wrote in `workdir`."""
  (path,) = glob.glob(os.path.join(workdir, f"events.out.tfevents.*.{pid}.*"))
  return {event.step: float(tf.make_ndarray(value.tensor))
          for event in tf.compat.v1.train.summary_iterator(path)
          for value in event.summary.value if value.tag == "loss"}


def _logged_losses(run):
  """{step: loss} of the "[step] ..., loss=..." lines of clu's logging writer (6 digits)."""
  return {int(step): float(loss)
          for step, loss in re.findall(r"\] \[(\d+)\] .*(?<!\w)loss=([^\s,]+)", run.stderr)}


def _assert_losses(found, reference, steps):
  assert sorted(found) == list(steps)
  np.testing.assert_allclose([found[s] for s in steps], [reference[s] for s in steps], rtol=RTOL)


def _final_line(run):
  (line,) = [l for l in run.stdout.splitlines() if l.startswith("Final evaluation on ")]
  return line


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def _assert_same_metrics(path, reference_path, cmc_atol):
  """The report at `path` has the queries, CMC curve (within `cmc_atol`: queries that
  moved / 339), mAP and mINP (within a tenth of it, and float rounding) of the one at
  `reference_path`."""
  found, reference = _read_json(path), _read_json(reference_path)
  assert found["step"] == reference["step"]
  assert found["num_valid_queries"] == reference["num_valid_queries"] > 0
  np.testing.assert_allclose(found["cmc"], reference["cmc"], rtol=0, atol=cmc_atol)
  np.testing.assert_allclose([found["mAP"], found["mINP"]], [reference["mAP"], reference["mINP"]],
                             rtol=1e-6, atol=cmc_atol / 10)


def test_two_processes_train_checkpoint_evaluate_and_resume_as_one_process_does(
    tmp_path, synthetic_data_dir):
  workdir, single_dir = tmp_path / "multi", tmp_path / "single"

  # Evaluation at step 0, steps 1-3, checkpoints at steps 2 and 3, evaluation at 3.
  first = _run_together(_two_processes(workdir, synthetic_data_dir, 3, tmp_path / "first"))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "3"]
  assert _read_json(workdir / "metrics.json")["step"] == 3
  assert _final_line(first[0]) == _final_line(first[1])

  # Both resume from step 3 for steps 4-5, while the single-process reference runs
  # steps 1-5.
  *second, single = _run_together(
      _two_processes(workdir, synthetic_data_dir, 5, tmp_path / "second")
      + [_one_process(single_dir, synthetic_data_dir, 5, tmp_path / "single")])
  assert sorted(os.listdir(workdir / "checkpoints")) == ["3", "4", "5"]  # keep_checkpoints=3
  for run in second:
    assert "Resuming from checkpoint at step 3." in run.stderr
  for run in first:
    assert "Resuming" not in run.stderr

  # Every step's loss is the single process's, as process 0 records it (TensorBoard
  # events, float32) and as both processes log it.
  reference = _event_losses(single_dir, single.pid)
  assert sorted(reference) == [1, 2, 3, 4, 5]
  _assert_losses(_event_losses(workdir, first[0].pid), reference, range(1, 4))
  _assert_losses(_event_losses(workdir, second[0].pid), reference, range(4, 6))
  for run in first:
    _assert_losses(_logged_losses(run), reference, range(1, 4))
  for run in second:
    _assert_losses(_logged_losses(run), reference, range(4, 6))

  # The evaluations gather every query and gallery feature from both processes in
  # split order. At step 0 the weights are the single process's: so is the ranking
  # of every query. After training, weights a few ulps apart may swap near-tied
  # gallery images of this barely trained network: let 3 of 339 queries move.
  _assert_same_metrics(workdir / "eval" / "metrics_0.json", single_dir / "eval" / "metrics_0.json",
                       cmc_atol=0)
  assert _read_json(workdir / "metrics.json")["step"] == 5
  _assert_same_metrics(workdir / "metrics.json", single_dir / "metrics.json", cmc_atol=0.01)
  assert _final_line(second[0]) == _final_line(second[1])

  # Process 0 alone writes the config, the metrics, the reports, the lock and the
  # TensorBoard events (whose file names hold the writer's pid: read above).
  assert _read_json(workdir / ".lock")["pid"] == second[0].pid
  assert len(glob.glob(str(workdir / "events.out.tfevents.*"))) == 2
  ours = lambda run: {path for path in run.writes if path.startswith(PROCESS_0_FILES)}
  assert {"config.json", ".lock", "metrics.json", "eval/metrics_0.json",
          "eval/metrics_3.json"} <= ours(first[0])
  assert {"config.json", ".lock", "metrics.json", "eval/metrics_5.json"} <= ours(second[0])
  assert not ours(first[1]) and not ours(second[1])
