"""Trains and evaluates a network: `python -m reid_jax.main --config=configs/mlfn.py --workdir=...`."""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/mlfn.py[:synthetic].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and reports go.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-host: call jax.distributed.initialize() (cluster auto-detection).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")  # tf.data only: leave accelerators to JAX
  if _DISTRIBUTED.value:
    import jax
    jax.distributed.initialize()
  from reid_jax import evaluate, train
  from reid_jax.data import market_layout
  train.quiet_checkpoint_logs()
  try:
    metrics = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except market_layout.DatasetNotFoundError as e:
    sys.exit(f"error: {e}\nWith reid_jax.main, --config.manual_dir=DIR names that folder.")
  logging.info("Final: %s", evaluate.format_metrics(metrics))
  print(f"Final evaluation on {_CONFIG.value.dataset}: {evaluate.format_metrics(metrics)}")


if __name__ == "__main__":
  app.run(main)
