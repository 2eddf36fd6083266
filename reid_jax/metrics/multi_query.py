"""Multi-query pooling (Market-1501 MQ; Zheng et al., ICCV 2015, Sec. 5).

The query images of one identity seen by one camera are pooled into a single
query feature, by the element-wise mean or max of their features.
"""
import jax
import jax.numpy as jnp
import numpy as np

from reid_jax.metrics import validate

POOLINGS = ("mean", "max")


def pool_queries(qf, q_pids, q_camids, pooling="mean"):
  """(pooled features [num_groups, d], ids, cameras, index of each group's first query).

  Groups are in the order of their first query. Inputs are checked first
  (`validate`): qf real, 2-D, non-empty and finite; q_pids / q_camids integer, of
  length len(qf); pooling 'mean' or 'max'."""
  validate.choice(pooling, "query_pooling", POOLINGS)
  qf = validate.features(qf, "qf", "query")
  validate.ids(q_pids, "q_pids", len(qf), "len(qf)")
  validate.ids(q_camids, "q_camids", len(qf), "len(qf)")
  validate.finite_features(qf, "qf")
  return pool(qf, q_pids, q_camids, pooling)  # the ids keep their dtype


def pool(qf, q_pids, q_camids, pooling):
  """`pool_queries` on inputs already checked."""
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
