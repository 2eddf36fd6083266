"""MLFN: parameter counts, output shapes, and numerics against torchreid's layout in PyTorch."""
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


torch = pytest.importorskip("torch")
F = torch.nn.functional


def _torch_bn(x, p, s):
  return F.batch_norm(x, torch.tensor(np.asarray(s["mean"])), torch.tensor(np.asarray(s["var"])),
                      torch.tensor(np.asarray(p["scale"])), torch.tensor(np.asarray(p["bias"])),
                      training=False, eps=1e-5)


def _torch_conv(x, p, stride=1, groups=1):
  w = torch.tensor(np.asarray(p["kernel"]).transpose(3, 2, 0, 1).copy())
  b = torch.tensor(np.asarray(p["bias"])) if "bias" in p else None
  return F.conv2d(x, w, b, stride=stride, padding=w.shape[-1] // 2, groups=groups)


def _torch_block(x, p, s, stride, groups):
  """torchreid's MLFNBlock.forward, written against the Flax parameters."""
  residual = x
  g = F.adaptive_avg_pool2d(x, 1)
  for i in range(2):
    g = F.relu(_torch_bn(_torch_conv(g, p[f"fsm_conv{i}"]), p[f"fsm_bn{i}"], s[f"fsm_bn{i}"]))
  g = torch.sigmoid(_torch_bn(_torch_conv(g, p["fsm_gate"]), p["fsm_gate_bn"], s["fsm_gate_bn"]))
  y = F.relu(_torch_bn(_torch_conv(x, p["fm_conv1"]), p["fm_bn1"], s["fm_bn1"]))
  y = F.relu(_torch_bn(_torch_conv(y, p["fm_conv2"], stride, groups), p["fm_bn2"], s["fm_bn2"]))
  b, c = y.shape[:2]
  n = c // groups
  ss = g.repeat(1, n, 1, 1).view(b, n, groups, 1, 1).permute(0, 2, 1, 3, 4).reshape(b, c, 1, 1)
  y = F.relu(_torch_bn(_torch_conv(y * ss, p["fm_conv3"]), p["fm_bn3"], s["fm_bn3"]))
  if "shortcut_conv" in p:
    residual = _torch_bn(_torch_conv(residual, p["shortcut_conv"], stride),
                         p["shortcut_bn"], s["shortcut_bn"])
  return F.relu(residual + y), g.flatten(1)


def _torch_mlfn(x, p, s, stage_blocks, groups):
  x = F.relu(_torch_bn(_torch_conv(x, p["stem_conv"], 2), p["stem_bn"], s["stem_bn"]))
  x = F.max_pool2d(x, 3, 2, 1)
  signature = []
  for stage, n in enumerate(stage_blocks):
    for b in range(n):
      name = f"block{stage + 1}_{b}"
      x, g = _torch_block(x, p[name], s[name], 2 if stage and not b else 1, groups)
      signature.append(g)
  fc = lambda v, name: F.relu(_torch_bn(
      v @ torch.tensor(np.asarray(p[name]["kernel"])), p[name + "_bn"], s[name + "_bn"]))
  v = (fc(x.mean((2, 3)), "fc_x") + fc(torch.cat(signature, 1), "fc_s")) / 2
  return v @ torch.tensor(np.asarray(p["classifier"]["kernel"])) + torch.tensor(
      np.asarray(p["classifier"]["bias"])), v


def test_forward_matches_torchreid_layout_in_pytorch():
  model = models.get_model("mlfn", 7, **TINY)
  x = np.random.default_rng(0).normal(size=(2, 64, 32, 3)).astype(np.float32)
  variables = model.init(jax.random.key(0), x)
  # Non-trivial running statistics, so inference-mode BN is exercised.
  keys = iter(jax.random.split(jax.random.key(1), 1000))
  stats = jax.tree.map(lambda v: v + 0.1 * jax.random.uniform(next(keys), v.shape),
                       variables["batch_stats"])
  variables = {"params": variables["params"], "batch_stats": stats}
  out = model.apply(variables, x)
  logits, embedding = _torch_mlfn(torch.tensor(x).permute(0, 3, 1, 2), variables["params"],
                                  stats, TINY["stage_blocks"], TINY["groups"])
  np.testing.assert_allclose(out["embedding"], embedding.numpy(), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out["logits"][0], logits.numpy(), rtol=1e-4, atol=1e-5)


def test_loss_is_cross_entropy_of_the_identity_logits():
  logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
  total, parts = mlfn.SPEC.loss({"logits": logits[None]}, {"label": jnp.array([0, 2])}, {})
  expected = -np.mean([np.log(np.exp(2) / (np.exp(2) + 1 + np.exp(-1))),
                       np.log(1 / (2 + np.e))])
  np.testing.assert_allclose(total, expected, rtol=1e-6)
  assert parts["cross_entropy"] == total
