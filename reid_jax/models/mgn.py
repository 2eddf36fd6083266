"""MGN: Multiple Granularity Network (Wang et al., ACM MM 2018).

Sec. 3.1, Fig. 3, Table 1: ResNet-50 shared up to res_conv4_1 (layer3 block 0);
three branches each own a copy of layer3[1:] and layer4. The Global branch keeps
the stride-2 res_conv5_1 (12x4 map at 384x128); the Part-2 and Part-3 branches
use stride 1 (24x8) and split the map into 2 and 3 horizontal stripes. Every
branch and stripe is globally max-pooled and reduced 2048 -> 256 by its own
1x1 conv + BN + ReLU (eight reductions, no weight sharing). The test feature is
the concatenation of the eight 256-d reduced features (2048-d).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax import losses
from reid_jax.models import resnet
from reid_jax.models.layers import batch_norm, classifier, stripe_bounds
from reid_jax.models.spec import NetworkSpec

# Kaiming-normal (fan_in) for the reductions, as MGN-pytorch initialises them.
reduction_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def stripe_max_pool(x, stripes):
  """[B, H, W, C] -> [stripes, B, C]: max over each of `stripes` horizontal bands.

  Bands follow torch's adaptive pooling, rows floor(i H / n) .. ceil((i + 1) H / n),
  which is the uniform split when n divides H and overlaps by a row otherwise.
  """
  return jnp.stack([jnp.max(x[:, top:bottom], axis=(1, 2))
                    for top, bottom in stripe_bounds(x.shape[1], stripes)])


class Reduction(nn.Module):
  """1x1 conv (on a pooled vector: a dense layer) + BN + ReLU, 2048 -> 256 (Sec. 3.1)."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    x = nn.Dense(self.features, use_bias=False, kernel_init=reduction_init,
                 dtype=self.dtype, name="conv")(x)
    return nn.relu(batch_norm(train, self.dtype, "bn")(x))


class Branch(nn.Module):
  """One branch: copies of layer3[1:] and layer4, then GMP of the whole map
  (z_g) and, when `stripes` > 1, of each horizontal stripe; every pooled
  vector is reduced to 256-d (Table 1)."""
  stripes: int
  last_stride: int
  width: float
  stage_blocks: Sequence[int]
  reduce_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    x = resnet.ResNetStage(resnet.scaled(resnet.STAGE_PLANES[2], self.width),
                           self.stage_blocks[2], start=1, dtype=self.dtype,
                           name="layer3")(x, train)
    x = resnet.ResNetStage(resnet.scaled(resnet.STAGE_PLANES[3], self.width),
                           self.stage_blocks[3], self.last_stride, dtype=self.dtype,
                           name="layer4")(x, train)
    self.sow("intermediates", "feature_map", x)
    pooled = jnp.max(x, axis=(1, 2))  # z_g
    reduce = lambda v, name: Reduction(self.reduce_dim, self.dtype, name=name)(v, train)
    parts = stripe_max_pool(x, self.stripes) if self.stripes > 1 else []
    return (pooled, reduce(pooled, "reduction_global"),
            [reduce(p, f"reduction_part{i}") for i, p in enumerate(parts)])


class MGN(nn.Module):
  """MGN with `parts` stripes per local branch (Part-2, Part-3 in the paper).

  `width` scales every channel count (the 256-d reductions included) and
  `stage_blocks` the ResNet depth, for tiny variants on the same code path.
  Outputs: `'embedding'` (8 x 256 reduced features concatenated),
  `'metric_features'` [3, B, 256] (f_g of each branch) and, with classes,
  `'logits'` [8, B, C]: the three 2048-d globals z_g first, then the five
  256-d parts f_p (Sec. 3.2).
  """
  num_classes: int
  width: float = 1.0
  stage_blocks: Sequence[int] = resnet.RESNET50_BLOCKS
  parts: Sequence[int] = (2, 3)
  reduce_dim: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train=False):
    trunk_blocks = tuple(self.stage_blocks[:2]) + (1,)  # up to res_conv4_1
    x = resnet.ResNetBackbone(self.width, trunk_blocks, dtype=self.dtype,
                              name="backbone")(images, train)["layer3"]
    branches = [("global", 1, 2)] + [(f"part{n}", n, 1) for n in self.parts]
    globals_, reduced_globals, reduced_parts = [], [], []
    for name, stripes, last_stride in branches:
      pooled, reduced, parts = Branch(
          stripes, last_stride, self.width, self.stage_blocks,
          resnet.scaled(self.reduce_dim, self.width), self.dtype, name=name)(x, train)
      globals_.append(pooled)
      reduced_globals.append(reduced)
      reduced_parts.extend(parts)

    reduced_globals = [f.astype(jnp.float32) for f in reduced_globals]
    reduced_parts = [f.astype(jnp.float32) for f in reduced_parts]
    outputs = {"embedding": jnp.concatenate(reduced_globals + reduced_parts, axis=-1),
               "metric_features": jnp.stack(reduced_globals)}
    if self.num_classes:
      # Each supervised feature has its own identity classifier (Fig. 3).
      outputs["logits"] = jnp.stack([
          classifier(self.num_classes, self.dtype, f"classifier{i}")(f).astype(jnp.float32)
          for i, f in enumerate(globals_ + reduced_parts)])
    return outputs


def loss(outputs, batch, params, label_smoothing=0.0, triplet_margin=1.2,
         triplet_metric="euclidean", soft_margin=False):
  """Sec. 3.2: softmax CE (Eq. 1) on every logit head plus batch-hard triplet
  (Eq. 2) on every reduced global, each averaged over the batch and summed as
  independent supervisory signals (Fig. 3; the paper gives no weights)."""
  del params
  labels = batch["label"]
  ce = losses.cross_entropy(outputs["logits"], labels, label_smoothing).mean(axis=-1).sum()
  triplet = jnp.sum(jax.vmap(lambda f: losses.batch_hard_triplet(
      f, labels, triplet_margin, triplet_metric, soft_margin).mean())(outputs["metric_features"]))
  return ce + triplet, {"cross_entropy": ce, "triplet": triplet}


def imagenet_layout(params):
  """The trunk is torchvision's stem, layer1-2 and layer3[0]; every branch
  receives its own copy of layer3[1:] and layer4 (Sec. 4.1)."""
  branches = sorted(name for name, module in params.items() if "layer4" in module)
  layout = [(("backbone",), ())]
  for branch in branches:
    layout += [((branch, "layer3"), ("layer3",)), ((branch, "layer4"), ("layer4",))]
  return layout


SPEC = NetworkSpec(name="mgn", module=MGN, loss=loss, imagenet_layout=imagenet_layout)
