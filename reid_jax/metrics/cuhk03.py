"""CUHK03 classic single-shot CMC (Li et al., CVPR 2014; torchreid's `eval_cuhk03`).

For each of `num_repeats` repeats the gallery keeps one image per identity, the
one of smallest key among those the query may see (for its own identity: the
ones from other cameras; junk never), with keys
u = jax.random.uniform(jax.random.key(seed), (num_repeats, num_gallery), jnp.float32).
The CMC is the average over repeats of the rank of the query's true match in that
one-per-identity gallery (ties in gallery order); mAP and mINP are computed on the
full gallery as in the Market-1501 protocol.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from reid_jax.metrics import distance


def sample_gallery(g_pids, num_repeats, seed):
  """(keys [R, G], picked gallery index [R, num_ids], identity of each column [num_ids])."""
  if num_repeats < 1:
    raise ValueError(f"num_repeats must be >= 1, got {num_repeats}")
  keys = jax.random.uniform(jax.random.key(seed), (num_repeats, len(g_pids)), jnp.float32)
  u, real = np.asarray(keys), np.flatnonzero(g_pids != -1)
  picks = []
  for row in u[:, real]:
    order = real[np.lexsort((row, g_pids[real]))]  # by identity, then key
    _, first = np.unique(g_pids[order], return_index=True)
    picks.append(order[first])
  ids = np.unique(g_pids[real])
  return keys, jnp.asarray(np.stack(picks).astype(np.int32)), jnp.asarray(ids.astype(np.int32))


@functools.partial(jax.jit, static_argnames=("max_rank", "metric"))
def single_shot_cmc(d, match_idx, num_matches, q_pids, keys, picks, pick_pids, max_rank,
                    metric=None):
  """[C, max_rank] CMC of each query averaged over the repeats (see module docstring).

  d [C, G] (or a `distance.dot_block` output and its metric); match_idx [C, P] with
  num_matches [C] true matches (same id, other camera).
  """
  d = distance.finish(d, metric)
  used = jnp.arange(match_idx.shape[1])[None, :] < num_matches[:, None]
  match_keys = jnp.where(used[None], keys[:, match_idx], jnp.inf)  # [R, C, P]
  own = jnp.take_along_axis(match_idx[None], jnp.argmin(match_keys, axis=2)[..., None], 2)[..., 0]
  d_own = d[jnp.arange(d.shape[0])[None, :], own][..., None]  # [R, C, 1]
  d_pick = jnp.moveaxis(d[:, picks], 1, 0)  # [R, C, num_ids]
  before = (d_pick < d_own) | ((d_pick == d_own) & (picks[:, None, :] < own[..., None]))
  rank = jnp.sum(before & (pick_pids[None, None, :] != q_pids[None, :, None]), axis=2)
  return jnp.mean(rank[..., None] <= jnp.arange(max_rank), axis=0)
