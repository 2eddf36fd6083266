"""JLML: Joint Learning of Multi-Loss classification (Li, Zhu, Gong; IJCAI 2017).

JLML-ResNet39 (Table 1): a 3x3/2 conv1 (32 channels, 112x112 at 224x224) shared
by two branches. The global branch max-pools it (3x3/2, 56x56) and runs four
stages of three bottlenecks (mid, out) = (32, 64), (64, 128), (128, 256),
(256, 512), strides 1, 2, 2, 2, to a 7x7 map. The local branch slices the conv1
map into m = 4 horizontal strips (28 rows each); every strip has its own stream:
2x2 max pool with stride (1, 2) (one row of padding at the bottom keeps 28 rows),
then half-width stages (16, 32) ... (128, 256) to a 4x7 map. Each branch
average-pools, the local branch concatenates its m stream vectors (CA-4), and
an fc layer gives 512-d; each branch has its own identity classifier and loss
(the MultiLoss design, Sec. 2.1). Sec. 2.3: the test feature is
concat(global, local), 1024-d, compared with the L2 distance.

Where the paper is silent: every conv is bias-free + BN + ReLU in ResNet v1.5
bottlenecks (stride on the 3x3, 1x1 conv + BN projection where the shape
changes); fc = Dense(512, bias) + BN + ReLU, torchreid's fc layer, its kernel
initialised as Caffe's xavier filler.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from reid_jax import losses
from reid_jax.models import resnet
from reid_jax.models.layers import batch_norm, classifier, conv_init
from reid_jax.models.spec import NetworkSpec

# Table 1, conv2_x .. conv5_x: bottleneck (mid, out) widths; out = 2 * mid.
GLOBAL_MID = (32, 64, 128, 256)
LOCAL_MID = (16, 32, 64, 128)
STAGE_STRIDES = (1, 2, 2, 2)
EXPANSION = 2
FEATURE_DIM = 512


class Stages(nn.Module):
  """conv2_x .. conv5_x of one branch or stream: `stage_blocks` bottlenecks per stage."""
  mid_channels: Sequence[int]
  stage_blocks: Sequence[int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    for i, (mid, blocks, stride) in enumerate(zip(self.mid_channels, self.stage_blocks,
                                                  STAGE_STRIDES)):
      x = resnet.ResNetStage(mid, blocks, stride, dtype=self.dtype, expansion=EXPANSION,
                             name=f"layer{i + 1}")(x, train)
    return x


# Caffe's "xavier" filler (uniform, variance 1 / fan_in): JLML was built in Caffe.
fc_init = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


class FeatureLayer(nn.Module):
  """The fc of Table 1: Dense(512) with bias, BN, ReLU. Its kernel is the W of Eq. 1-2."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    x = nn.Dense(self.features, kernel_init=fc_init, dtype=self.dtype, name="dense")(x)
    return nn.relu(batch_norm(train, self.dtype, "bn")(x))


class JLML(nn.Module):
  """JLML-ResNet39. `width` scales every channel count, `stage_blocks` the depth
  (Table 1: three bottlenecks per stage), `stripes` is m.

  Outputs: `'embedding'` [B, 2 * 512] = concat(global, local) and, with classes,
  `'logits'` [2, B, C] (global head, local head). Sown intermediates:
  `global_map` [B, 7, 7, 512] and `local_maps` [m, B, 4, 7, 256] at 224x224.
  """
  num_classes: int
  width: float = 1.0
  stage_blocks: Sequence[int] = (3, 3, 3, 3)
  stripes: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train=False):
    w = lambda c: resnet.scaled(c, self.width)
    x = images.astype(self.dtype)
    x = nn.Conv(w(32), (3, 3), (2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                kernel_init=conv_init, dtype=self.dtype, name="conv1")(x)
    x = nn.relu(batch_norm(train, self.dtype, "bn1")(x))  # shared by both branches

    g = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    g = Stages(tuple(map(w, GLOBAL_MID)), self.stage_blocks, self.dtype,
               name="global_branch")(g, train)
    self.sow("intermediates", "global_map", g)
    g = FeatureLayer(w(FEATURE_DIM), self.dtype, name="global_fc")(jnp.mean(g, axis=(1, 2)), train)

    height = x.shape[1]
    if height % self.stripes:
      raise ValueError(f"JLML slices its {height}-row conv1 map into {self.stripes} strips: "
                       f"the image height must give a multiple of {self.stripes} rows after "
                       "the stride-2 conv1.")
    rows = height // self.stripes
    maps = []
    for j in range(self.stripes):
      s = nn.max_pool(x[:, j * rows:(j + 1) * rows], (2, 2), (1, 2), padding=((0, 1), (0, 0)))
      maps.append(Stages(tuple(map(w, LOCAL_MID)), self.stage_blocks, self.dtype,
                         name=f"local_stream{j}")(s, train))
    self.sow("intermediates", "local_maps", jnp.stack(maps))
    local = jnp.concatenate([jnp.mean(m, axis=(1, 2)) for m in maps], axis=-1)  # CA-4
    local = FeatureLayer(w(FEATURE_DIM), self.dtype, name="local_fc")(local, train)

    outputs = {"embedding": jnp.concatenate([g, local], axis=-1).astype(jnp.float32)}
    if self.num_classes:
      outputs["logits"] = jnp.stack([
          classifier(self.num_classes, self.dtype, f"classifier_{branch}")(f).astype(jnp.float32)
          for branch, f in (("global", g), ("local", local))])
    return outputs


def num_stripes(params):
  """m, from the local streams present in a JLML params tree."""
  return sum(name.startswith("local_stream") for name in params)


def loss(outputs, batch, params, label_smoothing=0.0, lambda_global=5e-4, lambda_local=5e-4):
  """Eq. 5, both branches together: CE(global) + lambda_global * l2,1(W_G)
  + CE(local) + lambda_local * l1,2(W_L), with each CE the batch mean of Eq. 4,
  W_G the global fc kernel (Eq. 1) and W_L the local fc kernel whose inputs are
  the m stripe blocks (Eq. 2). Sec. 2.2: lambda_global = lambda_local = 5e-4."""
  ce_global, ce_local = losses.cross_entropy(
      outputs["logits"], batch["label"], label_smoothing).mean(axis=-1)
  l21 = losses.group_lasso(params["global_fc"]["dense"]["kernel"])
  l12 = losses.exclusive_group_lasso(params["local_fc"]["dense"]["kernel"], num_stripes(params))
  total = ce_global + ce_local + lambda_global * l21 + lambda_local * l12
  return total, {"cross_entropy_global": ce_global, "cross_entropy_local": ce_local,
                 "l21_global": l21, "l12_local": l12}


SPEC = NetworkSpec(name="jlml", module=JLML, loss=loss)
