"""MPN: Multi-task Part-aware Network (Ding et al., TPAMI 2020).

Sec. 3, Fig. 3: ResNet-50 without its last down-sampling (F: 24x8 at 384x128)
feeds K = 6 pairs of a main task (MT) and an auxiliary task (AT), one pair per
body part. The MT of part k reads the whole F; its AT reads the k-th stripe P_k
of F processed with the coarse prior of the body's location (Sec. 3.2,
`part_prior`). Each pair shares every layer (parameter space alignment, Sec.
3.3): 1x1 conv + BN + ReLU, global max pooling, an optional channel attention
(Fig. 6), 1x1 conv + BN + ReLU; only the identity classifiers are separate. The
test feature is h = [f_1 .. f_K] of the MTs (Eq. 2, 3072-d), compared by cosine
(Eq. 11); the ATs exist in training only.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from reid_jax import losses
from reid_jax.models import part_prior, resnet
from reid_jax.models.layers import batch_norm, classifier, conv_init
from reid_jax.models.spec import NetworkSpec

# 'none' is Table 1's "MT Only": no auxiliary tasks at all.
PRIORS = part_prior.PRIORS + ("none",)
ALIGNMENTS = ("class", "sample", "none")


class ChannelAttention(nn.Module):
  """Fig. 6 on a pooled vector: 1x1 conv C -> C/r + BN + ReLU, 1x1 conv -> C + BN,
  sigmoid, channel-wise product (squeeze-and-excitation without the squeeze:
  the input is already globally pooled)."""
  reduction: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, v, train):
    channels = v.shape[-1]
    dense = lambda f, name: nn.Dense(f, use_bias=False, kernel_init=conv_init,
                                     dtype=self.dtype, name=name)
    a = nn.relu(batch_norm(train, self.dtype, "bn1")(dense(channels // self.reduction, "conv1")(v)))
    a = batch_norm(train, self.dtype, "bn2")(dense(channels, "conv2")(a))
    return v * nn.sigmoid(a)


class PartTask(nn.Module):
  """The layers one MT and its AT share (Sec. 3.3): called on F for the MT and on
  P_k for the AT, with one set of weights and BatchNorm statistics.

  [B, h, w, C] -> [B, features]: 1x1 conv + BN + ReLU, global max pooling,
  optional channel attention, 1x1 conv (on the pooled vector: a dense layer) + BN
  + ReLU.
  """
  features: int = 512
  channel_attention: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(self.features, (1, 1), use_bias=False, kernel_init=conv_init,
                dtype=self.dtype, name="conv1")(x)
    v = jnp.max(nn.relu(batch_norm(train, self.dtype, "bn1")(x)), axis=(1, 2))
    if self.channel_attention:
      v = ChannelAttention(dtype=self.dtype, name="channel_attention")(v, train)
    v = nn.Dense(self.features, use_bias=False, kernel_init=conv_init, dtype=self.dtype,
                 name="conv2")(v)
    return nn.relu(batch_norm(train, self.dtype, "bn2")(v))


class MPN(nn.Module):
  """MPN with `num_parts` MT/AT pairs.

  `prior`: the ATs' input (`part_prior`): 'mask' (Sec. 3.2, the paper), 'roi',
  'uniform', or 'none' (MT only, no ATs). 'mask' and 'roi' read the person mask
  `mask` [B, H, W, 1] in training; at test nothing but the image is read.
  `width` scales every channel count and `stage_blocks` the ResNet depth, for
  tiny variants on the same code path.

  Outputs: `'embedding'` h [B, K * part_dim]; `'metric_features'` [1, B, K *
  part_dim] = h, in training with ATs [2, B, .] = (h, g) with g = [z_1 .. z_K]
  (Eq. 5); with classes `'logits'` [K, B, C] of the MTs, in training with ATs
  [2K, B, C]: the K MT heads, then the K AT heads (Eq. 1).
  """
  num_classes: int
  width: float = 1.0
  stage_blocks: Sequence[int] = resnet.RESNET50_BLOCKS
  num_parts: int = 6
  part_dim: int = 512
  prior: str = "mask"
  channel_attention: bool = True
  dtype: Any = jnp.float32

  def __post_init__(self):
    if self.prior not in PRIORS:
      raise ValueError(f"MPN: unknown prior {self.prior!r}; use one of {PRIORS}.")
    if self.num_parts < 1:
      raise ValueError(f"MPN: num_parts must be positive, got {self.num_parts}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, images, train=False, mask=None):
    feature_map = resnet.ResNetBackbone(self.width, self.stage_blocks, last_stride=1,
                                        dtype=self.dtype, name="backbone")(images, train)
    feature_map = feature_map[f"layer{len(self.stage_blocks)}"]
    self.sow("intermediates", "feature_map", feature_map)
    tasks = [PartTask(resnet.scaled(self.part_dim, self.width), self.channel_attention,
                      self.dtype, name=f"part{k}") for k in range(self.num_parts)]
    heads = [task(feature_map, train) for task in tasks]  # f_k
    features = [jnp.concatenate(heads, axis=-1).astype(jnp.float32)]  # h
    names = [f"classifier_mt{k}" for k in range(self.num_parts)]
    # The ATs exist in training; init builds them so their classifiers have weights.
    if self.prior != "none" and (train or self.is_initializing()):
      prior = self.prior
      if mask is None:
        if train and prior != "uniform":
          raise ValueError(f"MPN with prior={prior!r} reads a person mask in training: pass "
                           "mask=[B, H, W, 1], or use prior='uniform'.")
        prior = "uniform"  # init: the shapes do not depend on the prior
      inputs = part_prior.part_inputs(feature_map, mask, prior)
      self.sow("intermediates", "part_inputs", inputs)
      at_heads = [task(p, train) for task, p in zip(tasks, part_prior.stripes(inputs, self.num_parts))]
      features.append(jnp.concatenate(at_heads, axis=-1).astype(jnp.float32))  # g
      heads += at_heads
      names += [f"classifier_at{k}" for k in range(self.num_parts)]
    outputs = {"embedding": features[0], "metric_features": jnp.stack(features)}
    if self.num_classes:
      outputs["logits"] = jnp.stack([
          classifier(self.num_classes, self.dtype, name)(f).astype(jnp.float32)
          for name, f in zip(names, heads)])
    return outputs


def loss(outputs, batch, params, label_smoothing=0.0, triplet_margin=0.2, alignment="class",
         alignment_weight=1.0):
  """Eq. 10: L_ID + L_TRI + lambda L_align.

  L_ID (Eq. 1): softmax CE of every MT and AT head, averaged over the batch and
  summed over the 2K heads. L_TRI (Eq. 3): batch-hard triplet with cosine
  distance (Eq. 4) on h, averaged over the N_T anchors that violate the margin.
  L_align: `alignment`='class' is L_CF (Eq. 8, the paper's), 'sample' L_SF
  (Eq. 9, for the comparison of Table 4), 'none' off; weighted by
  `alignment_weight` (lambda = 1, Sec. 5.1). Without ATs (prior 'none') there is
  nothing to align and the term is 0.
  """
  del params
  if alignment not in ALIGNMENTS:
    raise ValueError(f"MPN: unknown alignment {alignment!r}; use one of {ALIGNMENTS}.")
  labels = batch["label"]
  ce = losses.cross_entropy(outputs["logits"], labels, label_smoothing).mean(axis=-1).sum()
  h = outputs["metric_features"][0]
  triplet = losses.active_mean(losses.batch_hard_triplet(h, labels, triplet_margin, "cosine"))
  align = jnp.zeros((), jnp.float32)
  if outputs["metric_features"].shape[0] > 1 and alignment != "none":
    g = outputs["metric_features"][1]
    align = (losses.class_mean_alignment(h, g, labels) if alignment == "class"
             else losses.sample_alignment(h, g))
  total = ce + triplet + alignment_weight * align
  return total, {"cross_entropy": ce, "triplet": triplet, "alignment": align}


def _requires(model):
  return ("mask",) if model.prior in ("mask", "roi") else ()


SPEC = NetworkSpec(name="mpn", module=MPN, loss=loss, train_inputs=(("mask", 1),),
                   requires=_requires, imagenet_layout=resnet.imagenet_layout)
