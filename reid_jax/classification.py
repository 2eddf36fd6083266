"""`config.task='classification'`: a network trained and scored as an image classifier
on a tfds dataset (MLFN on CIFAR-100, Sec. 4.3; JLML's ImageNet pretraining).

The trainer (`reid_jax.train`) is the re-ID one: random batches
(`data.classification`, `config.sampler='random'`), the network's own loss (for
MLFN and JLML the softmax cross-entropy of its class logits), its checkpoints and
exact resume. Only the data and the evaluation differ: instead of query/gallery
retrieval, the top-1 and top-5 error over the test split from the network's class
logits at test time (`outputs['logits']` of `train=False`, the heads the loss trains).
"""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from reid_jax import config_schema, models, reports, sharding
from reid_jax.data import classification as data
from reid_jax.metrics.classification import top_k_error

TOP_K = (1, 5)
# The trainer's batches of `load`'s train split: random, a pure function of (seed, step).
train_batches = data.train_batches


def load(config):
  """(train split, test split) of `config.dataset` (`data.classification.Split`s).

  Raises ConfigError, before anything compiles, for a random batch larger than the
  train split or a network that trains on inputs a classification dataset lacks
  (MPN's person masks)."""
  dataset = data.builder(config.dataset, config.data_dir, config.manual_dir)
  train = data.load_split(dataset, "train")
  test = data.load_split(dataset, data.eval_split_name(config.dataset))
  if config.batch_size > len(train):
    raise config_schema.ConfigError(
        f"config.batch_size={config.batch_size!r}: the train split of {config.dataset!r} has "
        f"only {len(train)} images")
  module = models.get_model(config.model, 0, **config.model_kwargs)
  missing = [k for k in models.get_spec(config.model).required_inputs(module) if k != "image"]
  if missing:
    raise config_schema.ConfigError(
        f"config.model_kwargs={dict(config.model_kwargs)!r}: {config.model} trains on batch keys "
        f"{missing}, which classification dataset {config.dataset!r} has not")
  return train, test


def class_scores(logits):
  """[B, C] class scores of [H, B, C] logits: a single head's logits as they are;
  several heads' (JLML's global and local) mean log-softmax, i.e. their product of
  probabilities, so that no head's logit scale outweighs another's."""
  if logits.shape[0] == 1:
    return logits[0]
  return jnp.mean(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=0)


@functools.lru_cache(maxsize=8)
def _errors_fn(model, spec, mesh):
  def errors(variables, inputs, labels):
    args, kwargs = spec.apply_inputs(inputs)
    scores = class_scores(model.apply(variables, *args, train=False, **kwargs)["logits"])
    return jnp.stack([top_k_error(scores, labels, k) for k in TOP_K], axis=-1)  # [B, len(TOP_K)]

  batch = sharding.batch_sharded(mesh)
  return jax.jit(errors, in_shardings=(sharding.replicated(mesh), batch, batch),
                 out_shardings=batch)


def evaluate_model(model, variables, split, config, mesh):
  """{'top1_error', 'top5_error', 'num_images'} of `model` with `variables`
  ({'params', 'batch_stats'}) over every image of `split` (`config.eval_batch_size`
  per batch, padding masked out), on one device or many hosts."""
  spec = models.get_spec(config.model)
  fn = _errors_fn(model, spec, mesh)
  wrong, count = np.zeros(len(TOP_K), np.int64), 0
  for batch in data.eval_batches(split, config.eval_batch_size, config.image_size):
    inputs = sharding.global_batch(mesh, {k: batch[k] for k in spec.input_keys})
    errors = fn(variables, inputs, sharding.global_batch(mesh, batch["label"]))
    errors = np.asarray(multihost_utils.process_allgather(errors, tiled=True))
    valid = np.asarray(multihost_utils.process_allgather(batch["valid"], tiled=True))
    wrong += errors[valid].sum(axis=0).astype(np.int64)
    count += int(valid.sum())
  return {**{f"top{k}_error": float(w / count) for k, w in zip(TOP_K, wrong)},
          "num_images": count}


def is_classification(metrics):
  """Whether `metrics` are `evaluate_model`'s (else re-ID retrieval metrics)."""
  return "top1_error" in metrics


def scalar_summary(metrics):
  """The top-k errors as plain floats, for metric writers."""
  return {f"top{k}_error": float(metrics[f"top{k}_error"]) for k in TOP_K}


def format_metrics(metrics):
  """E.g. 'top-1 error 27.21% | top-5 error 8.10% (10000 images)'."""
  errors = " | ".join(f"top-{k} error {metrics[f'top{k}_error']:.2%}" for k in TOP_K)
  return f"{errors} ({metrics['num_images']} images)"


def write_metrics(workdir, step, metrics):
  """`<workdir>/eval/metrics_<step>.json` and `<workdir>/metrics.json` (the latest),
  as `evaluate.write_metrics` writes re-ID metrics."""
  payload = {"step": int(step), **scalar_summary(metrics), "num_images": int(metrics["num_images"])}
  os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
  reports.write_json_atomically(os.path.join(workdir, "eval", f"metrics_{step}.json"), payload)
  reports.write_json_atomically(os.path.join(workdir, "metrics.json"), payload)
  return payload
