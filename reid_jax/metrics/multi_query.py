"""Multi-query pooling (Market-1501 MQ; Zheng et al., ICCV 2015, Sec. 5).

The query images of one identity seen by one camera are pooled into a single
query feature, by the element-wise mean or max of their features.
"""
import jax
import jax.numpy as jnp
import numpy as np

POOLINGS = ("mean", "max")


def pool_queries(qf, q_pids, q_camids, pooling="mean"):
  """(pooled features [num_groups, d], ids, cameras, index of each group's first query).

  Groups are in the order of their first query."""
  if pooling not in POOLINGS:
    raise ValueError(f"query_pooling must be one of {POOLINGS} or None, got {pooling!r}")
  q_pids, q_camids = np.asarray(q_pids), np.asarray(q_camids)
  pairs = np.stack([q_pids, q_camids], axis=1)
  _, first, group = np.unique(pairs, axis=0, return_index=True, return_inverse=True)
  rank = np.argsort(np.argsort(first, kind="stable"), kind="stable")  # groups by first appearance
  group = jnp.asarray(rank[group.reshape(-1)])
  qf = jnp.asarray(qf, jnp.float32)
  if pooling == "mean":
    pooled = jax.ops.segment_sum(qf, group, len(first)) / jax.ops.segment_sum(
        jnp.ones(len(qf)), group, len(first))[:, None]
  else:
    pooled = jax.ops.segment_max(qf, group, len(first))
  first = np.sort(first)
  return np.asarray(pooled), q_pids[first], q_camids[first], first
