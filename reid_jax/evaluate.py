"""Evaluation: test features for query and gallery, retrieval metrics, reports.

`evaluate_model` scores a network the way its `NetworkSpec.evaluation` says
('embedding': distances between test features through the exact block evaluator
`metrics.evaluate_features(**config.eval)`; 'pairwise': the network's scores of
encoded images through `metrics.evaluate_scores(**config.pairwise)`).
`evaluate_workdir` re-evaluates a workdir's latest checkpoint, `evaluate_weights`
the weights `config.init_from` names (another run, or a torchreid model-zoo file);
both write the files of `reid_jax.reports`. `python -m reid_jax.main --mode=evaluate`
runs the first, `python -m reid_jax.evaluate` (`evaluate_cli`: --workdir or
--config.init_from) either.
"""
import functools
import io
import os
import sys

from reid_jax import console

if __name__ == "__main__":
  console.quiet_native_logs(sys.argv)  # before TensorFlow is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
from absl import logging  # noqa: E402

from reid_jax import (  # noqa: E402
    checkpoints, classification, config_schema, datasets, inference, models, pretrained,
    reports, sharding)
from reid_jax import metrics as retrieval  # noqa: E402

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
  # 'full' scores every pair: with details, their -scores are kept as the distances.
  keep = return_details and config.pairwise.mode == "full"
  distmat = np.zeros((len(query), len(gallery)), np.float32) if keep else None

  def score_fn(q, g):
    s = np.asarray(score(variables, encoded_q, encoded_g, np.int32(q), np.asarray(g, np.int32)))
    if keep:
      distmat[q, g] = -s
    return s

  shared = {k: config.eval[k] for k in ("metric", "max_rank", "protocol", "num_repeats", "seed")}
  out = retrieval.evaluate_scores(
      score_fn, len(gallery), query.person_ids, gallery.person_ids, query.camera_ids,
      gallery.camera_ids, qf=qf, gf=gf, return_details=return_details, **config.pairwise,
      **shared)
  return {**out, "distmat": distmat} if keep else out


def _evaluate_embeddings(model, variables, query, gallery, config, mesh, return_details):
  qf = inference.extract_features(model, variables, query, config, mesh)
  gf = inference.extract_features(model, variables, gallery, config, mesh)
  out = retrieval.evaluate_features(
      qf, gf, query.person_ids, gallery.person_ids, query.camera_ids, gallery.camera_ids,
      return_details=return_details, **config.eval)
  if return_details:  # the [Q, G] `metric` distances (of the pooled queries), not re-ranked
    if config.eval.query_pooling:
      qf = retrieval.pool_queries(qf, query.person_ids, query.camera_ids,
                                  config.eval.query_pooling)[0]
    out["distmat"] = retrieval.pairwise_distance(qf, gf, config.eval.metric)
  return out


# One scorer per `NetworkSpec.evaluation` kind.
_EVALUATORS = {"embedding": _evaluate_embeddings, "pairwise": _evaluate_pairwise}


def evaluate_model(model, variables, query, gallery, config, mesh, return_details=False):
  """Retrieval metrics of `model` with `variables` ({'params', 'batch_stats'}) on
  query against gallery, under `config.eval` (the protocol is the README's
  "Evaluation" section). With `return_details` also the per-query details of
  `metrics.evaluate_rank` and, where the network's distances of every pair are
  known, 'distmat' [Q, G] (see `reid_jax.reports`)."""
  kind = models.get_spec(config.model).evaluation
  return _EVALUATORS[kind](model, variables, query, gallery, config, mesh, return_details)


def scalar_summary(metrics):
  """rank-k, mAP and mINP as plain floats, for metric writers (the top-k errors of
  task='classification', `reid_jax.classification`, which the next two report too)."""
  if classification.is_classification(metrics):
    return classification.scalar_summary(metrics)
  out = {f"rank{k}": float(metrics["cmc"][k - 1]) for k in REPORTED_RANKS if k <= len(metrics["cmc"])}
  out.update(mAP=float(metrics["mAP"]), mINP=float(metrics["mINP"]))
  return out


def format_metrics(metrics):
  if classification.is_classification(metrics):
    return classification.format_metrics(metrics)
  s = scalar_summary(metrics)
  ranks = " | ".join(f"rank-{k} {s[f'rank{k}']:.1%}" for k in REPORTED_RANKS if f"rank{k}" in s)
  return f"{ranks} | mAP {s['mAP']:.1%} | mINP {s['mINP']:.1%}"


def write_metrics(workdir, step, metrics):
  """`<workdir>/eval/metrics_<step>.json` and `<workdir>/metrics.json` (the latest)."""
  if classification.is_classification(metrics):
    return classification.write_metrics(workdir, step, metrics)
  payload = {"step": int(step), **scalar_summary(metrics),
             "cmc": [float(x) for x in metrics["cmc"]],
             "num_valid_queries": int(metrics["num_valid_queries"])}
  os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
  reports.write_json_atomically(os.path.join(workdir, "eval", f"metrics_{step}.json"), payload)
  reports.write_json_atomically(os.path.join(workdir, "metrics.json"), payload)
  return payload


class DecodedImages:
  """Lazily decoded images of a split, indexable like an array (for figures);
  with `indices`, item i is the split's image indices[i]."""

  def __init__(self, split, indices=None):
    self.split, self.indices = split, indices

  def __getitem__(self, i):
    i = i if self.indices is None else self.indices[i]
    return np.asarray(PIL.Image.open(io.BytesIO(self.split.images[i])).convert("RGB"))


def _scores_pairs(config):
  return models.get_spec(config.model).evaluation == "pairwise"


def _report_name(label, config):
  tags = [label, _scores_pairs(config) and config.pairwise.mode,
          config.eval.query_pooling and f"mq-{config.eval.query_pooling}",
          config.eval.rerank and "rerank"]
  return "_".join(t for t in tags if t)


class WorkdirError(OSError):
  """A workdir that cannot be evaluated (absent, no checkpoint) or written to."""


def _model_shapes(config, num_classes=0):
  """The configured network (without classifiers by default), and the shapes of its variables."""
  model = models.get_model(config.model, num_classes, dtype=jnp.dtype(config.dtype),
                           **config.model_kwargs)
  spec = models.get_spec(config.model)
  return model, jax.eval_shape(lambda: spec.init(model, jax.random.key(0), tuple(config.image_size)))


def _read_checkpoint(config, workdir, mesh, num_classes=0):
  """(variables, step, model) of the latest checkpoint in `workdir`, without classifiers
  unless `num_classes` is given; raises WorkdirError without creating anything, or
  ConfigError when the config describes another network than the checkpoint holds."""
  if not os.path.isdir(workdir):
    raise WorkdirError(f"The workdir {workdir} does not exist.")
  try:
    step_dir, step = checkpoints.find(workdir)
  except FileNotFoundError:
    raise WorkdirError(f"No checkpoint in {os.path.join(workdir, 'checkpoints')}: "
                       "train first with `python -m reid_jax.main`.") from None
  model, abstract = _model_shapes(config, num_classes)
  try:
    variables = checkpoints.read_variables(step_dir, mesh, like=abstract)
  except ValueError as e:
    kwargs = dict(config.model_kwargs)
    raise config_schema.ConfigError(
        f"config.model={config.model!r} (model_kwargs {kwargs}): {e} Evaluate with the "
        "config the run was trained with (its workdir's config.json).") from None
  return variables, step, model


def _evaluate_and_report(config, model, variables, mesh, label, out, num_ranked_queries,
                         step=None):
  """`evaluate_model` on the config's query and gallery, logged, then `reports.write`
  to the folder `out` (and KPM's Fig. 6; the JSON holds `step` when one is given);
  OSError -> WorkdirError."""
  reid = datasets.load(config, splits=("query", "gallery"))
  query, gallery = reid.query, reid.gallery
  metrics = evaluate_model(model, variables, query, gallery, config, mesh, return_details=True)
  logging.info("%s on %s, %s | %s", config.model, config.dataset, label, format_metrics(metrics))
  pooled = bool(config.eval.query_pooling)
  labels = (metrics["query_pids"] if pooled else query.person_ids, gallery.person_ids,
            metrics["query_camids"] if pooled else query.camera_ids, gallery.camera_ids)
  payload = {**({"step": int(step)} if step is not None else {}),
             "eval": config.eval.to_dict(), "flip_test": bool(config.flip_test),
             **({"pairwise": config.pairwise.to_dict()} if _scores_pairs(config) else {}),
             **scalar_summary(metrics), "cmc": [float(x) for x in metrics["cmc"]],
             "num_valid_queries": int(metrics["num_valid_queries"])}
  name = _report_name(label.replace(" ", ""), config)
  try:
    payload, rows = reports.write(
        out, name, payload, metrics, labels,
        DecodedImages(query, metrics["query_indices"] if pooled else None),
        DecodedImages(gallery), f"{config.model} on {config.dataset}, {label}", num_ranked_queries)
    if _scores_pairs(config):
      shown = rows[:4]
      reports.plot_matching(model, variables, query.take(shown),
                            gallery.take(metrics["ranked_indices"][shown, 0]), config, mesh,
                            os.path.join(out, f"{name}_matching.png"), DecodedImages)
  except OSError as e:
    raise WorkdirError(f"Cannot write the reports to {out}: {e.strerror or e}.") from None
  return {**metrics, "tpr_at_fpr": payload.get("tpr_at_fpr")}


def evaluate_workdir(config, workdir, num_ranked_queries=8, out=None):
  """Re-evaluates the latest checkpoint in `workdir`; writes the `reid_jax.reports`
  files (`<report>.json`, `.._cmc.png`, `.._roc.png`, `.._camera_pairs.csv`, ...) to
  `out` (default `<workdir>/eval/`). Returns the metrics.

  Only `params` and `batch_stats` are read (no optimiser is built), and no
  classifier: a run trained on one dataset evaluates on another. The metrics are
  logged before any report is written; a report that cannot be written raises
  WorkdirError.
  """
  config_schema.validate(config)
  mesh = sharding.create_mesh()
  if config.task == "classification":
    return _evaluate_classifier(config, workdir, mesh, out or os.path.join(workdir, "eval"))
  variables, step, model = _read_checkpoint(config, workdir, mesh)
  return _evaluate_and_report(config, model, variables, mesh, f"step {step}",
                              out or os.path.join(workdir, "eval"), num_ranked_queries, step)


def _evaluate_classifier(config, workdir, mesh, out):
  """task='classification': the top-k errors of the latest checkpoint's network,
  classifier included, over the test split; written to `<out>/step<step>.json`."""
  _, test = classification.load(config)
  variables, step, model = _read_checkpoint(config, workdir, mesh, test.num_classes)
  metrics = classification.evaluate_model(model, variables, test, config, mesh)
  logging.info("%s on %s, step %d | %s", config.model, config.dataset, step,
               format_metrics(metrics))
  payload = {"step": int(step), **classification.scalar_summary(metrics),
             "num_images": int(metrics["num_images"])}
  try:
    os.makedirs(out, exist_ok=True)
    reports.write_json_atomically(os.path.join(out, f"step{step}.json"), payload)
  except OSError as e:
    raise WorkdirError(f"Cannot write the reports to {out}: {e.strerror or e}.") from None
  return metrics


def evaluate_weights(config, out, num_ranked_queries=8):
  """Evaluates the weights `config.init_from` names (a torchreid `.pth` / `.pth.tar`
  through `pretrained.load_torchreid`, or another run's checkpoint) as the network
  `config.model` / `model_kwargs`, and writes the `evaluate_workdir` reports to `out`.
  Every variable of the network must come from the file: a missing one is a
  ConfigError naming it (the classifier is not built, so its class count does not matter).
  """
  config_schema.validate(config)
  if not config.init_from:
    raise config_schema.ConfigError("config.init_from is empty: name the weights to evaluate.")
  if config.task == "classification":
    raise config_schema.ConfigError("config.task='classification': evaluate a run's workdir "
                                    "(--workdir), whose checkpoint holds the classifier.")
  mesh = sharding.create_mesh()
  model, shapes = _model_shapes(config)
  try:
    variables, report = checkpoints.init_from(shapes, config.init_from, mesh)
  except ValueError as e:
    raise config_schema.ConfigError(f"config.init_from={config.init_from!r}: {e}") from None
  if report.fresh:
    raise config_schema.ConfigError(
        f"config.init_from={config.init_from!r} lacks {len(report.fresh)} variables of "
        f"{config.model} (model_kwargs {dict(config.model_kwargs)}), e.g. {report.fresh[:5]}.")
  logging.info(report.summary())
  variables = jax.device_put(variables, sharding.replicated(mesh))
  return _evaluate_and_report(config, model, variables, mesh, pretrained.weights_name(config.init_from),
                              out, num_ranked_queries)


if __name__ == "__main__":
  # The command line lives in evaluate_cli, which imports this file as reid_jax.evaluate:
  # the library's one module object (its WorkdirError is the one the library raises).
  from reid_jax import evaluate_cli
  evaluate_cli.run()
