"""The training loop end to end: checkpoints, exact resume, metrics on disk."""
import json
import os
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from reid_jax import config_schema, sharding, train


def _final_params(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = manager.latest_step()
  restored = manager.restore(step)
  return step, restored


def test_resume_continues_exactly_where_it_stopped(tmp_path, tiny_mlfn_config):
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  train.train_and_evaluate(tiny_mlfn_config, straight)
  half = tiny_mlfn_config.copy_and_resolve_references()
  half.num_train_steps = 2          # a constant learning rate: stopping at 2 is a run to 2
  train.train_and_evaluate(half, resumed)
  assert _final_params(resumed)[0] == 2
  train.train_and_evaluate(tiny_mlfn_config, resumed)

  (step_a, a), (step_b, b) = _final_params(straight), _final_params(resumed)
  assert step_a == step_b == 4
  flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(flat_a) == len(flat_b) > 50
  for x, y in zip(flat_a, flat_b):
    np.testing.assert_array_equal(x, y)
  with open(os.path.join(resumed, "metrics.json")) as f:
    metrics = json.load(f)
  assert metrics["step"] == 4 and 0 <= metrics["mAP"] <= 1
  assert len(metrics["cmc"]) == tiny_mlfn_config.eval.max_rank
  assert sorted(os.listdir(os.path.join(resumed, "eval"))) == ["metrics_2.json", "metrics_4.json"]


def test_loss_goes_down_on_a_repeated_batch(tiny_mlfn_step):
  state, step, mesh = tiny_mlfn_step
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(mesh, {"image": rng.normal(size=(8, 64, 32, 3)).astype(np.float32),
                                    "label": np.repeat(np.arange(4), 2).astype(np.int32)})
  losses = []
  for _ in range(20):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.5 * losses[0]


def test_invalid_config_fails_before_anything_is_built(tmp_path, tiny_mlfn_config):
  tiny_mlfn_config.optimizer = "adagrad"
  with pytest.raises(ValueError, match=r"config.optimizer='adagrad'.*adam"):
    train.train_and_evaluate(tiny_mlfn_config, str(tmp_path))
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


@pytest.mark.parametrize("overrides, message", [
    (dict(p_identities=200), r"config.p_identities=200: the train split of 'synthetic_reid/small' "
                             r"has only 120 identities"),
    (dict(sampler="random", batch_size=5000), r"config.batch_size=5000: the train split of "
                                              r"'synthetic_reid/small' has only 1234 images"),
])
def test_values_the_data_cannot_serve_fail_once_it_loads_before_compiling(
    tmp_path, tiny_mlfn_config, overrides, message):
  tiny_mlfn_config.update(overrides)
  start = time.monotonic()
  with pytest.raises(config_schema.ConfigError, match=message):
    train.train_and_evaluate(tiny_mlfn_config, str(tmp_path))
  assert time.monotonic() - start < 15  # the dataset loads; nothing compiles
  assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))
