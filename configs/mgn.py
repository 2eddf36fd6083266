"""MGN (Wang et al., ACM MM 2018) on Market-1501.

Defaults are the paper's Sec. 4.1 "Implementation": 384x128 input, random
horizontal flips only, P = 16 x K = 4, SGD (momentum 0.9, weight decay 5e-4),
lr 0.01 -> 1e-3 after epoch 40 -> 1e-4 after epoch 60, 80 epochs, triplet margin
1.2, test feature averaged with the flipped image's. The paper initialises the
backbone and all three branches from ImageNet: pass the torchvision/timm
ResNet-50 weights with `--config.pretrained=/path/to/resnet50.safetensors`
(.npz and .pth work too).
`--config=configs/mgn.py:synthetic` is the quick-start on the embedded
synthetic_reid dataset with a tiny MGN (same code path, a fraction of the cost).
"""
from reid_jax import config_schema


def get_config(arg=None):
  config = config_schema.base_config("mgn")
  config.dataset = "market1501"
  config.pretrained = ""                  # ImageNet ResNet-50 weights file (see above)
  config.image_size = (384, 128)          # Sec. 4.1, after PCB
  config.p_identities = 16
  config.k_instances = 4
  config.augment.flip = True              # the only augmentation
  config.augment.pad = 0
  config.augment.random_erasing = 0.0
  config.optimizer = "sgd"
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 5e-4
  config.learning_rate = 0.01
  config.lr_schedule = "step"
  config.lr_decay_epochs = (40, 60)
  config.lr_decay_factor = 0.1
  config.num_train_steps = -1
  config.num_epochs = 80
  config.loss.label_smoothing = 0.0
  config.loss.triplet_margin = 1.2        # Sec. 4.1
  config.loss.triplet_metric = "euclidean"  # Eq. 2
  config.loss.soft_margin = False
  config.eval.metric = "euclidean"
  config.flip_test = True

  if arg == "synthetic":
    config.dataset = "synthetic_reid/small"
    config.image_size = (64, 32)
    config.model_kwargs = dict(width=0.25, stage_blocks=(1, 1, 2, 1))
    config.p_identities = 8
    # The paper's schedule shape (decay at 1/2 and 3/4), compressed to 12 epochs.
    config.num_epochs = 12
    config.lr_decay_epochs = (6, 9)
    config.eval_at_start = True
    config.eval_every_steps = 0
    config.checkpoint_every_steps = 200
    config.log_every_steps = 25
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r} for configs/mgn.py; use 'synthetic' or nothing.")
  return config
