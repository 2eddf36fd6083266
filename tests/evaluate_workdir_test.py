"""The evaluate tool on workdirs it cannot use: absent, another network, unwritable."""
import logging
import os

import pytest

from reid_jax import config_schema, evaluate


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
