"""Evaluation: test features for query and gallery, retrieval metrics, reports.

`python -m reid_jax.evaluate --config=... --workdir=...` re-evaluates the latest
checkpoint of a workdir (with `--config.rerank=True` or
`--config.query_pooling=mean` for re-ranking or multi-query) and writes the
metrics JSON, a CMC curve and a ranked-list figure to `<workdir>/eval/`.
"""
import functools
import io
import json
import os

import jax
import numpy as np
import PIL.Image
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from reid_jax import data, metrics as retrieval, viz

REPORTED_RANKS = (1, 5, 10, 20)


@functools.lru_cache(maxsize=8)
def _embed_fn(model, flip, mesh):
  def embed(variables, images):
    features = model.apply(variables, images, train=False)["embedding"]
    if flip:  # average with the mirrored image's feature
      features = (features + model.apply(variables, images[:, :, ::-1], train=False)["embedding"]) / 2
    return features

  return jax.jit(embed, in_shardings=(NamedSharding(mesh, PartitionSpec()),
                                      NamedSharding(mesh, PartitionSpec("data"))),
                 out_shardings=NamedSharding(mesh, PartitionSpec("data")))


def extract_features(model, variables, split, config, mesh):
  """The [len(split), d] float32 test features of `split`, in split order."""
  from reid_jax import train  # late: train imports this module
  embed = _embed_fn(model, bool(config.flip_test), mesh)
  features = None
  for batch in data.eval_dataset(split, config.eval_batch_size, config.image_size).as_numpy_iterator():
    out = embed(variables, train.global_batch(mesh, {"image": batch["image"]})["image"])
    out = np.asarray(multihost_utils.process_allgather(out, tiled=True), np.float32)
    index = multihost_utils.process_allgather(batch["index"], tiled=True)
    valid = multihost_utils.process_allgather(batch["valid"], tiled=True)
    if features is None:
      features = np.zeros((len(split), out.shape[-1]), np.float32)
    features[index[valid]] = out[valid]
  return features


def evaluate_model(model, state, query, gallery, config, mesh, return_details=False):
  """Market-1501-protocol metrics of `state`'s model (DESIGN.md, "Evaluation protocol")."""
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  qf = extract_features(model, variables, query, config, mesh)
  gf = extract_features(model, variables, gallery, config, mesh)
  return retrieval.evaluate_features(
      qf, gf, query.person_ids, gallery.person_ids, query.camera_ids, gallery.camera_ids,
      metric=config.metric, max_rank=config.max_rank, query_pooling=config.query_pooling or None,
      rerank=config.rerank, k1=config.rerank_k1, k2=config.rerank_k2,
      lambda_value=config.rerank_lambda, return_details=return_details)


def scalar_summary(metrics):
  """rank-k, mAP and mINP as plain floats, for metric writers."""
  out = {f"rank{k}": float(metrics["cmc"][k - 1]) for k in REPORTED_RANKS if k <= len(metrics["cmc"])}
  out.update(mAP=float(metrics["mAP"]), mINP=float(metrics["mINP"]))
  return out


def format_metrics(metrics):
  s = scalar_summary(metrics)
  ranks = " | ".join(f"rank-{k} {s[f'rank{k}']:.1%}" for k in REPORTED_RANKS if f"rank{k}" in s)
  return f"{ranks} | mAP {s['mAP']:.1%} | mINP {s['mINP']:.1%}"


def _write_json_atomically(path, payload):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2)
  os.replace(tmp, path)


def write_metrics(workdir, step, metrics):
  """`<workdir>/eval/metrics_<step>.json` and `<workdir>/metrics.json` (the latest)."""
  payload = {"step": int(step), **scalar_summary(metrics),
             "cmc": [float(x) for x in metrics["cmc"]],
             "num_valid_queries": int(metrics["num_valid_queries"])}
  os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
  _write_json_atomically(os.path.join(workdir, "eval", f"metrics_{step}.json"), payload)
  _write_json_atomically(os.path.join(workdir, "metrics.json"), payload)
  return payload


class DecodedImages:
  """Lazily decoded images of a split, indexable like an array (for figures)."""

  def __init__(self, split):
    self.split = split

  def __getitem__(self, i):
    return np.asarray(PIL.Image.open(io.BytesIO(self.split.images[i])).convert("RGB"))


def _report_name(step, config):
  tags = [f"step{step}"]
  if config.query_pooling:
    tags.append(f"mq-{config.query_pooling}")
  if config.rerank:
    tags.append("rerank")
  return "_".join(tags)


def _query_images(query, metrics, config, rows):
  """The image shown for each ranked query; a pooled (multi-)query shows its first image."""
  if config.query_pooling:
    rows = metrics["query_indices"][rows]
  return [DecodedImages(query)[i] for i in rows]


def evaluate_workdir(config, workdir, num_ranked_queries=8):
  """Re-evaluates the latest checkpoint in `workdir`; writes `<workdir>/eval/<report>.json`,
  `.._cmc.png` and `.._ranked.png`. Returns the metrics."""
  from reid_jax import config_schema, train
  config_schema.validate(config)
  mesh = train.create_mesh()
  manager = train.checkpoint_manager(workdir, config)
  if manager.latest_step() is None:
    raise FileNotFoundError(f"No checkpoint in {os.path.join(workdir, 'checkpoints')}: "
                            "train first with `python -m reid_jax.main`.")
  dataset = data.builder(config.dataset, config.data_dir, config.manual_dir)
  query, gallery = data.load_split(dataset, "query"), data.load_split(dataset, "gallery")
  model, state, _, _ = train.create_train_state(
      config, int(dataset.info.metadata["num_classes"]), 1, mesh, manager)
  step = int(state.step)
  metrics = evaluate_model(model, state, query, gallery, config, mesh, return_details=True)

  name = _report_name(step, config)
  out = os.path.join(workdir, "eval")
  os.makedirs(out, exist_ok=True)
  payload = {"step": step, "rerank": bool(config.rerank), "query_pooling": config.query_pooling,
             "metric": config.metric, "flip_test": bool(config.flip_test),
             **scalar_summary(metrics), "cmc": [float(x) for x in metrics["cmc"]],
             "num_valid_queries": int(metrics["num_valid_queries"])}
  _write_json_atomically(os.path.join(out, f"{name}.json"), payload)
  viz.plot_cmc(metrics["cmc"], os.path.join(out, f"{name}_cmc.png"),
               title=f"{config.model} on {config.dataset}, step {step}")
  valid = np.flatnonzero(~np.isnan(metrics["ap"]))
  rows = valid[np.linspace(0, len(valid) - 1, min(num_ranked_queries, len(valid))).astype(int)]
  viz.plot_ranked_lists(_query_images(query, metrics, config, rows), DecodedImages(gallery),
                        metrics["ranked_indices"][rows], metrics["ranked_matches"][rows],
                        os.path.join(out, f"{name}_ranked.png"))
  return metrics


def main(argv):
  del argv
  import tensorflow as tf
  tf.config.set_visible_devices([], "GPU")  # tf.data only: leave accelerators to JAX
  from reid_jax import train
  train.quiet_checkpoint_logs()
  metrics = evaluate_workdir(_CONFIG.value, _WORKDIR.value, _NUM_RANKED.value)
  print(f"{_CONFIG.value.model} on {_CONFIG.value.dataset}: {format_metrics(metrics)}")


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags
  _CONFIG = config_flags.DEFINE_config_file("config", None, "The config the workdir was trained with.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by reid_jax.main.")
  _NUM_RANKED = flags.DEFINE_integer("num_ranked_queries", 8, "Queries in the ranked-list figure.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
