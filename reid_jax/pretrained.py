"""Weights from PyTorch files -> Flax variables: ImageNet ResNet-50 backbones
(torchvision / timm names) and torchreid model-zoo networks.

`load_pretrained(variables, path, model_name)` reads a `.safetensors`, `.npz` or
(with torch installed) `.pth` state dict with torchvision's parameter names
(`conv1.weight`, `bn1.running_mean`, `layer1.0.downsample.0.weight`, ...; timm's
resnet50 uses the same) and writes it into every place where `model_name` embeds
the backbone (its `NetworkSpec.imagenet_layout`): parameters and the BatchNorm
running statistics. MGN's three branches each receive the same layer3[1:] and
layer4 (MGN Sec. 4.1). The classifier `fc.*` and `num_batches_tracked` are
ignored; any other name or shape that does not match is an error that lists them
all.

`load_torchreid(variables, path)` reads a whole network trained with torchreid
(Zhou et al., "Omni-Scale Feature Learning", ICCV 2019; its model zoo): `mlfn`
into reid_jax's `mlfn`, `resnet50` into `resnet50` (the IDE baseline), from a
`.pth` / `.pth.tar` state dict or training checkpoint (`model.pth.tar-60`).
"""
import collections
import dataclasses
import os
import pickle
import re

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from reid_jax import models

# Torch modules -> Flax module names (`reid_jax.models.resnet` mirrors the rest).
_DOWNSAMPLE = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
# (Flax collection, Flax leaf) -> torchvision leaf.
_LEAVES = {("params", "kernel"): "weight", ("params", "scale"): "weight",
           ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
           ("batch_stats", "var"): "running_var"}
_MAX_LISTED = 30
# torch.save files: `x.pth`, `x.pt`, torchreid's `model.pth.tar-60` / `model-best.pth.tar`.
TORCH_FILE = re.compile(r"\.(pth|pt)(\.tar)?(-\d+)?$", re.IGNORECASE)


def is_torch_file(path):
  """Whether `path` is named like a torch.save file (`.pth`, `.pt`, `.pth.tar[-N]`)."""
  return bool(TORCH_FILE.search(os.path.basename(path)))


def weights_name(path):
  """The name of a weights file or run folder, without its folder and torch suffix."""
  return TORCH_FILE.sub("", os.path.basename(os.path.normpath(path)))


def read_state_dict(path):
  """{name: numpy array} from a `.safetensors`, `.npz` or torch file (`is_torch_file`).

  A torch file may hold a training checkpoint (torchreid's `save_checkpoint`:
  `{'state_dict': ..., 'epoch', 'rank1', 'optimizer', ...}`); its `state_dict` is
  read, and DataParallel's `module.` prefix is removed from every name.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Pretrained weights file {path!r} does not exist.")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".safetensors":
    from safetensors.numpy import load_file
    return dict(load_file(path))
  if ext == ".npz":
    with np.load(path) as archive:
      return {name: archive[name] for name in archive.files}
  if is_torch_file(path):
    return _read_torch(path)
  raise ValueError(f"Unsupported weights file {path!r}: use .safetensors, .npz, .pth or .pth.tar.")


def _read_torch(path):
  try:
    import torch
  except ImportError as e:
    raise ImportError(f"Reading {path!r} needs torch; install it or convert the file "
                      "to .safetensors or .npz.") from e
  # Only tensors and plain values are unpickled (weights_only); a training
  # checkpoint's rank-1 is a numpy scalar (pickled by numpy 1 or 2) and its
  # scheduler holds a Counter.
  scalar = (np._core if hasattr(np, "_core") else np.core).multiarray.scalar
  allowed = [np.dtype, collections.Counter, scalar, (scalar, "numpy.core.multiarray.scalar"),
             *(type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32"))]
  try:
    with torch.serialization.safe_globals(allowed):
      state = torch.load(path, map_location="cpu", weights_only=True)
  except (pickle.UnpicklingError, RuntimeError) as e:
    reason = re.search(r"WeightsUnpickler error:\s*(.*?)(\. Please|\n|$)", str(e))
    raise ValueError(f"{path!r} is not a torch file of tensors and plain values (a corrupt "
                     "file, or one that pickles objects: save the model's state_dict() alone): "
                     f"{reason.group(1) if reason else str(e).splitlines()[0]}") from None
  if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
    state = state["state_dict"]
  if not isinstance(state, dict):
    raise ValueError(f"{path!r} holds a {type(state).__name__}, not a state dict.")
  others = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
  if others:
    raise ValueError(f"{path!r} is not a state dict: entries {others[:5]} are not tensors.")
  return {name.removeprefix("module."): (t.float() if t.is_floating_point() else t).numpy()
          for name, t in state.items()}


def _torch_name(collection, module_path, leaf):
  """torchvision name of the Flax leaf at resnet-relative `module_path`."""
  parts = []
  for name in module_path:
    if name.startswith("block") and name[5:].isdigit():
      parts.append(name[5:])
    else:
      parts.append(_DOWNSAMPLE.get(name, name))
  return ".".join(parts + [_LEAVES[(collection, leaf)]])


def _to_flax(array, shape):
  """torch layout -> the Flax layout of `shape`: conv OIHW -> HWIO; linear [O, I]
  or 1x1 conv [O, I, 1, 1] -> [I, O]."""
  if len(shape) == 4:
    return np.transpose(array, (2, 3, 1, 0))
  if len(shape) == 2:
    return array.reshape(array.shape[0], -1).T
  return array


def _torch_shape(shape, conv1x1=False):
  """The torch shape of a Flax array of `shape` (a Dense kernel stored as a 1x1 conv with `conv1x1`)."""
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if len(shape) == 2:
    return (shape[1], shape[0]) + ((1, 1) if conv1x1 else ())
  return tuple(shape)


def _plan(variables, model_name):
  """{torchvision name: [flat Flax keys]} for every backbone leaf of the model."""
  layout_fn = models.get_spec(model_name).imagenet_layout
  if layout_fn is None:
    with_layout = [n for n in models.names() if models.get_spec(n).imagenet_layout]
    raise ValueError(f"Model {model_name!r} has no ImageNet backbone to load; "
                     f"pretrained weights exist for {with_layout}.")
  layout = layout_fn(variables["params"])
  plan = {}
  for key in traverse_util.flatten_dict(variables):
    collection, *module_path, leaf = key
    for flax_prefix, torch_prefix in layout:
      if tuple(module_path[:len(flax_prefix)]) == flax_prefix:
        rest = tuple(torch_prefix) + tuple(module_path[len(flax_prefix):])
        plan.setdefault(_torch_name(collection, rest, leaf), []).append(key)
        break
  return plan


def _ignored(name):
  return name.startswith("fc.") or name.endswith("num_batches_tracked")


def _listing(title, items):
  items = sorted(items)
  more = f"\n    ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
  return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(items[:_MAX_LISTED]) + more


def _check(path, what, expected, state):
  """Raises one ValueError listing every name `state` lacks, has in excess or holds
  with another shape than `expected` ({torch name: torch shape})."""
  missing = set(expected) - set(state)
  unexpected = set(state) - set(expected)
  mismatched = [f"{name}: file {tuple(state[name].shape)}, model {expected[name]}"
                for name in set(expected) & set(state)
                if tuple(state[name].shape) != expected[name]]
  if missing or unexpected or mismatched:
    raise ValueError(
        f"Weights file {path!r} does not match {what}:"
        + (_listing("missing from the file", missing) if missing else "")
        + (_listing("unexpected in the file", unexpected) if unexpected else "")
        + (_listing("shape mismatches (torch layout)", mismatched) if mismatched else ""))


def load_pretrained(variables, path, model_name):
  """`variables` with the backbone of registry model `model_name` read from `path`.

  `variables` is the output of `init` (or its `jax.eval_shape`); the leaves
  outside the backbone (reductions, classifiers, ...) are returned unchanged.
  """
  state = {k: v for k, v in read_state_dict(path).items() if not _ignored(k)}
  plan = _plan(variables, model_name)
  flat = traverse_util.flatten_dict(variables)
  _check(path, f"the ResNet-50 backbone of {model_name!r}", {
      name: _torch_shape(flat[keys[0]].shape) for name, keys in plan.items()}, state)
  for name, keys in plan.items():
    for key in keys:
      flat[key] = jnp.asarray(_to_flax(state[name], flat[key].shape), dtype=flat[key].dtype)
  return traverse_util.unflatten_dict(flat)


@dataclasses.dataclass(frozen=True)
class InitReport:
  """What a weight import (`checkpoints.init_from`, `load_torchreid`) did, by
  flattened variable name ('params/global_fc/dense/kernel')."""
  source: str
  loaded: tuple
  fresh: tuple       # in the new network only: kept as initialised
  skipped: tuple     # classifiers whose class count differs: kept as initialised
  unused: tuple      # in the checkpoint only

  def summary(self, max_listed=20):
    def listing(title, names):
      if not names:
        return ""
      more = f", ... ({len(names) - max_listed} more)" if len(names) > max_listed else ""
      return f"\n  {title} ({len(names)}): " + ", ".join(names[:max_listed]) + more
    return (f"init_from {self.source}: loaded {len(self.loaded)} arrays"
            + listing("not loaded, not in the checkpoint", self.fresh)
            + listing("not loaded, class count differs", self.skipped)
            + listing("in the checkpoint but unused", self.unused))


# torchreid `mlfn` module names of reid_jax MLFN's (`reid_jax.models.mlfn`): the
# blocks are `feature.<n>`, the FSM an nn.Sequential (pool, conv, BN, ReLU, ...),
# fc_x / fc_s 1x1 convs + BN.
_MLFN_TOP = {"stem_conv": "conv1", "stem_bn": "bn1", "fc_x": "fc_x.0", "fc_x_bn": "fc_x.1",
             "fc_s": "fc_s.0", "fc_s_bn": "fc_s.1", "classifier": "classifier"}
_MLFN_BLOCK = {"fsm_conv0": "fsm.1", "fsm_bn0": "fsm.2", "fsm_conv1": "fsm.4",
               "fsm_bn1": "fsm.5", "fsm_gate": "fsm.7", "fsm_gate_bn": "fsm.8",
               "shortcut_conv": "downsample.0", "shortcut_bn": "downsample.1"}
_BLOCK = re.compile(r"block(\d+)_(\d+)$")


def _mlfn_names(keys):
  """{flat key: (torchreid name, stored as a 1x1 conv)} of an MLFN's variables, or None."""
  blocks = sorted({k[1] for k in keys if _BLOCK.match(k[1])},
                  key=lambda b: tuple(map(int, _BLOCK.match(b).groups())))
  index = {b: i for i, b in enumerate(blocks)}
  names = {}
  for collection, first, *rest in keys:
    leaf, rest = rest[-1], rest[:-1]
    if first in index and len(rest) == 1:
      module = f"feature.{index[first]}.{_MLFN_BLOCK.get(rest[0], rest[0])}"
    elif first in _MLFN_TOP and not rest:
      module = _MLFN_TOP[first]
    else:
      return None
    names[(collection, first, *rest, leaf)] = (
        f"{module}.{_LEAVES[(collection, leaf)]}", first in ("fc_x", "fc_s"))
  return names


def _resnet_names(keys):
  """{flat key: (torchreid name, False)} of a `resnet50` (IDE) network's variables, or None."""
  names = {}
  for collection, first, *path, leaf in keys:
    if first not in ("backbone", "classifier") or (first == "classifier") != (not path):
      return None
    names[(collection, first, *path, leaf)] = (_torch_name(collection, path or [first], leaf),
                                               False)
  return names


# torchreid model name (= the reid_jax network's) -> its name map.
TORCHREID_MODELS = {"mlfn": _mlfn_names, "resnet50": _resnet_names}


def load_torchreid(variables, path):
  """(`variables` read from the torchreid checkpoint `path`, its `InitReport`).

  `variables`: an `init` output of reid_jax's `mlfn` (torchreid `mlfn`, full size:
  the torchreid layout has 16 blocks of 32 groups) or `resnet50` (torchreid
  `resnet50`); which one is read from its module names. Every parameter and
  BatchNorm statistic is loaded, except the identity classifier when the class
  counts differ (torchreid's Market-1501 models have 751): it keeps its
  initialisation and the report says so; a network without a classifier
  (num_classes 0, as evaluation builds it) leaves the file's unused. Any other
  missing, unexpected or mis-shaped name is one ValueError listing them all.
  """
  flat = traverse_util.flatten_dict(variables)
  found = [(arch, names_of(list(flat))) for arch, names_of in TORCHREID_MODELS.items()]
  arch, names = next(((a, n) for a, n in found if n is not None), (None, None))
  if names is None:
    raise ValueError(
        f"load_torchreid reads torchreid's {sorted(TORCHREID_MODELS)} into the reid_jax "
        f"networks of the same names; these variables (modules "
        f"{sorted({k[1] for k in flat})[:8]}) are neither.")
  state = {k: v for k, v in read_state_dict(path).items() if not k.endswith("num_batches_tracked")}
  plan = {name: (key, _torch_shape(flat[key].shape, conv1x1)) for key, (name, conv1x1) in names.items()}
  head = lambda name: name.startswith("classifier.")
  skipped = sorted(n for n in plan if head(n) and n in state and state[n].shape != plan[n][1])
  fresh = sorted(n for n in plan if head(n) and n not in state)
  unused = sorted(n for n in state if head(n) and n not in plan)
  body = {n: shape for n, (_, shape) in plan.items() if n not in skipped and n not in fresh}
  _check(path, f"reid_jax's {arch} network (torchreid {arch})", body,
         {n: v for n, v in state.items() if n not in unused and n not in skipped})
  for name in body:
    key = plan[name][0]
    flat[key] = jnp.asarray(_to_flax(state[name], flat[key].shape), dtype=flat[key].dtype)
  flax_name = lambda n: "/".join(plan[n][0])
  report = InitReport(f"{path} (torchreid {arch})", tuple(map(flax_name, sorted(body))),
                      tuple(map(flax_name, fresh)),
                      tuple(f"{flax_name(n)}: file {state[n].shape}" for n in skipped),
                      tuple(unused))
  return traverse_util.unflatten_dict(flat), report
