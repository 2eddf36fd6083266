"""Ranks a gallery folder for query images: `python -m reid_jax.search --workdir=W
--query=IMG_OR_DIR --gallery=DIR [--top_k=10] [--out=DIR]`.

Writes `<out>/ranked.png` (each query, then its top-k gallery images with their
distances) and `<out>/top<k>.csv` (query, rank, gallery, distance: every query's
top-k). No identities or cameras are needed. Distances are the network's own
(`FeatureExtractor.distances`): for a pairwise network (KPM), minus its score of
every query-gallery pair.
"""
import csv
import os

import numpy as np
import PIL.Image
import PIL.ImageDraw
from absl import app, flags

from reid_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by reid_jax.main.")
_QUERY = flags.DEFINE_string("query", None, "A query image, or a folder of them.")
_GALLERY = flags.DEFINE_string("gallery", None, "A folder of gallery images (searched "
                               "recursively).")
_TOP_K = flags.DEFINE_integer("top_k", 10, "Gallery images listed per query.", lower_bound=1)
_OUT = flags.DEFINE_string("out", None, "Folder for ranked.png and the CSV (default: "
                           "<workdir>/search).")
_NUM_SHOWN = flags.DEFINE_integer("num_shown", 16, "Queries drawn in ranked.png (the first "
                                  "ones; the CSV has all).", lower_bound=1)
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False, "Leave out unreadable images and report them.")
flags.mark_flags_as_required(["workdir", "query", "gallery"])

TILE = (128, 64)  # (height, width) of each image in the figure
CAPTION = 14      # pixels under each tile for its distance


def top_k(dist, k):
  """[Q, min(k, G)] gallery indices, nearest first; ties in gallery order."""
  return np.argsort(dist, axis=1, kind="stable")[:, :k]


def write_csv(path, queries, gallery, dist, ranked):
  """One row per (query, rank): query, rank (1 = nearest), gallery, distance."""
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["query", "rank", "gallery", "distance"])
      for q, row in enumerate(ranked):
        for rank, g in enumerate(row, start=1):
          writer.writerow([queries[q], rank, gallery[g], f"{dist[q, g]:.6g}"])
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def plot_ranked(path, queries, gallery, dist, ranked, border=3, gap=12):
  """Writes one row per query to `path` (PNG): the query framed in black, then its
  ranked gallery images, each captioned with its distance (no identities known)."""
  h, w = TILE
  cell_w, cell_h = w + 2 * border, h + 2 * border + CAPTION
  canvas = PIL.Image.new("RGB", (gap + cell_w * (ranked.shape[1] + 1), cell_h * len(ranked)),
                         "white")
  draw = PIL.ImageDraw.Draw(canvas)

  def paste(image_path, x, y, color):
    tile = PIL.Image.open(image_path).convert("RGB").resize((w, h), PIL.Image.BILINEAR)
    framed = PIL.Image.new("RGB", (w + 2 * border, h + 2 * border), color)
    framed.paste(tile, (border, border))
    canvas.paste(framed, (x, y))

  for q, row in enumerate(ranked):
    y = q * cell_h
    paste(queries[q], 0, y, (0, 0, 0))
    draw.text((border, y + h + 2 * border), "query", fill=(0, 0, 0))
    for rank, g in enumerate(row):
      x = gap + cell_w * (rank + 1)
      paste(gallery[g], x, y, (150, 150, 150))
      draw.text((x + border, y + h + 2 * border), f"{rank + 1}: {dist[q, g]:.3g}", fill=(0, 0, 0))
  canvas.save(path, format="PNG")
  return path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  query_paths = cli.image_paths(_QUERY.value, "--query")
  gallery_paths = cli.image_paths(_GALLERY.value, "--gallery")
  out = _OUT.value or os.path.join(_WORKDIR.value, "search")
  extract = cli.load(_WORKDIR.value)
  query_split, _ = cli.read(extract, query_paths, _SKIP_BAD.value)
  gallery_split, _ = cli.read(extract, gallery_paths, _SKIP_BAD.value)
  dist = extract.distances(query_split, gallery_split)
  queries, gallery = list(query_split.filenames), list(gallery_split.filenames)
  ranked = top_k(dist, _TOP_K.value)
  csv_path = os.path.join(out, f"top{_TOP_K.value}.csv")
  with cli.exit_on_write_error(out):
    os.makedirs(out, exist_ok=True)
    write_csv(csv_path, queries, gallery, dist, ranked)
    figure = plot_ranked(os.path.join(out, "ranked.png"), queries, gallery, dist,
                         ranked[:_NUM_SHOWN.value])
  print(f"Ranked {len(gallery)} gallery images for {len(queries)} queries "
        f"({extract.config.model}, step {extract.step}): {csv_path}, {figure}.")


if __name__ == "__main__":
  app.run(main)
