"""The configuration every network shares, and its validation.

`configs/<network>.py` starts from `base_config(<network>)` and sets the paper's
values. Two groups are other functions' own keyword arguments: `config.loss` is
the network's loss (its defaults come from the loss's signature) and
`config.eval` is `reid_jax.metrics.evaluate_features` (`config.pairwise`, with
the metric, ranks and protocol of `config.eval`, is `evaluate_scores` for a
network that scores pairs). `validate(config)` runs
before anything is built or compiled, so a wrong value is a `ConfigError` naming
the key rather than a failure deep inside a jitted step; `reid_jax.datasets` checks
the values that depend on the built dataset.
"""
import inspect
import os

import ml_collections
from ml_collections import config_dict

from reid_jax import checkpoints, data, metrics, models, pretrained
from reid_jax.metrics import pairwise
from reid_jax.models import mpn

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "step", "cosine")
METRICS = ("euclidean", "sqeuclidean", "cosine")
DTYPES = ("float32", "bfloat16")
NONFINITE = ("stop", "skip")
SAMPLERS = ("pk", "random")
TRAIN_ON = ("train", "all")
TASKS = ("reid", "classification")
# evaluate_features' data arguments; the rest of its keywords are `config.eval`.
_EVAL_DATA_ARGS = ("qf", "gf", "q_pids", "g_pids", "q_camids", "g_camids")


class ConfigError(ValueError):
  """A config value that cannot work; the message starts with `config.<key>=`."""


def base_config(model=""):
  """The shared keys, with `config.loss` holding the defaults of `model`'s loss."""
  c = ml_collections.ConfigDict()
  c.model = model
  c.task = "reid"                     # 'reid': identities in, query/gallery retrieval out;
                                      # 'classification': a tfds classification dataset (cifar100,
                                      # imagenet2012), top-1/top-5 error (reid_jax.classification)
  c.model_kwargs = {}                 # overrides passed to models.get_model (width, ...)
  c.loss = ml_collections.ConfigDict(_loss_defaults(model))  # keyword arguments of the loss
  c.pretrained = ""                   # ImageNet weights (.safetensors/.npz/.pth) for the backbone
  c.init_from = ""                    # another run's workdir or checkpoint, or a torchreid .pth
  c.dtype = "float32"                 # compute dtype; params stay float32

  c.dataset = ""                      # tfds name[/config], e.g. market1501 or synthetic_reid/small;
                                      # several joined by '+' train on their union (data.sources)
  c.split = 0                         # partition of a multi-partition dataset (cuhk03/*_classic:
                                      # 0-19; viper, grid: 0-9); reid_jax.protocol runs every one
  c.train_on = "train"                # or 'all': every image with a person id, train, query
                                      # and gallery (JLML's "whole datasets" pretraining)
  c.data_dir = ""                     # tfds data_dir ('' = tfds default)
  c.manual_dir = ""                   # where the official archive/folder lies ('' = <data_dir>/downloads/manual)
  c.image_size = (256, 128)           # (height, width)
  c.sampler = "pk"                    # 'pk': P identities x K images; 'random': batch_size random images
  c.p_identities = 16                 # identities per batch (P)
  c.k_instances = 4                   # images per identity (K); batch = P * K
  c.batch_size = 32                   # images per batch with sampler='random'
  c.eval_batch_size = 128
  c.augment = ml_collections.ConfigDict()
  c.augment.flip = True               # random horizontal flip
  c.augment.pad = 10                  # pad-and-crop margin in pixels (0 = off)
  c.augment.random_erasing = 0.5      # probability (Zhong et al., 2020)
  c.augment.offline_copies = 1        # offline translation: each train image k times (1 = off)
  c.augment.offline_max_shift = 0.1   # ... each copy after the first shifted by up to this
                                      # fraction of the height and width (a fixed draw per copy)

  c.optimizer = "adam"
  c.learning_rate = 3.5e-4
  c.weight_decay = 0.0
  c.momentum = 0.9                    # sgd only
  c.nesterov = False                  # sgd only
  c.lr_schedule = "constant"
  c.lr_decay_epochs = ()              # 'step': multiply by lr_decay_factor at each epoch ...
  c.lr_decay_steps = ()               # ... or at each step (iteration) given here
  c.lr_decay_factor = 0.1
  c.warmup_epochs = 0.0
  c.num_train_steps = 100_000         # -1: num_epochs decides
  c.num_epochs = -1.0                 # epochs of len(train split) / batch size

  c.eval_every_steps = 5_000          # 0 = only at the end
  c.eval_at_start = False             # also evaluate the untrained network
  c.checkpoint_every_steps = 5_000
  c.keep_checkpoints = 3
  c.nonfinite = "stop"                # a step with a non-finite loss or gradient: 'stop' the
                                      # run, or 'skip' the update and go on (bf16 runs)
  c.log_every_steps = 100
  c.flip_test = False                 # average test features with the flipped image's
  c.eval = ml_collections.ConfigDict()  # keyword arguments of metrics.evaluate_features
  c.eval.metric = "euclidean"         # retrieval distance: euclidean, sqeuclidean, cosine
  c.eval.max_rank = 50
  c.eval.protocol = "market"          # or 'cuhk03' (classic single-shot)
  c.eval.num_repeats = 10             # cuhk03: gallery draws
  c.eval.seed = 0                     # cuhk03: seed of the gallery draws
  c.eval.query_pooling = config_dict.placeholder(str)  # multi-query: None, 'mean' or 'max'
  c.eval.rerank = False               # k-reciprocal re-ranking (Zhong et al., CVPR 2017)
  c.eval.k1 = 20
  c.eval.k2 = 6
  c.eval.lambda_value = 0.3
  c.pairwise = ml_collections.ConfigDict()  # pair-scoring networks (KPM): metrics.evaluate_scores
  c.pairwise.mode = "cascade"         # re-score each query's top_k by embedding distance, or 'full'
  c.pairwise.top_k = 75               # cascade: gallery items re-scored per query
  c.pairwise.gallery_block = 1024     # full: gallery items scored per call of the network
  c.seed = 0
  return c


def _loss_defaults(model):
  if not model:
    return {}
  return models.get_spec(model).loss_defaults()


def train_batch_size(config):
  """Images per global training batch: P * K, or `batch_size` for random batches."""
  return config.p_identities * config.k_instances if config.sampler == "pk" else config.batch_size


def fail(key, value, why):
  """Raises ConfigError for `config.<key>=<value>`, saying `why` it cannot work."""
  raise ConfigError(f"config.{key}={value!r}: {why}")


def _validate_network(config):
  if config.model not in models.names():
    fail("model", config.model, f"must be one of {models.names()}")
  spec = models.get_spec(config.model)
  fields = [f for f in spec.module_fields() if f != "dtype"]
  for key in config.model_kwargs:
    if key not in fields:
      fail(f"model_kwargs.{key}", config.model_kwargs[key],
            f"{config.model} takes no {key!r}; it takes {fields}")
  try:
    models.get_model(config.model, 0, **config.model_kwargs)
  except (TypeError, ValueError) as e:
    fail("model_kwargs", dict(config.model_kwargs), str(e))
  loss = dict(config.loss)
  accepted = spec.loss_defaults()
  for key in loss:
    if key not in accepted:
      fail(f"loss.{key}", loss[key], f"{config.model}'s loss takes no {key!r}; "
            f"it accepts {sorted(accepted)}")
  if not 0 <= loss.get("label_smoothing", 0.0) < 1:
    fail("loss.label_smoothing", loss["label_smoothing"], "must be in [0, 1)")
  if loss.get("alignment", "class") not in mpn.ALIGNMENTS:
    fail("loss.alignment", loss["alignment"], f"must be one of {mpn.ALIGNMENTS}")
  for key in ("triplet_margin", "lambda_global", "lambda_local", "alignment_weight"):
    if loss.get(key, 0.0) < 0:
      fail(f"loss.{key}", loss[key], "must be >= 0")
  if loss.get("triplet_metric", "euclidean") not in ("euclidean", "cosine"):
    fail("loss.triplet_metric", loss["triplet_metric"], "must be 'euclidean' or 'cosine'")
  if not isinstance(loss.get("soft_margin", False), bool):
    fail("loss.soft_margin", loss["soft_margin"], "must be True or False")
  return spec


def _validate_eval(config):
  accepted = list(inspect.signature(metrics.evaluate_features).parameters)
  accepted = [k for k in accepted if k not in _EVAL_DATA_ARGS + ("return_details",)]
  for key in config.eval:
    if key not in accepted:
      fail(f"eval.{key}", config.eval[key],
            f"evaluate_features takes no {key!r}; it accepts {accepted}")
  choices = {"metric": METRICS, "protocol": metrics.PROTOCOLS,
             "query_pooling": (None, "mean", "max")}
  for key, allowed in choices.items():
    if config.eval.get(key) not in allowed:
      fail(f"eval.{key}", config.eval.get(key), f"must be one of {allowed}")
  if config.pairwise.mode not in pairwise.MODES:
    fail("pairwise.mode", config.pairwise.mode, f"must be one of {pairwise.MODES}")
  if models.get_spec(config.model).evaluation != "pairwise":
    return
  for key, off in (("eval.query_pooling", None), ("eval.rerank", False), ("flip_test", False)):
    if _lookup(config, key) != off:
      fail(key, _lookup(config, key), f"{config.model} scores pairs of images: it has no "
            f"features to pool, re-rank or flip-average; leave it {off}")


def _validate_weights(config, spec):
  if config.pretrained and config.init_from:
    fail("init_from", config.init_from,
          "set either it or config.pretrained: a checkpoint replaces the ImageNet weights")
  if config.pretrained:
    if spec.imagenet_layout is None:
      with_layout = [n for n in models.names() if models.get_spec(n).imagenet_layout]
      fail("pretrained", config.pretrained,
            f"model {config.model!r} has no ImageNet backbone; weights load into {with_layout}")
    if not os.path.isfile(config.pretrained):
      fail("pretrained", config.pretrained, "no such file")
  if config.init_from and pretrained.is_torch_file(config.init_from):
    if not os.path.isfile(config.init_from):
      fail("init_from", config.init_from, "no such torchreid weights file")
  elif config.init_from:
    try:
      checkpoints.find(config.init_from)
    except FileNotFoundError as e:
      fail("init_from", config.init_from, str(e))


# Numeric and boolean keys: (key, type, test, what the value must be). int keys refuse
# floats and bools; float keys take ints too.
_POSITIVE_INT = (int, lambda v: v >= 1, "a positive integer")
_RULES = (
    [(k, *_POSITIVE_INT) for k in (
        "p_identities", "k_instances", "batch_size", "eval_batch_size", "log_every_steps",
        "checkpoint_every_steps", "keep_checkpoints", "augment.offline_copies", "eval.max_rank",
        "eval.num_repeats", "eval.k1", "eval.k2", "pairwise.top_k", "pairwise.gallery_block")]
    + [("eval_every_steps", int, lambda v: v >= 0, "an integer >= 0 (0: only at the end)"),
       ("num_train_steps", int, lambda v: v != 0, "a positive integer, or -1 to use num_epochs"),
       ("seed", int, lambda v: 0 <= v < 2**31, "an integer in [0, 2**31)"),
       ("split", int, lambda v: v >= 0, "an integer >= 0"),
       ("eval.seed", int, lambda v: 0 <= v < 2**31, "an integer in [0, 2**31)"),
       ("learning_rate", float, lambda v: 0 < v < float("inf"), "positive and finite"),
       ("weight_decay", float, lambda v: 0 <= v < float("inf"), ">= 0 and finite"),
       ("momentum", float, lambda v: 0 <= v < 1, "in [0, 1)"),
       ("lr_decay_factor", float, lambda v: 0 < v <= 1, "in (0, 1]"),
       ("warmup_epochs", float, lambda v: 0 <= v < float("inf"), ">= 0"),
       ("num_epochs", float, lambda v: v == -1 or 0 < v < float("inf"),
        "positive, or -1 to use num_train_steps"),
       ("augment.pad", int, lambda v: v >= 0, "an integer >= 0"),
       ("augment.random_erasing", float, lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
       ("augment.offline_max_shift", float, lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
       ("eval.lambda_value", float, lambda v: 0 <= v <= 1, "in [0, 1]")]
    + [(k, bool, lambda v: True, "True or False") for k in (
        "augment.flip", "nesterov", "eval_at_start", "flip_test", "eval.rerank")])


def _lookup(config, key):
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def _check_value(key, value, kind, test, what):
  if kind is bool:
    valid = isinstance(value, bool)
  elif kind is int:
    valid = isinstance(value, int) and not isinstance(value, bool) and test(value)
  else:
    valid = (isinstance(value, (int, float)) and not isinstance(value, bool)
             and test(float(value)))
  if not valid:
    fail(key, value, f"must be {what}")


def _validate_numbers(config):
  for key, kind, test, what in _RULES:
    _check_value(key, _lookup(config, key), kind, test, what)
  size = tuple(config.image_size)
  if len(size) != 2 or not all(isinstance(v, int) and v >= 16 for v in size):
    fail("image_size", config.image_size, "must be (height, width), integers of at least 16")
  for key, kind in (("lr_decay_epochs", float), ("lr_decay_steps", int)):
    values = list(config[key])
    for v in values:
      _check_value(key, v, kind, lambda x: x > 0, "positive numbers in increasing order")
    if values != sorted(values):
      fail(key, config[key], "must be increasing")


def _validate_classification(config, spec):
  """task='classification' draws random batches (a class-balanced P x K batch is not
  what the classification papers train on), reads one dataset without offline
  copies, and scores the network's class logits, which a pair-scoring network lacks."""
  if config.sampler != "random":
    fail("sampler", config.sampler, "task='classification' trains on random batches of "
          "config.batch_size: set it to 'random'")
  if "+" in config.dataset:
    fail("dataset", config.dataset, "task='classification' trains on one tfds dataset")
  if config.augment.offline_copies != 1:
    fail("augment.offline_copies", config.augment.offline_copies,
          "task='classification' has no offline translation: leave it 1")
  if spec.evaluation != "embedding":
    fail("model", config.model, f"{config.model} scores pairs of images; task='classification' "
          "needs a network with class logits")


def validate(config):
  """Raises ConfigError naming the first key whose value cannot work."""
  spec = _validate_network(config)
  if not config.dataset:
    fail("dataset", config.dataset, "name a tfds dataset, e.g. market1501 or synthetic_reid/small")
  try:
    data.sources.names(config.dataset)
  except ValueError as e:
    fail("dataset", config.dataset, str(e).split(": ", 1)[1])
  if config.sampler not in SAMPLERS:
    fail("sampler", config.sampler, f"must be one of {SAMPLERS}")
  _validate_numbers(config)
  if config.task not in TASKS:
    fail("task", config.task, f"must be one of {TASKS}")
  if config.task == "classification":
    _validate_classification(config, spec)
  if config.sampler == "pk" and config.p_identities < 2:
    fail("p_identities", config.p_identities, "batch-hard mining needs at least 2 identities")
  choices = {"optimizer": OPTIMIZERS, "lr_schedule": LR_SCHEDULES, "dtype": DTYPES,
             "nonfinite": NONFINITE, "train_on": TRAIN_ON}
  for key, allowed in choices.items():
    if config[key] not in allowed:
      fail(key, config[key], f"must be one of {allowed}")
  if config.num_train_steps < 0 and config.num_epochs <= 0:
    fail("num_train_steps", config.num_train_steps, "set it or config.num_epochs to a positive value")
  if config.lr_decay_epochs and config.lr_decay_steps:
    fail("lr_decay_steps", config.lr_decay_steps, "set it or config.lr_decay_epochs, not both")
  _validate_eval(config)
  _validate_weights(config, spec)
  return config
