"""The evaluate tool: its reports (ROC, rank-1 per camera pair), and workdirs it cannot
use: absent, another network, unwritable."""
import csv
import json
import logging
import os

import numpy as np
import pytest

from reid_jax import config_schema, data, evaluate, metrics


def test_a_missing_workdir_is_an_error_and_is_not_created(two_step_run, tmp_path):
  config, _ = two_step_run
  missing = str(tmp_path / "no_such_run")
  with pytest.raises(evaluate.WorkdirError, match=f"The workdir {missing} does not exist"):
    evaluate.evaluate_workdir(config, missing)
  assert not os.path.exists(missing)
  with pytest.raises(evaluate.WorkdirError, match="No checkpoint in"):
    evaluate.evaluate_workdir(config, str(tmp_path))


def test_a_config_of_another_network_names_the_first_differing_variable(two_step_run):
  config, workdir = two_step_run
  config = config.copy_and_resolve_references()
  config.model_kwargs.embed_dim = 64
  with pytest.raises(config_schema.ConfigError) as error:
    evaluate.evaluate_workdir(config, workdir)
  message = str(error.value)
  assert message.startswith("config.model='mlfn' (model_kwargs {")
  assert "variables differ, the first batch_stats/fc_s_bn/mean: checkpoint (32,), network (64,)" \
      in message
  assert "config.json" in message


def test_metrics_come_before_an_unwritable_report(two_step_run, tmp_path, caplog):
  config, workdir = two_step_run
  os.symlink(os.path.join(workdir, "checkpoints"), tmp_path / "checkpoints")
  (tmp_path / "eval").write_text("a file where the reports folder goes")
  with caplog.at_level(logging.INFO):
    with pytest.raises(evaluate.WorkdirError, match=f"Cannot write the reports to {tmp_path}/eval"):
      evaluate.evaluate_workdir(config, str(tmp_path))
  assert "mlfn on synthetic_reid/small, step 2 | rank-1" in caplog.text


def test_reports_hold_the_roc_and_the_camera_pair_table(two_step_run, tmp_path):
  config, workdir = two_step_run
  out = str(tmp_path / "reports")
  result = evaluate.evaluate_workdir(config, workdir, num_ranked_queries=2, out=out)
  dataset = data.builder(config.dataset, config.data_dir, config.manual_dir)
  query, gallery = data.load_split(dataset, "query"), data.load_split(dataset, "gallery")
  labels = (query.person_ids, gallery.person_ids, query.camera_ids, gallery.camera_ids)
  # The reported views read the distances that were ranked.
  assert metrics.evaluate_rank(result["distmat"], *labels)["cmc"][0] == result["cmc"][0]
  report = json.load(open(os.path.join(out, "step2.json")))
  roc = metrics.roc_curve(result["distmat"], *labels)
  assert report["tpr_at_fpr"] == {f"{f:g}": t for f, t in metrics.tpr_at_fpr(roc).items()}
  assert report["verification_pairs"] == {"positive": roc["num_positives"],
                                          "negative": roc["num_negatives"]}
  assert 0 < report["tpr_at_fpr"]["0.01"] <= 1 and roc["num_negatives"] > 100 * roc["num_positives"]
  rows = list(csv.DictReader(open(os.path.join(out, "step2_camera_pairs.csv"))))
  cams = np.unique(query.camera_ids)
  assert len(rows) == len(cams) * len(np.unique(gallery.camera_ids))
  table = metrics.camera_pair_rank1(result["distmat"], *labels)
  off_diagonal = [r for r in rows if r["query_camera"] != r["gallery_camera"]]
  assert all(int(r["num_queries"]) > 0 for r in off_diagonal)
  assert sum(float(r["rank1"]) * int(r["num_queries"]) for r in off_diagonal) == pytest.approx(
      np.nansum(table["rank1"] * table["num_queries"]))
  assert "| query \\ gallery |" in open(os.path.join(out, "step2_camera_pairs.md")).read()
  for figure in ("cmc", "ranked", "roc", "camera_pairs"):
    assert os.path.getsize(os.path.join(out, f"step2_{figure}.png")) > 1000
