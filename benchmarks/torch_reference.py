"""PyTorch twins of reid_jax's MLFN, ResNet-50 and MGN, for parity tests and the
training-speed benchmark (`train_bench.py`).

- `MLFN`: torchreid's `MLFN` class (Chang et al., CVPR 2018; torchreid's layer
  layout, FSM widths and `groups=32` grouped 3x3 convolutions), with reid_jax's
  `width` / `stage_blocks` / `groups` / `embed_dim` so the quick-start size exists too;
- `ResNet50`: torchvision's ResNet-50 (v1.5, stride on the 3x3 conv) trunk with
  torchvision's parameter names, global average pooling and an identity classifier;
- `MGN`: Wang et al. (ACM MM 2018) as `reid_jax.models.mgn` builds it (trunk up to
  layer3[0], three branches of layer3[1:] + layer4, max pooling, eight 256-d
  reductions, eight classifiers).

`MLFN`'s modules are named as the Flax parameters (`block1_0.fm_conv2`), so
`load_flax(module, variables)` copies reid_jax's MLFN variables in (the parity test);
`ResNet50` and `MGN` keep torchvision's names (`backbone.layer1.0.conv1`).

`torchreid_model(module)` returns a model module of the `torchreid` package itself
(PyPI `torchreid`, torchreid's code): the full-size MLFN of the benchmark and of the
weight-import parity test is torchreid's own `mlfn.MLFN`.
"""
import copy
import importlib.util
import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

FLAX_NAMES = {"weight": ("kernel", "scale"), "bias": ("bias",), "running_mean": ("mean",),
              "running_var": ("var",)}


def torchreid_model(module):
  """`torchreid.reid.models.<module>` of the installed `torchreid` package, loaded
  from its file: `import torchreid` itself imports torchreid's data and
  visualisation tools (OpenCV, torchvision), which its model files do not need.
  None when torchreid is not installed."""
  spec = importlib.util.find_spec("torchreid")
  if spec is None:
    return None
  path = os.path.join(spec.submodule_search_locations[0], "reid", "models", f"{module}.py")
  spec = importlib.util.spec_from_file_location(f"torchreid_models_{module}", path)
  loaded = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(loaded)
  return loaded


def bn(c):
  return nn.BatchNorm2d(c)


class MLFNBlock(nn.Module):
  """torchreid's MLFNBlock: FMs (grouped 3x3 conv) gated by the FSM, and a shortcut."""

  def __init__(self, cin, cout, stride, fsm, groups):
    super().__init__()
    mid, self.groups = cout // 2, groups
    self.fm_conv1, self.fm_bn1 = nn.Conv2d(cin, mid, 1, bias=False), bn(mid)
    self.fm_conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=groups, bias=False)
    self.fm_bn2 = bn(mid)
    self.fm_conv3, self.fm_bn3 = nn.Conv2d(mid, cout, 1, bias=False), bn(cout)
    self.fsm_conv0, self.fsm_bn0 = nn.Conv2d(cin, fsm[0], 1), bn(fsm[0])
    self.fsm_conv1, self.fsm_bn1 = nn.Conv2d(fsm[0], fsm[1], 1), bn(fsm[1])
    self.fsm_gate, self.fsm_gate_bn = nn.Conv2d(fsm[1], groups, 1), bn(groups)
    self.shortcut = cin != cout or stride > 1
    if self.shortcut:
      self.shortcut_conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
      self.shortcut_bn = bn(cout)

  def forward(self, x):
    s = F.adaptive_avg_pool2d(x, 1)
    s = F.relu(self.fsm_bn0(self.fsm_conv0(s)))
    s = F.relu(self.fsm_bn1(self.fsm_conv1(s)))
    s = torch.sigmoid(self.fsm_gate_bn(self.fsm_gate(s)))
    y = F.relu(self.fm_bn1(self.fm_conv1(x)))
    y = F.relu(self.fm_bn2(self.fm_conv2(y)))
    b, c = y.shape[:2]
    y = y * s.repeat_interleave(c // self.groups, dim=1)  # every channel of FM i times S_i
    y = F.relu(self.fm_bn3(self.fm_conv3(y)))
    if self.shortcut:
      x = self.shortcut_bn(self.shortcut_conv(x))
    return F.relu(x + y), s.flatten(1)


class MLFN(nn.Module):
  """torchreid's MLFN; returns (logits [B, C], embedding [B, embed_dim])."""

  def __init__(self, num_classes, width=1.0, stage_blocks=(3, 4, 6, 3), groups=32, embed_dim=1024):
    super().__init__()
    w = lambda c: max(int(c * width), groups)
    channels = [w(c) for c in (256, 512, 1024, 2048)]
    fsm = [(w(a), w(b)) for a, b in ((128, 64), (256, 128), (512, 128), (512, 128))]
    self.stem_conv, self.stem_bn = nn.Conv2d(3, w(64), 7, 2, 3), bn(w(64))
    self.blocks, cin = [], w(64)
    for stage, n in enumerate(stage_blocks):
      for b in range(n):
        block = MLFNBlock(cin, channels[stage], 2 if stage and not b else 1, fsm[stage], groups)
        self.add_module(f"block{stage + 1}_{b}", block)
        self.blocks.append(block)
        cin = channels[stage]
    self.fc_x, self.fc_x_bn = nn.Linear(cin, embed_dim, bias=False), nn.BatchNorm1d(embed_dim)
    self.fc_s = nn.Linear(groups * sum(stage_blocks), embed_dim, bias=False)
    self.fc_s_bn = nn.BatchNorm1d(embed_dim)
    self.classifier = nn.Linear(embed_dim, num_classes)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.stem_bn(self.stem_conv(x))), 3, 2, 1)
    signature = []
    for block in self.blocks:
      x, s = block(x)
      signature.append(s)
    deep = F.relu(self.fc_x_bn(self.fc_x(x.mean((2, 3)))))
    factor = F.relu(self.fc_s_bn(self.fc_s(torch.cat(signature, 1))))
    v = (deep + factor) / 2
    return self.classifier(v), v


class Bottleneck(nn.Module):
  """torchvision's Bottleneck (stride on conv2), downsample as `downsample.0/1`."""

  def __init__(self, cin, planes, stride):
    super().__init__()
    self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), bn(planes)
    self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), bn(planes)
    self.conv3, self.bn3 = nn.Conv2d(planes, 4 * planes, 1, bias=False), bn(4 * planes)
    self.downsample = None
    if stride != 1 or cin != 4 * planes:
      self.downsample = nn.Sequential(nn.Conv2d(cin, 4 * planes, 1, stride, bias=False),
                                      bn(4 * planes))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return F.relu((x if self.downsample is None else self.downsample(x)) + y)


def stage(cin, planes, blocks, stride, start=0):
  """torchvision's `layer{i}` (blocks `start`.. of it; block 0 carries the stride)."""
  layers = [Bottleneck(cin if i == 0 else 4 * planes, planes, stride if i == 0 else 1)
            for i in range(blocks)]
  return nn.Sequential(*layers[start:])


class Trunk(nn.Module):
  """torchvision ResNet-50's conv1, bn1, max-pool and `layer1` .. `layer{len(blocks)}`."""

  def __init__(self, width=1.0, blocks=(3, 4, 6, 3), last_stride=2):
    super().__init__()
    w = lambda c: max(int(c * width), 1)
    self.conv1, self.bn1 = nn.Conv2d(3, w(64), 7, 2, 3, bias=False), bn(w(64))
    self.layers, cin = [], w(64)
    for i, n in enumerate(blocks):
      layer = stage(cin, w(64 * 2**i), n, 1 if i == 0 else last_stride if i == 3 else 2)
      self.add_module(f"layer{i + 1}", layer)
      self.layers.append(layer)
      cin = 4 * w(64 * 2**i)
    self.out_channels = cin

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
    for layer in self.layers:
      x = layer(x)
    return x


class ResNet50(nn.Module):
  """The IDE baseline: pooled layer4 (the embedding) and an identity classifier."""

  def __init__(self, num_classes, width=1.0, stage_blocks=(3, 4, 6, 3), last_stride=2):
    super().__init__()
    self.backbone = Trunk(width, stage_blocks, last_stride)
    self.classifier = nn.Linear(self.backbone.out_channels, num_classes)

  def forward(self, x):
    v = self.backbone(x).mean((2, 3))
    return self.classifier(v), v


class MGN(nn.Module):
  """MGN; returns (logits [8, B, C], the three reduced globals [3, B, 256])."""

  def __init__(self, num_classes, width=1.0, stage_blocks=(3, 4, 6, 3), parts=(2, 3), reduce_dim=256):
    super().__init__()
    w = lambda c: max(int(c * width), 1)
    self.backbone = Trunk(width, tuple(stage_blocks[:2]) + (1,))
    layer3 = stage(4 * w(128), w(256), stage_blocks[2], 2, start=1)
    self.stripes = [1] + list(parts)
    self.branches = nn.ModuleList()
    for stripes in self.stripes:
      branch = nn.Module()
      branch.layer3 = copy.deepcopy(layer3)
      branch.layer4 = stage(4 * w(256), w(512), stage_blocks[3], 2 if stripes == 1 else 1)
      branch.reductions = nn.ModuleList(
          nn.Sequential(nn.Linear(4 * w(512), w(reduce_dim), bias=False),
                        nn.BatchNorm1d(w(reduce_dim)), nn.ReLU())
          for _ in range(1 + (stripes if stripes > 1 else 0)))
      self.branches.append(branch)
    dims = [4 * w(512)] * 3 + [w(reduce_dim)] * sum(parts)
    self.classifiers = nn.ModuleList(nn.Linear(d, num_classes) for d in dims)

  def forward(self, x):
    x = self.backbone(x)
    pooled, reduced, parts = [], [], []
    for stripes, branch in zip(self.stripes, self.branches):
      y = branch.layer4(branch.layer3(x))
      z = F.adaptive_max_pool2d(y, 1).flatten(1)
      pooled.append(z)
      reduced.append(branch.reductions[0](z))
      if stripes > 1:
        p = F.adaptive_max_pool2d(y, (stripes, 1)).flatten(2)
        parts += [r(p[:, :, i]) for i, r in enumerate(branch.reductions[1:])]
    logits = [c(f) for c, f in zip(self.classifiers, pooled + parts)]
    return torch.stack(logits), torch.stack(reduced)


def batch_hard_triplet(features, labels, margin):
  """Per-anchor [margin + max d(a, p) - min d(a, n)]_+ (euclidean), averaged."""
  d = torch.cdist(features, features)
  same = labels[:, None] == labels[None, :]
  hardest_positive = d.masked_fill(~same, float("-inf")).amax(1)
  hardest_negative = d.masked_fill(same, float("inf")).amin(1)
  return F.relu(hardest_positive - hardest_negative + margin).mean()


def loss(name, outputs, labels, triplet_margin=1.2):
  """reid_jax's loss of network `name`: cross-entropy per head, summed (MLFN, IDE),
  plus batch-hard triplet on each reduced global (MGN)."""
  logits, features = outputs
  if name != "mgn":
    return F.cross_entropy(logits, labels)
  ce = sum(F.cross_entropy(head, labels) for head in logits)
  return ce + sum(batch_hard_triplet(f, labels, triplet_margin) for f in features)


def load_flax(module, variables):
  """Copies Flax `{'params', 'batch_stats'}` into `module`, whose parameter names
  are the Flax paths joined by dots (kernels transposed to torch's layout)."""
  flat = {}
  for collection in ("params", "batch_stats"):
    def walk(tree, path):
      for key, value in tree.items():
        if isinstance(value, dict):
          walk(value, path + (key,))
        else:
          flat[path + (key,)] = np.asarray(value, np.float32)
    walk(dict(variables.get(collection, {})), ())
  for name, tensor in list(module.state_dict().items()):
    *path, leaf = name.split(".")
    if leaf == "num_batches_tracked":
      continue
    value = next(flat[(*path, f)] for f in FLAX_NAMES[leaf] if (*path, f) in flat)
    if value.ndim == 4:
      value = value.transpose(3, 2, 0, 1)
    elif value.ndim == 2:
      value = value.T
    with torch.no_grad():
      tensor.copy_(torch.from_numpy(np.array(value)))
