"""KPM (Shen et al., CVPR 2018) on Market-1501.

Defaults are the paper's Sec. 4.2 "Implementation details": ImageNet ResNet-50,
256x128 input, random horizontal flips and random erasing, positive:negative
pairs 1:3 per batch (1:4 on CUHK03 and DukeMTMC: set
`--config.model_kwargs.negatives_per_positive=4`), tau_KPM 0.05, tau_RSA 1.0,
SGD at 0.01 dropping to 0.001 after 50 epochs, fixed for another 50. Pass the
torchvision/timm ResNet-50 weights with `--config.pretrained=/path/to/resnet50.safetensors`.

Evaluation (`config.pairwise`): 'cascade' re-scores each query's 75 nearest
gallery images by the pooled backbone feature, as the official code does;
`--config.pairwise.mode=full` scores every query x gallery pair.
Table 5's ablations: `--config.model_kwargs.matching=none|warp|nowarp`,
`.attention=True|False`, `.hourglass=True|False`.
`--config=configs/kpm.py:synthetic` trains a tiny KPM on synthetic_reid.
"""
from reid_jax import config_schema


def get_config(arg=None):
  config = config_schema.base_config("kpm")
  config.dataset = "market1501"
  config.pretrained = ""                  # ImageNet ResNet-50 weights file (Sec. 4.2)
  config.model_kwargs = dict(matching="warp", attention=True, hourglass=True, tau=0.05,
                             tau_rsa=1.0, negatives_per_positive=3)
  config.image_size = (256, 128)          # Sec. 3.2
  # Not stated: P x K batches, so that every image has positives in its batch.
  config.p_identities = 16
  config.k_instances = 4
  config.augment.flip = True
  config.augment.pad = 0
  config.augment.random_erasing = 0.5
  config.optimizer = "sgd"
  config.momentum = 0.9                   # not stated
  config.weight_decay = 5e-4              # not stated
  config.learning_rate = 0.01
  config.lr_schedule = "step"
  config.lr_decay_epochs = (50,)          # 0.01 -> 0.001 after 50 epochs
  config.lr_decay_factor = 0.1
  config.num_train_steps = -1
  config.num_epochs = 100
  config.eval.metric = "euclidean"        # the cascade's first stage
  config.pairwise.mode = "cascade"
  config.pairwise.top_k = 75
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 2_000

  if arg == "synthetic":
    config.dataset = "synthetic_reid/small"
    config.image_size = (64, 32)          # 2x1, 4x2 and 8x4 maps
    config.model_kwargs = dict(matching="warp", attention=True, hourglass=True, width=0.25,
                               stage_blocks=(1, 1, 1, 1))
    config.p_identities = 8
    config.k_instances = 4
    config.augment.random_erasing = 0.0
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    config.weight_decay = 0.0
    config.lr_decay_epochs = ()
    config.num_epochs = -1
    config.num_train_steps = 600
    config.lr_decay_steps = (450,)
    config.eval_at_start = True
    config.checkpoint_every_steps = 300
    config.log_every_steps = 25
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r} for configs/kpm.py; use 'synthetic' or "
                     "nothing.")
  return config
