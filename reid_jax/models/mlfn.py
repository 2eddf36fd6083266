"""MLFN: Multi-Level Factorisation Net (Chang, Hospedales, Xiang; CVPR 2018).

Sec. 3.1: N = 16 blocks, each with K_n = 32 factor modules (FMs, realised as the
groups of a grouped 3x3 convolution) and a factor selection module (FSM) whose
sigmoid output S_n (Eq. 2) gates the FMs (Eq. 4). The factor signature
S_hat = [S_1, ..., S_N] (Eq. 5) and the pooled final map are projected to d = 1024
and averaged into the test feature R (Eq. 6). Block layout, FSM widths and the
initialisation follow torchreid's `mlfn`, whose parameter count this matches.

CIFAR-100 (Sec. 4.1, "MLFN Architecture Details"; Sec. 4.3): N = 9 blocks, hence
K = 9 x 32 = 288; the paper gives no more (its supplementary material is not public).
`stem='cifar'` with `stage_blocks=(3, 3, 3)` is the layout of the ResNeXt-29 it compares
with (Xie et al., CVPR 2017, Sec. 5.3) built of MLFN's blocks: one 3x3 conv at the full
32x32 resolution, three stages of 3 blocks (outputs 256/512/1024, stride 2 entering
stages 2 and 3, an 8x8 final map); 8,289,796 parameters with 100 classes.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from reid_jax import losses
from reid_jax.models.layers import batch_norm, classifier, conv_init
from reid_jax.models.spec import NetworkSpec
from reid_jax.ops import grouped_conv

STAGE_CHANNELS = (256, 512, 1024, 2048)
# 'imagenet': 7x7/2 conv + 3x3/2 max pool (torchreid); 'cifar': one 3x3/1 conv (ResNeXt-29).
STEMS = ("imagenet", "cifar")
# FSM hidden widths per stage (torchreid `mlfn`).
FSM_CHANNELS = ((128, 64), (256, 128), (512, 128), (512, 128))


def _pad(k):
  return ((k // 2, k // 2), (k // 2, k // 2))


class MLFNBlock(nn.Module):
  """One MLFN block B_n: FMs gated by the FSM, plus a shortcut (Eq. 4)."""
  out_channels: int
  stride: int
  fsm_channels: Sequence[int]
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    conv = lambda f, k, s=1, g=1, bias=False, name=None: nn.Conv(
        f, (k, k), (s, s), padding=_pad(k), feature_group_count=g, use_bias=bias,
        kernel_init=conv_init, dtype=self.dtype, name=name,
        conv_general_dilated=grouped_conv.conv_general_dilated)
    norm = lambda name: batch_norm(train, self.dtype, name)
    mid = self.out_channels // 2

    # FSM (Sec. 3.1): reads the block input X_n.
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    for i, width in enumerate(self.fsm_channels):
      s = nn.relu(norm(f"fsm_bn{i}")(conv(width, 1, bias=True, name=f"fsm_conv{i}")(s)))
    s = conv(self.groups, 1, bias=True, name="fsm_gate")(s)
    s = nn.sigmoid(norm("fsm_gate_bn")(s))  # S_n, Eq. 2

    # Factor modules: the groups of a grouped convolution (`ops.grouped_conv`: the
    # backend's fast formulation, same parameters as XLA's `feature_group_count`).
    y = nn.relu(norm("fm_bn1")(conv(mid, 1, name="fm_conv1")(x)))
    y = nn.relu(norm("fm_bn2")(conv(mid, 3, self.stride, self.groups, name="fm_conv2")(y)))
    # Mode-4 product with S_n: every channel of FM i is scaled by S_n,i.
    y = y * jnp.repeat(s, mid // self.groups, axis=-1)
    y = nn.relu(norm("fm_bn3")(conv(self.out_channels, 1, name="fm_conv3")(y)))

    if x.shape[-1] != self.out_channels or self.stride > 1:
      x = norm("shortcut_bn")(conv(self.out_channels, 1, self.stride, name="shortcut_conv")(x))
    return nn.relu(x + y), s.reshape(s.shape[0], -1)


class MLFN(nn.Module):
  """MLFN for re-ID. `width` scales every channel count; `stage_blocks`, `groups`
  and `embed_dim` give smaller variants; `stem='cifar'` with `stage_blocks=(3, 3, 3)`
  is the paper's 9-block CIFAR-100 net (see the module docstring).

  Outputs: `'embedding'` R [B, embed_dim] and, with classes, `'logits'` [1, B, C];
  the factor signature S_hat [B, N * groups] (N blocks) is sown as
  `intermediates/factor_signature`."""
  num_classes: int
  width: float = 1.0
  stage_blocks: Sequence[int] = (3, 4, 6, 3)
  groups: int = 32
  embed_dim: int = 1024
  stem: str = "imagenet"
  dtype: Any = jnp.float32

  def __post_init__(self):
    if self.stem not in STEMS:
      raise ValueError(f"stem {self.stem!r} is not one of {STEMS}")
    super().__post_init__()

  @nn.compact
  def __call__(self, images, train=False):
    w = lambda c: max(int(c * self.width), self.groups)
    norm = lambda name: batch_norm(train, self.dtype, name)
    x = images.astype(self.dtype)
    k, stride = (7, 2) if self.stem == "imagenet" else (3, 1)
    x = nn.Conv(w(64), (k, k), (stride, stride), padding=_pad(k), kernel_init=conv_init,
                dtype=self.dtype, name="stem_conv")(x)
    x = nn.relu(norm("stem_bn")(x))
    if self.stem == "imagenet":
      x = nn.max_pool(x, (3, 3), (2, 2), padding=_pad(3))

    signature = []
    for stage, num_blocks in enumerate(self.stage_blocks):
      for b in range(num_blocks):
        x, s = MLFNBlock(
            out_channels=w(STAGE_CHANNELS[stage]),
            stride=2 if stage > 0 and b == 0 else 1,
            fsm_channels=tuple(w(c) for c in FSM_CHANNELS[stage]),
            groups=self.groups, dtype=self.dtype, name=f"block{stage + 1}_{b}")(x, train)
        signature.append(s)
    signature = jnp.concatenate(signature, axis=-1)  # S_hat, Eq. 5
    self.sow("intermediates", "factor_signature", signature.astype(jnp.float32))

    def project(v, name):
      v = nn.Dense(self.embed_dim, use_bias=False, kernel_init=conv_init,
                   dtype=self.dtype, name=name)(v)
      return nn.relu(norm(name + "_bn")(v))

    deep = project(jnp.mean(x, axis=(1, 2)), "fc_x")
    factor = project(signature, "fc_s")
    r = ((deep + factor) / 2).astype(jnp.float32)  # R, Eq. 6
    outputs = {"embedding": r}
    if self.num_classes:
      outputs["logits"] = classifier(self.num_classes, self.dtype)(r).astype(jnp.float32)[None]
    return outputs


# Sec. 3.2: softmax cross-entropy on the identity logits of R.
SPEC = NetworkSpec(name="mlfn", module=MLFN, loss=losses.identity_loss)
