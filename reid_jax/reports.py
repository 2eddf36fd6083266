"""The files one evaluation writes (`reid_jax.evaluate`), named `<out>/<name>...`:

- `<name>.json`: the config's evaluation settings, rank-k / mAP / mINP, the CMC, and
  the verification view: TPR at FPR 1e-4 / 1e-3 / 1e-2 (`metrics.tpr_at_fpr`) and
  the pair counts;
- `<name>_cmc.png`, `<name>_ranked.png`: the CMC curve and ranked lists (MGN Fig. 4);
- `<name>_roc.png`: the ROC of query x gallery pairs as a verifier (`metrics.roc_curve`);
- `<name>_camera_pairs.{csv,md,png}`: rank-1 per (query camera, gallery camera)
  pair (`metrics.camera_pair_rank1`) as a table and a heat map;
- `<name>_matching.png` for a pairwise network (`plot_matching`, KPM Fig. 6).

The verification view and the camera table read the [Q, G] distances of the
evaluated network: the `config.eval.metric` distances of its test features (of
the pooled queries with `query_pooling`; k-reciprocal re-ranking is a ranking
device and is not applied to them), or a pairwise network's -score of every pair
(KPM with `pairwise.mode='full'`).
"""
import json
import os

import numpy as np
from absl import logging

from reid_jax import inference, viz
from reid_jax import metrics as retrieval
from reid_jax.metrics import camera_pairs
from reid_jax.ops import kpm as kpm_ops


def write_text_atomically(path, text):
  """Writes `text` to a temporary file beside `path`, renamed to `path` once complete."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_json_atomically(path, payload):
  write_text_atomically(path, json.dumps(payload, indent=2))


def verification(distmat, q_pids, g_pids, q_camids, g_camids):
  """(`metrics.roc_curve`, {FPR: TPR} at `metrics.FPR_TARGETS`, `metrics.camera_pair_rank1`)
  of a [Q, G] distance matrix and its labels ([Q] and [G] integer arrays)."""
  labels = (q_pids, g_pids, q_camids, g_camids)
  roc = retrieval.roc_curve(distmat, *labels)
  return roc, retrieval.tpr_at_fpr(roc), retrieval.camera_pair_rank1(distmat, *labels)


def _tpr_json(tpr):
  return {f"{target:g}": (None if np.isnan(value) else value) for target, value in tpr.items()}


def write(out, name, payload, metrics, labels, query_images, gallery_images, title,
          num_ranked_queries=8):
  """Writes the files above to the folder `out`; returns (the JSON payload, the
  query rows shown in the ranked-list figure).

  payload: what the JSON holds besides the verification view (step, settings, metrics);
  metrics: an `evaluate_model(..., return_details=True)` result, with 'distmat'
  when the network's [Q, G] distances are known (else no verification view);
  labels: (q_pids, g_pids, q_camids, g_camids) of its rows and columns;
  query_images: the image of each ranked query row, indexable by row number;
  gallery_images: indexable by gallery index (HWC uint8 images).
  Raises OSError when a file cannot be written.
  """
  os.makedirs(out, exist_ok=True)
  path = lambda suffix: os.path.join(out, f"{name}{suffix}")
  views = None
  if "distmat" in metrics:
    views = verification(metrics["distmat"], *labels)
    roc, tpr, table = views
    payload = {**payload, "tpr_at_fpr": _tpr_json(tpr), "verification_pairs": {
        "positive": roc["num_positives"], "negative": roc["num_negatives"]}}
    logging.info("TPR at FPR %s", ", ".join(f"{f:g}: {t:.1%}" for f, t in tpr.items()))
  write_json_atomically(path(".json"), payload)
  viz.plot_cmc(metrics["cmc"], path("_cmc.png"), title=title)
  valid = np.flatnonzero(~np.isnan(metrics["ap"]))
  rows = valid[np.linspace(0, len(valid) - 1, min(num_ranked_queries, len(valid))).astype(int)]
  viz.plot_ranked_lists([query_images[i] for i in rows], gallery_images,
                        metrics["ranked_indices"][rows], metrics["ranked_matches"][rows],
                        path("_ranked.png"))
  if views:
    viz.plot_roc(roc, path("_roc.png"), title=title, marks=tpr)
    with open(path("_camera_pairs.csv"), "w") as f:
      f.write(camera_pairs.to_csv(table))
    with open(path("_camera_pairs.md"), "w") as f:
      f.write(f"Rank-1 (%) per camera pair, {title} (queries counted in parentheses)\n\n"
              + camera_pairs.to_markdown(table))
    viz.plot_camera_pairs(table, path("_camera_pairs.png"), title=f"rank-1 per camera pair, {title}")
  return payload, rows


def plot_matching(model, variables, query, gallery, config, mesh, path, decoded):
  """KPM's Fig. 6 for each query image and the gallery image ranked first for it:
  the query's attention and the matching maps of three query positions down its
  middle column, at the finest scale. query, gallery: splits of equal length;
  decoded(split): its images, indexable (`evaluate.DecodedImages`)."""
  encoded_q = inference.encode_split(model, variables, query, config, mesh)
  encoded_g = inference.encode_split(model, variables, gallery, config, mesh)
  x, y = encoded_q["maps"][-1], encoded_g["maps"][-1]
  num, h, w, channels = x.shape
  flat = lambda m: m.reshape(num, h * w, channels)
  beta = kpm_ops.matching(flat(x), flat(y), tau=model.tau)
  points = [(h // 4, w // 2), (h // 2, w // 2), (3 * h // 4, w // 2)]
  viz.plot_matching([decoded(query)[i] for i in range(num)],
                    [decoded(gallery)[i] for i in range(num)], beta,
                    encoded_q["alpha"][-1], (h, w), points, path)
