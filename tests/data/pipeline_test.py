"""tf.data pipeline: P x K training batches, augmentation, ordered padded eval."""
import io

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from reid_jax import config_schema
from reid_jax.data import augment, pipeline, samplers
from reid_jax.data import batches as batches_lib

H, W = 32, 16
BACKGROUND = 60   # grey: tells the scene apart from zero padding / translation fill


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


def _blob_masks(n):
  """n person-shaped blobs (uint8 [H, W, 1], 255 on the person): a body ellipse and
  an off-centre head disc, at random places, some cut by the border."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:H, :W]
  masks = []
  for _ in range(n):
    cy, cx = rng.uniform(6, H - 6), rng.uniform(2, W - 2)
    ry, rx = rng.uniform(5, 10), rng.uniform(2, 5)
    hy, hx = cy - ry - 2, cx + rng.choice([-1, 1]) * rx / 2
    person = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1) | ((yy - hy) ** 2 + (xx - hx) ** 2 <= 4)
    masks.append((person[..., None] * 255).astype(np.uint8))
  return masks


def _blob_split(num_ids=6, per_id=4):
  """A split whose images are derived from their masks: white person on grey."""
  n = num_ids * per_id
  masks = _blob_masks(n)
  images = [np.where(m > 0, 255, BACKGROUND).astype(np.uint8).repeat(3, -1) for m in masks]
  labels = np.repeat(np.arange(num_ids), per_id)
  split = pipeline.Split(
      images=np.array([_png(im) for im in images], dtype=object),
      masks=np.array([_png(m) for m in masks], dtype=object),
      person_ids=labels + 1, camera_ids=np.arange(n) % 3, labels=labels,
      filenames=np.array([f"{i}.png" for i in range(n)]))
  return split, np.array(masks) // 255


def _raw(images):
  """Un-normalises pipeline images back to [0, 255] RGB."""
  return (images * augment.IMAGENET_STD + augment.IMAGENET_MEAN) * 255


def _shift(array, dy, dx):
  """out[y, x] = array[y - dy, x - dx], zeros where that falls outside (numpy reference)."""
  out = np.zeros_like(array)
  h, w = array.shape[:2]
  out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
      array[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
  return out


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


@pytest.mark.parametrize("copies", [1, 3])
@pytest.mark.parametrize("sampler", ["pk", "random"])
def test_augmentations_keep_image_and_mask_pixel_aligned(copies, sampler):
  split, _ = _blob_split()
  config = _config(flip=True, pad=4, offline_copies=copies, offline_max_shift=0.2)
  if sampler == "random":
    config.sampler, config.batch_size = "random", 8
  batches = _take(pipeline.train_dataset(split, config), 4)
  raw = _raw(np.concatenate([b["image"] for b in batches]))
  masks = np.concatenate([b["mask"] for b in batches])[..., 0]
  assert set(np.unique(masks)) <= {0.0, 1.0}
  # Every pixel is person (255), scene background, or the zeros of padding/translation.
  levels = [np.isclose(raw, v, atol=1e-3).all(-1) for v in (255, BACKGROUND, 0)]
  assert (levels[0] | levels[1] | levels[2]).all()
  assert levels[2].any()
  np.testing.assert_array_equal(levels[0], masks == 1)   # pixel-exact, every image


def test_random_erasing_leaves_the_mask_and_changes_one_rectangle_of_the_image():
  split, _ = _blob_split()
  kwargs = dict(flip=True, pad=4, offline_copies=3)
  plain = _take(pipeline.train_dataset(split, _config(**kwargs)), 3)
  erased = _take(pipeline.train_dataset(split, _config(random_erasing=1.0, **kwargs)), 3)
  for a, b in zip(plain, erased):
    np.testing.assert_array_equal(a["mask"], b["mask"])
    np.testing.assert_array_equal(a["label"], b["label"])
    for before, after in zip(a["image"], b["image"]):
      changed = (before != after).any(-1)
      rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
      box = np.zeros_like(changed)
      box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
      np.testing.assert_array_equal(changed, box)            # exactly one solid rectangle
      assert (after[box] == 0).all()                          # the mean pixel, normalised
      np.testing.assert_array_equal(after[~box], before[~box])  # nothing moved or resized


@pytest.mark.parametrize("sampler", ["pk", "random"])
def test_one_offline_copy_gives_the_untranslated_batches(sampler):
  """With offline_copies=1 the batches are those of the pipeline without translation:
  the sampler over the split's own images, and decode, flip/crop, normalise, erase."""
  split = _split()
  config = _config(flip=True, pad=4, random_erasing=0.5, offline_copies=1)
  if sampler == "random":
    config.sampler, config.batch_size = "random", 8
    reference = samplers.RandomSampler(len(split), 8, config.seed)
  else:
    reference = samplers.PKSampler(split.labels, 3, 2, config.seed)
  assert pipeline.train_size(split, config) == len(split)
  for step, batch in enumerate(_take(pipeline.train_dataset(split, config), 3)):
    indices = reference.batch(step)
    np.testing.assert_array_equal(pipeline.train_sampler(split, config).batch(step), indices)
    np.testing.assert_array_equal(batch["label"], split.labels[indices])
    for pos, i in enumerate(indices):
      seed = tf.constant([config.seed, step * len(indices) + pos], tf.int64)
      flip_seed, erase_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
      planes = [augment.decode(split.images[i], 3, (H, W)),
                augment.decode(split.masks[i], 1, (H, W), "nearest") / 255.0]
      image, mask = augment.flip_and_crop(planes, flip_seed, True, 4)
      image = augment.random_erasing(augment.normalize(image), erase_seed, 0.5)
      np.testing.assert_array_equal(batch["image"][pos], tf.cast(image, tf.float32).numpy())
      np.testing.assert_array_equal(batch["mask"][pos], mask.numpy())


def test_offline_translation_is_fixed_and_moves_image_and_mask_together():
  split, masks = _blob_split()
  n = len(split)
  config = _config(offline_copies=3, offline_max_shift=0.25)
  first = _take(pipeline.train_dataset(split, config), 6)
  second = _take(pipeline.train_dataset(split, config), 6)
  sampler = pipeline.train_sampler(split, config)
  seen_copies, moved = set(), 0
  for step, (a, b) in enumerate(zip(first, second)):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])          # deterministic
    for pos, j in enumerate(sampler.batch(step)):
      i, copy = j % n, j // n
      dy, dx = augment.offline_shift(config.seed, i, copy, (H, W), 0.25)
      assert abs(dy) <= 8 and abs(dx) <= 4
      if copy == 0:
        assert (dy, dx) == (0, 0)                             # copy 0 is the image itself
      seen_copies.add(copy)
      moved += (dy, dx) != (0, 0)
      image = np.where(masks[i] > 0, 255, BACKGROUND).repeat(3, -1)
      np.testing.assert_array_equal(a["mask"][pos], _shift(masks[i], dy, dx).astype(np.float32))
      np.testing.assert_allclose(_raw(a["image"][pos]), _shift(image, dy, dx), atol=1e-3)
  assert seen_copies == {0, 1, 2} and moved


@pytest.mark.parametrize("sampler", ["pk", "random"])
def test_offline_copies_enlarge_the_sampled_set(sampler):
  split = _split()
  n = len(split)
  config = _config(offline_copies=3)
  if sampler == "random":
    config.sampler, config.batch_size = "random", 8
  assert pipeline.train_size(split, config) == 3 * n
  s = pipeline.train_sampler(split, config)
  epoch = np.concatenate([s.batch(step) for step in range(s.batches_per_epoch)])
  assert epoch.min() >= 0 and epoch.max() < 3 * n and (epoch >= 2 * n).any()
  if sampler == "random":
    assert s.num_images == 3 * n and len(set(epoch)) == len(epoch) == 3 * n // 8 * 8
  else:
    labels = split.labels[epoch % n].reshape(-1, 3, 2)      # P x K over the tiled labels
    assert (labels == labels[..., :1]).all()
    assert all(len(set(ids)) == 3 for ids in labels[..., 0])
  # The pipeline labels item j with the label of image j % n, and the image is image j % n
  # (read at the centre: the border of a translated copy is zero fill).
  for step, batch in enumerate(_take(pipeline.train_dataset(split, config), 3)):
    items = s.batch(step)
    np.testing.assert_array_equal(batch["label"], split.labels[items % n])
    assert [_pixel_index(im[H // 2:, W // 2:]) for im in batch["image"]] == list(items % n)


def test_eval_yields_the_masks_aligned_and_unaugmented():
  split, masks = _blob_split(num_ids=5, per_id=3)          # 15 images, batches of 4
  batches = _take(pipeline.eval_dataset(split, 4, (H, W)), 100)
  mask = np.concatenate([b["mask"] for b in batches])
  assert mask.shape == (16, H, W, 1) and mask.dtype == np.float32
  np.testing.assert_array_equal(mask[:15], masks.astype(np.float32))
  np.testing.assert_array_equal(mask[15], masks[0].astype(np.float32))  # padding: image 0
  raw = _raw(np.concatenate([b["image"] for b in batches]))
  np.testing.assert_array_equal(np.isclose(raw, 255, atol=1e-3).all(-1), mask[..., 0] == 1)


def test_eval_without_masks_has_no_mask_key():
  (batch,) = _take(pipeline.eval_dataset(_split(with_masks=False), 4, (H, W)), 1)
  assert set(batch) == {"image", "index", "valid"}


class _TinyBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Two train images; a `mask` feature iff MASK_FEATURE, metadata `has_masks` = HAS_MASKS
  (None: no such key, as in datasets built before it existed)."""
  VERSION = tfds.core.Version("1.0.0")
  MASK_FEATURE, HAS_MASKS = True, None

  def _info(self):
    features = {"image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                "person_id": np.int64, "camera_id": np.int64, "label": np.int64,
                "filename": tfds.features.Text()}
    if self.MASK_FEATURE:
      features["mask"] = tfds.features.Image(shape=(None, None, 1), encoding_format="png")
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                 metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    if self.HAS_MASKS is not None:
      self.info.metadata["has_masks"] = self.HAS_MASKS
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(2):
      ex = {"image": np.full((4, 2, 3), i, np.uint8), "person_id": i, "camera_id": 0,
            "label": i, "filename": f"{i}.png"}
      if self.MASK_FEATURE:  # a real mask, or the 1x1 black placeholder
        ex["mask"] = np.full((4, 2, 1) if self.HAS_MASKS is not False else (1, 1, 1), 255 * i, np.uint8)
      yield i, ex


@pytest.mark.parametrize("mask_feature, has_masks, expected", [
    (True, True, True), (True, False, False), (True, None, True), (False, None, False)])
def test_load_split_reads_masks_as_the_metadata_says(tmp_path, mask_feature, has_masks, expected):
  builder_class = type("TinyReid", (_TinyBuilder,), dict(MASK_FEATURE=mask_feature, HAS_MASKS=has_masks),
                       skip_registration=True)
  builder_class(data_dir=str(tmp_path)).download_and_prepare()
  split = pipeline.load_split(builder_class(data_dir=str(tmp_path)), "train")  # metadata from disk
  assert len(split) == 2
  assert (split.masks is not None) == expected
  if expected:
    assert [augment.decode(m, 1, (4, 2)).numpy().max() for m in split.masks] == [0, 255]
  assert split.name == "train" and split.dataset == "tiny_reid"  # for error messages


def test_train_and_eval_batches_are_the_datasets_as_numpy():
  split = _split()
  config = _config()
  for ours, theirs in zip(_take_batches(batches_lib.train_batches(split, config, start_step=2), 3),
                          _take(pipeline.train_dataset(split, config, start_step=2), 3)):
    assert ours.keys() == theirs.keys()
    for k in ours:
      np.testing.assert_array_equal(ours[k], theirs[k])
  ours = list(batches_lib.eval_batches(split, 5, (H, W)))
  theirs = _take(pipeline.eval_dataset(split, 5, (H, W)), 100)
  assert len(ours) == len(theirs) == 5
  for a, b in zip(ours, theirs):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def _take_batches(batches, n):
  taken = [b for _, b in zip(range(n), batches)]
  batches.close()
  return taken


def test_split_describes_itself_for_error_messages():
  assert pipeline.Split(*[None] * 6, name="query", dataset="market1501").describe() == \
      "split 'query' of market1501"
  assert pipeline.Split(*[None] * 6).describe() == "the split"
