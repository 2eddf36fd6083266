"""The verification view of a query x gallery distance matrix: ROC and TPR at fixed FPR.

Each query x gallery pair is a verification trial (fast-reid's ROC evaluation; the
"TAR @ FAR" of face verification): positive when both images show the same person,
negative otherwise. The pairs the ranking protocol removes (README.md,
"Evaluation") are left out here too: same identity and same camera, and junk (id
-1) on either side. A pair is accepted when its distance is at most a threshold t;
TPR(t) and FPR(t) are the accepted fractions of the positive and negative pairs.

The curve is exact: the distances of the positive and of the negative pairs are
sorted apart (numpy's vectorised sort), and the negatives at or below each
positive distance found by a binary search (Market-1501: 3,368 x 15,913 pairs,
44M negatives: about 2 s on 2 CPU cores, and 176 MB for their copy).
"""
import numpy as np

from reid_jax.metrics import distance, evaluation, validate

FPR_TARGETS = (1e-4, 1e-3, 1e-2)


def _row_blocks(distmat, q_pids, g_pids, q_camids, g_camids):
  """(distances [R, G], positive mask [R, G], negative mask [R, G]) per block of query rows."""
  rows = distance.chunk_rows(distmat.shape[1], distmat.shape[0])
  for start in range(0, distmat.shape[0], rows):
    d = np.asarray(distmat[start:start + rows])
    pids, cams = q_pids[start:start + rows, None], q_camids[start:start + rows, None]
    counted = (pids != -1) & (g_pids[None, :] != -1)
    same = g_pids[None, :] == pids
    yield d, counted & same & (g_camids[None, :] != cams), counted & ~same


def roc_curve(distmat, q_pids, g_pids, q_camids, g_camids):
  """The ROC of a [Q, G] distance matrix (smaller = more alike) as a verifier.

  distmat: [Q, G] real, finite (numpy, jax, or anything np.asarray takes);
  q_pids, q_camids: [Q] integer; g_pids, g_camids: [G] integer (junk: id -1).
  Returns {'thresholds': [T] the distinct distances of positive pairs, ascending;
  'tpr': [T], 'fpr': [T] float64, the rates at each threshold (accepting d <= t);
  'num_positives', 'num_negatives'}. TPR only rises at these thresholds, so the
  points are every corner of the ROC staircase (between two of them the FPR grows
  at constant TPR). Without negatives the FPR is 0; without positives T = 0.
  Inputs are checked as `evaluation.evaluate_rank` checks them.
  """
  distmat, q_pids, g_pids, q_camids, g_camids = evaluation.validated_distances(
      distmat, q_pids, g_pids, q_camids, g_camids)
  positives, negatives = [np.zeros(0, distmat.dtype)], [np.zeros(0, distmat.dtype)]
  for d, pos, neg in _row_blocks(distmat, q_pids, g_pids, q_camids, g_camids):
    positives.append(d[pos])
    negatives.append(d[neg])
  positives, negatives = np.sort(np.concatenate(positives)), np.sort(np.concatenate(negatives))
  thresholds, first = np.unique(positives, return_index=True)
  # positives <= thresholds[i]: the index where the next distinct value starts.
  accepted = np.append(first[1:], len(positives))
  false = np.searchsorted(negatives, thresholds, "right")
  num_negatives = len(negatives)
  return {"thresholds": thresholds,
          "tpr": accepted / max(len(positives), 1),
          "fpr": false / num_negatives if num_negatives else np.zeros(len(thresholds)),
          "num_positives": int(len(positives)), "num_negatives": int(num_negatives)}


def tpr_at_fpr(roc, targets=FPR_TARGETS):
  """{target: the highest TPR of any threshold whose FPR is at most target} of a
  `roc_curve` result (0.0 when none is; NaN without positive pairs).

  targets: a sequence of FPRs in [0, 1]. Taking the ROC's corners is exact: a
  threshold between two positive distances has the TPR of the lower one and an
  FPR no smaller.
  """
  out = {}
  for target in targets:
    validate.fraction(target, "FPR target")
    if roc["num_positives"] == 0:
      out[target] = float("nan")
      continue
    ok = roc["fpr"] <= target
    out[target] = float(roc["tpr"][ok].max()) if ok.any() else 0.0
  return out
