"""Feature extraction: every image once, in order, whatever the batch padding."""
import jax
import numpy as np
import pytest

from reid_jax import config_schema, data, inference, models, sharding


@pytest.fixture(scope="module")
def query_split(synthetic_data_dir):
  return data.load_split(data.builder("synthetic_reid/small", synthetic_data_dir), "query")


def _features(model, variables, split, batch_size, flip=False):
  config = config_schema.base_config("mlfn")
  config.image_size, config.eval_batch_size, config.flip_test = (64, 32), batch_size, flip
  return inference.extract_features(model, variables, split, config, sharding.create_mesh())


def test_features_do_not_depend_on_batching_or_padding(query_split, tiny_mlfn_config):
  model = models.get_model("mlfn", 10, **tiny_mlfn_config.model_kwargs)
  variables = model.init(jax.random.key(0), np.zeros((1, 64, 32, 3), np.float32))
  assert len(query_split) % 64 and len(query_split) < 512   # both runs pad
  small = _features(model, variables, query_split, 64)
  whole = _features(model, variables, query_split, 512)
  assert small.shape == (len(query_split), 32)
  np.testing.assert_allclose(small, whole, rtol=1e-5, atol=1e-6)
  # Every row is its own image's feature: rows differ from each other.
  assert len(np.unique(small.round(4), axis=0)) == len(query_split)

  flipped = _features(model, variables, query_split, 64, flip=True)
  (batch,) = data.eval_dataset(query_split, 512, (64, 32)).take(1).as_numpy_iterator()
  direct = model.apply(variables, batch["image"][:5])["embedding"]
  mirrored = model.apply(variables, batch["image"][:5, :, ::-1])["embedding"]
  np.testing.assert_allclose(flipped[:5], (direct + mirrored) / 2, rtol=1e-4, atol=1e-5)
