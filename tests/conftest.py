"""Shared fixtures: the embedded synthetic_reid dataset, built once per session.

Tests compile the same small programs many times (every training run jits its
init, step and feature extractor afresh), so they share JAX's persistent
compilation cache, subprocesses included (through the environment).
"""
import os
import tempfile

import pytest

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "reid_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax

from reid_jax import config_schema, models, optimizers, sharding, train


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
  """A tfds data_dir holding the prepared synthetic_reid/small."""
  from reid_jax import data
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  data.builder("synthetic_reid/small", data_dir)
  return data_dir


@pytest.fixture
def tiny_mlfn_config(synthetic_data_dir):
  """A seconds-per-step MLFN training config on synthetic_reid/small."""
  c = config_schema.base_config("mlfn")
  c.model_kwargs = dict(width=0.25, stage_blocks=(1, 1, 1, 1), groups=8, embed_dim=32)
  c.dataset = "synthetic_reid/small"
  c.data_dir = synthetic_data_dir
  c.image_size = (64, 32)
  c.p_identities, c.k_instances = 4, 2
  c.eval_batch_size = 200
  c.learning_rate = 1e-3
  c.num_train_steps = 4
  c.checkpoint_every_steps = 2
  c.eval_every_steps = 0
  c.log_every_steps = 1
  return c


@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory, synthetic_data_dir):
  """(config, workdir) of a tiny MLFN trained for 2 steps on synthetic_reid/small
  (120 classes), with checkpoints at steps 1 and 2."""
  c = config_schema.base_config("mlfn")
  c.model_kwargs = dict(width=0.25, stage_blocks=(1, 1, 1, 1), groups=8, embed_dim=32)
  c.dataset, c.data_dir, c.image_size = "synthetic_reid/small", synthetic_data_dir, (64, 32)
  c.p_identities, c.k_instances, c.eval_batch_size = 4, 2, 200
  c.num_train_steps, c.checkpoint_every_steps, c.eval_every_steps = 2, 1, 0
  workdir = str(tmp_path_factory.mktemp("run"))
  train.train_and_evaluate(c, workdir)
  return c, workdir


@pytest.fixture
def tiny_mlfn_step():
  """(state, jitted train step, mesh) of a tiny 4-class MLFN at 64x32, Adam 5e-3."""
  config = config_schema.base_config("mlfn")
  config.image_size = (64, 32)
  model = models.get_model("mlfn", 4, width=0.25, stage_blocks=(1, 1, 1, 1), groups=8, embed_dim=32)
  mesh = sharding.create_mesh()
  variables = train.init_variables(config, model, jax.random.key(0))
  state = jax.device_put(
      train.state_from_variables(model, variables, optimizers.create_optimizer(config, 5e-3)),
      sharding.replicated(mesh))
  return state, train.compile_train_step(mesh, models.get_spec("mlfn"), {}), mesh
