"""Top-k classification error (CIFAR-100 in MLFN Sec. 4.3, ImageNet for JLML's pretraining).

One value per example, as the losses are: the caller averages over the images it
counts (a padded evaluation batch masks its padding out).
"""
import jax
import jax.numpy as jnp


def top_k_error(scores: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the true class is not among the `k` highest scores, else 0.0.

  scores: [N, C] float class scores (logits or log-probabilities; any monotone
  map of them gives the same errors); labels: [N] integer classes in [0, C).
  Returns [N] float32.

  Ties count against the true class: it is among the top k iff fewer than k
  *other* classes score at least as high (>=) as it does. So a network whose
  scores are all equal (collapsed, or untrained with a zero classifier) errs on
  every example for k < C, rather than being credited through an arbitrary
  tie-break (an argsort's index order). A NaN true-class score is an error;
  NaN scores of other classes never outrank anything.
  """
  scores = jnp.asarray(scores)
  labels = jnp.asarray(labels)
  true = jnp.take_along_axis(scores, labels[:, None].astype(jnp.int32), axis=1)  # [N, 1]
  others = jnp.arange(scores.shape[1])[None, :] != labels[:, None]
  outranking = jnp.sum((scores >= true) & others, axis=1)
  correct = (outranking < k) & ~jnp.isnan(true[:, 0])
  return 1.0 - correct.astype(jnp.float32)
