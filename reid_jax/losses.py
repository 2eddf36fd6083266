"""Losses as pure functions of arrays.

Every network's training objective (see `reid_jax.models.get_loss`) is assembled
from these.
"""
import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits, labels, label_smoothing=0.0):
  """Mean softmax cross-entropy with integer labels.

  With `label_smoothing` = eps the target is (1 - eps) on the true class plus
  eps / C on every class (Szegedy et al., 2016), as in torchreid's
  `CrossEntropyLoss(label_smooth=True)`.
  """
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


def identity_softmax_loss(outputs, labels, label_smoothing=0.0):
  """The objective of a network with one identity classifier: cross-entropy on
  `outputs['logits']`."""
  ce = cross_entropy(outputs["logits"], labels, label_smoothing)
  return ce, {"cross_entropy": ce}


def pairwise_distances(x, y, metric="euclidean"):
  """[N, M] distances between the rows of `x` and `y`.

  'euclidean': ||x - y||_2 (clamped at 1e-12 under the root so the gradient stays
  finite at zero); 'cosine': 1 - cos(x, y).
  """
  x = x.astype(jnp.float32)
  y = y.astype(jnp.float32)
  if metric == "euclidean":
    squared = (jnp.sum(x * x, -1)[:, None] + jnp.sum(y * y, -1)[None, :] - 2 * x @ y.T)
    return jnp.sqrt(jnp.maximum(squared, 1e-12))
  if metric == "cosine":
    normalize = lambda v: v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    return 1.0 - normalize(x) @ normalize(y).T
  raise ValueError(f"Unknown triplet metric {metric!r}; use 'euclidean' or 'cosine'.")


def batch_hard_triplet(features, labels, margin=0.3, metric="euclidean", soft_margin=False):
  """Batch-hard triplet loss (Hermans et al., 2017; MGN Eq. 2), mean over anchors.

  Each anchor takes its farthest positive and closest negative in the batch;
  the loss is [margin + d(a, p) - d(a, n)]_+, or softplus(d(a, p) - d(a, n))
  with `soft_margin` (the margin is then unused). An anchor without any
  negative in the batch contributes 0.
  """
  distances = pairwise_distances(features, features, metric)
  same = labels[:, None] == labels[None, :]
  hardest_positive = jnp.max(jnp.where(same, distances, -jnp.inf), axis=1)
  hardest_negative = jnp.min(jnp.where(same, jnp.inf, distances), axis=1)
  gap = hardest_positive - hardest_negative
  per_anchor = jax.nn.softplus(gap) if soft_margin else jax.nn.relu(gap + margin)
  return per_anchor.mean()
