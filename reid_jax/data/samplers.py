"""Training batch samplers: identity-balanced P x K, or plain random batches.

`PKSampler` (Hermans et al., 2017, Sec. 3): a batch holds P identities with K
images each, as batch-hard metric losses need. `RandomSampler`: batches of
images drawn without replacement from a seeded shuffle, as classification-only
networks use (JLML Sec. 2.2). Both are pure functions of (seed, step): resuming
at step s yields exactly the batches an uninterrupted run would have seen, with
no iterator state to checkpoint.
"""
import functools

import numpy as np


class PKSampler:
  """Yields the train-split indices of each global P x K batch.

  One pass over the identities (in a seeded random order, P per batch) is a
  sampler epoch; an identity with fewer than K images is sampled with
  replacement, as in torchreid's RandomIdentitySampler.
  """

  def __init__(self, labels, p, k, seed):
    labels = np.asarray(labels)
    self.ids = np.unique(labels)
    if len(self.ids) < p:
      raise ValueError(
          f"P x K sampling needs at least P={p} identities in the train split; it has {len(self.ids)}.")
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], self.ids)
    self._members = np.split(order, starts[1:])
    self.p, self.k, self.seed = p, k, seed
    self.batch_size = p * k
    self.batches_per_epoch = len(self.ids) // p

  @functools.lru_cache(maxsize=2)
  def _identity_order(self, epoch):
    return np.random.default_rng([self.seed, epoch]).permutation(len(self.ids))

  def batch(self, step):
    """The P*K indices of global batch `step`, identity-major (K per identity)."""
    epoch, b = divmod(step, self.batches_per_epoch)
    ids = self._identity_order(epoch)[b * self.p:(b + 1) * self.p]
    rng = np.random.default_rng([self.seed, epoch, b])
    picks = [rng.choice(self._members[i], self.k, replace=len(self._members[i]) < self.k)
             for i in ids]
    return np.concatenate(picks).astype(np.int64)


class RandomSampler:
  """Yields the train-split indices of each global batch of `batch_size` random images.

  One pass over a seeded permutation of the split is a sampler epoch; the last,
  incomplete batch of a pass is dropped.
  """

  def __init__(self, num_images, batch_size, seed):
    if num_images < batch_size:
      raise ValueError(f"A batch of {batch_size} random images needs at least that many "
                       f"train images; the split has {num_images}.")
    self.num_images, self.batch_size, self.seed = num_images, batch_size, seed
    self.batches_per_epoch = num_images // batch_size

  @functools.lru_cache(maxsize=2)
  def _order(self, epoch):
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_images)

  def batch(self, step):
    """The `batch_size` indices of global batch `step`."""
    epoch, b = divmod(step, self.batches_per_epoch)
    return self._order(epoch)[b * self.batch_size:(b + 1) * self.batch_size].astype(np.int64)
