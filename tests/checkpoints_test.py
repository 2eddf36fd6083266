"""Checkpoints: finding them, reading variables without an optimiser, `init_from`."""
import logging
import os

import jax
import numpy as np
import pytest
from flax import traverse_util

from reid_jax import checkpoints, config_schema, models, sharding, train


def test_find_accepts_a_workdir_its_checkpoints_folder_or_one_step(two_step_run, tmp_path):
  _, workdir = two_step_run
  latest = os.path.join(workdir, "checkpoints", "2")
  assert checkpoints.find(workdir) == (latest, 2)
  assert checkpoints.find(os.path.join(workdir, "checkpoints")) == (latest, 2)
  one = os.path.join(workdir, "checkpoints", "1")
  assert checkpoints.find(one) == (one, 1)
  with pytest.raises(FileNotFoundError, match=f"No checkpoint at {tmp_path}"):
    checkpoints.find(str(tmp_path))


def test_read_variables_reads_params_and_batch_stats_only(two_step_run):
  _, workdir = two_step_run
  step_dir, _ = checkpoints.find(workdir)
  variables = checkpoints.read_variables(step_dir, sharding.create_mesh())
  assert sorted(variables) == ["batch_stats", "params"]
  assert variables["params"]["classifier"]["kernel"].shape == (32, 120)


def test_init_from_loads_matching_names_and_keeps_a_fresh_classifier(two_step_run, caplog):
  config, workdir = two_step_run
  config = config.copy_and_resolve_references()
  model = models.get_model("mlfn", 7, **config.model_kwargs)     # another class count
  fresh = train.init_variables(config, model, jax.random.key(5))
  config.init_from = workdir
  with caplog.at_level(logging.INFO):
    warm = train.init_variables(config, model, jax.random.key(5))
  source = checkpoints.read_variables(checkpoints.find(workdir)[0], sharding.create_mesh())

  flat_warm, flat_fresh = (traverse_util.flatten_dict(v, sep="/") for v in (warm, fresh))
  flat_source = traverse_util.flatten_dict(source, sep="/")
  classifier = {"params/classifier/kernel", "params/classifier/bias"}
  for name, value in flat_warm.items():
    if name in classifier:
      np.testing.assert_array_equal(value, flat_fresh[name])   # fresh: 7 classes, not 120
    else:
      np.testing.assert_array_equal(value, flat_source[name])  # the trained backbone
  assert not np.array_equal(flat_source["params/stem_conv/kernel"],
                            flat_fresh["params/stem_conv/kernel"])
  log = caplog.text
  assert f"init_from {os.path.join(workdir, 'checkpoints', '2')}: loaded {len(flat_warm) - 2} arrays" in log
  assert "not loaded, class count differs (2): params/classifier/bias, params/classifier/kernel" in log


def test_init_from_another_architecture_is_an_error_listing_the_mismatches(two_step_run):
  config, workdir = two_step_run
  model = models.get_model("mlfn", 7, width=0.5, stage_blocks=(1, 1, 1, 1), groups=8, embed_dim=32)
  variables = jax.eval_shape(lambda: models.get_spec("mlfn").init(model, jax.random.key(0), (64, 32)))
  with pytest.raises(ValueError, match=r"139 shape mismatches outside the classifiers") as e:
    checkpoints.init_from(variables, workdir, sharding.create_mesh())
  assert "batch_stats/block1_0/fm_bn1/mean: checkpoint (32,), network (64,)" in str(e.value)
  assert "... and 119 more" in str(e.value)

  config = config.copy_and_resolve_references()
  config.init_from = workdir
  with pytest.raises(config_schema.ConfigError, match=f"config.init_from='{workdir}': the checkpoint"):
    train.init_variables(config, model, jax.random.key(0))
