"""MLFN (Chang et al., CVPR 2018) as an object classifier on CIFAR-100 (Sec. 4.3, Table 5:
27.21% error).

`config.task='classification'`: tfds' own `cifar100` (50,000 train / 10,000 test
32x32 images, 100 classes; tfds downloads it), evaluated by the top-1 (the paper's
error rate) and top-5 error on the test split. Values are the paper's Sec. 4.1:
N = 9 blocks, K = 9 x 32 = 288 ("MLFN Architecture Details"); images augmented as
in its [9], the 4-pixel pad, random 32x32 crop and horizontal flip ("Data
Augmentation"); SGD with Nesterov momentum 0.9, batch 256, learning rate 0.1 decayed
x0.1 every 100 epochs, 307 epochs ("Optimisation Settings"). Where the paper is
silent: the ResNeXt-29 layout `models.mlfn` documents (stem='cifar', 3 stages of 3
blocks), 8,289,796 parameters with the 100-class classifier (`jax.eval_shape`, BN
statistics not counted; the tests pin it), and ResNeXt's CIFAR weight decay 5e-4
(Xie et al., CVPR 2017, Sec. 5.3). No ImageNet weights: it trains from scratch.
"""
from reid_jax import config_schema


def get_config(arg=None):
  config = config_schema.base_config("mlfn")
  config.task = "classification"
  config.dataset = "cifar100"
  config.model_kwargs = dict(
      stem="cifar",                       # 32x32 input: 3x3 stem, no down-sampling (ResNeXt-29)
      stage_blocks=(3, 3, 3),             # N = 9 blocks
      groups=32,                          # 32 FMs per block: K = 9 x 32 = 288
      width=1.0,
      embed_dim=1024)                     # d = 1024, as for re-ID
  config.image_size = (32, 32)
  config.sampler = "random"
  config.batch_size = 256                 # "a 256 mini-batch size"
  config.augment.flip = True              # as in [9]: flip, 4-pixel pad, random 32x32 crop
  config.augment.pad = 4
  config.augment.random_erasing = 0.0
  config.optimizer = "sgd"
  config.nesterov = True                  # "Nesterov momentum of 0.9"
  config.momentum = 0.9
  config.learning_rate = 0.1              # "initial learning rate is set to 0.1"
  config.weight_decay = 5e-4              # not stated; ResNeXt's CIFAR value
  config.lr_schedule = "step"             # "a decay factor 0.1 at every 100 epochs"
  config.lr_decay_epochs = (100, 200, 300)
  config.lr_decay_factor = 0.1
  config.num_train_steps = -1
  config.num_epochs = 307                 # "for 307 epochs training": 307 x 195 steps
  config.loss.label_smoothing = 0.0
  config.eval_batch_size = 500            # the 10,000 test images in 20 batches
  config.eval_every_steps = 1950          # every 10 epochs of 195 steps
  config.checkpoint_every_steps = 1950
  if arg:
    raise ValueError(f"Unknown config argument {arg!r} for configs/mlfn_cifar100.py; "
                     "it takes none.")
  return config
