"""JLML (Li, Zhu, Gong; IJCAI 2017) on Market-1501.

Defaults are the paper's "Implementation" paragraph and Table 4 ("Train" row):
images resized to 224x224, m = 4 local strips, SGD with momentum 0.9, base lr
0.01 multiplied by 0.1 every 20k iterations, 50k iterations, batches of 32
randomly sampled images (Sec. 2.2: classification needs no P x K batches), the
L2 distance between 1024-d concat(global, local) features. The paper starts from
JLML pre-trained on ImageNet (for VIPeR/GRID: on CUHK03+Market, the whole datasets:
`--config.dataset=cuhk03/labeled+market1501 --config.train_on=all`); no public JLML
weights exist, so start from your own run with `--config.init_from=<workdir>`.
`--config=configs/jlml.py:imagenet` is that ImageNet pretraining (Table 4, "Pre-train"
row: lr 0.01 x0.1 every 100k iterations, 300k iterations, batches of 32, momentum 0.9)
as `task='classification'` on tfds' own `imagenet2012` (ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in the manual directory), scored by the top-1/top-5 error on
its 50,000 validation images; the re-ID run's `init_from` then skips its 1000-class
classifiers. `--config=configs/jlml.py:synthetic` is the quick-start on the embedded
synthetic_reid dataset with a tiny JLML (same code path, a fraction of the cost).
"""
from reid_jax import config_schema


def get_config(arg=None):
  config = config_schema.base_config("jlml")
  config.dataset = "market1501"
  config.image_size = (224, 224)          # "All person images were resized to 224x224"
  config.sampler = "random"               # Sec. 2.2 (i): random sampling
  config.batch_size = 32                  # Table 4, BS
  config.augment.flip = True              # not stated; the usual mirror augmentation
  config.augment.pad = 0
  config.augment.random_erasing = 0.0
  config.optimizer = "sgd"                # Sec. 2.2, "Model Training"
  config.momentum = 0.9                   # Table 4, MOT
  config.weight_decay = 5e-4              # not in Table 4; Caffe's usual solver value
  config.learning_rate = 0.01             # Table 4, BLR
  config.lr_schedule = "step"             # Table 4, LRP step (0.1, 20K)
  config.lr_decay_steps = (20_000, 40_000)
  config.lr_decay_factor = 0.1
  config.num_train_steps = 50_000         # Table 4, IT
  config.loss.label_smoothing = 0.0
  config.loss.lambda_global = 5e-4        # Eq. 5
  config.loss.lambda_local = 5e-4
  config.eval.metric = "euclidean"        # Sec. 2.3: the L2 distance
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5_000

  if arg == "imagenet":
    config.task = "classification"
    config.dataset = "imagenet2012"       # "pre-training the JLML model on ImageNet (ILSVRC2012)"
    # 224x224 (the resize of every image, as for re-ID), flips, SGD 0.9 and the loss of
    # Eq. 5 as above: "the same parameter settings ... for pre-training and training".
    config.lr_decay_steps = (100_000, 200_000)  # Table 4, Pre-train LRP: step (0.1, 100K)
    config.num_train_steps = 300_000      # Table 4, Pre-train IT
    config.eval_batch_size = 500          # the 50,000 validation images in 100 batches
    config.eval_every_steps = 50_000
    config.checkpoint_every_steps = 10_000
  elif arg == "synthetic":
    config.dataset = "synthetic_reid/small"
    config.image_size = (64, 64)          # square, as the paper's 224x224 resize
    config.model_kwargs = dict(width=0.25, stage_blocks=(1, 1, 1, 1))
    config.num_train_steps = 600
    config.lr_decay_steps = (400,)
    config.learning_rate = 0.05
    config.eval_at_start = True           # report the untrained network too
    config.eval_every_steps = 300
    config.checkpoint_every_steps = 300
    config.log_every_steps = 25
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r} for configs/jlml.py; use 'imagenet', "
                     "'synthetic' or nothing.")
  return config
