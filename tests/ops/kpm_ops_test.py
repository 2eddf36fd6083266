"""reid_jax.ops.kpm against a float64 numpy transcription of Shen et al., CVPR 2018, Eq. 5-10.

On CPU the 'fused' kernel runs in the Pallas interpreter with the GPU tiling;
'fused_small_tiles' forces 16 x 16 tiles over 32 channels so that the small
test sizes cover the multi-tile paths (two passes, several channel tiles,
padded rows and columns, several backward blocks).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.ops import kpm, kpm_fused

SMALL_TILES = (16, 16, 32)
TRITON_CALL = "__gpu$xla.gpu.triton"


@pytest.fixture(params=["einsum", "fused", "fused_small_tiles"])
def impl(request, monkeypatch):
  if request.param == "fused_small_tiles":
    monkeypatch.setattr(kpm_fused, "match_weights",
                        functools.partial(kpm_fused.match_weights, blocks=SMALL_TILES))
    return "fused"
  return request.param


def reference_pair(x, y, alpha, tau):
  """(d [C], beta [M, N], warped [M, C]) of one pair, float64, spelled out."""
  x, y, alpha = (np.asarray(v, np.float64) for v in (x, y, alpha))
  logits = x @ y.T / tau                                    # Eq. 6: x_i . y_j
  beta = np.exp(logits - logits.max(axis=1, keepdims=True))
  beta /= beta.sum(axis=1, keepdims=True)                   # Eq. 5 / 7
  warped = np.stack([sum(beta[i, j] * y[j] for j in range(len(y))) for i in range(len(x))])  # Eq. 8
  d = sum(alpha[i] * (x[i] - warped[i]) for i in range(len(x)))                            # Eq. 10
  return d, beta, warped


def reference_cross(x, y, alpha, tau):
  return np.array([[reference_pair(x[q], y[g], alpha[q], tau)[0] for g in range(len(y))]
                   for q in range(len(x))])


def maps(rng, *shape, scale=1.0):
  """Feature maps with unit-norm positions (times scale), as the model feeds them."""
  v = rng.standard_normal(shape)
  return (scale * v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def weights(rng, *shape):
  return (1.0 + rng.random(shape)).astype(np.float32)  # alpha = 1 + softmax(...) lies in (1, 2)


def assert_close(actual, expected, rel):
  """Elementwise, within rel of the largest |expected| (d is a difference: entries cancel)."""
  actual = np.asarray(actual)
  assert actual.dtype == np.float32 and np.isfinite(actual).all()
  np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * np.abs(expected).max())


@pytest.mark.parametrize("q,g,m,n,c", [(2, 3, 7, 7, 24), (1, 2, 13, 29, 40), (2, 1, 33, 33, 20)])
def test_match_pool_equals_reference(impl, q, g, m, n, c):
  rng = np.random.default_rng(m * n)
  x, y, alpha = maps(rng, q, m, c), maps(rng, g, n, c), weights(rng, q, m)
  d = kpm.match_pool(x, y, alpha, tau=0.05, impl=impl)
  assert d.shape == (q, g, c)
  assert_close(d, reference_cross(x, y, alpha, 0.05), 1e-5)


@pytest.mark.parametrize("p,m,n,c", [(3, 13, 7, 24), (2, 33, 17, 40)])
def test_match_pool_pairs_equals_reference(impl, p, m, n, c):
  rng = np.random.default_rng(m + n)
  x, y, alpha = maps(rng, p, m, c), maps(rng, p, n, c), weights(rng, p, m)
  d = kpm.match_pool_pairs(x, y, alpha, tau=0.05, impl=impl)
  expected = np.stack([reference_pair(x[i], y[i], alpha[i], 0.05)[0] for i in range(p)])
  assert d.shape == (p, c)
  assert_close(d, expected, 1e-5)


def jax_reference(x, y, alpha, tau, pairs):
  """Eq. 5, 8, 10 in jnp through the explicit warped map: differentiable, float64 under x64."""
  if pairs:  # pair p = query p against gallery p
    one = lambda xp, yp, ap: jax_reference(xp[None], yp[None], ap[None], tau, False)[0, 0]
    return jax.vmap(one)(x, y, alpha)
  beta = jax.nn.softmax(jnp.einsum("qmc,gnc->qgmn", x, y) / tau, axis=-1)
  warped = jnp.einsum("qgmn,gnc->qgmc", beta, y)
  return jnp.einsum("qm,qgmc->qgc", alpha, x[:, None] - warped)


@pytest.mark.parametrize("pairs", [False, True])
def test_gradients_equal_float64_reference(impl, pairs):
  rng = np.random.default_rng(1)
  q, g, m, n, c = (3, 3, 33, 13, 24) if pairs else (2, 3, 13, 7, 40)
  x, y, alpha = maps(rng, q, m, c), maps(rng, g, n, c), weights(rng, q, m)
  cot = rng.standard_normal((q, c) if pairs else (q, g, c)).astype(np.float32)
  pool = kpm.match_pool_pairs if pairs else kpm.match_pool
  loss = lambda *a: jnp.vdot(pool(*a, tau=0.05, impl=impl), cot)
  grads = jax.grad(loss, argnums=(0, 1, 2))(x, y, alpha)
  with jax.enable_x64(True):
    f64 = lambda v: jnp.asarray(v, jnp.float64)
    ref_loss = lambda *a: jnp.vdot(jax_reference(*a, 0.05, pairs), f64(cot))
    expected = jax.grad(ref_loss, argnums=(0, 1, 2))(f64(x), f64(y), f64(alpha))
    expected = [np.asarray(e) for e in expected]
  for name, got, want in zip(("x", "y", "alpha"), grads, expected):
    assert got.dtype == jnp.float32, name
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=name)


def test_fused_gradients_equal_einsum_gradients_bf16():
  rng = np.random.default_rng(2)
  x, y = jnp.bfloat16(maps(rng, 2, 13, 32)), jnp.bfloat16(maps(rng, 3, 7, 32))
  alpha = weights(rng, 2, 13)
  grad = lambda impl: jax.grad(lambda *a: kpm.match_pool(*a, impl=impl).sum(), argnums=(0, 1, 2))
  for got, want in zip(grad("fused")(x, y, alpha), grad("einsum")(x, y, alpha)):
    assert got.dtype == want.dtype
    got, want = np.float32(got), np.float32(want)
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2 * np.abs(want).max())


def test_bfloat16_inputs(impl):
  """bf16 maps: float32 accumulation, so equal to the float64 reference of the rounded
  inputs to 1e-4; within 2e-2 (of max |d|) of the result for the float32 inputs."""
  rng = np.random.default_rng(3)
  x, y, alpha = maps(rng, 2, 13, 40), maps(rng, 3, 29, 40), weights(rng, 2, 13)
  xb, yb = jnp.bfloat16(x), jnp.bfloat16(y)
  d = kpm.match_pool(xb, yb, alpha, tau=0.05, impl=impl)
  assert_close(d, reference_cross(np.float32(xb), np.float32(yb), alpha, 0.05), 1e-4)
  assert_close(d, reference_cross(x, y, alpha, 0.05), 2e-2)


@pytest.mark.parametrize("tau", [0.01, 10.0])
def test_temperature_extremes_are_finite(impl, tau):
  """|x_i . y_j| up to 400: logits up to 4e4 at tau = 0.01 (exp overflows without the max)."""
  rng = np.random.default_rng(4)
  x, y, alpha = maps(rng, 2, 13, 24, scale=20), maps(rng, 2, 17, 24, scale=20), weights(rng, 2, 13)
  d = kpm.match_pool(x, y, alpha, tau=tau, impl=impl)
  assert_close(d, reference_cross(x, y, alpha, tau), 1e-5)
  d = kpm.match_pool_pairs(x, y, alpha, tau=tau, impl=impl)
  assert_close(d, np.stack([reference_pair(x[i], y[i], alpha[i], tau)[0] for i in range(2)]), 1e-5)


def test_matching_and_warp_equal_reference():
  rng = np.random.default_rng(5)
  x, y = maps(rng, 2, 11, 16), maps(rng, 3, 6, 16)
  beta = kpm.matching(x[:, None], y[None], tau=0.05)  # every pair by broadcasting
  assert beta.shape == (2, 3, 11, 6) and beta.dtype == jnp.float32
  np.testing.assert_allclose(beta.sum(-1), 1.0, rtol=1e-6)
  warped = kpm.warp(x[:, None], y[None], tau=0.05)
  for q in range(2):
    for g in range(3):
      _, ref_beta, ref_warped = reference_pair(x[q], y[g], np.ones(11), 0.05)
      np.testing.assert_allclose(beta[q, g], ref_beta, rtol=1e-5, atol=1e-7)
      np.testing.assert_allclose(warped[q, g], ref_warped, rtol=1e-5, atol=1e-6)
  extreme = kpm.matching(20 * x, 20 * y[:2], tau=0.01)
  assert np.isfinite(extreme).all()
  np.testing.assert_allclose(extreme.sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("name", ["einsum", "fused"])
def test_jit_equals_eager(name):
  rng = np.random.default_rng(6)
  x, y, alpha = maps(rng, 2, 7, 24), maps(rng, 3, 13, 24), weights(rng, 2, 7)
  for pool, yy in ((kpm.match_pool, y), (kpm.match_pool_pairs, y[:2])):
    f = functools.partial(pool, tau=0.05, impl=name)
    np.testing.assert_allclose(jax.jit(f)(x, yy, alpha), f(x, yy, alpha), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("call,message", [
    (lambda x, y, a: kpm.match_pool(x[0], y, a), r"x has shape \(5, 8\), expected \[Q, M, C\]"),
    (lambda x, y, a: kpm.match_pool(x, y[..., :4], a),
     r"y has shape \(3, 6, 4\), expected \[G, N, C\] with C = 8"),
    (lambda x, y, a: kpm.match_pool(x, y, a[:, :4]),
     r"alpha has shape \(2, 4\), expected \[Q, M\] = \[2, 5\]"),
    (lambda x, y, a: kpm.match_pool_pairs(x, y, a),
     r"y has shape \(3, 6, 8\), expected \[P, N, C\] with P = 2"),
    (lambda x, y, a: kpm.match_pool(x, y, a, impl="flash"), r"unknown impl 'flash'"),
    (lambda x, y, a: kpm.match_pool(x.astype(np.float16), y, a), r"x has dtype float16"),
    (lambda x, y, a: kpm.match_pool(x, y, a, tau=0.0), r"tau must be a positive number"),
    (lambda x, y, a: kpm.matching(x[0, 0], y), r"x has shape \(8,\), expected \[\.\.\., M, C\]"),
    (lambda x, y, a: kpm.matching(x, y[..., :4]),
     r"y has shape \(3, 6, 4\), expected \[\.\.\., N, C\] with C = 8"),
    (lambda x, y, a: kpm.matching(x, y), r"leading dimensions of x \(2, 5, 8\) and y \(3, 6, 8\)"),
])
def test_bad_arguments_raise(call, message):
  x, y, a = np.zeros((2, 5, 8), np.float32), np.zeros((3, 6, 8), np.float32), np.ones((2, 5), np.float32)
  with pytest.raises(ValueError, match=message):
    call(x, y, a)


@pytest.mark.parametrize("m,c", [(32, 2048), (128, 1024), (512, 512)])
@pytest.mark.parametrize("platform,target", [("cuda", TRITON_CALL), ("tpu", "tpu_custom_call")])
def test_fused_lowers_for_gpu_and_tpu(m, c, platform, target):
  """Cross-platform export lowers the kernel to Triton IR / Mosaic IR (block-shape and
  op-lowering checks) on any machine. It does not compile them: Triton -> PTX and
  Mosaic's layout passes run in the device compilers."""
  x = jax.ShapeDtypeStruct((2, m, c), jnp.bfloat16)
  y = jax.ShapeDtypeStruct((4, m, c), jnp.bfloat16)
  alpha = jax.ShapeDtypeStruct((2, m), jnp.float32)
  # The Triton custom call has no serialization-compatibility guarantee; lowering is what we check.
  export = functools.partial(jax.export.export, platforms=[platform],
                             disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(TRITON_CALL)])
  pool = jax.jit(functools.partial(kpm.match_pool, impl="fused"))
  assert export(pool)(x, y, alpha).out_avals[0].shape == (2, 4, c)
  train = jax.jit(jax.grad(lambda *a: kpm.match_pool_pairs(*a, impl="fused").sum(), argnums=(0, 1, 2)))
  exported = export(train)(x, x, alpha)
  assert f"custom_call @{target}" in exported.mlir_module()
