"""A network's outputs over every image of a split, in split order.

`extract_features` gives the test features of an embedding network (optionally
averaged with the mirrored images'), `encode_split` a pairwise network's (KPM's)
per-image encodings. Both run one jitted function per batch of the evaluation
pipeline (`data.eval_batches`), the batch sharded over the mesh, and gather the
results of every process, so they work unchanged on one device or many hosts.
"""
import functools

import jax
import numpy as np
from jax.experimental import multihost_utils

from reid_jax import data, models, sharding


def embedding_fn(model, spec, flip):
  """`embed(variables, inputs) -> [B, D]`: the test feature of a batch of normalised
  inputs ({key: [B, H, W, C] float32} of `spec.inputs`), averaged with the mirrored
  inputs' when `flip`. Not jitted (`reid_jax.serving` exports it too)."""
  def embed(variables, inputs):
    def features(inputs):
      args, kwargs = spec.apply_inputs(inputs)
      return model.apply(variables, *args, train=False, **kwargs)["embedding"]
    out = features(inputs)
    if flip:  # average with the mirrored image's feature
      out = (out + features(jax.tree.map(lambda x: x[:, :, ::-1], inputs))) / 2
    return out

  return embed


@functools.lru_cache(maxsize=8)
def _embed_fn(model, spec, flip, mesh):
  return jax.jit(embedding_fn(model, spec, flip),
                 in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=sharding.batch_sharded(mesh))


def over_split(fn, variables, split, config, mesh, keys):
  """Jitted `fn(variables, inputs)` (a pytree of [B, ...] arrays) over every image
  of `split`: the numpy pytree of [len(split), ...] arrays, in split order."""
  out = None
  for batch in data.eval_batches(split, config.eval_batch_size, config.image_size):
    result = fn(variables, sharding.global_batch(mesh, {k: batch[k] for k in keys}))
    result = jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)),
                          result)
    index = multihost_utils.process_allgather(batch["index"], tiled=True)
    valid = multihost_utils.process_allgather(batch["valid"], tiled=True)
    if out is None:
      out = jax.tree.map(lambda x: np.zeros((len(split), *x.shape[1:]), x.dtype), result)
    for whole, part in zip(jax.tree.leaves(out), jax.tree.leaves(result)):
      whole[index[valid]] = part[valid]
  return out


def extract_features(model, variables, split, config, mesh):
  """The [len(split), d] float32 test features of `split`, in split order."""
  spec = models.get_spec(config.model)
  embed = _embed_fn(model, spec, bool(config.flip_test), mesh)
  # Test-time inputs only (no masks).
  return over_split(embed, variables, split, config, mesh, spec.input_keys).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _encode_fn(model, spec, mesh):
  def encode(variables, inputs):
    args, kwargs = spec.apply_inputs(inputs)
    return model.apply(variables, *args, train=False, method="encode", **kwargs)

  return jax.jit(encode, in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                 out_shardings=sharding.batch_sharded(mesh))


def encode_split(model, variables, split, config, mesh):
  """A pairwise network's `encode` of every image of `split`: its dict of numpy
  arrays [len(split), ...], in split order."""
  spec = models.get_spec(config.model)
  return over_split(_encode_fn(model, spec, mesh), variables, split, config, mesh,
                    spec.input_keys)
