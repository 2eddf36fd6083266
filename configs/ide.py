"""IDE (Zheng et al., "Person Re-identification in the Wild", CVPR 2017) on Market-1501.

ResNet-50 fine-tuned as an identity classifier (softmax cross-entropy on the
pooled 2048-d feature, which is also the test feature): the model MPN starts
from (MPN Sec. 5.1, "initialized from those of the IDE model trained on each
respective database"). Settings where MPN is silent: MPN's own 384x128 input and
last stride 1 (so its backbone continues from the same feature geometry),
random batches of 32, flip + random erasing, SGD 0.01 (momentum 0.9, weight
decay 5e-4) x0.1 after 40 of 60 epochs, from ImageNet:
`--config.pretrained=/path/to/resnet50.safetensors` (.npz and .pth work too).
Then train MPN with `--config.init_from=<this run's workdir>`.
`--config=configs/ide.py:synthetic` is the tiny variant MPN's `:synthetic` can start from.
"""
from reid_jax import config_schema


def get_config(arg=None):
  config = config_schema.base_config("resnet50")
  config.dataset = "market1501"
  config.pretrained = ""                  # ImageNet ResNet-50 weights file (see above)
  config.model_kwargs = dict(last_stride=1)
  config.image_size = (384, 128)
  config.sampler = "random"               # identity classification needs no P x K batches
  config.batch_size = 32
  config.augment.flip = True
  config.augment.pad = 0
  config.augment.random_erasing = 0.5
  config.optimizer = "sgd"
  config.momentum = 0.9
  config.weight_decay = 5e-4
  config.learning_rate = 0.01
  config.lr_schedule = "step"
  config.lr_decay_epochs = (40,)
  config.lr_decay_factor = 0.1
  config.num_train_steps = -1
  config.num_epochs = 60
  config.eval.metric = "cosine"
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 2_000

  if arg == "synthetic":
    config.dataset = "synthetic_reid/small_128x64"
    config.image_size = (128, 64)
    config.model_kwargs = dict(last_stride=1, width=0.25, stage_blocks=(1, 1, 1, 1))
    config.learning_rate = 0.05
    config.num_epochs = 8
    config.lr_decay_epochs = (6,)
    config.checkpoint_every_steps = 200
    config.log_every_steps = 25
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r} for configs/ide.py; use 'synthetic' or nothing.")
  return config
