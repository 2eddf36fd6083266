"""KPM matching-and-pooling benchmark: reid_jax.ops.kpm 'einsum' against 'fused', in pairs/s.

  python benchmarks/kpm_bench.py                         # the three scales of the model
  python benchmarks/kpm_bench.py --pairs=4096 --dtype=bfloat16 --scales=512x512

Each scale (M = N positions, C channels; at 256x128 the model's maps are 8x4 x 2048,
16x8 x 1024 and 32x16 x 512) times `match_pool` of --queries query maps against
enough gallery maps for --pairs pairs: compilation separately, then the median
of --repeats calls after one warm-up call. Reported per implementation:
pairs/s, TFLOP/s (2MNC for the logits X Y^T plus the pooling matvecs 2MN + 2NC
per pair and 2MC per query) against the device's dense peak, the fused/einsum
speed ratio, and the time of a full pairwise Market-1501 evaluation
(3,368 x 15,913 pairs, every pair at all three scales) projected from the
measured rates. On CPU 'fused' runs in the Pallas interpreter, which is a
correctness tool and not a performance path: it gets only --cpu_fused_pairs pairs.
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from reid_jax import models
from reid_jax.ops import kpm

SCALES = ((32, 2048), (128, 1024), (512, 512))
MARKET_PAIRS = 3368 * 15913
# Dense peak TFLOP/s by device kind: (bfloat16 tensor cores / MXU, float32 without TF32).
# float32 on TPU is computed in bf16 passes, so it has no single peak.
PEAKS = {"H100": (989.0, 67.0), "H200": (989.0, 67.0), "A100": (312.0, 19.5),
         "TPU v5 lite": (197.0, None), "TPU v5e": (197.0, None), "TPU v4": (275.0, None)}


def peak_tflops(device, dtype):
  """The device's dense peak for dtype, or None if unknown (CPU, unlisted devices)."""
  for kind, (bf16, f32) in PEAKS.items():
    if kind in device.device_kind:
      return bf16 if dtype == jnp.bfloat16 else f32
  return None


def flops(queries, gallery, m, c):
  per_pair = 2 * m * m * c + 2 * m * m + 2 * m * c
  return queries * gallery * per_pair + queries * 2 * m * c


def make_inputs(queries, gallery, m, c, dtype, seed=0):
  """Unit-norm query / gallery maps and RSA-like weights alpha = 1 + softmax."""
  rng = np.random.default_rng(seed)
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  x = jnp.asarray(unit(rng.standard_normal((queries, m, c), np.float32)), dtype)
  y = jnp.asarray(unit(rng.standard_normal((gallery, m, c), np.float32)), dtype)
  alpha = 1 + jax.nn.softmax(jnp.asarray(rng.standard_normal((queries, m), np.float32)), axis=-1)
  return x, y, alpha


def bench_pairs(score_fn, args, pairs, repeats):
  """Times jit(score_fn)(*args), which scores `pairs` pairs.

  The harness for any pair scorer: the op below, and the whole KPM model's
  scoring (`model_scoring_cases`). Returns compile seconds, the median
  seconds of `repeats` calls after one warm-up call, pairs/s, and the output.
  """
  start = time.perf_counter()
  compiled = jax.jit(score_fn).lower(*args).compile()
  compile_s = time.perf_counter() - start
  out = jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return {"compile_s": compile_s, "median_s": median, "pairs_per_s": pairs / median, "out": out}


def _random_variables(model, image_size):
  """Full-size KPM variables without running init: N(0, 0.01) weights, BatchNorm at mean 0,
  variance 1 (scoring speed does not depend on the values)."""
  abstract = jax.eval_shape(lambda: models.get_spec("kpm").init(model, jax.random.key(0), image_size))
  keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(abstract))))
  params = jax.tree.map(lambda s: 0.01 * jax.random.normal(next(keys), s.shape, s.dtype),
                        abstract["params"])
  stats = jax.tree_util.tree_map_with_path(
      lambda path, s: jnp.ones(s.shape, s.dtype) if path[-1].key == "var" else jnp.zeros(s.shape, s.dtype),
      abstract["batch_stats"])
  return {"params": params, "batch_stats": stats}


def model_scoring_cases(args, dtype, pairs, on_cpu):
  """The whole KPM model's scoring at 256x128: `score` of encoded query and gallery
  images (three scales of matching, RSA-weighted pooling, the BN + dense head), for
  each implementation of the op. Returns (name, score_fn, inputs, pairs) tuples."""
  cases = []
  for impl in ("einsum", "fused"):
    model = models.get_model("kpm", 0, impl=impl)
    variables = _random_variables(model, (256, 128))
    q, g = split(args.cpu_fused_pairs if on_cpu and impl == "fused" else pairs, args.queries)
    encoded = []
    for count, seed in ((q, 0), (g, 1)):
      maps, alphas = [], []
      for (h, w), (m, c) in zip(((8, 4), (16, 8), (32, 16)), SCALES):
        x, _, alpha = make_inputs(count, 1, m, c, dtype, seed)
        maps.append(x.reshape(count, h, w, c))
        alphas.append(alpha)
      encoded.append({"maps": tuple(maps), "alpha": tuple(alphas)})
    score = lambda v, eq, eg, model=model: model.apply(v, eq, eg, method="score")
    cases.append((impl, score, (variables, *encoded), q * g))
  return cases


def split(pairs, queries):
  """(queries, gallery maps) for at least `pairs` pairs."""
  q = max(1, min(queries, pairs))
  return q, -(-pairs // q)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--scales", default=",".join(f"{m}x{c}" for m, c in SCALES),
                      help="MxC,... positions (M = N) and channels per scale")
  parser.add_argument("--pairs", type=int, default=None,
                      help="pairs per call (default 2048 on GPU/TPU, 64 on CPU)")
  parser.add_argument("--queries", type=int, default=8, help="query maps per call")
  parser.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                      help="default bfloat16 on GPU/TPU, float32 on CPU")
  parser.add_argument("--tau", type=float, default=0.05)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--cpu_fused_pairs", type=int, default=2,
                      help="pairs for 'fused' on CPU (the Pallas interpreter)")
  args = parser.parse_args()

  device = jax.devices()[0]
  on_cpu = device.platform == "cpu"
  dtype = jnp.dtype(args.dtype or ("float32" if on_cpu else "bfloat16"))
  pairs = args.pairs or (64 if on_cpu else 2048)
  peak = peak_tflops(device, dtype)
  print(f"device: {device.device_kind} ({device.platform}), dtype {dtype.name}, tau {args.tau}, "
        f"peak {f'{peak:.0f} TFLOP/s' if peak else 'unknown'}")
  if on_cpu:
    print(f"NOTE: on CPU 'fused' runs in the Pallas interpreter (interpret=True), a correctness "
          f"path, not a performance one; it scores only {args.cpu_fused_pairs} pairs per call and "
          f"its rates say nothing about the GPU/TPU kernel.")

  rates = {"einsum": [], "fused": []}
  for scale in args.scales.split(","):
    m, c = map(int, scale.split("x"))
    results = {}
    for impl in ("einsum", "fused"):
      q, g = split(args.cpu_fused_pairs if on_cpu and impl == "fused" else pairs, args.queries)
      inputs = make_inputs(q, g, m, c, dtype)
      fn = lambda x, y, a, impl=impl: kpm.match_pool(x, y, a, tau=args.tau, impl=impl)
      r = results[impl] = bench_pairs(fn, inputs, q * g, args.repeats)
      r["inputs"] = inputs
      tflops = flops(q, g, m, c) / r["median_s"] / 1e12
      util = f", {100 * tflops / peak:.1f}% of peak" if peak else ""
      print(f"M=N={m:4d} C={c:5d} {impl:6s}: {q}x{g} pairs, compile {r['compile_s']:.2f} s, "
            f"median {1e3 * r['median_s']:.2f} ms, {r['pairs_per_s']:,.0f} pairs/s, "
            f"{tflops:.3f} TFLOP/s{util}", flush=True)
      rates[impl].append(r["pairs_per_s"])
    # The same pairs through both implementations: do they agree?
    fused_out = results["fused"]["out"]
    ref = kpm.match_pool(*results["fused"]["inputs"], tau=args.tau, impl="einsum")
    err = float(jnp.abs(fused_out - ref).max() / jnp.abs(ref).max())
    print(f"M=N={m:4d} C={c:5d} fused/einsum pairs/s ratio {rates['fused'][-1] / rates['einsum'][-1]:.2f}"
          f" (max |fused - einsum| / max |einsum| = {err:.1e})")

  model_rates = {}
  for name, score_fn, inputs, n in model_scoring_cases(args, dtype, pairs, on_cpu):
    r = bench_pairs(score_fn, inputs, n, args.repeats)
    model_rates[name] = r["pairs_per_s"]
    seconds = MARKET_PAIRS / r["pairs_per_s"]
    note = " (Pallas interpreter: not meaningful)" if on_cpu and name == "fused" else ""
    print(f"KPM model score ({name}): {n} pairs, compile {r['compile_s']:.2f} s, "
          f"{r['pairs_per_s']:,.0f} pairs/s, Market-1501 full pairwise {seconds:,.0f} s = "
          f"{seconds / 3600:.2f} h{note}", flush=True)
  print(f"KPM model score fused/einsum pairs/s ratio {model_rates['fused'] / model_rates['einsum']:.2f}")

  print(f"Market-1501 full pairwise ({MARKET_PAIRS:,} pairs, the op at all {len(rates['einsum'])} "
        f"scales, projected from the rates above):")
  for impl, rs in rates.items():
    seconds = MARKET_PAIRS * sum(1.0 / r for r in rs)
    note = " (Pallas interpreter: not meaningful)" if on_cpu and impl == "fused" else ""
    print(f"  {impl:6s}: {seconds:,.0f} s = {seconds / 3600:.2f} h{note}")


if __name__ == "__main__":
  main()
