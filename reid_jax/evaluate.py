"""Evaluation: test features for query and gallery, retrieval metrics, reports.

`evaluate_model` scores a network the way its `NetworkSpec.evaluation` says
('embedding': distances between test features, streamed through the exact block
evaluator `reid_jax.metrics.evaluate_features(**config.eval)`).
`evaluate_workdir` re-evaluates the latest checkpoint of a workdir (with
`config.eval.rerank` or `config.eval.query_pooling` for re-ranking or
multi-query) and writes the metrics JSON, a CMC curve and a ranked-list figure to
`<workdir>/eval/`; `python -m reid_jax.main --mode=evaluate` runs it.
"""
import functools
import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
from absl import logging
from jax.experimental import multihost_utils

from reid_jax import checkpoints, config_schema, data, models, sharding, viz
from reid_jax import metrics as retrieval

REPORTED_RANKS = (1, 5, 10, 20)


@functools.lru_cache(maxsize=8)
def _embed_fn(model, spec, flip, mesh):
  def embed(variables, inputs):
    def features(inputs):
      args, kwargs = spec.apply_inputs(inputs)
      return model.apply(variables, *args, train=False, **kwargs)["embedding"]
    out = features(inputs)
    if flip:  # average with the mirrored image's feature
      out = (out + features(jax.tree.map(lambda x: x[:, :, ::-1], inputs))) / 2
    return out

  return jax.jit(embed, in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=sharding.batch_sharded(mesh))


def extract_features(model, variables, split, config, mesh):
  """The [len(split), d] float32 test features of `split`, in split order."""
  spec = models.get_spec(config.model)
  embed = _embed_fn(model, spec, bool(config.flip_test), mesh)
  features = None
  for batch in data.eval_batches(split, config.eval_batch_size, config.image_size):
    inputs = {k: batch[k] for k in spec.input_keys}  # test-time inputs only (no masks)
    out = embed(variables, sharding.global_batch(mesh, inputs))
    out = np.asarray(multihost_utils.process_allgather(out, tiled=True), np.float32)
    index = multihost_utils.process_allgather(batch["index"], tiled=True)
    valid = multihost_utils.process_allgather(batch["valid"], tiled=True)
    if features is None:
      features = np.zeros((len(split), out.shape[-1]), np.float32)
    features[index[valid]] = out[valid]
  return features


def _evaluate_embeddings(model, variables, query, gallery, config, mesh, return_details):
  qf = extract_features(model, variables, query, config, mesh)
  gf = extract_features(model, variables, gallery, config, mesh)
  return retrieval.evaluate_features(
      qf, gf, query.person_ids, gallery.person_ids, query.camera_ids, gallery.camera_ids,
      return_details=return_details, **config.eval)


# One scorer per `NetworkSpec.evaluation` kind.
_EVALUATORS = {"embedding": _evaluate_embeddings}


def evaluate_model(model, variables, query, gallery, config, mesh, return_details=False):
  """Retrieval metrics of `model` with `variables` ({'params', 'batch_stats'}) on
  query against gallery, under `config.eval` (the protocol is the README's
  "Evaluation" section)."""
  kind = models.get_spec(config.model).evaluation
  return _EVALUATORS[kind](model, variables, query, gallery, config, mesh, return_details)


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
  if config.eval.query_pooling:
    tags.append(f"mq-{config.eval.query_pooling}")
  if config.eval.rerank:
    tags.append("rerank")
  return "_".join(tags)


def _query_images(query, metrics, config, rows):
  """The image shown for each ranked query; a pooled (multi-)query shows its first image."""
  if config.eval.query_pooling:
    rows = metrics["query_indices"][rows]
  return [DecodedImages(query)[i] for i in rows]


class WorkdirError(OSError):
  """A workdir that cannot be evaluated (absent, no checkpoint) or written to."""


def _read_checkpoint(config, workdir, mesh):
  """(variables, step, model) of the latest checkpoint in `workdir`, without classifiers;
  raises WorkdirError without creating anything, or ConfigError when the config
  describes another network than the checkpoint holds."""
  if not os.path.isdir(workdir):
    raise WorkdirError(f"The workdir {workdir} does not exist.")
  try:
    step_dir, step = checkpoints.find(workdir)
  except FileNotFoundError:
    raise WorkdirError(f"No checkpoint in {os.path.join(workdir, 'checkpoints')}: "
                       "train first with `python -m reid_jax.main`.") from None
  model = models.get_model(config.model, 0, dtype=jnp.dtype(config.dtype),
                           **config.model_kwargs)
  spec = models.get_spec(config.model)
  abstract = jax.eval_shape(lambda: spec.init(model, jax.random.key(0), tuple(config.image_size)))
  try:
    variables = checkpoints.read_variables(step_dir, mesh, like=abstract)
  except ValueError as e:
    kwargs = dict(config.model_kwargs)
    raise config_schema.ConfigError(
        f"config.model={config.model!r} (model_kwargs {kwargs}): {e} Evaluate with the "
        "config the run was trained with (its workdir's config.json).") from None
  return variables, step, model


def evaluate_workdir(config, workdir, num_ranked_queries=8):
  """Re-evaluates the latest checkpoint in `workdir`; writes `<workdir>/eval/<report>.json`,
  `.._cmc.png` and `.._ranked.png`. Returns the metrics.

  Only `params` and `batch_stats` are read (no optimiser is built), and no
  classifier: a run trained on one dataset evaluates on another. The metrics are
  logged before any report is written; a report that cannot be written raises
  WorkdirError.
  """
  config_schema.validate(config)
  mesh = sharding.create_mesh()
  variables, step, model = _read_checkpoint(config, workdir, mesh)
  dataset = data.builder(config.dataset, config.data_dir, config.manual_dir)
  query, gallery = data.load_split(dataset, "query"), data.load_split(dataset, "gallery")
  metrics = evaluate_model(model, variables, query, gallery, config, mesh, return_details=True)
  logging.info("%s on %s, step %d | %s", config.model, config.dataset, step,
               format_metrics(metrics))
  name = _report_name(step, config)
  out = os.path.join(workdir, "eval")
  try:
    os.makedirs(out, exist_ok=True)
    payload = {"step": step, "eval": config.eval.to_dict(), "flip_test": bool(config.flip_test),
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
  except OSError as e:
    raise WorkdirError(f"Cannot write the reports to {out}: {e.strerror or e}.") from None
  return metrics
