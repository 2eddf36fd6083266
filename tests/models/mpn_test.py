"""MPN: sizes and parameter counts, hard parameter sharing, the ATs in training only, Eq. 10."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax import models
from reid_jax.models import mpn

TINY = dict(width=0.125, stage_blocks=(1, 1, 1, 1), num_parts=4)
SPEC = models.get_spec("mpn")


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("kwargs, num_classes, expected", [
    ({}, 0, 32_178_752), ({"channel_attention": False}, 0, 31_384_640), ({}, 751, 36_801_908)])
def test_full_size_parameter_count(kwargs, num_classes, expected):
  model = models.get_model("mpn", num_classes, **kwargs)
  variables = jax.eval_shape(lambda: SPEC.init(model, jax.random.key(0), (384, 128)))
  assert _count(variables["params"]) == expected


def test_full_size_shapes_in_training_and_at_test():
  model = models.get_model("mpn", 751)
  variables = jax.eval_shape(lambda: SPEC.init(model, jax.random.key(0), (384, 128)))
  batch = SPEC.dummy_batch((384, 128), batch_size=2)
  args, kwargs = SPEC.apply_inputs(batch, train=True)
  out, state = jax.eval_shape(lambda v: model.apply(
      v, *args, train=True, mutable=["batch_stats", "intermediates"], **kwargs), variables)
  assert state["intermediates"]["feature_map"][0].shape == (2, 24, 8, 2048)  # last stride 1
  assert out["embedding"].shape == (2, 3072)
  assert out["logits"].shape == (12, 2, 751)               # 6 MT heads, then 6 AT heads
  assert out["metric_features"].shape == (2, 2, 3072)      # h, g
  args, kwargs = SPEC.apply_inputs(batch)                  # test time: the image only
  assert kwargs == {}
  out = jax.eval_shape(lambda v: model.apply(v, *args, train=False), variables)
  assert out["logits"].shape == (6, 2, 751) and out["metric_features"].shape == (1, 2, 3072)
  part = variables["params"]["part0"]
  assert part["conv1"]["kernel"].shape == (1, 1, 2048, 512)
  assert part["channel_attention"]["conv1"]["kernel"].shape == (512, 128)
  assert part["conv2"]["kernel"].shape == (512, 512)
  assert sorted(k for k in variables["params"] if k.startswith("classifier")) == sorted(
      [f"classifier_mt{k}" for k in range(6)] + [f"classifier_at{k}" for k in range(6)])


@pytest.fixture(scope="module")
def tiny():
  model = models.get_model("mpn", 5, **TINY)
  images = jax.random.normal(jax.random.key(1), (4, 128, 64, 3))
  mask = np.zeros((4, 128, 64, 1), np.float32)
  mask[:, 16:112, 16:48] = 1
  variables = SPEC.init(model, jax.random.key(0), (128, 64))
  train_apply = jax.jit(lambda v, x, m: model.apply(
      v, x, train=True, mask=m, mutable=["batch_stats", "intermediates"]))
  return model, variables, images, jnp.asarray(mask), train_apply


def _perturb(params, path, scale=0.5):
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  keys = [p for p, _ in flat if all(any(getattr(k, "key", None) == name for k in p) for name in path)]
  assert keys, path
  return jax.tree_util.tree_map_with_path(
      lambda p, x: x + scale * jnp.ones_like(x) if p in keys else x, params)


def _parts(features, k, dim):
  return features[..., k * dim:(k + 1) * dim]


@pytest.mark.parametrize("layer", [("conv1",), ("conv2",), ("channel_attention", "conv1")])
def test_one_set_of_weights_per_part_drives_both_its_mt_and_its_at(tiny, layer):
  model, variables, images, mask, train_apply = tiny
  dim = 64  # 512 * 0.125
  (out, _) = train_apply(variables, images, mask)
  moved = {**variables, "params": _perturb(variables["params"], ("part2",) + layer)}
  (out2, _) = train_apply(moved, images, mask)
  h, g = out["metric_features"]
  h2, g2 = out2["metric_features"]
  for k in range(4):
    changed = k == 2
    assert (not np.allclose(_parts(h, k, dim), _parts(h2, k, dim))) == changed, (k, "MT")
    assert (not np.allclose(_parts(g, k, dim), _parts(g2, k, dim))) == changed, (k, "AT")
  # The pair's parameters exist once: no AT copy of any layer.
  assert set(variables["params"]["part2"]) == {"conv1", "bn1", "channel_attention", "conv2", "bn2"}


def test_at_classifiers_are_not_on_the_test_path(tiny):
  model, variables, images, _, _ = tiny
  def test_outputs(params):
    return model.apply({**variables, "params": params}, images, train=False)
  params = variables["params"]
  moved = params
  for k in range(4):
    moved = _perturb(moved, (f"classifier_at{k}",))
  before, after = test_outputs(params), test_outputs(moved)
  np.testing.assert_array_equal(before["embedding"], after["embedding"])
  np.testing.assert_array_equal(before["logits"], after["logits"])
  grads = jax.grad(lambda p: test_outputs(p)["logits"].sum())(params)
  assert all(not np.any(grads[f"classifier_at{k}"]["kernel"]) for k in range(4))
  assert np.any(grads["classifier_mt0"]["kernel"])


def test_the_mask_moves_the_ats_only(tiny):
  model, variables, images, mask, train_apply = tiny
  (out, _) = train_apply(variables, images, mask)
  shifted = jnp.roll(mask, 16, axis=1)
  (out2, _) = train_apply(variables, images, shifted)
  # BatchNorm in training mode: MT outputs depend on the batch only, not on the mask.
  np.testing.assert_array_equal(out["metric_features"][0], out2["metric_features"][0])
  assert not np.allclose(out["metric_features"][1], out2["metric_features"][1])


def test_priors_need_what_they_read():
  images = jnp.zeros((2, 128, 64, 3))
  model = models.get_model("mpn", 3, **TINY)
  variables = SPEC.init(model, jax.random.key(0), (128, 64))
  with pytest.raises(ValueError, match="prior='mask' reads a person mask in training"):
    model.apply(variables, images, train=True, mutable=["batch_stats"])
  uniform = models.get_model("mpn", 3, prior="uniform", **TINY)
  out, _ = uniform.apply(variables, images, train=True, mutable=["batch_stats"])
  assert out["logits"].shape == (8, 2, 3)
  assert SPEC.required_inputs(model) == ("image", "mask")
  assert SPEC.required_inputs(uniform) == ("image",)
  assert SPEC.required_inputs(models.get_model("mpn", 3, prior="roi")) == ("image", "mask")
  with pytest.raises(ValueError, match="unknown prior 'pose'"):
    models.get_model("mpn", 3, prior="pose")


def test_mt_only_has_no_auxiliary_tasks():
  model = models.get_model("mpn", 3, prior="none", **TINY)
  variables = SPEC.init(model, jax.random.key(0), (128, 64))
  assert not [k for k in variables["params"] if k.startswith("classifier_at")]
  out, _ = model.apply(variables, jnp.zeros((2, 128, 64, 3)), train=True, mutable=["batch_stats"])
  assert out["logits"].shape == (4, 2, 3) and out["metric_features"].shape == (1, 2, 256)
  _, parts = mpn.loss(out, {"label": jnp.array([0, 1])}, variables["params"])
  assert float(parts["alignment"]) == 0.0


def test_loss_is_eq10(tiny):
  model, variables, images, mask, train_apply = tiny
  (out, _) = train_apply(variables, images, mask)
  labels = jnp.array([0, 0, 1, 1])
  batch = {"label": labels}
  total, parts = mpn.loss(out, batch, variables["params"], triplet_margin=0.2)
  logits = np.asarray(out["logits"], np.float64)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce = -np.mean(log_p[:, np.arange(4), labels], axis=1).sum()
  h, g = np.asarray(out["metric_features"], np.float64)
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  d = 1 - unit(h) @ unit(h).T
  same = labels[:, None] == labels[None, :]
  hinge = np.maximum(np.where(same, d, -np.inf).max(1) - np.where(same, np.inf, d).min(1) + 0.2, 0)
  triplet = hinge.sum() / max((hinge > 0).sum(), 1)
  cf = np.mean([1 - unit(h[c].mean(0)) @ unit(g[c].mean(0)) for c in ([0, 1], [2, 3])])
  np.testing.assert_allclose(parts["cross_entropy"], ce, rtol=1e-5)
  np.testing.assert_allclose(parts["triplet"], triplet, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(parts["alignment"], cf, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(total, ce + triplet + cf, rtol=1e-5)
  _, sample = mpn.loss(out, batch, None, alignment="sample")
  np.testing.assert_allclose(sample["alignment"], np.mean(1 - np.sum(unit(h) * unit(g), -1)),
                             rtol=1e-4, atol=1e-6)
  _, none = mpn.loss(out, batch, None, alignment="none")
  assert float(none["alignment"]) == 0.0
  with pytest.raises(ValueError, match="unknown alignment 'pixel'"):
    mpn.loss(out, batch, None, alignment="pixel")


def test_a_few_sgd_steps_reduce_the_loss(tiny):
  import optax
  model, variables, images, mask, _ = tiny
  labels = jnp.array([0, 0, 1, 1])
  tx = optax.sgd(0.05, momentum=0.9)

  @jax.jit
  def step(params, stats, opt_state):
    def objective(p):
      out, upd = model.apply({"params": p, "batch_stats": stats}, images, train=True, mask=mask,
                             mutable=["batch_stats"])
      return mpn.loss(out, {"label": labels}, p)[0], upd["batch_stats"]
    (value, stats), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, value

  params, stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)
  values = []
  for _ in range(8):
    params, stats, opt_state, value = step(params, stats, opt_state)
    values.append(float(value))
  assert values[-1] < 0.8 * values[0], values
