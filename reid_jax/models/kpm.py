"""KPM: deep Kronecker-Product Matching (Shen et al., CVPR 2018).

A siamese network that scores a pair of images rather than embedding one. Both
images pass through one ImageNet ResNet-50; an hourglass (Sec. 3.2, Fig. 4)
turns layer4, layer3 and layer2 into three maps S1, S2, S3 (8x4, 16x8, 32x16 at
256x128). Per scale, the query map X and the gallery map Y (L2-normalised at each
position) are matched (Eq. 5-7), Y is softly warped onto X (Eq. 8), and the
differences are pooled with the residual self-attention weights of X
(alpha = 1 + softmax(a / tau_RSA), Eq. 9-10): `reid_jax.ops.kpm`. The pooled
difference of each scale is squared and batch-normalised; the three are
concatenated and a dense layer gives the same-person logit.

Scoring is split in two so that evaluation encodes every image once:
`encode(images)` gives the per-image maps and attention, `score(q, g)` the
logits of every (query, gallery) pair of two encoded sets. In training the
network draws pairs inside the batch (`sample_pairs`, pos:neg 1:3 by default)
and returns their logits for the binary cross-entropy (`loss`). The
`'embedding'` output is the pooled layer4 feature: the first stage of the
cascade evaluation (`reid_jax.evaluate`).

Table 5's ablations are the fields `matching` ('none' = the baseline's
position-wise difference, 'warp' = KPM, 'nowarp' = KPM without warping),
`attention` (RSA) and `hourglass` (HG).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax import losses
from reid_jax.models import resnet
from reid_jax.models.layers import batch_norm, conv_init
from reid_jax.models.spec import NetworkSpec
from reid_jax.ops import kpm as kpm_ops

MATCHINGS = ("warp", "nowarp", "none")


def sample_pairs(labels: jax.Array, rng: jax.Array, negatives_per_positive: int):
  """Training pairs drawn inside a batch (Sec. 4.2: pos:neg 1:3 on Market-1501).

  labels: [B]. Each image is the query of one positive pair (another image of its
  identity, drawn uniformly) and of `negatives_per_positive` = r negative pairs
  (images of other identities, drawn uniformly without replacement). Returns
  (query [P], gallery [P], target [P], weight [P]) with P = B (1 + r): batch
  indices, 1.0 for same identity, and weight 0 for a pair the batch cannot
  supply (an image whose identity has no other image, or fewer than r others).
  """
  size = labels.shape[0]
  same = labels[:, None] == labels[None, :]
  positive_ok = same & ~jnp.eye(size, dtype=bool)
  pos_key, neg_key = jax.random.split(rng)
  # Uniform keys in [0, 1), -1 where not allowed: the argmax / top-k is a uniform draw.
  pos_keys = jnp.where(positive_ok, jax.random.uniform(pos_key, (size, size)), -1.0)
  positive = jnp.argmax(pos_keys, axis=1)
  neg_keys, negative = jax.lax.top_k(
      jnp.where(~same, jax.random.uniform(neg_key, (size, size)), -1.0), negatives_per_positive)
  images = jnp.arange(size)
  queries = jnp.concatenate([images, jnp.repeat(images, negatives_per_positive)])
  gallery = jnp.concatenate([positive, negative.reshape(-1)])
  target = jnp.concatenate([jnp.ones(size), jnp.zeros(size * negatives_per_positive)])
  weight = jnp.concatenate([positive_ok.any(axis=1), (neg_keys >= 0).reshape(-1)])
  return queries, gallery, target, weight.astype(jnp.float32)


def _upsample2(x):
  """Bilinear x2 (half-pixel centres, torch's align_corners=False)."""
  b, h, w, c = x.shape
  return jax.image.resize(x, (b, 2 * h, 2 * w, c), "bilinear")


class Hourglass(nn.Module):
  """Sec. 3.2, Fig. 4: S1 = layer4; each finer scale is a 1x1 conv of the coarser
  one to the lateral map's channels (2048 -> 1024, 1024 -> 512), upsampled x2
  bilinearly, plus a 1x1 conv of the backbone map of that size (layer3, layer2).
  FPN-style 1x1 convs with bias, no BatchNorm."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, maps):
    conv = lambda features, name: nn.Conv(features, (1, 1), kernel_init=conv_init,
                                          dtype=self.dtype, name=name)
    scales = [maps["layer4"]]
    for i, lateral in enumerate(("layer3", "layer2")):
      channels = maps[lateral].shape[-1]
      scales.append(_upsample2(conv(channels, f"top_down{i}")(scales[-1]))
                    + conv(channels, f"lateral{i}")(maps[lateral]))
    return scales


class ResidualSelfAttention(nn.Module):
  """Sec. 3.1.3: two 1x1 conv + BN + ReLU of `features` channels, a 1x1 conv to one
  channel, a spatial softmax at temperature `tau` (Eq. 9); alpha = 1 + a~.
  [B, h, w, C] -> alpha [B, h * w]."""
  features: int = 256
  tau: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    for i in range(2):
      x = nn.Conv(self.features, (1, 1), use_bias=False, kernel_init=conv_init,
                  dtype=self.dtype, name=f"conv{i}")(x)
      x = nn.relu(batch_norm(train, self.dtype, f"bn{i}")(x))
    a = nn.Conv(1, (1, 1), kernel_init=conv_init, dtype=self.dtype, name="score")(x)
    a = a.reshape(a.shape[0], -1).astype(jnp.float32)
    return 1.0 + jax.nn.softmax(a / self.tau, axis=-1)


class MatchingConvs(nn.Module):
  """'KPM w/o warp' (Sec. 4.4, an FPNN-like extension): the matching maps beta
  [..., M, N] of X's M = h x w positions, read as an h x w map of N channels, go
  through a 1x1 and a 3x3 conv + BN + ReLU of `features` channels; the result is
  pooled over X's positions with the weights alpha [..., M]."""
  features: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, beta, alpha, size, train):
    lead, (height, width) = beta.shape[:-2], size
    x = beta.reshape(-1, height, width, beta.shape[-1]).astype(self.dtype)
    for i, k in enumerate((1, 3)):
      x = nn.Conv(self.features, (k, k), padding=((k // 2, k // 2),) * 2, use_bias=False,
                  kernel_init=conv_init, dtype=self.dtype, name=f"conv{i}")(x)
      x = nn.relu(batch_norm(train, self.dtype, f"bn{i}")(x))
    x = x.reshape(*lead, height * width, self.features).astype(jnp.float32)
    return jnp.einsum("...m,...mf->...f", alpha, x)


class PairHead(nn.Module):
  """Per scale: elementwise square ('ES', Fig. 4; not for the matching-map
  features of 'nowarp') and BatchNorm; the scales concatenated; Dense(1)."""
  square: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, train):
    parts = [batch_norm(train, self.dtype, f"bn{i}")(f * f if self.square else f)
             for i, f in enumerate(features)]
    logit = nn.Dense(1, dtype=self.dtype, name="fc")(jnp.concatenate(parts, axis=-1))
    return logit[..., 0].astype(jnp.float32)


class KPM(nn.Module):
  """KPM with the Table 5 switches `matching`, `attention` and `hourglass`.

  num_classes is unused (the network verifies pairs; it has no identity
  classifier). `tau` is tau_KPM (Eq. 7), `tau_rsa` tau_RSA (Eq. 9);
  `negatives_per_positive` the pair ratio of training; `impl` the matching
  op's implementation ('einsum' or 'fused', `reid_jax.ops.kpm`). `width` scales
  every channel count and `stage_blocks` the ResNet depth, for tiny variants.

  `__call__(images, train, label=None)`: `'embedding'` [B, D] (pooled layer4);
  in training also `'pair_logits'`, `'pair_targets'` and `'pair_weights'` [P] of
  the pairs drawn from `label` [B].
  """
  num_classes: int = 0
  width: float = 1.0
  stage_blocks: Sequence[int] = resnet.RESNET50_BLOCKS
  matching: str = "warp"
  attention: bool = True
  hourglass: bool = True
  tau: float = 0.05
  tau_rsa: float = 1.0
  attention_dim: int = 256
  negatives_per_positive: int = 3
  impl: str = "einsum"
  dtype: Any = jnp.float32

  def __post_init__(self):
    if self.matching not in MATCHINGS:
      raise ValueError(f"KPM: unknown matching {self.matching!r}; use one of {MATCHINGS}.")
    if self.impl not in kpm_ops.IMPLEMENTATIONS:
      raise ValueError(f"KPM: unknown impl {self.impl!r}; use one of {kpm_ops.IMPLEMENTATIONS}.")
    if len(self.stage_blocks) != 4:
      raise ValueError(f"KPM needs the four ResNet stages, got stage_blocks={self.stage_blocks}.")
    for name in ("tau", "tau_rsa"):
      if not getattr(self, name) > 0:
        raise ValueError(f"KPM: {name} must be positive, got {getattr(self, name)}.")
    if self.negatives_per_positive < 1:
      raise ValueError("KPM: negatives_per_positive must be at least 1, got "
                       f"{self.negatives_per_positive}.")
    super().__post_init__()

  def setup(self):
    self.backbone = resnet.ResNetBackbone(self.width, self.stage_blocks, dtype=self.dtype)
    num_scales = 3 if self.hourglass else 1
    if self.hourglass:
      self.pyramid = Hourglass(self.dtype)
    if self.attention:
      self.rsa = [ResidualSelfAttention(resnet.scaled(self.attention_dim, self.width),
                                        self.tau_rsa, self.dtype) for _ in range(num_scales)]
    if self.matching == "nowarp":
      self.matching_convs = [MatchingConvs(resnet.scaled(256, self.width), self.dtype)
                             for _ in range(num_scales)]
    self.head = PairHead(square=self.matching != "nowarp", dtype=self.dtype)

  def encode(self, images, train=False):
    """Per image, computed once: {'embedding': [B, D] pooled layer4, 'maps': per
    scale [B, h, w, C] L2-normalised at each position, 'alpha': per scale
    [B, h * w] (1 without attention)}."""
    maps = self.backbone(images, train)
    scales = self.pyramid(maps) if self.hourglass else [maps["layer4"]]
    alphas = tuple(self.rsa[i](x, train) if self.attention
                   else jnp.ones((x.shape[0], x.shape[1] * x.shape[2]), jnp.float32)
                   for i, x in enumerate(scales))
    normalised = tuple((x / jnp.maximum(jnp.linalg.norm(x.astype(jnp.float32), axis=-1,
                                                        keepdims=True), 1e-12)).astype(x.dtype)
                       for x in scales)
    return {"embedding": jnp.mean(maps["layer4"], axis=(1, 2)).astype(jnp.float32),
            "maps": normalised, "alpha": alphas}

  def score(self, query, gallery, train=False):
    """Same-person logits [Q, G] of every pair of two `encode` outputs (Q and G images)."""
    return self._logits(query, gallery, pairs=False, train=train)

  def pair_logits(self, encoded, queries, gallery, train=False):
    """Logits [P] of the pairs (encoded[queries[p]], encoded[gallery[p]]) of one
    encoded batch."""
    take = lambda idx: jax.tree.map(lambda a: a[idx], encoded)
    return self._logits(take(queries), take(gallery), pairs=True, train=train)

  def _logits(self, query, gallery, pairs, train):
    features = []
    for s, (x, y, alpha) in enumerate(zip(query["maps"], gallery["maps"], query["alpha"])):
      h, w = x.shape[1:3]
      x, y = x.reshape(x.shape[0], h * w, -1), y.reshape(y.shape[0], h * w, -1)
      features.append(self._difference(s, x, y, alpha, (h, w), pairs, train))
    return self.head(features, train)

  def _difference(self, scale, x, y, alpha, size, pairs, train):
    """The pooled feature of one scale: [P, C] for pairs, [Q, G, C] for every pair."""
    if self.matching == "warp":  # Eq. 10
      pool = kpm_ops.match_pool_pairs if pairs else kpm_ops.match_pool
      return pool(x, y, alpha, tau=self.tau, impl=self.impl)
    if self.matching == "none":  # the baseline: no alignment, sum_i alpha_i (x_i - y_i)
      pooled_x = jnp.einsum("...m,...mc->...c", alpha, x.astype(jnp.float32))
      if pairs:
        return pooled_x - jnp.einsum("pm,pmc->pc", alpha, y.astype(jnp.float32))
      return pooled_x[:, None] - jnp.einsum("qm,gmc->qgc", alpha, y.astype(jnp.float32))
    if pairs:  # 'nowarp'
      beta = kpm_ops.matching(x, y, tau=self.tau)
    else:
      beta = kpm_ops.matching(x[:, None], y[None], tau=self.tau)
      alpha = jnp.broadcast_to(alpha[:, None], beta.shape[:-1])
    return self.matching_convs[scale](beta, alpha, size, train)

  def __call__(self, images, train=False, label=None):
    if not (train or self.is_initializing()):
      return {"embedding": self.encode(images)["embedding"]}
    encoded = self.encode(images, train)
    outputs = {"embedding": encoded["embedding"]}
    if train:
      if label is None:
        raise ValueError("KPM draws its training pairs from the identities: pass label=[B].")
      queries, gallery, target, weight = sample_pairs(
          label, self.make_rng("dropout"), min(self.negatives_per_positive, images.shape[0] - 1))
      outputs.update(pair_logits=self.pair_logits(encoded, queries, gallery, train),
                     pair_targets=target, pair_weights=weight)
    else:  # init: build the scoring head
      self.score(encoded, encoded)
    return outputs


def loss(outputs, batch, params):
  """Binary cross-entropy of the pairs' same/different logits (Sec. 4.3, the
  difference verification loss), averaged over the pairs the batch supplies.
  Also reports the pairs' accuracy at logit 0."""
  del batch, params
  weight = outputs["pair_weights"]
  count = jnp.maximum(jnp.sum(weight), 1.0)
  logits, target = outputs["pair_logits"], outputs["pair_targets"]
  bce = jnp.sum(weight * losses.binary_cross_entropy(logits, target)) / count
  accuracy = jnp.sum(weight * ((logits > 0) == (target > 0.5))) / count
  return bce, {"verification": bce, "pair_accuracy": accuracy}


SPEC = NetworkSpec(name="kpm", module=KPM, loss=loss, train_labels=True, evaluation="pairwise",
                   imagenet_layout=resnet.imagenet_layout)
