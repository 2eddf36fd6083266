"""KPM: sizes, the encode/score split, training pairs, the hourglass and the loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from reid_jax import config_schema, losses, models, optimizers, sharding, train
from reid_jax.models import kpm

TINY = dict(width=0.25, stage_blocks=(1, 1, 1, 1))


def _param_count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract(image_size=(256, 128), **kwargs):
  model = models.get_model("kpm", 0, **kwargs)
  spec = models.get_spec("kpm")
  return model, jax.eval_shape(lambda: spec.init(model, jax.random.key(0), image_size))


def test_full_size_parameters_and_map_sizes():
  model, variables = _abstract()
  assert _param_count(variables["params"]) == 28_571_972
  encoded = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((3, 256, 128, 3)), method="encode"),
                           variables)
  assert [m.shape for m in encoded["maps"]] == [(3, 8, 4, 2048), (3, 16, 8, 1024), (3, 32, 16, 512)]
  assert [a.shape for a in encoded["alpha"]] == [(3, 32), (3, 128), (3, 512)]
  assert encoded["embedding"].shape == (3, 2048)
  scores = jax.eval_shape(lambda v, e: model.apply(v, e, e, method="score"), variables, encoded)
  assert scores.shape == (3, 3)


@pytest.mark.parametrize("kwargs, count", [
    # ResNet-50 trunk 23,508,032 + BN(2048) 4,096 + Dense(2048 -> 1) 2,049.
    (dict(matching="none", attention=False, hourglass=False), 23_514_177),
    (dict(matching="warp", attention=False, hourglass=False), 23_514_177),
    # + RSA on layer4: 2048*256 + 512 + 256*256 + 512 + 257.
    (dict(matching="warp", attention=True, hourglass=False), 23_514_177 + 591_105),
    # + hourglass 3,935,232, BNs of S2/S3 3,072 and the wider Dense (+1,536).
    (dict(matching="none", attention=False, hourglass=True), 23_514_177 + 3_939_840),
    # w/o warp: 1x1 conv 32 -> 256 + BN, 3x3 conv 256 -> 256 + BN, BN(256), Dense(256 -> 1).
    (dict(matching="nowarp", attention=False, hourglass=False),
     23_508_032 + 8_192 + 512 + 589_824 + 512 + 512 + 257),
])
def test_table5_ablations_have_the_stated_parameters(kwargs, count):
  _, variables = _abstract(**kwargs)
  assert _param_count(variables["params"]) == count


def _tiny(seed=0, image_size=(64, 32), **kwargs):
  model = models.get_model("kpm", 0, **{**TINY, **kwargs})
  variables = models.get_spec("kpm").init(model, jax.random.key(seed), image_size)
  # BatchNorm statistics of a training pass, so that eval mode differs from init.
  images = jax.random.normal(jax.random.key(seed + 100), (8, *image_size, 3))
  _, updates = model.apply(variables, images, train=True, label=jnp.arange(8) // 2,
                           mutable=["batch_stats"], rngs={"dropout": jax.random.key(seed)})
  return model, {"params": variables["params"], "batch_stats": updates["batch_stats"]}


@pytest.mark.parametrize("matching", kpm.MATCHINGS)
def test_score_of_encoded_images_equals_the_pair_logits(matching):
  model, variables = _tiny(matching=matching)
  images = jnp.asarray(np.random.default_rng(1).normal(size=(5, 64, 32, 3)), jnp.float32)
  encoded = model.apply(variables, images, method="encode")
  grid = model.apply(variables, encoded, encoded, method="score")
  queries, gallery = jnp.array([0, 1, 4, 2, 3, 3]), jnp.array([1, 1, 0, 4, 2, 0])
  pairs = model.apply(variables, encoded, queries, gallery, method="pair_logits")
  np.testing.assert_allclose(pairs, grid[queries, gallery], rtol=1e-5, atol=1e-5)
  assert len(np.unique(np.round(np.asarray(grid), 4))) > 10  # the pairs score differently
  outputs = model.apply(variables, images)
  np.testing.assert_array_equal(outputs["embedding"], encoded["embedding"])


def test_warping_aligns_an_image_with_a_shifted_copy_of_itself():
  # With a sharp matching (tau 0.01) the warped Y is X wherever X's content is in Y.
  model, variables = _tiny(tau=0.01, attention=False, hourglass=False)
  x = jax.random.normal(jax.random.key(3), (1, 4, 2, 512))  # layer4 of the tiny trunk
  y = jnp.roll(x, 1, axis=1)  # the same positions, moved down a row
  normalise = lambda m: m / jnp.linalg.norm(m, axis=-1, keepdims=True)
  alpha = 1.0 + jnp.arange(8.0)[None] / 8  # uneven weights: a plain sum would not see the shift
  enc = lambda m: {"maps": (normalise(m),), "alpha": (alpha,), "embedding": None}
  warped = model.apply(variables, enc(x), enc(y), method="score")
  none_model = models.get_model("kpm", 0, **TINY, matching="none", attention=False, hourglass=False)
  unwarped = none_model.apply(variables, enc(x), enc(y), method="score")
  same = none_model.apply(variables, enc(x), enc(x), method="score")
  # Warping undoes the shift: the score is that of the pair (X, X); without it, it is not.
  np.testing.assert_allclose(warped, same, atol=1e-4)
  assert abs(float(unwarped[0, 0] - same[0, 0])) > 20 * abs(float(warped[0, 0] - same[0, 0]))


def test_attention_weights_are_one_plus_a_spatial_softmax():
  model, variables = _tiny()
  images = jnp.asarray(np.random.default_rng(2).normal(size=(2, 64, 32, 3)), jnp.float32)
  encoded = model.apply(variables, images, method="encode")
  for alpha, m in zip(encoded["alpha"], encoded["maps"]):
    assert alpha.shape == (2, m.shape[1] * m.shape[2])
    assert np.all(np.asarray(alpha) > 1)
    np.testing.assert_allclose(np.sum(alpha, axis=1), alpha.shape[1] + 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(m, axis=-1), 1.0, rtol=1e-5)


def test_the_hourglass_upsamples_as_torch_bilinear_and_adds_the_lateral_map():
  x = np.random.default_rng(4).normal(size=(2, 3, 5, 7)).astype(np.float32)
  ours = kpm._upsample2(jnp.asarray(x))
  theirs = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), scale_factor=2,
                                           mode="bilinear", align_corners=False)
  np.testing.assert_allclose(ours, theirs.permute(0, 2, 3, 1).numpy(), atol=1e-6)
  maps = {f"layer{i}": jax.random.normal(jax.random.key(i),
                                          (1, 32 // 2 ** i, 16 // 2 ** i, 8 * 2 ** i))
          for i in (2, 3, 4)}
  hourglass = kpm.Hourglass()
  params = hourglass.init(jax.random.key(0), maps)["params"]
  s1, s2, s3 = hourglass.apply({"params": params}, maps)

  def conv(name, x):
    return jnp.einsum("bhwc,cd->bhwd", x, params[name]["kernel"][0, 0]) + params[name]["bias"]

  np.testing.assert_allclose(s1, maps["layer4"])
  np.testing.assert_allclose(
      s2, kpm._upsample2(conv("top_down0", s1)) + conv("lateral0", maps["layer3"]), atol=1e-5)
  np.testing.assert_allclose(
      s3, kpm._upsample2(conv("top_down1", s2)) + conv("lateral1", maps["layer2"]), atol=1e-5)
  assert s2.shape == (1, 4, 2, 64) and s3.shape == (1, 8, 4, 32)


def test_sample_pairs_draws_one_positive_and_r_negatives_per_image():
  labels = jnp.array([0, 0, 0, 1, 1, 2, 2, 2, 3])  # identity 3 has no second image
  queries, gallery, target, weight = kpm.sample_pairs(labels, jax.random.key(0), 3)
  labels, queries, gallery = np.asarray(labels), np.asarray(queries), np.asarray(gallery)
  assert queries.shape == gallery.shape == target.shape == weight.shape == (9 * 4,)
  np.testing.assert_array_equal(queries[:9], np.arange(9))
  np.testing.assert_array_equal(queries[9:], np.repeat(np.arange(9), 3))
  same = labels[queries] == labels[gallery]
  valid = np.asarray(weight) > 0
  np.testing.assert_array_equal(same[valid], np.asarray(target)[valid] == 1)
  assert np.all(queries[valid] != gallery[valid])
  np.testing.assert_array_equal(valid[:9], [True] * 8 + [False])  # no positive for image 8
  assert np.all(valid[9:])
  for i in range(9):  # negatives without replacement
    assert len(set(gallery[9 + 3 * i: 12 + 3 * i])) == 3
  # Every allowed positive is drawn over a few keys (a uniform draw, not a fixed one).
  draw = lambda seed: int(kpm.sample_pairs(jnp.asarray(labels), jax.random.key(seed), 3)[1][0])
  drawn = {draw(seed) for seed in range(20)}
  assert drawn == {1, 2}


def test_loss_is_the_weighted_mean_binary_cross_entropy():
  logits = np.array([2.0, -1.0, 0.5, 30.0], np.float32)
  target = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
  weight = np.array([1.0, 1.0, 1.0, 0.0], np.float32)
  outputs = {"pair_logits": jnp.asarray(logits), "pair_targets": jnp.asarray(target),
             "pair_weights": jnp.asarray(weight)}
  total, parts = kpm.loss(outputs, {}, {})
  expected = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0)), np.log1p(np.exp(0.5))])
  np.testing.assert_allclose(total, expected, rtol=1e-6)
  np.testing.assert_allclose(parts["pair_accuracy"], 2 / 3, rtol=1e-6)
  confident_and_wrong = losses.binary_cross_entropy(jnp.array([-100.0, 100.0]), jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(confident_and_wrong, [100.0, 100.0], rtol=1e-6)


def test_the_train_step_draws_pairs_and_the_loss_goes_down():
  config = config_schema.base_config("kpm")
  config.image_size = (64, 32)
  spec = models.get_spec("kpm")
  model = models.get_model("kpm", 0, **TINY)
  mesh = sharding.create_mesh()
  variables = train.init_variables(config, model, jax.random.key(0), load_weights=False)
  state = jax.device_put(
      train.state_from_variables(model, variables, optimizers.create_optimizer(config, 1e-3)),
      sharding.replicated(mesh))
  step = train.compile_train_step(mesh, spec, {})
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(mesh, {"image": rng.normal(size=(8, 64, 32, 3)).astype(np.float32),
                                       "label": np.repeat(np.arange(4), 2).astype(np.int32)})
  first = None
  for _ in range(8):
    state, metrics = step(state, batch, jax.random.key(1))
    first = float(metrics["verification"]) if first is None else first
  assert bool(metrics["finite"])
  assert float(metrics["verification"]) < 0.7 * first


def test_training_needs_labels_and_bad_options_are_refused():
  model, variables = _tiny()
  with pytest.raises(ValueError, match="label"):
    model.apply(variables, jnp.zeros((2, 64, 32, 3)), train=True, mutable=["batch_stats"],
                rngs={"dropout": jax.random.key(0)})
  for kwargs, match in ((dict(matching="soft"), "matching"), (dict(impl="cuda"), "impl"),
                        (dict(tau=0.0), "tau"), (dict(negatives_per_positive=0), "negatives")):
    with pytest.raises(ValueError, match=match):
      models.get_model("kpm", 0, **kwargs)


def test_the_fused_matching_gives_the_einsum_scores_and_gradients():
  model, variables = _tiny()
  fused = models.get_model("kpm", 0, **TINY, impl="fused")
  images = jax.random.normal(jax.random.key(5), (6, 64, 32, 3))
  label = jnp.array([0, 0, 1, 1, 2, 2])

  def loss(params, net):
    outputs, _ = net.apply({**variables, "params": params}, images, train=True, label=label,
                           mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
    return kpm.loss(outputs, {}, params)[0]

  encoded = model.apply(variables, images, method="encode")
  score = jax.jit(lambda net, e: net.apply(variables, e, e, method="score"), static_argnums=0)
  np.testing.assert_allclose(score(fused, encoded), score(model, encoded), atol=1e-5)
  loss_and_grads = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  (l1, g1), (l2, g2) = (loss_and_grads(variables["params"], net) for net in (model, fused))
  np.testing.assert_allclose(l2, l1, rtol=1e-5)
  scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g1))
  for a, b in zip(jax.tree.leaves(g2), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6 * scale)
