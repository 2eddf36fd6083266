"""Retrieval evaluation benchmark: reid_jax.metrics against plain numpy, on random features.

  python benchmarks/eval_bench.py                        # Market-1501 and MSMT17 sizes, re-ranking
  python benchmarks/eval_bench.py --cases=market --market=1000,5000 --skip_reference   # quick

Cases (each side of each case runs in a fresh process: "cold" includes JAX
compilation, "warm" is the best of --repeats further calls, "peak" is that
process's maximum resident memory, data included):
  market  evaluate_rank on a Market-size distance matrix (3,368 x 15,913, 751 ids,
          6 cameras) vs a per-query numpy argsort loop (torchreid's eval_market1501).
  msmt    evaluate_features on MSMT17-size 2048-d features (11,659 x 82,161, 3,060
          ids, 15 cameras), distances included, vs numpy distances + the same loop;
          also the time of the 3.9 TFLOP of products alone, the floor for both.
  rerank  k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3) of 512-d Market-size
          features vs a numpy port of torchreid's re_ranking; outputs compared.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

SIZES = {"market": (3368, 15913, 751, 6, 2048), "msmt": (11659, 82161, 3060, 15, 2048),
         "rerank": (3368, 15913, 751, 6, 512)}


def make_data(num_q, num_g, num_ids, num_cams, dim, seed=0):
  """Random features and labels; identical in every process for a given seed."""
  rng = np.random.default_rng(seed)
  q_pids, g_pids = rng.integers(1, num_ids + 1, num_q), rng.integers(1, num_ids + 1, num_g)
  q_cams, g_cams = rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)
  qf = rng.standard_normal((num_q, dim), dtype=np.float32)
  gf = rng.standard_normal((num_g, dim), dtype=np.float32)
  return qf, gf, q_pids, g_pids, q_cams, g_cams


def numpy_loop(rows, q_pids, g_pids, q_cams, g_cams, max_rank=50):
  """torchreid's eval_market1501 (stable argsort, junk removed), one query at a time.

  rows yields (query index, distance row)."""
  cmc, aps, inps = np.zeros(max_rank), [], []
  for q, d in rows:
    order = np.argsort(d, kind="stable")
    matches = g_pids[order] == q_pids[q]
    keep = ~(matches & (g_cams[order] == q_cams[q])) & (g_pids[order] != -1)
    raw = matches[keep]
    if not raw.any():
      continue
    hits = raw.cumsum()
    pos = np.flatnonzero(raw)
    cmc += np.pad(hits > 0, (0, max(0, max_rank - len(hits))), mode="edge")[:max_rank]
    aps.append(np.mean(hits[pos] / (pos + 1.0)))
    inps.append(hits[-1] / (pos[-1] + 1.0))
  return {"cmc": (cmc / len(aps)).tolist(), "mAP": float(np.mean(aps)), "mINP": float(np.mean(inps))}


def numpy_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
  """torchreid.utils.rerank.re_ranking (Zhong et al.'s code), argsorts made stable."""
  original_dist = np.concatenate([np.concatenate([q_q_dist, q_g_dist], axis=1),
                                  np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0)
  original_dist = np.power(original_dist, 2).astype(np.float32)
  original_dist = np.transpose(1. * original_dist / np.max(original_dist, axis=0))
  V = np.zeros_like(original_dist).astype(np.float32)
  initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)
  query_num, all_num = q_g_dist.shape[0], original_dist.shape[0]
  half = int(np.around(k1 / 2.)) + 1
  for i in range(all_num):
    forward = initial_rank[i, :k1 + 1]
    k_reciprocal = forward[np.where(initial_rank[forward, :k1 + 1] == i)[0]]
    expansion = k_reciprocal
    for candidate in k_reciprocal:
      c_forward = initial_rank[candidate, :half]
      c_reciprocal = c_forward[np.where(initial_rank[c_forward, :half] == candidate)[0]]
      if len(np.intersect1d(c_reciprocal, k_reciprocal)) > 2. / 3 * len(c_reciprocal):
        expansion = np.append(expansion, c_reciprocal)
    expansion = np.unique(expansion)
    weight = np.exp(-original_dist[i, expansion])
    V[i, expansion] = 1. * weight / np.sum(weight)
  original_dist = original_dist[:query_num, ]
  if k2 != 1:
    V_qe = np.zeros_like(V, dtype=np.float32)
    for i in range(all_num):
      V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
    V = V_qe
  del initial_rank
  inv_index = [np.where(V[:, i] != 0)[0] for i in range(all_num)]
  jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
  for i in range(query_num):
    temp_min = np.zeros(shape=[1, all_num], dtype=np.float32)
    nonzero = np.where(V[i, :] != 0)[0]
    for e in nonzero:
      temp_min[0, inv_index[e]] += np.minimum(V[i, e], V[inv_index[e], e])
    jaccard_dist[i] = 1 - temp_min / (2. - temp_min)
  final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
  return final_dist[:query_num, query_num:]


def product_alone(qf, gf):
  """The float32 products q.g^T alone, in blocks into one buffer: the floor under msmt."""
  from reid_jax.metrics import distance
  rows = distance.chunk_rows(len(gf), len(qf))
  out = distance.aligned_empty((rows, len(gf)))
  for start in range(0, len(qf), rows):
    q = qf[start:start + rows]
    np.matmul(q, gf.T, out=out[:len(q)])


def timed(fn, repeats):
  """(result, cold seconds, best warm seconds or None)."""
  start = time.perf_counter()
  result = fn()
  cold, warm = time.perf_counter() - start, None
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    warm = min(warm or np.inf, time.perf_counter() - start)
  return result, cold, warm


def run_side(case, side, size, repeats, out_dir):
  """One side of one case, in this process; returns a JSON-able dict."""
  from reid_jax import metrics
  extra = {}
  qf, gf, *ids = make_data(*size)
  scores = lambda r: {"cmc": np.asarray(r["cmc"]).tolist(), "mAP": r["mAP"], "mINP": r["mINP"]}
  if case == "market":
    distmat = metrics.pairwise_distance(qf, gf)
    del qf, gf
    if side == "ours":
      result, cold, warm = timed(lambda: metrics.evaluate_rank(distmat, *ids), repeats)
      result = scores(result)
    else:
      result, cold, warm = timed(lambda: numpy_loop(enumerate(distmat), *ids), 0)
  elif case == "msmt":
    if side == "ours":
      result, cold, warm = timed(lambda: metrics.evaluate_features(qf, gf, *ids), repeats)
      result = scores(result)
      start = time.perf_counter()
      product_alone(qf, gf)
      extra["product"] = time.perf_counter() - start
    else:
      def rows():  # numpy distances, 256 queries at a time
        g_sq = np.einsum("ij,ij->i", gf, gf)
        for start in range(0, len(qf), 256):
          q = qf[start:start + 256]
          d2 = np.einsum("ij,ij->i", q, q)[:, None] + g_sq[None, :] - 2 * (q @ gf.T)
          yield from enumerate(np.sqrt(np.maximum(d2, 0)), start)
      result, cold, warm = timed(lambda: numpy_loop(rows(), *ids), 0)
  else:
    if side == "ours":
      result, cold, warm = timed(lambda: metrics.re_ranking_features(qf, gf), repeats)
    else:
      dists = [metrics.pairwise_distance(a, b) for a, b in ((qf, gf), (qf, qf), (gf, gf))]
      result, cold, warm = timed(lambda: numpy_re_ranking(*dists), 0)
    np.save(os.path.join(out_dir, f"rerank_{side}.npy"), result)
    result = None
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
  return {"result": result, "cold": cold, "warm": warm, "peak_gb": peak, **extra}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default="market,msmt,rerank")
  for name, size in SIZES.items():
    parser.add_argument(f"--{name}", default=",".join(map(str, size[:2])), help="queries,gallery")
  parser.add_argument("--repeats", type=int, default=3, help="warm calls of ours (msmt: 1)")
  parser.add_argument("--skip_reference", action="store_true", help="only time reid_jax")
  parser.add_argument("--child", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    case, side, size, repeats, out_dir = json.loads(args.child)
    print(json.dumps(run_side(case, side, tuple(size), repeats, out_dir)))
    return

  out_dir = tempfile.mkdtemp()
  print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
  for case in args.cases.split(","):
    num_q, num_g = map(int, getattr(args, case).split(","))
    size = (num_q, num_g) + SIZES[case][2:]
    runs = {}
    for side in ("ours",) + (() if args.skip_reference else ("numpy",)):
      repeats = 0 if side == "numpy" else (min(args.repeats, 1) if case == "msmt" else args.repeats)
      child = json.dumps([case, side, size, repeats, out_dir])
      out = subprocess.run([sys.executable, __file__, "--child", child], check=True,
                           capture_output=True, text=True).stdout
      runs[side] = json.loads(out.strip().splitlines()[-1])
      r = runs[side]
      warm = f", warm {r['warm']:.3f} s" if r["warm"] is not None else ""
      print(f"{case:6s} {num_q}x{num_g} {side:5s}: cold {r['cold']:.3f} s{warm}, "
            f"peak {r['peak_gb']:.2f} GB", flush=True)
      if "product" in r:
        flops = 2.0 * num_q * num_g * size[-1]
        print(f"{case:6s} of which the q.g^T products alone (numpy BLAS, same process): "
              f"{r['product']:.3f} s, {flops / r['product'] / 1e9:.0f} GFLOP/s", flush=True)
    if "numpy" in runs:
      ours, ref = runs["ours"], runs["numpy"]
      best = ours["warm"] if ours["warm"] is not None else ours["cold"]
      print(f"{case:6s} speed-up: {ref['cold'] / best:.1f}x warm, {ref['cold'] / ours['cold']:.1f}x cold")
      if case == "rerank":
        a, b = (np.load(os.path.join(out_dir, f"rerank_{s}.npy")) for s in ("ours", "numpy"))
        print(f"{case:6s} max |ours - numpy| = {np.abs(a - b).max():.2e}")
      else:
        a, b = ours["result"], ref["result"]
        print(f"{case:6s} mAP {a['mAP']:.6f} vs {b['mAP']:.6f}, "
              f"max |d CMC| {np.abs(np.subtract(a['cmc'], b['cmc'])).max():.1e}, "
              f"|d mINP| {abs(a['mINP'] - b['mINP']):.1e}")


if __name__ == "__main__":
  main()
