"""Per-image decoding and augmentation, as tf.data map functions.

Random choices use stateless ops seeded per image, so a batch's augmentation is a
function of (config seed, step, position): resumed training sees the same pixels.
The offline translation offsets (`offline_shift`) are instead fixed per
(config seed, image, copy), drawn in numpy: they enlarge the training set rather
than vary from step to step.
"""
import numpy as np
import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode(encoded, channels, size, method="bilinear"):
  """Encoded JPEG/PNG bytes -> float32 [size[0], size[1], channels] in [0, 255].

  JPEGs use the accurate integer IDCT, which decodes exactly as PIL (and so
  torchreid) does; TF's default fast IDCT differs by a few grey levels.
  """
  image = tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.io.decode_jpeg(encoded, channels=channels, dct_method="INTEGER_ACCURATE"),
      lambda: tf.io.decode_png(encoded, channels=channels))
  image.set_shape([None, None, channels])
  return tf.cast(tf.image.resize(image, size, method=method), tf.float32)


def normalize(image):
  """[0, 255] RGB -> ImageNet mean/std normalised."""
  return (image / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def offline_shift(seed, index, copy, size, max_shift):
  """The fixed (dy, dx) pixel offset of translated copy `copy` of training image `index`.

  Offline translation (MPN Sec. 5.1, after Zhao et al., CVPR 2014): copy 0 is the
  image itself, (0, 0); copy c >= 1 is shifted by integers drawn uniformly from
  [-max_shift * H, max_shift * H] x [-max_shift * W, max_shift * W] (bounds
  rounded towards zero), a pure function of (seed, index, copy) for `size` (H, W).
  """
  if copy == 0:
    return 0, 0
  rng = np.random.default_rng([seed, index, copy])
  dy, dx = (int(rng.integers(-int(max_shift * n), int(max_shift * n), endpoint=True))
            for n in size)
  return dy, dx


def translate(planes, dy, dx):
  """Shifts every plane of `planes` by (dy, dx) pixels (down, right), zero-filling
  the uncovered border: out[y, x] = in[y - dy, x - dx]. One offset for all planes,
  so the person mask stays aligned with its image."""
  height, width = planes[0].shape[0], planes[0].shape[1]
  top, left = tf.maximum(-dy, 0), tf.maximum(-dx, 0)
  paddings = [[tf.maximum(dy, 0), top], [tf.maximum(dx, 0), left], [0, 0]]
  return [tf.ensure_shape(tf.pad(p, paddings)[top:top + height, left:left + width],
                          [height, width, None]) for p in planes]


def flip_and_crop(planes, seed, flip, pad):
  """Random horizontal flip, then zero-pad by `pad` and randomly crop back.

  `planes` (image, and the person mask when present) share one draw, so the mask
  stays aligned with the pixels.
  """
  seeds = tf.random.experimental.stateless_split(seed, 3)
  height, width = planes[0].shape[0], planes[0].shape[1]
  if flip:
    do_flip = tf.random.stateless_uniform([], seeds[0]) < 0.5
    planes = [tf.cond(do_flip, lambda p=p: tf.reverse(p, [1]), lambda p=p: p) for p in planes]
  if pad:
    top = tf.random.stateless_uniform([], seeds[1], 0, 2 * pad + 1, tf.int32)
    left = tf.random.stateless_uniform([], seeds[2], 0, 2 * pad + 1, tf.int32)
    planes = [tf.pad(p, [[pad, pad], [pad, pad], [0, 0]])[top:top + height, left:left + width]
              for p in planes]
    planes = [tf.ensure_shape(p, [height, width, None]) for p in planes]
  return planes


def random_erasing(image, seed, probability, area=(0.02, 0.4), min_aspect=0.3, attempts=16):
  """Random Erasing (Zhong et al., AAAI 2020): with `probability`, replace a random
  rectangle of relative area in `area` and aspect in [min_aspect, 1/min_aspect] by
  the mean pixel (0 after normalisation). Of `attempts` drawn rectangles the first
  that fits is used, as the paper's retry loop does.

  Only `image` changes, in place: nothing is shifted or resized, and the caller
  leaves the person mask as it is, since that prior describes the unerased person
  (as the segmentation tool saw it)."""
  height, width = image.shape[0], image.shape[1]
  seeds = tf.random.experimental.stateless_split(seed, 5)
  erase = tf.random.stateless_uniform([], seeds[0]) < probability
  target = tf.random.stateless_uniform([attempts], seeds[1], *area) * height * width
  log_aspect = tf.random.stateless_uniform(
      [attempts], seeds[2], tf.math.log(min_aspect), -tf.math.log(min_aspect))
  aspect = tf.exp(log_aspect)
  h = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
  w = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
  fits = (h < height) & (w < width) & (h > 0) & (w > 0)
  first = tf.argmax(tf.cast(fits, tf.int32))
  erase &= tf.reduce_any(fits)
  h, w = h[first], w[first]
  top = tf.random.stateless_uniform([], seeds[3], 0, tf.maximum(height - h, 1), tf.int32)
  left = tf.random.stateless_uniform([], seeds[4], 0, tf.maximum(width - w, 1), tf.int32)
  rows = tf.range(height)[:, None]
  cols = tf.range(width)[None, :]
  box = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w) & erase
  return tf.where(box[:, :, None], tf.zeros_like(image), image)
