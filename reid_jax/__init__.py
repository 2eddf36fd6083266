"""Person re-identification networks (MLFN, MGN, JLML, MPN, KPM) in JAX/Flax."""
from reid_jax import losses, metrics, models, ops

__all__ = ["losses", "metrics", "models", "ops"]
__version__ = "0.1.0"
