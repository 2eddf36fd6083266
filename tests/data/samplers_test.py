"""P x K sampler: batch structure, determinism by step, small identities."""
import numpy as np
import pytest

from reid_jax.data import samplers


def _labels():
  rng = np.random.default_rng(0)
  # 10 identities with 1..7 images each, shuffled.
  return rng.permutation(np.repeat(np.arange(10), np.arange(1, 11) % 7 + 1))


def test_batches_hold_p_identities_with_k_images_each():
  labels = _labels()
  sampler = samplers.PKSampler(labels, p=4, k=3, seed=1)
  for step in range(7):
    idx = sampler.batch(step)
    assert idx.shape == (12,)
    groups = labels[idx].reshape(4, 3)
    assert (groups == groups[:, :1]).all()          # K images of one identity per group
    assert len(set(groups[:, 0])) == 4              # P distinct identities


def test_an_epoch_visits_each_identity_at_most_once():
  labels = _labels()
  sampler = samplers.PKSampler(labels, p=3, k=2, seed=0)
  assert sampler.batches_per_epoch == 3
  seen = np.concatenate([labels[sampler.batch(s)][::2] for s in range(3)])
  assert len(seen) == len(set(seen)) == 9


def test_images_of_large_identities_are_distinct_and_small_ones_repeat():
  labels = _labels()
  sampler = samplers.PKSampler(labels, p=10, k=4, seed=3)
  idx = sampler.batch(0).reshape(10, 4)
  counts = np.bincount(labels)
  for group in idx:
    n = counts[labels[group[0]]]
    if n >= 4:
      assert len(set(group)) == 4
    else:
      assert set(group) <= set(np.flatnonzero(labels == labels[group[0]]))


def test_batches_are_a_pure_function_of_seed_and_step():
  labels = _labels()
  a = samplers.PKSampler(labels, 4, 2, seed=5)
  b = samplers.PKSampler(labels, 4, 2, seed=5)
  c = samplers.PKSampler(labels, 4, 2, seed=6)
  steps = [9, 0, 4, 9]
  np.testing.assert_array_equal(np.stack([a.batch(s) for s in steps]),
                                np.stack([b.batch(s) for s in steps[::-1]])[::-1])
  assert not np.array_equal(a.batch(9), c.batch(9))


def test_too_few_identities_is_a_clear_error():
  with pytest.raises(ValueError, match="at least P=20 identities"):
    samplers.PKSampler(_labels(), p=20, k=2, seed=0)


def test_random_batches_cover_each_image_once_per_epoch_and_depend_only_on_step():
  sampler = samplers.RandomSampler(num_images=23, batch_size=5, seed=2)
  assert sampler.batches_per_epoch == 4               # the last 3 images of a pass are dropped
  epoch = np.concatenate([sampler.batch(s) for s in range(4)])
  assert epoch.shape == (20,) and len(set(epoch)) == 20 and epoch.max() < 23
  next_epoch = np.concatenate([sampler.batch(s) for s in range(4, 8)])
  assert not np.array_equal(epoch, next_epoch)         # reshuffled every pass
  again = samplers.RandomSampler(23, 5, seed=2)
  np.testing.assert_array_equal(again.batch(6), sampler.batch(6))
  assert not np.array_equal(samplers.RandomSampler(23, 5, seed=3).batch(6), sampler.batch(6))
  with pytest.raises(ValueError, match="at least that many train images"):
    samplers.RandomSampler(4, 5, seed=0)
