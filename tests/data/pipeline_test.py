"""tf.data pipeline: P x K training batches, augmentation, ordered padded eval."""
import io

import numpy as np
import PIL.Image
import pytest

from reid_jax import config_schema
from reid_jax.data import augment, pipeline

H, W = 32, 16


def _png(array):
  buf = io.BytesIO()
  PIL.Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(buf, format="PNG")
  return buf.getvalue()


def _split(num_ids=6, per_id=4, with_masks=True):
  """A split of flat-colour images whose colour encodes the image index."""
  n = num_ids * per_id
  images, masks = [], []
  for i in range(n):
    img = np.full((H, W, 3), (i * 9) % 256, np.uint8)
    mask = np.zeros((H, W, 1), np.uint8)
    mask[:, : W // 2] = 255  # left half: lets tests see flips
    images.append(_png(img))
    masks.append(_png(mask))
  labels = np.repeat(np.arange(num_ids), per_id)
  return pipeline.Split(
      images=np.array(images, dtype=object),
      masks=np.array(masks, dtype=object) if with_masks else None,
      person_ids=labels + 1, camera_ids=np.arange(n) % 3, labels=labels,
      filenames=np.array([f"{i}.png" for i in range(n)]))


def _config(**augment):
  c = config_schema.base_config()
  c.image_size = (H, W)
  c.p_identities, c.k_instances = 3, 2
  c.augment.update(flip=False, pad=0, random_erasing=0.0)
  c.augment.update(augment)
  return c


def _take(ds, n):
  return [b for _, b in zip(range(n), ds.as_numpy_iterator())]


def _pixel_index(image):
  """Inverts the colour code of _split: normalised pixel -> image index."""
  raw = (image[0, 0] * augment.IMAGENET_STD + augment.IMAGENET_MEAN) * 255
  return int(round(raw[0])) // 9


def test_train_batches_are_p_by_k_and_normalised():
  split = _split()
  (batch,) = _take(pipeline.train_dataset(split, _config()), 1)
  assert batch["image"].shape == (6, H, W, 3) and batch["image"].dtype == np.float32
  assert batch["mask"].shape == (6, H, W, 1)
  labels = batch["label"].reshape(3, 2)
  assert (labels == labels[:, :1]).all() and len(set(labels[:, 0])) == 3
  for image, label in zip(batch["image"], batch["label"]):
    assert split.labels[_pixel_index(image)] == label   # the right image behind each label
    np.testing.assert_allclose(image, np.broadcast_to(image[0, 0], image.shape), atol=1e-5)


def test_random_sampler_batches_are_batch_size_images_in_sampler_order():
  split = _split()
  config = _config()
  config.sampler, config.batch_size = "random", 8
  batches = _take(pipeline.train_dataset(split, config), 3)
  sampler = pipeline.train_sampler(split, config)
  for step, batch in enumerate(batches):
    assert batch["image"].shape == (8, H, W, 3)
    np.testing.assert_array_equal([_pixel_index(im) for im in batch["image"]], sampler.batch(step))
    np.testing.assert_array_equal(batch["label"], split.labels[sampler.batch(step)])


def test_resuming_at_a_step_reproduces_the_same_batches():
  split = _split()
  config = _config(flip=True, pad=4, random_erasing=0.5)
  straight = _take(pipeline.train_dataset(split, config), 5)
  resumed = _take(pipeline.train_dataset(split, config, start_step=3), 2)
  for a, b in zip(straight[3:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


def test_processes_split_the_global_batch_by_rows():
  split = _split()
  config = _config(flip=True, pad=4)
  (whole,) = _take(pipeline.train_dataset(split, config), 1)
  parts = [_take(pipeline.train_dataset(split, config, shard=(i, 3)), 1)[0] for i in range(3)]
  for key in ("image", "label", "mask"):
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_flip_and_crop_move_mask_and_image_together():
  split = _split()
  config = _config(flip=True, pad=4)
  batches = _take(pipeline.train_dataset(split, config), 4)
  masks = np.concatenate([b["mask"] for b in batches])[..., 0]
  left = masks[:, :, : W // 2 - 4].mean(axis=(1, 2))
  right = masks[:, :, W // 2 + 4:].mean(axis=(1, 2))
  flipped = right > left
  assert 0 < flipped.sum() < len(masks)  # both orientations occur
  images = np.concatenate([b["image"] for b in batches])
  # Zero padding (black) enters the image exactly where it enters the mask's frame:
  # a padded pixel is black in the image and 0 in the mask.
  black = (0 - np.array(augment.IMAGENET_MEAN)) / augment.IMAGENET_STD
  is_black = np.isclose(images, black, atol=1e-4).all(-1)
  assert is_black.any()
  assert (masks[is_black] == 0).all()


def test_random_erasing_blanks_one_rectangle():
  split = _split(with_masks=False)
  config = _config(random_erasing=1.0)
  (batch,) = _take(pipeline.train_dataset(split, config), 1)
  for image in batch["image"]:
    erased = (image == 0).all(-1)
    assert erased.any()
    rows, cols = np.flatnonzero(erased.any(1)), np.flatnonzero(erased.any(0))
    box = erased[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    assert box.all()                                   # a solid rectangle
    assert 0.02 * H * W * 0.5 <= box.size <= 0.4 * H * W * 1.5


def test_eval_batches_keep_order_and_mask_the_padding():
  split = _split(num_ids=5, per_id=3)          # 15 images, batches of 4
  batches = _take(pipeline.eval_dataset(split, 4, (H, W)), 100)
  assert len(batches) == 4 and all(len(b["image"]) == 4 for b in batches)
  index = np.concatenate([b["index"] for b in batches])
  valid = np.concatenate([b["valid"] for b in batches])
  np.testing.assert_array_equal(index, np.arange(16))
  np.testing.assert_array_equal(valid, np.arange(16) < 15)
  images = np.concatenate([b["image"] for b in batches])
  assert [_pixel_index(im) for im in images[:15]] == list(range(15))


def test_eval_shards_cover_each_image_once():
  split = _split(num_ids=5, per_id=3)
  seen = []
  for i in range(2):
    for b in _take(pipeline.eval_dataset(split, 4, (H, W), shard=(i, 2)), 100):
      seen.extend(b["index"][b["valid"]])
  assert sorted(seen) == list(range(15))


def test_batch_not_divisible_among_processes_is_an_error():
  with pytest.raises(ValueError, match="does not divide among 4 processes"):
    pipeline.eval_dataset(_split(), 6, (H, W), shard=(0, 4))
