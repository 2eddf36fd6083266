"""Evaluation: test features for query and gallery, retrieval metrics, reports.

`evaluate_model` scores a network the way its `NetworkSpec.evaluation` says
('embedding': distances between test features, streamed through the exact block
evaluator `reid_jax.metrics.evaluate_features(**config.eval)`; 'pairwise': the
network's scores of encoded query and gallery images through the same evaluator,
`reid_jax.metrics.evaluate_scores(**config.pairwise)`).
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

from reid_jax import checkpoints, config_schema, data, inference, models, sharding, viz
from reid_jax import metrics as retrieval
from reid_jax.ops import kpm as kpm_ops

REPORTED_RANKS = (1, 5, 10, 20)


@functools.lru_cache(maxsize=8)
def _score_fn(model):
  def score(variables, query, gallery, q, g):
    take = lambda tree, idx: jax.tree.map(lambda a: jnp.take(a, idx, axis=0), tree)
    return model.apply(variables, take(query, q[None]), take(gallery, g), method="score")[0]

  return jax.jit(score)


def _evaluate_pairwise(model, variables, query, gallery, config, mesh, return_details):
  """`metrics.evaluate_scores(**config.pairwise)`: every image encoded once, the
  encodings kept on the devices, one query against a block of gallery items per
  call of `score`; the embedding (pooled backbone feature) is the cascade's
  first stage, compared by `config.eval.metric`."""
  encoded_q = inference.encode_split(model, variables, query, config, mesh)
  encoded_g = inference.encode_split(model, variables, gallery, config, mesh)
  qf, gf = encoded_q.pop("embedding"), encoded_g.pop("embedding")
  on_devices = lambda tree: jax.device_put(tree, sharding.replicated(mesh))
  encoded_q, encoded_g = on_devices(encoded_q), on_devices(encoded_g)
  score = _score_fn(model)

  def score_fn(q, g):
    return np.asarray(score(variables, encoded_q, encoded_g, np.int32(q), np.asarray(g, np.int32)))

  shared = {k: config.eval[k] for k in ("metric", "max_rank", "protocol", "num_repeats", "seed")}
  return retrieval.evaluate_scores(
      score_fn, len(gallery), query.person_ids, gallery.person_ids, query.camera_ids,
      gallery.camera_ids, qf=qf, gf=gf, return_details=return_details, **config.pairwise,
      **shared)


def _evaluate_embeddings(model, variables, query, gallery, config, mesh, return_details):
  qf = inference.extract_features(model, variables, query, config, mesh)
  gf = inference.extract_features(model, variables, gallery, config, mesh)
  return retrieval.evaluate_features(
      qf, gf, query.person_ids, gallery.person_ids, query.camera_ids, gallery.camera_ids,
      return_details=return_details, **config.eval)


# One scorer per `NetworkSpec.evaluation` kind.
_EVALUATORS = {"embedding": _evaluate_embeddings, "pairwise": _evaluate_pairwise}


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


def _scores_pairs(config):
  return models.get_spec(config.model).evaluation == "pairwise"


def _report_name(step, config):
  tags = [f"step{step}"]
  if _scores_pairs(config):
    tags.append(config.pairwise.mode)
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


def _plot_matching(model, variables, query, gallery, config, mesh, path):
  """KPM's Fig. 6 for each query image and the gallery image ranked first for it:
  the query's attention and the matching maps of three query positions down its
  middle column, at the finest scale."""
  encoded_q = inference.encode_split(model, variables, query, config, mesh)
  encoded_g = inference.encode_split(model, variables, gallery, config, mesh)
  x, y = encoded_q["maps"][-1], encoded_g["maps"][-1]
  num, h, w, channels = x.shape
  flat = lambda m: m.reshape(num, h * w, channels)
  beta = kpm_ops.matching(flat(x), flat(y), tau=model.tau)
  points = [(h // 4, w // 2), (h // 2, w // 2), (3 * h // 4, w // 2)]
  viz.plot_matching([DecodedImages(query)[i] for i in range(num)],
                    [DecodedImages(gallery)[i] for i in range(num)], beta,
                    encoded_q["alpha"][-1], (h, w), points, path)


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
  `.._cmc.png`, `.._ranked.png` and, for a pairwise network, `.._matching.png` (KPM
  Fig. 6). Returns the metrics.

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
               **({"pairwise": config.pairwise.to_dict()} if _scores_pairs(config) else {}),
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
    if _scores_pairs(config):
      shown = rows[:4]
      _plot_matching(model, variables, query.take(shown),
                     gallery.take(metrics["ranked_indices"][shown, 0]), config, mesh,
                     os.path.join(out, f"{name}_matching.png"))
  except OSError as e:
    raise WorkdirError(f"Cannot write the reports to {out}: {e.strerror or e}.") from None
  return metrics
