"""MPN starts from an IDE run (Sec. 5.1): `configs/ide.py` trains, `init_from` carries its backbone."""
import importlib.util
import os

import jax
import numpy as np
from flax import traverse_util

from reid_jax import checkpoints, models, sharding, train

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "configs")


def _config(name, data_dir):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("synthetic")
  c.dataset, c.data_dir, c.image_size = "synthetic_reid/small", data_dir, (64, 32)
  c.num_train_steps, c.num_epochs, c.lr_decay_epochs, c.lr_decay_steps = 1, -1, (), ()
  c.checkpoint_every_steps, c.eval_every_steps, c.eval_at_start = 1, 0, False
  c.eval_batch_size = 200
  return c


def test_mpn_initialised_from_an_ide_run_gets_its_backbone(tmp_path, synthetic_data_dir):
  ide = _config("ide", synthetic_data_dir)
  ide.batch_size = 8
  workdir = str(tmp_path / "ide")
  train.train_and_evaluate(ide, workdir)

  mpn = _config("mpn", synthetic_data_dir)
  mpn.init_from = workdir
  mpn.model_kwargs.num_parts = 2
  model = models.get_model("mpn", 120, **mpn.model_kwargs)
  warm = traverse_util.flatten_dict(train.init_variables(mpn, model, jax.random.key(3)), sep="/")
  source = traverse_util.flatten_dict(
      checkpoints.read_variables(checkpoints.find(workdir)[0], sharding.create_mesh()), sep="/")
  backbone = [k for k in warm if "/backbone/" in f"/{k}"]
  assert len(backbone) == len([k for k in source if "/backbone/" in f"/{k}"]) > 0
  for name in backbone:
    np.testing.assert_array_equal(warm[name], source[name])
  # The part tasks and the 2K classifiers are MPN's own: fresh.
  assert "params/part0/conv1/kernel" in warm and "params/part0/conv1/kernel" not in source
