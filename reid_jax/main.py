"""Trains and evaluates a network: `python -m reid_jax.main --config=configs/mlfn.py --workdir=...`.

`--mode=evaluate` re-evaluates the latest checkpoint of the workdir instead
(with e.g. `--config.eval.rerank=True`) and writes reports to `<workdir>/eval/`.
By default the console shows a progress line, each evaluation and the result;
`--verbosity=0` (or `--alsologtostderr`) gives absl's full INFO log instead.
`--distributed` trains on several hosts: the same command on each, every process
feeding its share of each global batch (see the README, "Multi-host").
"""
import sys

from reid_jax import console

console.quiet_native_logs(sys.argv)  # before TensorFlow is imported (here, and by clu and tfds)

import jax  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from reid_jax import (checkpoints, config_overrides, config_schema, data, evaluate,  # noqa: E402
                      interrupts, train, workdir_lock)
from reid_jax.data import market_layout  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/mlfn.py[:synthetic].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and reports go.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "evaluate"],
                          "train: train (or resume) and evaluate; evaluate: re-evaluate the "
                          "latest checkpoint of --workdir.")
_NUM_RANKED = flags.DEFINE_integer("num_ranked_queries", 8,
                                   "--mode=evaluate: queries in the ranked-list figure.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-host: call jax.distributed.initialize(), with the three flags "
    "below, or without them to auto-detect the cluster (Slurm, Open MPI, Cloud TPU).")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "--distributed: host:port of the coordinator service that "
    "process 0 starts and every process connects to.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "--distributed: how many processes run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "--distributed: this process's index, 0 to num_processes - 1.")
_CLUSTER_FLAGS = (_COORDINATOR_ADDRESS, _NUM_PROCESSES, _PROCESS_ID)
flags.mark_flags_as_required(["config", "workdir"])


def _parse_flags(argv):
  """absl flag parsing; an override of a key the config lacks names the keys it has."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError):
    override = next((a for a in argv[1:] if a.startswith("--config.")
                     and config_overrides.unknown_override(argv, a)), None)
    if override is None:
      raise
    sys.exit(f"error: {config_overrides.unknown_override(argv, override)}")


def _cluster_args():
  """`jax.distributed.initialize`'s keyword arguments from the cluster flags: all
  three, or none (auto-detection, or no --distributed). Exits naming a wrong flag."""
  given = {f.name: f.value for f in _CLUSTER_FLAGS if f.value is not None}
  if not given:
    return {}
  if not _DISTRIBUTED.value:
    sys.exit(f"error: --{next(iter(given))} needs --distributed.")
  missing = [f.name for f in _CLUSTER_FLAGS if f.name not in given]
  if missing:
    sys.exit(f"error: --{missing[0]} is missing: --distributed takes all of --coordinator_address, "
             "--num_processes and --process_id, or none of them (cluster auto-detection).")
  index, count = given["process_id"], given["num_processes"]
  if not 0 <= index < count:
    sys.exit(f"error: --process_id={index} must be at least 0 and below --num_processes={count}.")
  if not given["coordinator_address"].rpartition(":")[2].isdigit():
    sys.exit(f"error: --coordinator_address={given['coordinator_address']}: expected host:port.")
  return given


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cluster = _cluster_args()
  console.use_console(sys.argv)  # before the first device use: jax's backend probe logs at INFO
  # Neither call may come after the first use of a device (imports use none).
  tf.config.set_visible_devices([], "GPU")  # tf.data only: leave accelerators to JAX
  if _DISTRIBUTED.value:
    jax.distributed.initialize(**cluster)
  checkpoints.quiet_logs()
  config = _CONFIG.value
  try:
    if _MODE.value == "evaluate":
      metrics = evaluate.evaluate_workdir(config, _WORKDIR.value, _NUM_RANKED.value)
      print(f"{config.model} on {config.dataset}: {evaluate.format_metrics(metrics)}")
      return
    metrics = train.train_and_evaluate(config, _WORKDIR.value)
  except market_layout.DatasetNotFoundError as e:
    sys.exit(f"error: {e}\nWith reid_jax.main, --config.manual_dir=DIR names that folder.")
  except (config_schema.ConfigError, data.DataError, evaluate.WorkdirError,
          workdir_lock.WorkdirLockedError, train.NonFiniteError) as e:
    sys.exit(f"error: {e}")
  except interrupts.Interrupted as e:
    sys.stderr.write(f"{e}\n")
    sys.exit(128 + e.signum)
  logging.info("Final: %s", evaluate.format_metrics(metrics))
  print(f"Final evaluation on {config.dataset}: {evaluate.format_metrics(metrics)}")


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
