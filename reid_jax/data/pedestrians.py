"""Procedural pedestrians: identities, cameras, shots and a numpy renderer.

An `Identity` is what stays fixed for a person (skin, hair, clothes and their
patterns, bag, logo, body proportions). A `Camera` is what a surveillance camera
imposes on everyone it films (colour cast, exposure, background, the direction
people walk past it, framing, occlusion, blur, noise); a `Shot` is one draw from
it. `render(identity, shot, height, width)` is a pure function of its arguments
and returns the image and the person mask.
"""
import dataclasses
from typing import Optional

import numpy as np
from PIL import Image

# The side of the body that faces the camera: 'left' shows the person's left side.
VIEWS = ("front", "back", "left", "right")
UPPER_PATTERNS = ("plain", "hstripes", "vstripes", "checks", "twotone", "jacket")
LOWER_KINDS = ("trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "shoulder", "handbag")

_CLOTH = np.array([
    [200, 30, 35], [230, 120, 30], [235, 210, 60], [60, 150, 60], [30, 110, 110],
    [40, 80, 180], [25, 35, 90], [120, 60, 160], [220, 110, 160], [240, 240, 235],
    [150, 150, 150], [70, 70, 70], [20, 20, 22], [130, 80, 40], [200, 175, 130],
    [110, 130, 70], [140, 30, 50], [90, 160, 220]], np.float32)
# Trousers and skirts are mostly dark or neutral, as in the street.
_LOWER_P = np.array([1, .5, .5, 1, 1, 3, 6, 1, .5, 2, 3, 5, 7, 2, 3, 2, 1, 1])
_SKIN = np.array([[240, 200, 170], [225, 180, 140], [190, 140, 100], [140, 95, 65],
                  [95, 65, 45]], np.float32)
_HAIR = np.array([[20, 18, 18], [60, 40, 25], [110, 75, 40], [200, 170, 110],
                  [150, 150, 150], [150, 60, 30]], np.float32)
_HAIR_P = np.array([5, 4, 2, 1, 1, .5])


def _colour(rng, palette, weights=None):
  p = None if weights is None else weights / weights.sum()
  base = palette[rng.choice(len(palette), p=p)]
  return np.clip(base * rng.uniform(0.8, 1.15) + rng.normal(0, 10, 3), 0, 255).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class Identity:
  """What one person looks like, whatever the camera."""
  skin: np.ndarray
  hair: np.ndarray
  hair_length: int               # 0 short, 1 shoulder length, 2 long
  hat: Optional[np.ndarray]
  upper: np.ndarray
  upper2: np.ndarray             # pattern colour, or the shirt under an open jacket
  upper_pattern: str
  long_sleeves: bool
  lower: np.ndarray
  lower_kind: str
  shoes: np.ndarray
  bag: str
  bag_side: int                  # +1: carried on the person's left, -1: right
  bag_colour: np.ndarray
  logo: Optional[np.ndarray]     # a chest print, seen from the front only
  stature: float                 # height within the detector's box
  build: float                   # width multiplier
  legs: float                    # leg length, fraction of the height
  head: float                    # head size multiplier


def sample_identity(rng):
  return Identity(
      skin=_colour(rng, _SKIN), hair=_colour(rng, _HAIR, _HAIR_P),
      hair_length=int(rng.choice(3, p=[.5, .25, .25])),
      hat=_colour(rng, _CLOTH) if rng.random() < 0.12 else None,
      upper=_colour(rng, _CLOTH), upper2=_colour(rng, _CLOTH),
      upper_pattern=str(rng.choice(UPPER_PATTERNS, p=[.35, .15, .1, .1, .15, .15])),
      long_sleeves=bool(rng.random() < 0.5),
      lower=_colour(rng, _CLOTH, _LOWER_P),
      lower_kind=str(rng.choice(LOWER_KINDS, p=[.65, .2, .15])),
      shoes=_colour(rng, _CLOTH, _LOWER_P) * 0.6,
      bag=str(rng.choice(BAGS, p=[.35, .3, .2, .15])), bag_side=int(rng.choice([-1, 1])),
      bag_colour=_colour(rng, _CLOTH),
      logo=_colour(rng, _CLOTH) if rng.random() < 0.35 else None,
      stature=rng.uniform(0.92, 1.0), build=rng.uniform(0.8, 1.2),
      legs=rng.uniform(0.44, 0.52), head=rng.uniform(0.9, 1.1))


@dataclasses.dataclass(frozen=True, eq=False)
class Camera:
  """The distribution of shots one camera produces."""
  view_p: np.ndarray             # probabilities of VIEWS
  gains: np.ndarray              # per-channel colour cast
  exposure: float
  saturation: float
  gamma: float
  wall: np.ndarray
  floor: np.ndarray
  horizon: float                 # fraction of the height
  clutter: float                 # mean number of background objects
  scale: float                   # person height / image height
  shift: float                   # detector misalignment, fraction of the width
  occlusion: float               # probability of an occluder
  blur: float                    # Gaussian sigma, fraction of the height
  noise: float                   # pixel noise std on 0..255


def sample_camera(rng):
  gains = rng.uniform(0.7, 1.3, 3)
  muted = lambda: 128 + 0.4 * (rng.uniform(20, 235, 3) - 128)
  return Camera(
      view_p=rng.dirichlet(np.full(len(VIEWS), 1.0)), gains=gains / gains.mean(),
      exposure=rng.uniform(0.7, 1.2), saturation=rng.uniform(0.5, 1.1),
      gamma=rng.uniform(0.8, 1.25), wall=muted(), floor=muted() * 0.8,
      horizon=rng.uniform(0.4, 0.8), clutter=rng.uniform(1, 6),
      scale=rng.uniform(0.82, 0.95), shift=rng.uniform(0.02, 0.08),
      occlusion=rng.uniform(0, 0.25), blur=rng.uniform(0, 0.012), noise=rng.uniform(1, 8))


@dataclasses.dataclass(frozen=True, eq=False)
class Shot:
  """Everything but the person that decides one image."""
  view: str
  gains: np.ndarray
  exposure: float
  saturation: float
  gamma: float
  light: float                   # left-right illumination gradient
  wall: np.ndarray
  floor: np.ndarray
  horizon: float
  clutter: int
  scale: float
  dx: float                      # person centre offset, fraction of the width
  dy: float                      # fraction of the height
  stride: float                  # walking phase in [-1, 1]
  occluder: Optional[tuple]      # (where in 'bottom'/'left'/'right', extent, colour)
  blur: float
  noise: float
  seed: int                      # background clutter and pixel noise


def sample_shot(camera, rng):
  occluder = None
  if rng.random() < camera.occlusion:
    occluder = (str(rng.choice(["bottom", "left", "right"])), rng.uniform(0.2, 0.4),
                _colour(rng, _CLOTH) * 0.7)
  return Shot(
      view=VIEWS[rng.choice(len(VIEWS), p=camera.view_p)],
      gains=camera.gains * rng.uniform(0.95, 1.05, 3),
      exposure=camera.exposure * rng.uniform(0.9, 1.1), saturation=camera.saturation,
      gamma=camera.gamma, light=rng.uniform(-0.3, 0.3), wall=camera.wall, floor=camera.floor,
      horizon=camera.horizon + rng.uniform(-0.05, 0.05), clutter=int(rng.poisson(camera.clutter)),
      scale=camera.scale * rng.uniform(0.94, 1.06), dx=rng.uniform(-1, 1) * camera.shift,
      dy=rng.uniform(-0.4, 0.4) * camera.shift, stride=rng.uniform(-1, 1), occluder=occluder,
      blur=camera.blur, noise=camera.noise, seed=int(rng.integers(2**31)))


# Shapes on coordinate grids (V down, U right), each returns a boolean mask.
def _ellipse(V, U, v, u, rv, ru):
  return ((V - v) / rv) ** 2 + ((U - u) / ru) ** 2 <= 1


def _capsule(V, U, v0, u0, v1, u1, r):
  dv, du = v1 - v0, u1 - u0
  t = np.clip(((V - v0) * dv + (U - u0) * du) / (dv * dv + du * du + 1e-9), 0, 1)
  return (V - v0 - t * dv) ** 2 + (U - u0 - t * du) ** 2 <= r * r


def _trapezoid(V, U, v0, v1, half0, half1):
  half = half0 + (half1 - half0) * (V - v0) / (v1 - v0)
  return (V >= v0) & (V <= v1) & (np.abs(U) <= half)


def _box(V, U, v0, v1, u0, u1):
  return (V >= v0) & (V <= v1) & (U >= min(u0, u1)) & (U <= max(u0, u1))


class _Canvas:
  """A float RGB canvas that tracks which pixels show the person."""

  def __init__(self, h, w):
    self.y, self.x = (g.astype(np.float32) + 0.5 for g in np.mgrid[0:h, 0:w])
    self.rgb = np.zeros((h, w, 3), np.float32)
    self.person = np.zeros((h, w), bool)

  def paint(self, region, colour, person=True, shade=None):
    self.rgb[region] = colour if shade is None else colour * shade[region][:, None]
    self.person[region] = person


def _draw_background(cv, shot, rng):
  h, w = cv.person.shape
  Y, X = cv.y / h, cv.x / w
  cv.rgb[:] = shot.wall * (1.1 - 0.25 * Y)[..., None]
  floor = Y > shot.horizon
  cv.rgb[floor] = shot.floor * (0.8 + 0.3 * Y[floor])[:, None]
  for _ in range(shot.clutter):
    colour = np.clip(shot.wall * rng.uniform(0.4, 1.4) + rng.normal(0, 30, 3), 0, 255)
    kind = rng.integers(3)
    if kind == 0:  # window, sign or door
      y0, x0 = rng.uniform(-0.1, shot.horizon), rng.uniform(-0.2, 1)
      region = _box(Y, X, y0, y0 + rng.uniform(0.1, 0.4), x0, x0 + rng.uniform(0.1, 0.5))
    elif kind == 1:  # pole or railing post
      x0 = rng.uniform(0, 1)
      region = _box(Y, X, rng.uniform(-0.5, 0.3), 2, x0, x0 + rng.uniform(0.03, 0.1))
    else:  # a plant, a bin, a passer-by far away
      region = _ellipse(Y, X, rng.uniform(0.3, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25),
                        rng.uniform(0.08, 0.3))
    cv.rgb[region] = colour


def _draw_hair_and_head(cv, V, U, p, view, back_x, vh, vs, hr, hw):
  head = _ellipse(V, U, vh, 0, hr, hw)
  long_hair = (0.0, 0.05, 0.14)[p.hair_length]
  if long_hair:
    if view == "back":
      cv.paint(_box(V, U, vh, vs + long_hair, -hw * 1.05, hw * 1.05), p.hair)
    elif view == "front":
      strands = _box(V, U, vh - 0.2 * hr, vs + long_hair * 0.6, -hw * 1.15, hw * 1.15)
      cv.paint(strands & (np.abs(U) >= hw * 0.6), p.hair)
    else:
      cv.paint(_box(V, U, vh, vs + long_hair, 0, back_x * hw * 1.1), p.hair)
  cv.paint(head, p.hair if view == "back" else p.skin)
  cap = _ellipse(V, U, vh - 0.05 * hr, 0, hr * 1.05, hw * 1.1) & (V < vh - 0.3 * hr)
  if view in ("left", "right"):
    cap |= head & (U * back_x > 0.2 * hw)
  cv.paint(cap, p.hair)
  if p.hat is not None:
    cv.paint(_ellipse(V, U, vh - 0.2 * hr, 0, hr * 1.05, hw * 1.25) & (V < vh - 0.4 * hr), p.hat)


def _draw_person(cv, V, U, p, shot):
  """Draws identity `p` seen from `shot.view`, back to front, in person units."""
  view, stride = shot.view, shot.stride
  side = view in ("left", "right")
  left_x = {"front": 1, "back": -1}.get(view, 0)   # image direction of the person's left
  back_x = {"left": 1, "right": -1}.get(view, 0)   # image direction of the person's back
  hr, hw = 0.062 * p.head, 0.045 * p.head
  vh = 0.005 + hr
  vs = vh + hr + 0.02
  vw = 1 - p.legs
  sw = (0.07 if side else 0.105) * p.build
  ww = (0.065 if side else 0.085) * p.build
  bag_seen = not side or view == ("left" if p.bag_side > 0 else "right")
  bag_x = left_x * p.bag_side
  torso_v1 = vs + 0.6 * (vw - vs) + 0.04

  if p.bag == "backpack" and side:
    cv.paint(_box(V, U, vs + 0.02, torso_v1, back_x * ww * 0.3, back_x * (ww + 0.07)),
             p.bag_colour * 0.9)
  # Legs, the far one darker in side views.
  leg_colour = p.lower if p.lower_kind == "trousers" else p.skin
  hip, foot, r = vw + 0.05, 0.97, (0.042 if side else 0.045) * p.build
  if side:
    legs = [(0, stride * 0.1 * back_x, 0.8), (0, -stride * 0.1 * back_x, 1.0)]
  else:
    spread = 0.012 * (1 + abs(stride))
    legs = [(-ww / 2, -ww / 2 - spread, 1.0), (ww / 2, ww / 2 + spread, 1.0)]
  for u0, u1, dim in legs:
    cv.paint(_capsule(V, U, hip, u0, foot, u1, r), leg_colour * dim)
    if p.lower_kind == "shorts":
      knee = hip + 0.35 * (foot - hip)
      cv.paint(_capsule(V, U, hip, u0, knee, u0 + 0.35 * (u1 - u0), r * 1.15), p.lower * dim)
    toe = -back_x * 0.02
    cv.paint(_ellipse(V, U, foot + 0.005, u1 + toe, 0.022, 0.035 if side else 0.028),
             p.shoes * dim)
  # Hips or skirt, then the arm behind the body in side views.
  if p.lower_kind == "skirt":
    cv.paint(_trapezoid(V, U, vw, vw + 0.45 * p.legs, ww, ww + 0.07), p.lower)
  else:
    cv.paint(_trapezoid(V, U, vw, vw + 0.08, ww, ww * 1.05), p.lower)
  arm_r = 0.028 * p.build
  if side:
    arms = [(0, stride * 0.09 * back_x, 0.75), (0, -stride * 0.09 * back_x, 1.0)]
  else:
    arms = [(-(sw - 0.02), -(sw + 0.012), 1.0), (sw - 0.02, sw + 0.012, 1.0)]
  if side:
    _draw_arm(cv, V, U, p, vs, vw, arms[0], arm_r)
    arms = arms[1:]
  cv.paint(_box(V, U, vh + 0.7 * hr, vs + 0.02, -0.022, 0.022), p.skin * 0.9)
  # Torso with its pattern and shading.
  torso = _trapezoid(V, U, vs, vw + 0.03, sw, ww) | _ellipse(V, U, vs + 0.03, 0, 0.035, sw)
  shade = np.clip(1 - 0.35 * (U / sw) ** 2, 0.6, 1)
  cv.paint(torso, p.upper, shade=shade)
  cv.paint(torso & _pattern(V, U, p, view, vs, vw), p.upper2, shade=shade)
  for arm in arms:
    _draw_arm(cv, V, U, p, vs, vw, arm, arm_r)
  # Bags and the logo: what shows depends on the view.
  if p.bag == "backpack" and view == "back":
    cv.paint(_box(V, U, vs + 0.02, torso_v1, -0.75 * sw, 0.75 * sw), p.bag_colour)
  elif p.bag == "backpack" and view == "front":
    for u in (-0.55 * sw, 0.55 * sw):
      cv.paint(_box(V, U, vs, vs + 0.18, u - 0.01, u + 0.01), p.bag_colour)
  elif p.bag == "shoulder" and bag_seen:
    u_bag = bag_x * (sw + 0.02) if not side else back_x * 0.02
    strap_u0 = -bag_x * sw * 0.6 if not side else 0.0
    cv.paint(_capsule(V, U, vs + 0.01, strap_u0, vw - 0.05, u_bag, 0.009), p.bag_colour * 0.8)
    cv.paint(_box(V, U, vw - 0.05, vw + 0.08, u_bag - 0.045, u_bag + 0.045), p.bag_colour)
  elif p.bag == "handbag" and bag_seen:
    u_bag = bag_x * (sw + 0.03) if not side else -back_x * 0.03
    cv.paint(_box(V, U, vw + 0.05, vw + 0.13, u_bag - 0.035, u_bag + 0.035), p.bag_colour)
  if p.logo is not None and view == "front":
    cv.paint(_ellipse(V, U, vs + 0.08, 0.02, 0.028, 0.028), p.logo)
  _draw_hair_and_head(cv, V, U, p, view, back_x, vh, vs, hr, hw)


def _draw_arm(cv, V, U, p, vs, vw, arm, r):
  (u0, u1, dim), v1 = arm, vw + 0.05
  cv.paint(_capsule(V, U, vs + 0.02, u0, v1, u1, r), (p.upper if p.long_sleeves else p.skin) * dim)
  if not p.long_sleeves:
    v_sleeve, u_sleeve = vs + 0.02 + 0.35 * (v1 - vs), u0 + 0.35 * (u1 - u0)
    cv.paint(_capsule(V, U, vs + 0.02, u0, v_sleeve, u_sleeve, r * 1.1), p.upper * dim)
  cv.paint(_ellipse(V, U, v1 + 0.015, u1, 0.022, 0.02), p.skin * dim)


def _pattern(V, U, p, view, vs, vw):
  if p.upper_pattern == "hstripes":
    return (V * 12) % 1 < 0.5
  if p.upper_pattern == "vstripes":
    return (U * 14) % 1 < 0.5
  if p.upper_pattern == "checks":
    return ((V * 9) % 1 < 0.5) ^ ((U * 9) % 1 < 0.5)
  if p.upper_pattern == "twotone":
    return V > (vs + vw) / 2
  if p.upper_pattern == "jacket" and view == "front":
    return np.abs(U) < 0.03
  return np.zeros(V.shape, bool)


def _draw_occluder(cv, occluder):
  where, extent, colour = occluder
  h, w = cv.person.shape
  Y, X = cv.y / h, cv.x / w
  if where == "bottom":
    region = Y > 1 - extent
  elif where == "left":
    region = X < extent
  else:
    region = X > 1 - extent
  cv.paint(region, colour, person=False, shade=1 - 0.3 * Y)


def _blur(img, sigma):
  r = int(np.ceil(2.5 * sigma))
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  k /= k.sum()
  for axis in (0, 1):
    pad = [(0, 0)] * 3
    pad[axis] = (r, r)
    padded = np.moveaxis(np.pad(img, pad, mode="edge"), axis, 0)
    n = img.shape[axis]
    img = np.moveaxis(sum(k[i] * padded[i:i + n] for i in range(2 * r + 1)), 0, axis)
  return img


def render(identity, shot, height, width):
  """Renders `identity` (None: background only) in `shot`.

  Returns a (height, width, 3) uint8 image and a (height, width, 1) uint8 mask,
  255 where the person is visible.
  """
  ss = 2 if height <= 128 else 1  # supersampling, for anti-aliased edges at low resolution
  h, w = height * ss, width * ss
  cv = _Canvas(h, w)
  rng = np.random.default_rng(shot.seed)
  _draw_background(cv, shot, rng)
  if identity is not None:
    size = shot.scale * identity.stature * h
    top = (h - size) / 2 + shot.dy * h
    _draw_person(cv, (cv.y - top) / size, (cv.x - w / 2 - shot.dx * w) / size, identity, shot)
  if shot.occluder is not None:
    _draw_occluder(cv, shot.occluder)
  # The camera's response applies to the light the lens gathers: average, then transform.
  img = cv.rgb.reshape(height, ss, width, ss, 3).mean((1, 3)) * (shot.gains * shot.exposure)
  img *= (1 + shot.light * ((np.arange(width) + 0.5) / width - 0.5))[:, None]
  gray = img.mean(-1, keepdims=True)
  img = 255 * (np.clip(gray + shot.saturation * (img - gray), 0, 255) / 255) ** shot.gamma
  if shot.blur * height > 0.3:
    img = _blur(img, shot.blur * height)
  img = img + rng.normal(0, shot.noise, img.shape)
  mask = cv.person.reshape(height, ss, width, ss).mean((1, 3)) >= 0.5
  return (np.clip(np.round(img), 0, 255).astype(np.uint8),
          (mask[..., None] * 255).astype(np.uint8))


def fragment(image, mask, rng):
  """A badly aligned detection: a random part of the frame blown up to full size."""
  h, w = mask.shape[:2]
  fh, fw = rng.uniform(0.3, 0.55) * h, rng.uniform(0.5, 1.0) * w
  y0, x0 = rng.uniform(0, h - fh), rng.uniform(0, w - fw)
  box = (x0, y0, x0 + fw, y0 + fh)
  crop = lambda a, resample: np.asarray(Image.fromarray(a).resize((w, h), resample, box=box))
  return (crop(image, Image.Resampling.BILINEAR),
          crop(mask[..., 0], Image.Resampling.NEAREST)[..., None])
