"""ResNet-50 (He et al., CVPR 2016) in torchvision's layout, as the shared backbone.

Torchvision's "ResNet v1.5": the stride of a downsampling bottleneck sits on its
3x3 convolution, and block 0 of every stage has a 1x1 conv + BN projection
shortcut. Module names mirror torchvision's parameter names (`conv1`, `bn1`,
`layer3/block2/conv1`, `.../downsample_conv`) so `reid_jax.pretrained` maps
ImageNet weights one to one. Networks compose `ResNetBackbone` (stem + stages,
every stage's output) or `ResNetStage` (a slice of one stage, e.g. MGN's
layer3[1:]) rather than copying them.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from reid_jax import losses
from reid_jax.models.layers import batch_norm, classifier, conv_init
from reid_jax.models.spec import NetworkSpec

STAGE_PLANES = (64, 128, 256, 512)
EXPANSION = 4
RESNET50_BLOCKS = (3, 4, 6, 3)


def scaled(channels, width):
  """`channels` scaled by the `width` multiplier (at least 1)."""
  return max(int(channels * width), 1)


def stage_stride(stage, last_stride=2):
  """Stride of stage `stage` (0-based): 1 for layer1, 2 for layer2-3, `last_stride` for layer4."""
  return 1 if stage == 0 else last_stride if stage == 3 else 2


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (stride) -> 1x1 (x `expansion`) bottleneck with a residual shortcut."""
  planes: int
  stride: int = 1
  dtype: Any = jnp.float32
  expansion: int = EXPANSION

  @nn.compact
  def __call__(self, x, train):
    conv = lambda f, k, s, name: nn.Conv(
        f, (k, k), (s, s), padding=((k // 2, k // 2),) * 2, use_bias=False,
        kernel_init=conv_init, dtype=self.dtype, name=name)
    out_channels = self.planes * self.expansion
    y = nn.relu(batch_norm(train, self.dtype, "bn1")(conv(self.planes, 1, 1, "conv1")(x)))
    y = nn.relu(batch_norm(train, self.dtype, "bn2")(conv(self.planes, 3, self.stride, "conv2")(y)))
    y = batch_norm(train, self.dtype, "bn3")(conv(out_channels, 1, 1, "conv3")(y))
    if self.stride != 1 or x.shape[-1] != out_channels:
      x = batch_norm(train, self.dtype, "downsample_bn")(
          conv(out_channels, 1, self.stride, "downsample_conv")(x))
    return nn.relu(x + y)


class ResNetStage(nn.Module):
  """Blocks `start` .. `num_blocks - 1` of one stage (torchvision `layer{i}`).

  Block 0 carries the stride; blocks keep their torchvision index in their
  name (`block{i}`), so a stage slice holds the same names as the full stage.
  """
  planes: int
  num_blocks: int
  stride: int = 1
  start: int = 0
  dtype: Any = jnp.float32
  expansion: int = EXPANSION

  @nn.compact
  def __call__(self, x, train):
    for i in range(self.start, self.num_blocks):
      x = Bottleneck(self.planes, self.stride if i == 0 else 1, self.dtype, self.expansion,
                     name=f"block{i}")(x, train)
    return x


class ResNetBackbone(nn.Module):
  """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) and the stages in `stage_blocks`.

  Returns a dict with the stem's and every stage's output map (`'stem'`,
  `'layer1'`, ...). Fewer than four stages give a truncated trunk (MGN's is
  `(3, 4, 1)`: up to res_conv4_1). `last_stride` = 1 keeps layer4 at 1/16
  resolution (24x8 at 384x128), as MGN's part branches, MPN and KPM use.
  """
  width: float = 1.0
  stage_blocks: Sequence[int] = RESNET50_BLOCKS
  last_stride: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train=False):
    x = images.astype(self.dtype)
    x = nn.Conv(scaled(64, self.width), (7, 7), (2, 2), padding=((3, 3), (3, 3)),
                use_bias=False, kernel_init=conv_init, dtype=self.dtype, name="conv1")(x)
    x = nn.relu(batch_norm(train, self.dtype, "bn1")(x))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    maps = {"stem": x}
    for stage, num_blocks in enumerate(self.stage_blocks):
      x = ResNetStage(scaled(STAGE_PLANES[stage], self.width), num_blocks,
                      stage_stride(stage, self.last_stride), dtype=self.dtype,
                      name=f"layer{stage + 1}")(x, train)
      maps[f"layer{stage + 1}"] = x
    return maps


class ResNet(nn.Module):
  """ResNet-50 for re-ID (the IDE baseline): globally average-pooled layer4
  (2048-d) as the embedding and an identity classifier on it."""
  num_classes: int
  width: float = 1.0
  stage_blocks: Sequence[int] = RESNET50_BLOCKS
  last_stride: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train=False):
    maps = ResNetBackbone(self.width, self.stage_blocks, self.last_stride, self.dtype,
                          name="backbone")(images, train)
    pooled = jnp.mean(maps[f"layer{len(self.stage_blocks)}"], axis=(1, 2))
    outputs = {"embedding": pooled.astype(jnp.float32)}
    if self.num_classes:
      outputs["logits"] = classifier(self.num_classes, self.dtype)(pooled).astype(jnp.float32)[None]
    return outputs


def imagenet_layout(params):
  """The whole backbone is torchvision's ResNet-50 (less `fc`)."""
  del params
  return [(("backbone",), ())]


# The IDE baseline: softmax cross-entropy on the identity logits.
SPEC = NetworkSpec(name="resnet50", module=ResNet, loss=losses.identity_loss,
                   imagenet_layout=imagenet_layout)
