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
