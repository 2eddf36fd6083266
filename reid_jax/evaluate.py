"""Evaluation: test features for query and gallery, retrieval metrics, reports.

`python -m reid_jax.evaluate --config=... --workdir=...` re-evaluates the latest
checkpoint of a workdir (with `--config.rerank=True` or
`--config.query_pooling=mean` for re-ranking or multi-query) and writes the
metrics JSON, a CMC curve and a ranked-list figure to `<workdir>/eval/`.
"""
import functools
import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from reid_jax import data, metrics as retrieval

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
