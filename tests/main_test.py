"""`python -m reid_jax.main` as a user runs it."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*flags):
  return subprocess.run([sys.executable, "-m", "reid_jax.main", *flags], cwd=ROOT,
                        capture_output=True, text=True, timeout=900)


def test_missing_market1501_fails_fast_naming_the_files_and_folder(tmp_path):
  data_dir = tmp_path / "tfds"
  run = _main("--config=configs/mlfn.py", f"--workdir={tmp_path / 'w'}", f"--config.data_dir={data_dir}")
  assert run.returncode == 1
  manual = os.path.join(data_dir, "downloads", "manual")
  assert f"Market-1501 was not found in the manual directory {manual}" in run.stderr
  assert os.path.join(manual, "Market-1501-v15.09.15.zip") in run.stderr
  assert "bounding_box_train,query,bounding_box_test" in run.stderr
  assert "Traceback" not in run.stderr
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_synthetic_quick_start_trains_and_reports_then_reevaluates(tmp_path, synthetic_data_dir):
  workdir = tmp_path / "w"
  flags = ("--config=configs/mlfn.py:synthetic", f"--workdir={workdir}",
           f"--config.data_dir={synthetic_data_dir}", "--config.num_train_steps=6")
  run = _main(*flags, "--config.log_every_steps=3", "--config.eval_every_steps=0")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "step 3/6 [" in run.stderr and "img/s | ETA" in run.stderr   # the progress line
  assert "Final evaluation on synthetic_reid/small: rank-1" in run.stdout
  with open(workdir / "metrics.json") as f:
    metrics = json.load(f)
  assert metrics["step"] == 6 and metrics["num_valid_queries"] > 0
  assert os.path.isdir(workdir / "checkpoints" / "6")
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))

  # Re-evaluation of the checkpoint with re-ranking and multi-query.
  run = _main(*flags, "--mode=evaluate", "--config.eval.rerank=True",
              "--config.eval.query_pooling=mean", "--num_ranked_queries=3")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "mlfn on synthetic_reid/small: rank-1" in run.stdout
  with open(workdir / "eval" / "step6_mq-mean_rerank.json") as f:
    report = json.load(f)
  assert report["eval"]["rerank"] and report["eval"]["query_pooling"] == "mean"
  assert report["step"] == 6
  for suffix in ("cmc", "ranked"):
    with open(workdir / "eval" / f"step6_mq-mean_rerank_{suffix}.png", "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_loss_key_the_network_lacks_fails_at_once_naming_the_accepted_ones(tmp_path):
  run = _main("--config=configs/mlfn.py:synthetic", f"--workdir={tmp_path / 'w'}",
              f"--config.data_dir={tmp_path / 'data'}", "--config.loss.triplet_margin=0.5")
  assert run.returncode == 1
  # At once: in flag parsing, before any dataset is built or anything compiles.
  assert not os.path.exists(tmp_path / "data")
  assert ("--config.loss.triplet_margin: config.loss has no key 'triplet_margin'; it accepts "
          "['label_smoothing'] (the keyword arguments of mlfn's loss)") in run.stderr
  assert "Traceback" not in run.stderr
  assert not os.path.exists(tmp_path / "w")


@pytest.mark.parametrize("flags, message", [
    (("--coordinator_address=127.0.0.1:1234", "--num_processes=2", "--process_id=0"),
     "error: --coordinator_address needs --distributed."),
    (("--distributed", "--coordinator_address=127.0.0.1:1234", "--num_processes=2"),
     "error: --process_id is missing: --distributed takes all of --coordinator_address, "
     "--num_processes and --process_id, or none of them (cluster auto-detection)."),
    (("--distributed", "--coordinator_address=127.0.0.1:1234", "--num_processes=2",
      "--process_id=2"), "error: --process_id=2 must be at least 0 and below --num_processes=2."),
    (("--distributed", "--coordinator_address=127.0.0.1", "--num_processes=2", "--process_id=0"),
     "error: --coordinator_address=127.0.0.1: expected host:port."),
])
def test_cluster_flags_without_distributed_or_incomplete_fail_at_once_naming_the_flag(
    tmp_path, flags, message):
  run = _main("--config=configs/mlfn.py:synthetic", f"--workdir={tmp_path / 'w'}", *flags)
  assert run.returncode == 1
  assert run.stderr.strip().splitlines()[-1] == message
  assert "Traceback" not in run.stderr
  assert "JAX distributed service" not in run.stderr  # it stopped before starting anything
  assert not os.path.exists(tmp_path / "w")
