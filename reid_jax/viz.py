"""Report figures: CMC curves, ranked lists (MGN, Wang et al. 2018, Fig. 4), KPM's
matching-confidence and attention maps (Shen et al. 2018, Fig. 6), the verification
ROC (`metrics.roc_curve`) and the rank-1 per camera pair (`metrics.camera_pair_rank1`).

Inputs are numpy arrays (uint8 HWC images); outputs are PNG files. Plots use
matplotlib's non-interactive Agg backend, so they work on headless machines.
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

MATCH_COLOR = (0, 170, 0)  # green: same identity as the query
MISMATCH_COLOR = (220, 0, 0)  # red: another identity
QUERY_COLOR = (0, 0, 0)


def plot_cmc(cmc, path, title="CMC", max_rank=None):
  """Writes the CMC curve(s) to `path` (PNG) and returns `path`.

  cmc: an array of fractions for ranks 1..len(cmc), or {label: array} for several.
  """
  curves = cmc if isinstance(cmc, dict) else {None: cmc}
  fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
  for label, curve in curves.items():
    curve = np.asarray(curve, np.float64)[:max_rank]
    ranks = np.arange(1, len(curve) + 1)
    ax.plot(ranks, 100 * curve, marker="o" if len(curve) <= 20 else None, markersize=3,
            label=None if label is None else f"{label} (R1 {100 * curve[0]:.1f}%)")
  ax.set(xlabel="rank", ylabel="matching rate (%)", title=title, ylim=(0, 100))
  ax.grid(alpha=0.3)
  if any(label is not None for label in curves):
    ax.legend(loc="lower right")
  _makedirs(path)
  fig.savefig(path, format="png", bbox_inches="tight")
  plt.close(fig)
  return path


def plot_ranked_lists(query_images, gallery_images, ranked_indices, matches, path,
                      image_size=(128, 64), border=4, gap=12):
  """Writes one row per query, the query then its ranked gallery images, to `path` (PNG).

  query_images: [Q, H, W, 3] uint8 (or a sequence of HWC images); gallery_images:
  anything indexable by gallery index giving an HWC uint8 image (an array, a list,
  or a lazy loader); ranked_indices: [Q, k] gallery indices, best first (e.g.
  `evaluate_features(..., return_details=True)['ranked_indices']`); matches: [Q, k]
  bool, drawn as green (same identity) or red borders. Images are resized to
  image_size (height, width).
  """
  ranked_indices, matches = np.asarray(ranked_indices), np.asarray(matches, bool)
  if ranked_indices.shape != matches.shape or len(ranked_indices) != len(query_images):
    raise ValueError("query_images, ranked_indices and matches must agree on [num_queries, k]")
  h, w = image_size
  cell_h, cell_w = h + 2 * border, w + 2 * border
  num_q, k = ranked_indices.shape
  size = (cell_w * (k + 1) + gap, cell_h * num_q + border * (num_q - 1))
  canvas = Image.new("RGB", size, "white")
  for row in range(num_q):
    y = row * (cell_h + border)
    canvas.paste(_framed(query_images[row], image_size, border, QUERY_COLOR), (0, y))
    for col in range(k):
      color = MATCH_COLOR if matches[row, col] else MISMATCH_COLOR
      tile = _framed(gallery_images[int(ranked_indices[row, col])], image_size, border, color)
      canvas.paste(tile, (gap + cell_w * (col + 1), y))
  _makedirs(path)
  canvas.save(path, format="PNG")
  return path


def plot_matching(query_images, gallery_images, betas, alphas, map_size, points, path):
  """Writes one row per (query, gallery) pair to `path` (PNG) and returns `path`.

  Each row shows the query image under its attention map, then for each query
  position in `points` the query with that position marked and the gallery image
  under the position's matching confidence map (KPM Fig. 6).
  query_images, gallery_images: sequences of HWC uint8 images; betas: [R, M, N]
  matching maps (`reid_jax.ops.kpm.matching`) of the M = h * w query positions
  against the N = h * w gallery positions; alphas: [R, M] attention weights
  (`encode`'s alpha); map_size: (h, w) of both maps; points: (row, col) cells.
  """
  betas, alphas = np.asarray(betas, np.float32), np.asarray(alphas, np.float32)
  h, w = map_size
  if betas.shape[1:] != (h * w, h * w) or alphas.shape != betas.shape[:2]:
    raise ValueError(f"betas {betas.shape} and alphas {alphas.shape} do not fit [R, {h * w}, "
                     f"{h * w}] and [R, {h * w}] for a {h}x{w} map")
  cols = 1 + 2 * len(points)
  fig, axes = plt.subplots(len(betas), cols, figsize=(1.1 * cols, 2.2 * len(betas)), dpi=120,
                           squeeze=False)
  for r, (query, gallery) in enumerate(zip(query_images, gallery_images)):
    _heat(axes[r, 0], query, alphas[r].reshape(h, w), "attention" if r == 0 else None)
    for k, (row, col) in enumerate(points):
      ax = axes[r, 1 + 2 * k]
      ax.imshow(query)
      ax.plot((col + 0.5) * query.shape[1] / w, (row + 0.5) * query.shape[0] / h, "o",
              color="white", markeredgecolor="black")
      ax.axis("off")
      _heat(axes[r, 2 + 2 * k], gallery, betas[r, row * w + col].reshape(h, w),
            f"match ({row},{col})" if r == 0 else None)
  _makedirs(path)
  fig.savefig(path, format="png", bbox_inches="tight")
  plt.close(fig)
  return path


def plot_roc(roc, path, title="ROC", marks=None):
  """Writes a `metrics.roc_curve` result as TPR against FPR (log scale) to `path` (PNG)
  and returns `path`. marks: {FPR: TPR} points to mark (`metrics.tpr_at_fpr`)."""
  fpr = np.concatenate([[0.0], roc["fpr"], [1.0]])
  tpr = np.concatenate([[0.0], roc["tpr"], [roc["tpr"][-1] if len(roc["tpr"]) else 0.0]])
  floor = 0.5 / max(roc["num_negatives"], 1)  # FPR 0 drawn at half of one negative pair
  fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
  # TPR holds between corners while the FPR grows: a staircase ('post' steps).
  ax.step(np.maximum(fpr, floor), 100 * tpr, where="post")
  for target, value in (marks or {}).items():
    ax.plot(target, 100 * value, "o", markersize=4,
            label=f"TPR {100 * value:.1f}% @ FPR {target:g}")
  ax.set(xscale="log", xlim=(floor, 1), ylim=(0, 100), xlabel="false positive rate",
         ylabel="true positive rate (%)",
         title=f"{title} ({roc['num_positives']:,} +, {roc['num_negatives']:,} - pairs)")
  ax.grid(alpha=0.3, which="both")
  if marks:
    ax.legend(loc="lower right")
  return _save(fig, path)


def plot_camera_pairs(table, path, title="rank-1 per camera pair"):
  """Writes a `metrics.camera_pair_rank1` result as a heat map (rows: query cameras,
  columns: gallery cameras; rank-1 % and the counted queries in each cell) to `path`
  (PNG) and returns `path`."""
  rank1 = np.asarray(table["rank1"], np.float64)
  rows, cols = len(table["query_cameras"]), len(table["gallery_cameras"])
  fig, ax = plt.subplots(figsize=(1.0 + 0.8 * cols, 0.8 + 0.6 * rows), dpi=120)
  image = ax.imshow(100 * np.ma.masked_invalid(rank1), vmin=0, vmax=100, cmap="viridis")
  for a in range(rows):
    for b in range(cols):
      n = int(table["num_queries"][a, b])
      text = f"{100 * rank1[a, b]:.0f}\n({n})" if n else "-"
      ax.text(b, a, text, ha="center", va="center", fontsize=6,
              color="white" if n and rank1[a, b] < 0.6 else "black")
  ax.set_xticks(range(cols), [str(c) for c in table["gallery_cameras"]])
  ax.set_yticks(range(rows), [str(c) for c in table["query_cameras"]])
  ax.set(xlabel="gallery camera", ylabel="query camera", title=title)
  fig.colorbar(image, ax=ax, label="rank-1 (%)")
  return _save(fig, path)


def _save(fig, path):
  _makedirs(path)
  fig.savefig(path, format="png", bbox_inches="tight")
  plt.close(fig)
  return path


def _heat(ax, image, heat, title):
  ax.imshow(image)
  ax.imshow(heat, extent=(0, image.shape[1], image.shape[0], 0), alpha=0.55, cmap="jet",
            interpolation="bilinear")
  ax.axis("off")
  if title:
    ax.set_title(title, fontsize=7)


def _framed(image, image_size, border, color):
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f"expected an HWC uint8 image, got {image.dtype} {image.shape}")
  tile = Image.fromarray(image if image.shape[-1] == 3 else image[..., 0]).convert("RGB")
  tile = tile.resize((image_size[1], image_size[0]), Image.BILINEAR)
  framed = Image.new("RGB", (image_size[1] + 2 * border, image_size[0] + 2 * border), color)
  framed.paste(tile, (border, border))
  return framed


def _makedirs(path):
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
