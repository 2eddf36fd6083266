"""Per-image decoding and augmentation, as tf.data map functions.

Random choices use stateless ops seeded per image, so a batch's augmentation is a
function of (config seed, step, position): resumed training sees the same pixels.
"""
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
  that fits is used, as the paper's retry loop does."""
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
