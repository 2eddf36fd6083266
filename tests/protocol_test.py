"""The multi-partition protocol: partition choice, mean and spread, and a two-partition
VIPeR run through `python -m reid_jax.protocol`."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from reid_jax import protocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_splits():
  assert protocol.parse_splits("all", 3) == [0, 1, 2]
  assert protocol.parse_splits("2,0", 10) == [2, 0]
  for bad in ("10", "1,1", "-1"):
    with pytest.raises(ValueError, match=rf"^--splits={bad}: the dataset has partitions 0 to 9, "
                       "each named once\\.$"):
      protocol.parse_splits(bad, 10)
  with pytest.raises(ValueError, match=r"^--splits=first: expected 'all' or partition numbers"):
    protocol.parse_splits("first", 10)


def test_summarize_is_the_mean_and_sample_std_over_partitions():
  per_split = {0: {"rank1": 0.5, "mAP": 0.25, "mINP": 0.1, "cmc": [0.5, 0.75]},
               3: {"rank1": 0.7, "mAP": 0.35, "mINP": 0.2, "cmc": [0.7, 1.0]},
               4: {"rank1": 0.6, "mAP": 0.15, "mINP": 0.3, "cmc": [0.6, 0.8]}}
  summary = protocol.summarize(per_split)
  assert summary["num_splits"] == 3
  assert summary["mean"] == pytest.approx({"rank1": 0.6, "mAP": 0.25, "mINP": 0.2})
  # sample std of (0.5, 0.7, 0.6): sqrt(((-.1)^2 + .1^2 + 0) / 2) = 0.1
  assert summary["std"] == pytest.approx({"rank1": 0.1, "mAP": 0.1, "mINP": 0.1})
  assert summary["cmc_mean"] == pytest.approx([0.6, 0.85])
  assert summary["cmc_std"] == pytest.approx([0.1, np.std([0.75, 1.0, 0.8], ddof=1)])
  one = protocol.summarize({2: per_split[0]})
  assert one["std"] == {"rank1": 0.0, "mAP": 0.0, "mINP": 0.0} and one["mean"]["rank1"] == 0.5


def test_markdown_lists_each_partition_and_the_mean():
  per_split = {0: {"rank1": 0.5, "mAP": 0.25, "cmc": [0.5]}, 1: {"rank1": 0.7, "mAP": 0.35, "cmc": [0.7]}}
  text = protocol.markdown("viper", per_split, protocol.summarize(per_split))
  assert text.splitlines() == [
      "# viper: 2 partitions", "", "| partition | rank1 | mAP |", "|---|---|---|",
      "| 0 | 50.00% | 25.00% |", "| 1 | 70.00% | 35.00% |",
      "| mean ± std | 60.00% ± 14.14% | 30.00% ± 7.07% |"]


def _viper_release(manual_dir, num_ids):
  """VIPeR/cam_a and cam_b with one tiny BMP per identity and camera, as released."""
  rng = np.random.default_rng(0)
  for cam in ("cam_a", "cam_b"):
    (manual_dir / "VIPeR" / cam).mkdir(parents=True)
    for n in range(num_ids):
      pixels = np.clip(rng.normal(40 + 200 * n / num_ids, 20, (16, 8, 3)), 0, 255)
      Image.fromarray(pixels.astype(np.uint8)).save(manual_dir / "VIPeR" / cam / f"{n:03d}_0.bmp")


def test_two_viper_partitions_through_the_protocol_entry(tmp_path):
  _viper_release(tmp_path / "manual", 40)
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "reid_jax.protocol", "--config=configs/mlfn.py:synthetic",
       "--config.dataset=viper", f"--config.manual_dir={tmp_path / 'manual'}",
       f"--config.data_dir={tmp_path / 'tfds'}", "--config.image_size=(64,32)",
       "--config.p_identities=4", "--config.k_instances=2", "--config.num_train_steps=2",
       "--config.eval_at_start=False", "--config.eval_every_steps=0",
       "--config.model_kwargs.embed_dim=32", f"--workdir={workdir}", "--splits=0,1"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  payload = json.loads((workdir / "protocol.json").read_text())
  assert payload["dataset"] == "viper" and payload["num_splits"] == 2
  assert sorted(payload["per_split"]) == ["0", "1"]
  runs = []
  for k in (0, 1):
    run = json.loads((workdir / f"split_{k}" / "metrics.json").read_text())
    assert json.loads((workdir / f"split_{k}" / "config.json").read_text())["split"] == k
    assert run["step"] == 2 and run["num_valid_queries"] == 20  # half of the 40 identities
    assert payload["per_split"][str(k)]["rank1"] == run["rank1"]
    runs.append(run)
  for key in ("rank1", "rank5", "mAP", "mINP"):
    values = [r[key] for r in runs]
    assert payload["mean"][key] == pytest.approx(np.mean(values))
    assert payload["std"][key] == pytest.approx(np.std(values, ddof=1))
  assert payload["cmc_mean"] == pytest.approx(np.mean([r["cmc"] for r in runs], 0))
  table = (workdir / "protocol.md").read_text()
  assert table.startswith("# viper: 2 partitions") and "| mean ± std |" in table
  assert f"over 2 partitions); {workdir / 'protocol.json'}" in result.stdout.splitlines()[-1]


def test_the_protocol_entry_names_a_partition_the_dataset_lacks(tmp_path):
  _viper_release(tmp_path / "manual", 8)
  result = subprocess.run(
      [sys.executable, "-m", "reid_jax.protocol", "--config=configs/mlfn.py:synthetic",
       "--config.dataset=viper", f"--config.manual_dir={tmp_path / 'manual'}",
       f"--config.data_dir={tmp_path / 'tfds'}", f"--workdir={tmp_path / 'run'}", "--splits=3,10"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 1
  assert result.stderr.splitlines()[-1] == (
      "error: --splits=3,10: the dataset has partitions 0 to 9, each named once.")
