"""The configuration every network shares, and its validation.

`configs/<network>.py` starts from `base_config()` and sets the paper's values;
`validate(config)` runs before anything is built or compiled, so a wrong value
is a clear error naming the key rather than a failure deep inside a jitted step.
"""
import os

import ml_collections

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "step", "cosine")
METRICS = ("euclidean", "sqeuclidean", "cosine")
DTYPES = ("float32", "bfloat16")


def base_config():
  c = ml_collections.ConfigDict()
  c.model = ""
  c.model_kwargs = {}                 # overrides passed to models.get_model (width, ...)
  c.loss = ml_collections.ConfigDict()  # keyword arguments of the network's loss
  c.loss.label_smoothing = 0.0
  c.pretrained = ""                   # ImageNet weights (.safetensors/.npz/.pth) for the backbone
  c.dtype = "float32"                 # compute dtype; params stay float32

  c.dataset = ""                      # tfds name[/config], e.g. market1501 or synthetic_reid/small
  c.data_dir = ""                     # tfds data_dir ('' = tfds default)
  c.manual_dir = ""                   # where the official archive/folder lies ('' = <data_dir>/downloads/manual)
  c.image_size = (256, 128)           # (height, width)
  c.p_identities = 16                 # identities per batch (P)
  c.k_instances = 4                   # images per identity (K); batch = P * K
  c.eval_batch_size = 128
  c.augment = ml_collections.ConfigDict()
  c.augment.flip = True               # random horizontal flip
  c.augment.pad = 10                  # pad-and-crop margin in pixels (0 = off)
  c.augment.random_erasing = 0.5      # probability (Zhong et al., 2020)

  c.optimizer = "adam"
  c.learning_rate = 3.5e-4
  c.weight_decay = 0.0
  c.momentum = 0.9                    # sgd only
  c.nesterov = False                  # sgd only
  c.lr_schedule = "constant"
  c.lr_decay_epochs = ()              # 'step': multiply by lr_decay_factor at each
  c.lr_decay_factor = 0.1
  c.warmup_epochs = 0.0
  c.num_train_steps = 100_000         # -1: num_epochs decides
  c.num_epochs = -1.0                 # epochs of len(train split) / batch size

  c.eval_every_steps = 5_000          # 0 = only at the end
  c.eval_at_start = False             # also evaluate the untrained network
  c.checkpoint_every_steps = 5_000
  c.keep_checkpoints = 3
  c.log_every_steps = 100
  c.metric = "euclidean"              # retrieval distance
  c.flip_test = False                 # average features with the flipped image's
  c.max_rank = 50
  c.query_pooling = ""                # multi-query: '', 'mean' or 'max' per identity+camera
  c.rerank = False                    # k-reciprocal re-ranking (Zhong et al., CVPR 2017)
  c.rerank_k1 = 20
  c.rerank_k2 = 6
  c.rerank_lambda = 0.3
  c.seed = 0
  return c


def _fail(key, value, why):
  raise ValueError(f"config.{key}={value!r}: {why}")


def validate(config):
  """Raises ValueError naming the first key whose value cannot work."""
  from reid_jax import models  # late: models import jax and flax
  if config.model not in models.names():
    _fail("model", config.model, f"must be one of {models.names()}")
  if not config.dataset:
    _fail("dataset", config.dataset, "name a tfds dataset, e.g. market1501 or synthetic_reid/small")
  if len(config.image_size) != 2 or min(config.image_size) < 16:
    _fail("image_size", config.image_size, "must be (height, width), each at least 16")
  for key in ("p_identities", "k_instances", "eval_batch_size", "log_every_steps"):
    if int(config[key]) < 1:
      _fail(key, config[key], "must be a positive integer")
  if config.p_identities < 2:
    _fail("p_identities", config.p_identities, "batch-hard mining needs at least 2 identities")
  choices = {"optimizer": OPTIMIZERS, "lr_schedule": LR_SCHEDULES,
             "metric": METRICS, "dtype": DTYPES, "query_pooling": ("", "mean", "max")}
  for key, allowed in choices.items():
    if config[key] not in allowed:
      _fail(key, config[key], f"must be one of {allowed}")
  if not config.learning_rate > 0:
    _fail("learning_rate", config.learning_rate, "must be positive")
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    _fail("num_train_steps", config.num_train_steps, "set it or config.num_epochs to a positive value")
  if config.lr_schedule == "step" and list(config.lr_decay_epochs) != sorted(config.lr_decay_epochs):
    _fail("lr_decay_epochs", config.lr_decay_epochs, "must be increasing")
  if not 0 <= config.augment.random_erasing <= 1:
    _fail("augment.random_erasing", config.augment.random_erasing, "is a probability in [0, 1]")
  if config.augment.pad < 0:
    _fail("augment.pad", config.augment.pad, "must be >= 0")
  if not 0 <= config.loss.get("label_smoothing", 0.0) < 1:
    _fail("loss.label_smoothing", config.loss.label_smoothing, "must be in [0, 1)")
  if config.loss.get("triplet_margin", 0.0) < 0:
    _fail("loss.triplet_margin", config.loss.triplet_margin, "must be >= 0")
  if config.loss.get("triplet_metric", "euclidean") not in ("euclidean", "cosine"):
    _fail("loss.triplet_metric", config.loss.triplet_metric, "must be 'euclidean' or 'cosine'")
  if not isinstance(config.loss.get("soft_margin", False), bool):
    _fail("loss.soft_margin", config.loss.soft_margin, "must be True or False")
  if config.pretrained:
    from reid_jax import pretrained
    if config.model not in pretrained.LAYOUTS:
      _fail("pretrained", config.pretrained,
            f"model {config.model!r} has no ImageNet backbone; weights load into {sorted(pretrained.LAYOUTS)}")
    if not os.path.isfile(config.pretrained):
      _fail("pretrained", config.pretrained, "no such file")
  return config
