"""Exports of every registered network reload and give the JAX features at any batch size."""
import jax
import numpy as np
import pytest
import tensorflow as tf

from reid_jax import config_schema, extractor, models, serving

# Tiny widths of each network (as tests/models use), at 64x32.
TINY = {
    "mlfn": dict(width=0.25, stage_blocks=(1, 1, 1, 1), groups=8, embed_dim=32),
    "mgn": dict(width=0.125, stage_blocks=(1, 1, 2, 1)),
    "jlml": dict(width=0.25, stage_blocks=(1, 1, 1, 1)),
    "mpn": dict(width=0.125, stage_blocks=(1, 1, 1, 1), num_parts=4),
    "resnet50": dict(width=0.125, stage_blocks=(1, 1, 1, 1)),
    "kpm": dict(width=0.25, stage_blocks=(1, 1, 1, 1)),
}
BATCH_SIZES = (1, 3, 8)
# Both formats lower the same `jax.export` module (jax2tf with native serialization), so
# the SavedModel's batch sweep (one TF compilation per size) runs on the flip-averaged
# ResNet-50 only; every other network's SavedModel is checked at batch 3.
SAVEDMODEL_BATCH_SIZES = {"resnet50": BATCH_SIZES}
# Largest |export - JAX| relative to the largest |JAX feature entry|: the exports run
# the network's XLA program compiled apart from the evaluation's (and normalise in XLA
# rather than tf.data), so only float32 rounding may differ.
TOLERANCE = 1e-5


def test_every_registered_network_has_a_tiny_export_case():
  assert sorted(TINY) == models.names()


def _variables(name, seed=0):
  """Random variables of the tiny network: He-scaled kernels, and BatchNorm statistics
  away from their initial 0 / 1 so that the exports' use of them is checked too. (Drawn
  in numpy: compiling `init`'s random initialisers takes longer than the exports.)"""
  model = models.get_model(name, 0, **TINY[name])
  shapes = jax.eval_shape(lambda: models.get_spec(name).init(model, jax.random.key(0), (64, 32)))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    kind, shape = path[-1].key, leaf.shape
    if kind == "var":
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if kind == "scale":
      return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    if kind in ("mean", "bias"):
      return rng.normal(0.0, 0.1, shape).astype(np.float32)
    fan_in = int(np.prod(shape[:-1])) or 1
    return (rng.normal(0.0, 1.0, shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _extractor(name, flip):
  config = config_schema.base_config(name)
  config.model_kwargs, config.image_size, config.eval_batch_size = TINY[name], (64, 32), 8
  config.flip_test = flip
  return extractor.FeatureExtractor(config, variables=_variables(name))


def _images(n, seed):
  return np.random.default_rng(seed).integers(0, 256, (n, 64, 32, 3), np.uint8)


@pytest.mark.parametrize("name", sorted(TINY))
def test_both_exports_reload_and_give_the_evaluations_features(name, tmp_path):
  extract = _extractor(name, flip=name == "resnet50")   # the flip-averaged path, once
  serving.export(extract, "stablehlo", str(tmp_path / "stablehlo"))
  with open(tmp_path / "stablehlo" / serving.STABLEHLO_FILE, "rb") as f:
    stablehlo = jax.export.deserialize(f.read())
  saved = tf.saved_model.load(serving.export(extract, "savedmodel", str(tmp_path / "saved")))
  serve = saved.signatures["serving_default"]
  images = {batch: _images(batch, seed=batch) for batch in BATCH_SIZES}
  expected = np.split(extract(np.concatenate(list(images.values()))),   # the evaluation's
                      np.cumsum(BATCH_SIZES)[:-1])
  worst = {"stablehlo": 0.0, "savedmodel": 0.0}
  scale = max(float(np.abs(want).max()) for want in expected)
  for batch, want in zip(BATCH_SIZES, expected):
    got = {"stablehlo": np.asarray(stablehlo.call(images[batch]))}
    if batch in SAVEDMODEL_BATCH_SIZES.get(name, (3,)):
      got["savedmodel"] = serve(image=tf.constant(images[batch]))["embedding"].numpy()
    for fmt, features in got.items():
      assert features.shape == want.shape and features.dtype == np.float32
      worst[fmt] = max(worst[fmt], float(np.abs(features - want).max()))
  print(f"{name}: max |export - JAX|: "
        + ", ".join(f"{fmt} {diff:.2g} ({diff / scale:.2g} of {scale:.3g})"
                    for fmt, diff in worst.items()))
  assert max(worst.values()) < TOLERANCE * scale, (worst, scale)
