"""MPN's coarse prior of body-part locations (Sec. 3.2, Fig. 5), as pure jittable functions.

From a person mask at image resolution: `feature_mask` resizes it to the
backbone's feature map (24x8 at 384x128), binarises and dilates it with a 1x2
kernel (Fig. 5a); `vertical_bounds` finds the upper and lower boundaries of the
body; `part_inputs` builds the auxiliary tasks' input from the feature map F
(Fig. 5b): F * M, the rows between the boundaries bilinearly resized back to the
height of F; `stripes` divides it into K uniform horizontal parts. An image whose
mask is unusable (empty, or spanning fewer rows than there are parts) gets the
uniform division of the whole F, as the paper does when the body's boundaries
cannot be found.

Prior modes (Sec. 5.3.1, Table 2): 'mask' (the paper's), 'roi' (ROI Resize: the
same crop and resize without multiplying by M) and 'uniform' (Uniform Division
of F, no mask needed).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from reid_jax.models import layers

PRIORS = ("mask", "roi", "uniform")
# A body spanning less than this fraction of the map's height is taken as a failed
# segmentation (the paper's head-and-legs check needs a parsing map a binary mask lacks).
MIN_BODY_HEIGHT = 0.5


def _area_matrix(size_in: int, size_out: int) -> np.ndarray:
  """[size_out, size_in] weights of area (box) resampling: output cell i averages
  the input pixels it covers, by the fraction of each it covers (OpenCV's
  INTER_AREA when shrinking; an exact block mean when size_out divides size_in)."""
  edges = np.arange(size_out + 1) * size_in / size_out
  lo, hi = edges[:-1, None], edges[1:, None]
  pixels = np.arange(size_in)[None, :]
  overlap = np.clip(np.minimum(hi, pixels + 1) - np.maximum(lo, pixels), 0, None)
  return (overlap / (size_in / size_out)).astype(np.float32)


def feature_mask(mask: jax.Array, size: tuple, threshold: float = 0.5) -> jax.Array:
  """The binary mask M at feature resolution (Sec. 3.2, Fig. 5a).

  mask: [B, H, W] or [B, H, W, 1], person = 1 (values in [0, 1]).
  size: (h, w) of the feature map. Returns [B, h, w] bool: each cell is on when
  at least `threshold` of its pixels are (area resampling), then dilated with a
  1x2 kernel (cv2.dilate(M, np.ones((1, 2))): a cell is also on when its left
  neighbour is), widening the mask by one column against segmentation errors.
  """
  if mask.ndim == 4:
    mask = mask[..., 0]
  rows = jnp.asarray(_area_matrix(mask.shape[1], size[0]))
  cols = jnp.asarray(_area_matrix(mask.shape[2], size[1]))
  coverage = jnp.einsum("ij,bjk,lk->bil", rows, mask.astype(jnp.float32), cols)
  binary = coverage >= threshold
  left = jnp.pad(binary[:, :, :-1], ((0, 0), (0, 0), (1, 0)))
  return binary | left


def vertical_bounds(mask: jax.Array, min_rows: int = 1):
  """Upper and lower boundaries of the body in a binary feature mask (Sec. 3.2).

  mask: [B, h, w] bool. Returns (top [B] int32, bottom [B] int32 inclusive,
  usable [B] bool). `usable` is False for an empty mask or one whose rows
  top..bottom number fewer than `min_rows`; then top, bottom = 0, h - 1 (the whole
  map, the paper's fallback to uniform division).
  """
  height = mask.shape[1]
  on = jnp.any(mask, axis=2)
  top = jnp.argmax(on, axis=1).astype(jnp.int32)
  bottom = (height - 1 - jnp.argmax(on[:, ::-1], axis=1)).astype(jnp.int32)
  usable = jnp.any(on, axis=1) & (bottom - top + 1 >= min_rows)
  return jnp.where(usable, top, 0), jnp.where(usable, bottom, height - 1), usable


def row_resize_matrix(top: jax.Array, bottom: jax.Array, height: int) -> jax.Array:
  """[B, height, height] weights that bilinearly resize rows top..bottom of a map to
  `height` rows (half-pixel centres, edge rows repeated, as tf.image.resize,
  jax.image.resize and torch's align_corners=False do); rows 0..height-1 give the
  identity."""
  rows = bottom - top + 1
  out = jnp.arange(height, dtype=jnp.float32)
  source = top[:, None] + (out[None, :] + 0.5) * (rows[:, None] / height) - 0.5
  source = jnp.clip(source, top[:, None], bottom[:, None])
  low = jnp.floor(source)
  frac = source - low
  low = low.astype(jnp.int32)
  high = jnp.minimum(low + 1, bottom[:, None])
  one_hot = lambda i: jax.nn.one_hot(i, height, dtype=jnp.float32)
  return (1 - frac)[..., None] * one_hot(low) + frac[..., None] * one_hot(high)


def part_inputs(features: jax.Array, mask, prior: str = "mask") -> jax.Array:
  """The auxiliary tasks' input map before division (Fig. 5b).

  features: [B, h, w, C], the backbone map F. mask: [B, H, W, 1] person mask at
  image resolution (unused, may be None, with prior='uniform').
  'mask': F * M with rows top..bottom bilinearly resized back to h rows;
  'roi': the same crop and resize of F itself; 'uniform': F. Images with an
  unusable mask (`vertical_bounds`) get F. Returns [B, h, w, C].
  """
  if prior not in PRIORS:
    raise ValueError(f"Unknown prior {prior!r}; use one of {PRIORS}.")
  if prior == "uniform":
    return features
  height, width = features.shape[1:3]
  binary = feature_mask(mask, (height, width))
  min_rows = max(1, math.ceil(MIN_BODY_HEIGHT * height))
  top, bottom, usable = vertical_bounds(binary, min_rows)
  if prior == "mask":
    keep = binary | ~usable[:, None, None]
    features = features * keep[..., None].astype(features.dtype)
  resize = row_resize_matrix(top, bottom, height).astype(features.dtype)
  return jnp.einsum("bij,bjwc->biwc", resize, features)


def stripes(x: jax.Array, num_parts: int) -> list:
  """[B, h, w, C] -> `num_parts` maps [B, rows_k, w, C], top to bottom (the P_k)."""
  return [x[:, first:end] for first, end in layers.stripe_bounds(x.shape[1], num_parts)]
