"""Person re-identification networks (MLFN, MGN, JLML, MPN, KPM) in JAX/Flax."""
from reid_jax import losses, metrics, models, ops

__all__ = ["FeatureExtractor", "losses", "metrics", "models", "ops"]
__version__ = "0.1.0"


def __getattr__(name):
  # Imported on first use: it brings in TensorFlow (tf.data), which the rest does not need.
  if name == "FeatureExtractor":
    from reid_jax.extractor import FeatureExtractor
    return FeatureExtractor
  raise AttributeError(f"module 'reid_jax' has no attribute {name!r}")
