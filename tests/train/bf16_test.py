"""bfloat16 compute (`config.dtype='bfloat16'`): the train step tracks float32, the
state stays float32, and the evaluator gets float32 features."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax import config_schema, data, inference, models, optimizers, sharding, train

TINY = dict(width=0.25, stage_blocks=(1, 1, 1, 1), groups=8, embed_dim=32)
# Relative gap allowed between the bfloat16 and float32 losses over the first steps
# (measured: at most 0.6 % over 8 steps; bfloat16 keeps 8 bits of mantissa).
LOSS_RTOL = 0.03


def _config(dtype):
  config = config_schema.base_config("mlfn")
  config.image_size, config.dtype = (64, 32), dtype
  return config


def _train(dtype, steps=8):
  """(losses, final state) of the same tiny MLFN, init and batches in `dtype`."""
  config = _config(dtype)
  model = models.get_model("mlfn", 8, dtype=jnp.dtype(dtype), **TINY)
  mesh = sharding.create_mesh()
  variables = train.init_variables(config, model, jax.random.key(0))
  state = jax.device_put(
      train.state_from_variables(model, variables, optimizers.create_optimizer(config, 1e-3)),
      sharding.replicated(mesh))
  step = train.compile_train_step(mesh, models.get_spec("mlfn"), {})
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(8), 2).astype(np.int32)
  losses = []
  for _ in range(steps):
    images = rng.standard_normal((16, 64, 32, 3)).astype(np.float32) + 0.3 * labels[:, None, None, None]
    state, metrics = step(state, sharding.global_batch(mesh, {"image": images, "label": labels}),
                          jax.random.key(1))
    assert bool(metrics["finite"])
    losses.append(float(metrics["loss"]))
  return np.array(losses), state


@pytest.fixture(scope="module")
def runs():
  return {dtype: _train(dtype) for dtype in ("float32", "bfloat16")}


def test_bfloat16_losses_track_float32(runs):
  (reference, _), (losses, _) = runs["float32"], runs["bfloat16"]
  np.testing.assert_allclose(losses, reference, rtol=LOSS_RTOL)
  assert losses[-1] < losses[0]  # and it learns


def test_params_optimizer_and_batch_stats_stay_float32(runs):
  _, state = runs["bfloat16"]
  for tree in (state.params, state.batch_stats, state.opt_state):
    floats = {leaf.dtype for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)}
    assert floats == {jnp.dtype(jnp.float32)}


def test_evaluator_sees_float32_features(runs, synthetic_data_dir):
  _, state = runs["bfloat16"]
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  query = data.load_split(data.builder("synthetic_reid/small", synthetic_data_dir), "query")
  features = {}
  for dtype in ("float32", "bfloat16"):
    model = models.get_model("mlfn", 0, dtype=jnp.dtype(dtype), **TINY)
    config = _config(dtype)
    config.eval_batch_size = 256
    # The network itself returns float32, before extract_features' own cast.
    embedding = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 64, 32, 3))), variables)
    assert embedding["embedding"].dtype == jnp.float32
    features[dtype] = inference.extract_features(model, variables, query, config,
                                                 sharding.create_mesh())
  assert features["bfloat16"].dtype == np.float32
  unit = lambda f: f / np.linalg.norm(f, axis=1, keepdims=True)
  cosine = np.sum(unit(features["bfloat16"]) * unit(features["float32"]), axis=1)
  assert cosine.min() > 0.99, cosine.min()
