"""`python -m reid_jax.evaluate`: the reports of a run's latest checkpoint (--workdir)
or of the weights --config.init_from names (another run, or a torchreid .pth/.pth.tar),
written by `reid_jax.evaluate`. The flags are defined only when this runs: library
modules define none."""
import sys

import tensorflow as tf
from absl import app, flags
from ml_collections import config_flags

from reid_jax import checkpoints, config_overrides, config_schema, console, data, evaluate, pretrained
from reid_jax.data import market_layout


def run():
  """Defines the flags, then runs `evaluate_workdir` or `evaluate_weights`."""
  config = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/mlfn.py.")
  workdir = flags.DEFINE_string("workdir", None, "A run: evaluate its latest checkpoint.")
  out = flags.DEFINE_string("out", None, "Folder for the reports (default: <workdir>/eval, or "
                            "./eval_<weights name> for config.init_from).")
  num_ranked = flags.DEFINE_integer("num_ranked_queries", 8, "Queries in the ranked-list figure.")
  flags.mark_flag_as_required("config")

  def parse(argv):  # an unknown --config.KEY names the keys there are, as in reid_jax.main
    try:
      return flags.FLAGS(argv)
    except (AttributeError, KeyError):
      found = [config_overrides.unknown_override(argv, a) for a in argv[1:] if a.startswith("--config.")]
      if not any(found):
        raise
      sys.exit(f"error: {next(m for m in found if m)}")

  def main(argv):
    c = config.value
    if len(argv) > 1 or bool(workdir.value) == bool(c.init_from):
      sys.exit("error: evaluate either --workdir=<a run> or --config.init_from=<a run, or a "
               f"torchreid .pth/.pth.tar>, one of them{f'; unexpected {argv[1:]}' if argv[1:] else ''}.")
    tf.config.set_visible_devices([], "GPU")  # tf.data only: leave accelerators to JAX
    console.use_console(sys.argv)  # as reid_jax.main: the result only, unless a log flag is given
    checkpoints.quiet_logs()
    try:
      if workdir.value:
        metrics = evaluate.evaluate_workdir(c, workdir.value, num_ranked.value, out.value)
      else:
        metrics = evaluate.evaluate_weights(c, out.value or f"eval_{pretrained.weights_name(c.init_from)}",
                                   num_ranked.value)
    except market_layout.DatasetNotFoundError as e:
      sys.exit(f"error: {e}\nWith reid_jax.evaluate, --config.manual_dir=DIR names that folder.")
    except (config_schema.ConfigError, data.DataError, evaluate.WorkdirError) as e:
      sys.exit(f"error: {e}")
    print(f"{c.model} on {c.dataset}: {evaluate.format_metrics(metrics)}")
    if metrics.get("tpr_at_fpr"):
      print("TPR at FPR " + ", ".join(f"{f}: {t:.1%}" for f, t in metrics["tpr_at_fpr"].items()))

  app.run(main, flags_parser=parse)

