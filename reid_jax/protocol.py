"""Multi-partition protocols: train and evaluate on each partition, report mean and spread.

VIPeR and GRID (10 partitions) and CUHK03's classic protocol (20) are reported
in the papers as the mean over partitions (JLML Sec. 3, "Evaluation Protocol";
KPM Sec. 4.1; MLFN Sec. 4.2): for CUHK03 classic, the single-shot CMC averaged
over the gallery draws of each partition (`config.eval.protocol='cuhk03'`), then
over partitions.

  python -m reid_jax.protocol --config=configs/jlml.py --config.dataset=viper \\
      --workdir=runs/jlml_viper --splits=all

trains partition k in `<workdir>/split_<k>` (an ordinary run: it resumes, and a
finished one is only re-evaluated) and writes `<workdir>/protocol.json` and
`protocol.md`: each metric per partition, its mean and its sample standard
deviation (ddof=1; 0 for one partition). `run_protocol` is the library entry.
"""
import copy
import os
import sys

from reid_jax import console

if __name__ == "__main__":
  console.quiet_native_logs(sys.argv)  # before TensorFlow is imported

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from reid_jax import (checkpoints, config_schema, data, evaluate, interrupts, reports,  # noqa: E402
                      train, workdir_lock)

SUMMARY_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


class SplitsError(ValueError):
  """A --splits value that names no partitions of the dataset."""


def parse_splits(splits: str, count: int) -> list[int]:
  """'all' -> [0, ..., count - 1]; '0,3' -> [0, 3]; raises SplitsError naming a bad one."""
  if splits.strip() == "all":
    return list(range(count))
  try:
    chosen = [int(s) for s in splits.split(",")]
  except ValueError:
    raise SplitsError(f"--splits={splits}: expected 'all' or partition numbers such as 0,3,5."
                     ) from None
  bad = [k for k in chosen if not 0 <= k < count]
  if bad or len(set(chosen)) != len(chosen):
    raise SplitsError(f"--splits={splits}: the dataset has partitions 0 to {count - 1}, each "
                     "named once.")
  return chosen


def summarize(per_split: dict[int, dict]) -> dict:
  """Mean and sample standard deviation over partitions of each scalar metric and
  of the CMC curve. per_split: partition -> `evaluate.scalar_summary` plus 'cmc'."""
  runs = list(per_split.values())
  spread = lambda x: np.std(x, axis=0, ddof=1) if len(x) > 1 else np.zeros_like(x[0])
  keys = [k for k in SUMMARY_KEYS if all(k in r for r in runs)]
  values = {k: np.array([r[k] for r in runs], np.float64) for k in keys}
  cmc = np.array([r["cmc"] for r in runs], np.float64)
  return {"num_splits": len(runs),
          "mean": {k: float(v.mean()) for k, v in values.items()},
          "std": {k: float(spread(v)) for k, v in values.items()},
          "cmc_mean": cmc.mean(0).tolist(), "cmc_std": spread(cmc).tolist()}


def markdown(dataset: str, per_split: dict[int, dict], summary: dict) -> str:
  keys = list(summary["mean"])
  rows = [f"| {k} | " + " | ".join(f"{m[key]:.2%}" for key in keys) + " |"
          for k, m in per_split.items()]
  rows.append("| mean ± std | " + " | ".join(
      f"{summary['mean'][key]:.2%} ± {summary['std'][key]:.2%}" for key in keys) + " |")
  return "\n".join([f"# {dataset}: {summary['num_splits']} partitions", "",
                    "| partition | " + " | ".join(keys) + " |",
                    "|---" * (len(keys) + 1) + "|", *rows, ""])


def run_protocol(config, workdir: str, splits: str = "all") -> dict:
  """Trains and evaluates `config` on each partition `splits` names (see
  `parse_splits`) and writes the protocol files; returns protocol.json's payload."""
  first = data.sources.names(config.dataset)[0]
  count = data.partitions.num_partitions(
      data.builder(first, config.data_dir, config.manual_dir).info)
  per_split = {}
  for k in parse_splits(splits, count):
    split_config = copy.deepcopy(config)
    split_config.split = k
    metrics = train.train_and_evaluate(split_config, os.path.join(workdir, f"split_{k}"))
    per_split[k] = {**evaluate.scalar_summary(metrics),
                    "cmc": [float(x) for x in metrics["cmc"]]}
  summary = summarize(per_split)
  payload = {"dataset": config.dataset, "model": config.model,
             "eval_protocol": config.eval.protocol, **summary,
             "per_split": {str(k): v for k, v in per_split.items()}}
  os.makedirs(workdir, exist_ok=True)
  reports.write_json_atomically(os.path.join(workdir, "protocol.json"), payload)
  reports.write_text_atomically(os.path.join(workdir, "protocol.md"),
                                markdown(config.dataset, per_split, summary))
  return payload


def format_summary(payload: dict) -> str:
  """'rank-1 45.1% ± 2.3% | ... over 10 partitions'."""
  names = {"rank1": "rank-1", "rank5": "rank-5", "rank10": "rank-10", "rank20": "rank-20"}
  parts = [f"{names.get(k, k)} {payload['mean'][k]:.1%} ± {payload['std'][k]:.1%}"
           for k in payload["mean"] if k in ("rank1", "rank5", "rank10", "mAP")]
  return " | ".join(parts) + f" (over {payload['num_splits']} partitions)"


def _main():
  """Defines the flags (only when run: importing this module defines none) and runs
  `run_protocol`."""
  config = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/jlml.py.")
  workdir = flags.DEFINE_string("workdir", None, "Partition k trains in <workdir>/split_<k>.")
  splits = flags.DEFINE_string("splits", "all", "'all', or partitions such as 0,3,5.")
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    console.use_console(sys.argv)
    tf.config.set_visible_devices([], "GPU")  # tf.data only: leave accelerators to JAX
    checkpoints.quiet_logs()
    c = config.value
    try:
      payload = run_protocol(c, workdir.value, splits.value)
    except data.manual.DatasetNotFoundError as e:
      sys.exit(f"error: {e}\nWith reid_jax.protocol, --config.manual_dir=DIR names that folder.")
    except (config_schema.ConfigError, data.DataError, workdir_lock.WorkdirLockedError,
            train.NonFiniteError, SplitsError) as e:
      sys.exit(f"error: {e}")
    except interrupts.Interrupted as e:
      sys.stderr.write(f"{e}\n")
      sys.exit(128 + e.signum)
    print(f"{c.model} on {c.dataset}: {format_summary(payload)}; "
          f"{os.path.join(workdir.value, 'protocol.json')}")

  app.run(main)


if __name__ == "__main__":
  _main()
