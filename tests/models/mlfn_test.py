"""MLFN: parameter counts, output shapes, and numerics against torchreid's layout in PyTorch
(`benchmarks/torch_reference.py`, the twin the training benchmark runs)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax import models
from reid_jax.models import mlfn

TINY = dict(width=0.25, stage_blocks=(1, 2, 1, 1), groups=8, embed_dim=32)


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("num_classes, expected", [(0, 32_473_024), (751, 33_242_799)])
def test_full_size_parameter_count_matches_torchreid(num_classes, expected):
  model = models.get_model("mlfn", num_classes)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 256, 128, 3)), train=False))
  assert _count(variables["params"]) == expected


def test_full_size_feature_shapes():
  model = models.get_model("mlfn", 751)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 256, 128, 3)), train=False))
  out, state = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros((2, 256, 128, 3)), mutable=["intermediates"]), variables)
  assert out["embedding"].shape == (2, 1024)            # R, d = 1024
  assert state["intermediates"]["factor_signature"][0].shape == (2, 512)  # S_hat, K = 16 x 32
  assert out["logits"].shape == (1, 2, 751)


def test_gates_are_sigmoid_outputs_in_unit_interval():
  model = models.get_model("mlfn", 5, **TINY)
  x = jax.random.normal(jax.random.key(1), (3, 64, 32, 3))
  variables = model.init(jax.random.key(0), x)
  _, state = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])
  (s,) = state["intermediates"]["factor_signature"]
  assert s.shape == (3, 8 * 5)
  assert ((s > 0) & (s < 1)).all()


def test_forward_matches_torchreid_layout_in_pytorch():
  torch = pytest.importorskip("torch")
  from benchmarks import torch_reference
  model = models.get_model("mlfn", 7, **TINY)
  x = np.random.default_rng(0).normal(size=(2, 64, 32, 3)).astype(np.float32)
  variables = model.init(jax.random.key(0), x)
  # Non-trivial running statistics, so inference-mode BN is exercised.
  keys = iter(jax.random.split(jax.random.key(1), 1000))
  stats = jax.tree.map(lambda v: v + 0.1 * jax.random.uniform(next(keys), v.shape),
                       variables["batch_stats"])
  variables = {"params": variables["params"], "batch_stats": stats}
  out = model.apply(variables, x)
  twin = torch_reference.MLFN(7, **TINY).eval()
  torch_reference.load_flax(twin, variables)
  with torch.no_grad():
    logits, embedding = twin(torch.from_numpy(x).permute(0, 3, 1, 2))
  np.testing.assert_allclose(out["embedding"], embedding.numpy(), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out["logits"][0], logits.numpy(), rtol=1e-4, atol=1e-5)


def test_loss_is_cross_entropy_of_the_identity_logits():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
  total, parts = mlfn.SPEC.loss({"logits": logits[None]}, {"label": jnp.array([0, 2])}, {})
  expected = -np.mean([np.log(np.exp(2) / (np.exp(2) + 1 + np.exp(-1))),
                       np.log(1 / (2 + np.e))])
  np.testing.assert_allclose(total, expected, rtol=1e-6)
  assert parts["cross_entropy"] == total
