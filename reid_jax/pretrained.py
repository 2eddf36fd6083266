"""ImageNet ResNet-50 weights (torchvision / timm names) -> Flax variables.

`load_pretrained(variables, path, model_name)` reads a `.safetensors`, `.npz` or
(with torch installed) `.pth` state dict with torchvision's parameter names
(`conv1.weight`, `bn1.running_mean`, `layer1.0.downsample.0.weight`, ...; timm's
resnet50 uses the same) and writes it into every place where `model_name` embeds
the backbone (its `NetworkSpec.imagenet_layout`): parameters and the BatchNorm
running statistics. MGN's three branches each receive the same layer3[1:] and
layer4 (MGN Sec. 4.1). The classifier `fc.*` and `num_batches_tracked` are
ignored; any other name or shape that does not match is an error that lists them
all.
"""
import os

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


def read_state_dict(path):
  """{name: numpy array} from a `.safetensors`, `.npz` or `.pth`/`.pt` file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Pretrained weights file {path!r} does not exist.")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".safetensors":
    from safetensors.numpy import load_file
    return dict(load_file(path))
  if ext == ".npz":
    with np.load(path) as archive:
      return {name: archive[name] for name in archive.files}
  if ext in (".pth", ".pt"):
    try:
      import torch
    except ImportError as e:
      raise ImportError(f"Reading {path!r} needs torch; install it or convert the file "
                        "to .safetensors or .npz.") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
      raise ValueError(f"{path!r} holds a {type(state).__name__}, not a state dict.")
    return {name: (t.float() if t.is_floating_point() else t).numpy()
            for name, t in state.items()}
  raise ValueError(f"Unsupported weights file {path!r}: use .safetensors, .npz or .pth.")


def _torch_name(collection, module_path, leaf):
  """torchvision name of the Flax leaf at resnet-relative `module_path`."""
  parts = []
  for name in module_path:
    if name.startswith("block") and name[5:].isdigit():
      parts.append(name[5:])
    else:
      parts.append(_DOWNSAMPLE.get(name, name))
  return ".".join(parts + [_LEAVES[(collection, leaf)]])


def _to_flax(array, leaf):
  # torch OIHW -> Flax HWIO.
  return np.transpose(array, (2, 3, 1, 0)) if leaf == "kernel" else array


def _torch_shape(shape, leaf):
  return (shape[3], shape[2], shape[0], shape[1]) if leaf == "kernel" else tuple(shape)


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


def load_pretrained(variables, path, model_name):
  """`variables` with the backbone of registry model `model_name` read from `path`.

  `variables` is the output of `init` (or its `jax.eval_shape`); the leaves
  outside the backbone (reductions, classifiers, ...) are returned unchanged.
  """
  state = {k: v for k, v in read_state_dict(path).items() if not _ignored(k)}
  plan = _plan(variables, model_name)
  flat = traverse_util.flatten_dict(variables)
  missing = set(plan) - set(state)
  unexpected = set(state) - set(plan)
  mismatched = []
  for name in set(plan) & set(state):
    key = plan[name][0]
    expected = _torch_shape(flat[key].shape, key[-1])
    if tuple(state[name].shape) != expected:
      mismatched.append(f"{name}: file {tuple(state[name].shape)}, model {expected}")
  if missing or unexpected or mismatched:
    raise ValueError(
        f"Weights file {path!r} does not match the ResNet-50 backbone of {model_name!r}:"
        + (_listing("missing from the file", missing) if missing else "")
        + (_listing("unexpected in the file", unexpected) if unexpected else "")
        + (_listing("shape mismatches (torch layout)", mismatched) if mismatched else ""))
  for name, keys in plan.items():
    for key in keys:
      flat[key] = jnp.asarray(_to_flax(state[name], key[-1]), dtype=flat[key].dtype)
  return traverse_util.unflatten_dict(flat)
