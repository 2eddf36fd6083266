"""The console: the progress line itself, and `python -m reid_jax.main` as a person reads it."""
import io
import os
import re
import subprocess
import sys

import pytest

from reid_jax import console

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a default run must not print: TensorFlow's C++ notices, jax's backend probe,
# tfds' reader lines, any absl INFO line, and clu's logging of every scalar.
NOISE = ("oneDNN", "port.cc", "absl::InitializeLog", "Unable to initialize backend",
         "xla_bridge", "Constructing tf.data.Dataset", "Creating a tf.data.Dataset",
         "logging_writer.py", "Setting work unit notes", "cross_entropy=")


class Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


class Terminal(io.StringIO):
  def isatty(self):
    return True


def test_a_pipe_gets_one_line_per_update_with_images_per_second_and_eta():
  out, clock = io.StringIO(), Clock()
  progress = console.Progress(101, 8, stream=out, clock=clock)
  progress.step(1)                       # the end of the first step: the origin
  clock.now = 5.0
  progress.step(11, {"loss": 3.25})      # 10 steps in 5 s: 2 steps/s, 16 img/s, 90 steps left
  clock.now = 6.0
  progress.note("step 11 | rank-1 50.0%")
  clock.now = 100.0
  progress.step(12)                      # after the evaluation: the new origin
  clock.now = 110.0
  progress.step(101, {"loss": 1.5})      # 89 steps in 10 s
  assert out.getvalue().splitlines() == [
      "step  11/101 [##----------------------]  11% | loss 3.25 | 16.0 img/s | ETA 0m45s",
      "step 11 | rank-1 50.0%",
      "step 101/101 [########################] 100% | loss 1.5 | 71.2 img/s | ETA 0m00s"]


def test_a_terminal_gets_the_line_rewritten_in_place_and_notes_below_it():
  out, clock = Terminal(), Clock()
  progress = console.Progress(4, 2, stream=out, clock=clock, bar_width=4)
  progress.step(1, {"loss": 2.0})        # no rate yet: nothing measured
  clock.now = 1.0
  progress.step(2, {"loss": 1.0})
  progress.note("evaluated")
  progress.step(4, {"loss": 0.5})
  assert out.getvalue() == (
      "\rstep 1/4 [#---]  25% | loss 2"
      "\rstep 2/4 [##--]  50% | loss 1 | 2.0 img/s | ETA 0m02s"
      "\nevaluated\n"
      "\rstep 4/4 [####] 100% | loss 0.5\n")


def test_other_processes_show_nothing():
  out = io.StringIO()
  progress = console.Progress(4, 2, show=False, stream=out)
  progress.step(1, {"loss": 1.0})
  progress.note("step 1 | rank-1 1.0%")
  assert out.getvalue() == ""


@pytest.mark.parametrize("argv, full", [
    (["main", "--config=c.py", "--workdir=w"], False),
    (["main", "--verbosity=0"], True), (["main", "-v", "1"], True), (["main", "--v=1"], True),
    (["main", "--alsologtostderr"], True), (["main", "--logtostderr"], True),
    (["main", "--config.eval.verbosity=1"], False), (["main", "--vx=1"], False),
])
def test_a_logging_flag_asks_for_the_full_log(argv, full):
  assert console.full_log_requested(argv) == full


def _main(*flags):
  env = {k: v for k, v in os.environ.items()   # nothing that would quiet the noise for us
         if k not in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
  run = subprocess.run([sys.executable, "-m", "reid_jax.main", *flags], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  return run


def test_the_quick_start_console_shows_progress_evaluations_and_result_and_verbosity_the_log(
    tmp_path, synthetic_data_dir):
  flags = ("--config=configs/mlfn.py:synthetic", f"--workdir={tmp_path / 'w'}",
           f"--config.data_dir={synthetic_data_dir}", "--config.p_identities=4",
           "--config.k_instances=2", "--config.model_kwargs.embed_dim=32",
           "--config.eval_batch_size=200", "--config.log_every_steps=2",
           "--config.eval_every_steps=2", "--config.eval_at_start=False")
  run = _main(*flags, "--config.num_train_steps=4")
  for noise in NOISE:
    assert noise not in run.stderr + run.stdout, noise
  assert not re.search(r"^[IW]\d{4} ", run.stderr, re.M)   # no absl log line at all
  lines = run.stderr.splitlines()
  assert lines[0].startswith("mlfn on synthetic_reid/small: 120 classes, 1234 train images, "
                             "4 steps (154 per epoch) of 8 images (pk sampler), ")
  assert re.fullmatch(r"step 2/4 \[#{12}-{12}\]  50% \| loss \d\.\d+ \| [\d.]+ img/s \| "
                      r"ETA 0m0\ds", lines[1]), lines[1]
  assert lines[2].startswith("step 2 | rank-1 ") and "| mAP " in lines[2]
  assert lines[3].startswith("step 4/4 [########################] 100% | loss ")
  assert lines[4].startswith("step 4 | rank-1 ")
  assert len(lines) == 5
  assert run.stdout.startswith("Final evaluation on synthetic_reid/small: rank-1 ")
  assert run.stdout.split(": ", 1)[1] == lines[4].split(" | ", 1)[1] + "\n"

  # Two more steps, resumed, with absl's full log: the INFO lines and each scalar.
  run = _main(*flags, "--config.num_train_steps=6", "--verbosity=0")
  assert re.search(r"^I\d{4} .*Constructing tf.data.Dataset synthetic_reid for split train",
                   run.stderr, re.M)
  assert "Resuming from checkpoint at step 4." in run.stderr
  assert re.search(r"logging_writer.py:\d+\] \[6\] cross_entropy=[\d.]+, learning_rate=0.001, "
                   r"loss=[\d.]+", run.stderr)
  assert re.search(r"\] step 6 \| rank-1 ", run.stderr)
  assert "step 6/6 [" not in run.stderr            # the log reports progress instead
  assert run.stdout.startswith("Final evaluation on synthetic_reid/small: rank-1 ")
