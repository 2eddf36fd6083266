"""MGN: parameter count, map and feature sizes, stripes, loss, a few training steps."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from reid_jax import losses, models
from reid_jax.models import mgn

TINY = dict(width=0.125, stage_blocks=(1, 1, 2, 1))


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _full_shapes(num_classes):
  model = models.get_model("mgn", num_classes)
  images = jax.ShapeDtypeStruct((2, 384, 128, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
  outputs, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, images)
  return variables, outputs, state["intermediates"]


def test_parameter_count_and_sizes_at_384x128():
  variables, outputs, intermediates = _full_shapes(0)
  assert _count(variables["params"]) == 68_807_744
  assert outputs["embedding"].shape == (2, 2048)
  assert outputs["metric_features"].shape == (3, 2, 256)
  assert "logits" not in outputs
  maps = {name: v["feature_map"][0].shape for name, v in intermediates.items()}
  assert maps == {"global": (2, 12, 4, 2048), "part2": (2, 24, 8, 2048),
                  "part3": (2, 24, 8, 2048)}


def test_eight_reductions_and_classifiers():
  variables, outputs, _ = _full_shapes(751)
  params = variables["params"]
  # Three 2048-d and five 256-d identity classifiers (Sec. 3.2).
  assert _count(params) == 68_807_744 + 3 * (2048 * 751 + 751) + 5 * (256 * 751 + 751)
  assert outputs["logits"].shape == (8, 2, 751)
  reductions = [(b, r) for b in ("global", "part2", "part3") for r in params[b]
                if r.startswith("reduction")]
  assert len(reductions) == 8
  assert all(params[b][r]["conv"]["kernel"].shape == (2048, 256) for b, r in reductions)
  # The trunk ends at res_conv4_1; each branch owns layer3[1:] and layer4.
  assert sorted(params["backbone"]["layer3"]) == ["block0"]
  assert sorted(params["part3"]["layer3"]) == [f"block{i}" for i in range(1, 6)]


def test_stripe_max_pool():
  x = jnp.arange(6.0).reshape(1, 6, 1, 1)
  np.testing.assert_array_equal(mgn.stripe_max_pool(x, 3)[:, 0, 0], [1, 3, 5])
  np.testing.assert_array_equal(mgn.stripe_max_pool(x, 2)[:, 0, 0], [2, 5])
  # 4 rows into 3 stripes: torch's adaptive bins [0, 2), [1, 3), [2, 4).
  x = jnp.array([5., 0., 1., 3.]).reshape(1, 4, 1, 1)
  np.testing.assert_array_equal(mgn.stripe_max_pool(x, 3)[:, 0, 0], [5, 1, 3])


def host_init(model, images, seed=0):
  """Variables filled on the host (He-normal kernels, unit BN): `init`'s random
  ops take XLA on CPU far longer to compile than the network itself."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      return rng.normal(0, np.sqrt(2 / np.prod(leaf.shape[:-1])), leaf.shape).astype(np.float32)
    return (np.ones if name in ("scale", "var") else np.zeros)(leaf.shape, np.float32)

  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def tiny():
  """A tiny MGN (4 identities), its variables, a P=4 x K=2 batch and a jitted SGD step."""
  model = models.get_model("mgn", 4, **TINY)
  labels = jnp.repeat(jnp.arange(4), 2)
  images = jax.random.normal(jax.random.PRNGKey(1), (8, 64, 32, 3)) + labels[:, None, None, None]
  optimizer = optax.sgd(0.01, momentum=0.9)

  @jax.jit
  def step(params, batch_stats, opt_state):
    def objective(p):
      outputs, updates = model.apply({"params": p, "batch_stats": batch_stats}, images,
                                     train=True, mutable=["batch_stats"])
      return mgn.loss(outputs, {"label": labels}, p)[0], (outputs, updates["batch_stats"])
    (value, (outputs, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, value, outputs

  variables = host_init(model, images)
  state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))
  return step, state, labels


def test_loss_sums_eight_cross_entropies_and_three_triplets(tiny):
  step, state, labels = tiny
  value, outputs = step(*state)[3:]
  assert outputs["embedding"].shape == (8, 8 * 32)
  # The embedding is the reduced globals, then the parts.
  np.testing.assert_array_equal(outputs["embedding"][:, :32], outputs["metric_features"][0])
  ce = sum(losses.cross_entropy(outputs["logits"][i], labels).mean() for i in range(8))
  triplet = sum(losses.batch_hard_triplet(outputs["metric_features"][i], labels, 1.2).mean()
                for i in range(3))
  np.testing.assert_allclose(value, ce + triplet, rtol=1e-5)
  total, parts = models.get_loss("mgn")(outputs, {"label": labels}, {}, label_smoothing=0.1,
                                        triplet_margin=0.5, triplet_metric="cosine")
  ce = sum(losses.cross_entropy(outputs["logits"][i], labels, 0.1).mean() for i in range(8))
  triplet = sum(losses.batch_hard_triplet(
      outputs["metric_features"][i], labels, 0.5, "cosine").mean() for i in range(3))
  np.testing.assert_allclose(parts["cross_entropy"], ce, rtol=1e-5)
  np.testing.assert_allclose(parts["triplet"], triplet, rtol=1e-5)
  np.testing.assert_allclose(total, ce + triplet, rtol=1e-5)


def test_a_few_sgd_steps_reduce_the_loss(tiny):
  step, state, _ = tiny
  values = []
  for _ in range(10):
    *state, value, _ = step(*state)
    values.append(float(value))
  assert values[-1] < 0.8 * values[0], values
