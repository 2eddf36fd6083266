"""Rank-1 per (query camera, gallery camera) pair: which viewpoints a model bridges.

For a query seen by camera a and a gallery camera b, the gallery is restricted to
the images of camera b and the query ranked against them with the Market-1501
protocol (README.md, "Evaluation"): junk (id -1) and the query's own identity
in its own camera are removed, equal distances keep gallery order, and a query
counts only when that camera holds one of its true matches. Entry (a, b) is then
the fraction of those queries whose nearest image in camera b shows their
person. Same-camera matches are removed, so the diagonal a = b has no counted
query and is NaN.
"""
import numpy as np

from reid_jax.metrics import distance, evaluation


def camera_pair_rank1(distmat, q_pids, g_pids, q_camids, g_camids):
  """Rank-1 of each (query camera, gallery camera) pair of a [Q, G] distance matrix.

  distmat: [Q, G] real, finite (smaller = more alike); q_pids, q_camids: [Q]
  integer; g_pids, g_camids: [G] integer (junk: id -1).
  Returns {'query_cameras': [A] and 'gallery_cameras': [B], the camera ids seen,
  ascending; 'rank1': [A, B] float64 fractions (NaN where no query counts);
  'num_queries': [A, B] int64, the queries counted in each entry}. One pass over
  the matrix per gallery camera, in blocks of query rows.
  Inputs are checked as `evaluation.evaluate_rank` checks them.
  """
  distmat, q_pids, g_pids, q_camids, g_camids = evaluation.validated_distances(
      distmat, q_pids, g_pids, q_camids, g_camids)
  query_cams, q_index = np.unique(q_camids, return_inverse=True)
  gallery_cams = np.unique(g_camids)
  hits = np.zeros((len(query_cams), len(gallery_cams)), np.int64)
  counted = np.zeros_like(hits)
  rows = distance.chunk_rows(distmat.shape[1], distmat.shape[0])
  for b, cam in enumerate(gallery_cams):
    cols = np.flatnonzero((g_camids == cam) & (g_pids != -1))
    if len(cols) == 0:
      continue
    pids = g_pids[cols]
    for start in range(0, distmat.shape[0], rows):
      q = slice(start, start + rows)
      d = np.asarray(distmat[q])[:, cols]
      same = pids[None, :] == q_pids[q, None]
      removed = same & (q_camids[q, None] == cam)
      nearest = np.argmin(np.where(removed, np.inf, d), axis=1)  # first of equals: gallery order
      valid = (same & ~removed).any(axis=1) & (q_pids[q] != -1)
      hit = valid & (pids[nearest] == q_pids[q])
      counted[:, b] += np.bincount(q_index[q], weights=valid, minlength=len(query_cams)).astype(np.int64)
      hits[:, b] += np.bincount(q_index[q], weights=hit, minlength=len(query_cams)).astype(np.int64)
  with np.errstate(invalid="ignore", divide="ignore"):
    rank1 = np.where(counted > 0, hits / counted, np.nan)
  return {"query_cameras": query_cams, "gallery_cameras": gallery_cams, "rank1": rank1,
          "num_queries": counted}


def to_markdown(table):
  """A `camera_pair_rank1` result as a markdown table (rank-1 in %, the counted queries
  in parentheses; '-' where none counts): rows are query cameras, columns gallery cameras."""
  header = "| query \\ gallery | " + " | ".join(f"cam {c}" for c in table["gallery_cameras"])
  lines = [header + " |", "|---" * (len(table["gallery_cameras"]) + 1) + "|"]
  for a, cam in enumerate(table["query_cameras"]):
    cells = [f"{100 * r:.1f} ({n})" if n else "-"
             for r, n in zip(table["rank1"][a], table["num_queries"][a])]
    lines.append(f"| cam {cam} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def to_csv(table):
  """A `camera_pair_rank1` result as CSV rows: query_camera, gallery_camera, rank1, num_queries
  (rank1 empty where no query counts)."""
  lines = ["query_camera,gallery_camera,rank1,num_queries"]
  for a, qc in enumerate(table["query_cameras"]):
    for b, gc in enumerate(table["gallery_cameras"]):
      n = int(table["num_queries"][a, b])
      lines.append(f"{qc},{gc},{table['rank1'][a, b]:.6f},{n}" if n else f"{qc},{gc},,0")
  return "\n".join(lines) + "\n"
