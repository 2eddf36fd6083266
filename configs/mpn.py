"""MPN (Ding et al., TPAMI 2020) on Market-1501.

Defaults are the paper's Sec. 5.1 "Implementation Details": 384x128 input,
offline translation enlarging the training set x5, random erasing and
horizontal flips (ratio 0.5), S = 6 identities x A = 8 images per batch, K = 6
parts, triplet margin alpha = 0.2, lambda = 1, SGD (momentum 0.9, weight decay
5e-4) at 0.01 multiplied by 0.1 every 20 epochs, 70 epochs, the cosine metric
(Eq. 11). The paper starts from an IDE model trained on the same dataset:
train `configs/ide.py` first and pass its workdir with
`--config.init_from=<ide workdir>`.
The person masks of the coarse prior come with the dataset: synthetic_reid draws
them; for Market-1501, DukeMTMC-reID, ... put your segmentation tool's PNGs in
the mask folder the dataset's builder names, or set
`--config.model_kwargs.prior=uniform` (Uniform Division, no masks needed).
`--config=configs/mpn.py:synthetic` trains a tiny MPN on synthetic_reid.
"""
from reid_jax import config_schema


def get_config(arg=None):
  config = config_schema.base_config("mpn")
  config.dataset = "market1501"
  config.init_from = ""                   # an IDE run's workdir (configs/ide.py), Sec. 5.1
  config.model_kwargs = dict(prior="mask", channel_attention=True, num_parts=6)
  config.image_size = (384, 128)          # Sec. 5.1
  config.p_identities = 6                 # S
  config.k_instances = 8                  # A
  config.augment.offline_copies = 5       # offline translation x5 (Zhao et al., CVPR 2014)
  config.augment.offline_max_shift = 0.1  # not stated: shifts of up to 10% of height and width
  config.augment.flip = True
  config.augment.pad = 0
  config.augment.random_erasing = 0.5
  config.optimizer = "sgd"
  config.momentum = 0.9
  config.weight_decay = 5e-4
  config.learning_rate = 0.01
  config.lr_schedule = "step"
  config.lr_decay_epochs = (20, 40, 60)   # x0.1 every 20 epochs
  config.lr_decay_factor = 0.1
  config.num_train_steps = -1
  config.num_epochs = 70
  config.loss.label_smoothing = 0.0
  config.loss.triplet_margin = 0.2        # alpha
  config.loss.alignment = "class"         # L_CF (Eq. 8); 'sample' is L_SF (Eq. 9)
  config.loss.alignment_weight = 1.0      # lambda
  config.eval.metric = "cosine"           # Eq. 11
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 5_000

  if arg == "synthetic":
    config.dataset = "synthetic_reid/small_128x64"
    config.image_size = (128, 64)         # an 8x4 map: two rows per part
    config.model_kwargs = dict(prior="mask", channel_attention=True, num_parts=4, width=0.25,
                               stage_blocks=(1, 1, 1, 1))
    config.p_identities = 8
    config.k_instances = 4
    config.augment.offline_copies = 1
    config.learning_rate = 0.05
    config.num_train_steps = 600
    config.num_epochs = -1
    config.lr_decay_epochs = ()
    config.lr_decay_steps = (400,)
    config.eval_at_start = True
    config.eval_every_steps = 0
    config.checkpoint_every_steps = 300
    config.log_every_steps = 25
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r} for configs/mpn.py; use 'synthetic' or nothing.")
  return config
