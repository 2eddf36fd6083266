"""Checkpoints: orbax managers, resuming, evaluation restores and `init_from`.

A workdir keeps its checkpoints in `<workdir>/checkpoints/<step>/` (orbax
`CheckpointManager`: atomic, the latest `keep` kept). Each holds the whole train
state: `step`, `params`, `opt_state`, `batch_stats`. Evaluation and `init_from`
read only `params` and `batch_stats`, so they need no optimiser. `init_from` also
reads a torchreid model file (`pretrained.load_torchreid`).
"""
import os

import jax
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util

from reid_jax import pretrained, sharding
from reid_jax.pretrained import InitReport

_ITEM = "default"  # the item name a single-item CheckpointManager writes
_MAX_LISTED = 20


def quiet_logs():
  """orbax logs every save and restore step by step at INFO: keep the log to ours."""
  logging.get_absl_handler().addFilter(lambda record: "/orbax/" not in record.pathname)


def manager(workdir, keep=3):
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                               options=options)


def restore_latest(ckpt_manager, state, mesh):
  """`state` replaced by the latest checkpoint of `ckpt_manager`, if there is one."""
  step = ckpt_manager.latest_step()
  if step is None:
    return state
  replicated = sharding.replicated(mesh)
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)
  logging.info("Resuming from checkpoint at step %d.", step)
  return ckpt_manager.restore(step, args=ocp.args.StandardRestore(abstract))


def find(path):
  """(step directory, step) of the checkpoint `path` names: a workdir (its latest
  checkpoint), its `checkpoints/` folder (the latest), or one `checkpoints/<step>`."""
  path = os.path.abspath(path)
  candidates = [os.path.join(path, "checkpoints"), path]
  for folder in candidates:
    if os.path.isdir(os.path.join(folder, _ITEM)) and os.path.basename(folder).isdigit():
      return folder, int(os.path.basename(folder))
    if os.path.isdir(folder):
      step = ocp.CheckpointManager(folder).latest_step()
      if step is not None:
        return os.path.join(folder, str(step)), step
  raise FileNotFoundError(
      f"No checkpoint at {path}: name a workdir written by reid_jax.main, its "
      "checkpoints/ folder or one checkpoints/<step> folder.")


def latest_step(workdir):
  """The step of the latest complete checkpoint on disk in `workdir`, or None."""
  try:
    return find(workdir)[1]
  except FileNotFoundError:
    return None


def read_variables(step_dir, mesh, like=None):
  """{'params', 'batch_stats'} of the checkpoint in `step_dir`, replicated on `mesh`.

  `like` (variables or their `jax.eval_shape`) gives the tree to restore into;
  without it the checkpoint's own tree is read. The optimiser state is not read.
  """
  checkpointer = ocp.PyTreeCheckpointer()
  item = os.path.join(step_dir, _ITEM)
  metadata = checkpointer.metadata(item).item_metadata.tree
  stored = {k: metadata[k] for k in ("params", "batch_stats") if k in metadata}
  if like is None:
    like = stored
  else:
    like = {k: like[k] for k in ("params", "batch_stats") if k in like}
    found = differences(stored, like)
    if found:
      name, theirs, ours = found[0]
      raise ValueError(
          f"the checkpoint {step_dir} holds another network: {len(found)} variables differ, "
          f"the first {name}: checkpoint {theirs or 'absent'}, network {ours}.")
  replicated = sharding.replicated(mesh)
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), like)
  return checkpointer.restore(item, args=ocp.args.PyTreeRestore(
      item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
      partial_restore=True))


def differences(stored, like):
  """[(name, stored shape or None, expected shape)] for every variable of `like` that
  `stored` lacks or holds with another shape (trees of arrays or of their
  metadata), by flattened name ('params/part0/conv1/kernel'), sorted. Variables
  only `stored` holds (a classifier the evaluation does not build) are fine."""
  flat = lambda tree: {k: tuple(v.shape) for k, v in
                       traverse_util.flatten_dict(tree, sep="/").items()}
  theirs, ours = flat(stored), flat(like)
  return [(name, theirs.get(name), shape) for name, shape in sorted(ours.items())
          if theirs.get(name) != shape]


def _is_classifier(key):
  return any(part.startswith("classifier") for part in key)


def init_from(variables, path, mesh):
  """`variables` with every array of the same name and shape read from the
  checkpoint `path` (see `find`), and the report of what was (not) loaded; a
  torchreid `.pth` / `.pth.tar` file is read by `pretrained.load_torchreid`.

  Identity classifiers (modules named `classifier*`) whose class count differs
  keep their fresh initialisation; any other shape mismatch is an error listing
  them all, since it means the checkpoint is of another architecture or width.
  """
  if pretrained.is_torch_file(path) and os.path.isfile(path):
    return pretrained.load_torchreid(variables, path)
  step_dir, _ = find(path)
  source = traverse_util.flatten_dict(read_variables(step_dir, mesh), sep="/")
  target = traverse_util.flatten_dict(variables)
  loaded, fresh, skipped, mismatched = [], [], [], []
  for key, value in target.items():
    name = "/".join(key)
    if name not in source:
      fresh.append(name)
    elif source[name].shape == value.shape:
      target[key] = source[name].astype(value.dtype)
      loaded.append(name)
    elif _is_classifier(key):
      skipped.append(name)
    else:
      mismatched.append(f"{name}: checkpoint {source[name].shape}, network {value.shape}")
  if mismatched:
    more = len(mismatched) - _MAX_LISTED
    raise ValueError(f"the checkpoint {step_dir} does not fit the network ({len(mismatched)} "
                     "shape mismatches outside the classifiers):\n  "
                     + "\n  ".join(mismatched[:_MAX_LISTED])
                     + (f"\n  ... and {more} more" if more > 0 else ""))
  if not loaded:
    raise ValueError(f"no variable name of the checkpoint {step_dir} matches the network; "
                     f"it holds e.g. {sorted(source)[:5]}.")
  names = {"/".join(k) for k in target}
  report = InitReport(step_dir, tuple(loaded), tuple(fresh), tuple(skipped),
                      tuple(sorted(set(source) - names)))
  return traverse_util.unflatten_dict(target), report
