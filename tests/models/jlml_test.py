"""JLML: Table 1 sizes and parameter count, branch and stream independence, Eq. 5."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax import config_schema, losses, models, optimizers, sharding, train
from reid_jax.models import jlml

TINY = dict(width=0.25, stage_blocks=(1, 1, 1, 1))


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _full(num_classes):
  model = models.get_model("jlml", num_classes)
  images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  outputs, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, images)
  return variables, outputs, state["intermediates"]


@pytest.mark.parametrize("num_classes, expected", [(0, 7_792_672), (751, 8_563_198)])
def test_full_size_parameter_count(num_classes, expected):
  variables, _, _ = _full(num_classes)
  assert _count(variables["params"]) == expected


def test_full_size_maps_and_features_at_224x224():
  variables, outputs, intermediates = _full(751)
  assert outputs["embedding"].shape == (2, 1024)         # concat(global 512, local 512)
  assert outputs["logits"].shape == (2, 2, 751)          # global head, local head
  assert intermediates["global_map"][0].shape == (2, 7, 7, 512)
  assert intermediates["local_maps"][0].shape == (4, 2, 4, 7, 256)
  params = variables["params"]
  assert params["conv1"]["kernel"].shape == (3, 3, 3, 32)  # 3x3, 32, stride 2: shared
  assert sorted(k for k in params if k.startswith("local_stream")) == [
      f"local_stream{j}" for j in range(4)]
  assert params["global_fc"]["dense"]["kernel"].shape == (512, 512)   # W_G
  assert params["local_fc"]["dense"]["kernel"].shape == (1024, 512)   # W_L: 4 x 256 inputs
  # Bottleneck widths of Table 1 (mid, out) in the last stage of each branch.
  last = params["global_branch"]["layer4"]["block2"]
  assert last["conv2"]["kernel"].shape == (3, 3, 256, 256) and last["conv3"]["kernel"].shape[-1] == 512
  last = params["local_stream3"]["layer4"]["block2"]
  assert last["conv2"]["kernel"].shape == (3, 3, 128, 128) and last["conv3"]["kernel"].shape[-1] == 256


@pytest.fixture(scope="module")
def tiny():
  model = models.get_model("jlml", 6, **TINY)
  images = jax.random.normal(jax.random.key(1), (3, 64, 64, 3))
  variables = model.init(jax.random.key(0), images)
  apply = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))
  return model, variables, images, apply


def _perturb(variables, module):
  params = dict(variables["params"])
  params[module] = jax.tree.map(lambda w: w + 0.5, params[module])
  return {**variables, "params": params}


def test_each_stream_owns_its_weights_and_conv1_is_shared(tiny):
  _, variables, images, apply = tiny
  (out, state) = apply(variables, images)
  d = out["embedding"].shape[1] // 2
  for module, global_moves, local_moves in [("local_stream2", False, True),
                                            ("global_branch", True, False),
                                            ("conv1", True, True)]:
    moved, moved_state = apply(_perturb(variables, module), images)
    assert (not np.allclose(moved["embedding"][:, :d], out["embedding"][:, :d])) == global_moves
    assert (not np.allclose(moved["embedding"][:, d:], out["embedding"][:, d:])) == local_moves
  # Perturbing stream 2 changes stream 2's map only.
  maps = state["intermediates"]["local_maps"][0]
  moved = moved_state = apply(_perturb(variables, "local_stream2"), images)[1]
  moved = moved["intermediates"]["local_maps"][0]
  for j in range(4):
    assert np.allclose(moved[j], maps[j]) == (j != 2)


def test_each_stream_sees_only_its_horizontal_strip(tiny):
  _, variables, images, apply = tiny
  # At 64x64 conv1 gives 32 rows: strip j is conv1 rows 8j..8j+7, which see image
  # rows 16j-1 .. 16j+15. Changing image rows 18..28 touches strip 1 alone.
  changed = images.at[:, 18:29].add(1.0)
  maps = apply(variables, images)[1]["intermediates"]["local_maps"][0]
  moved = apply(variables, changed)[1]["intermediates"]["local_maps"][0]
  for j in range(4):
    assert np.allclose(moved[j], maps[j]) == (j != 1)


def test_loss_is_eq5_with_stripe_blocks_of_the_local_kernel(tiny):
  model, variables, images, _ = tiny
  labels = jnp.array([0, 3, 5])
  outputs = model.apply(variables, images)
  params = variables["params"]
  total, parts = jlml.loss(outputs, {"label": labels}, params, lambda_global=0.1, lambda_local=0.01)
  # Independent reference: numpy loops over the groups of Eq. 1 and Eq. 2.
  w_g = np.asarray(params["global_fc"]["dense"]["kernel"], np.float64)
  w_l = np.asarray(params["local_fc"]["dense"]["kernel"], np.float64)
  l21 = sum(np.sqrt(np.sum(w_g[i] ** 2)) for i in range(w_g.shape[0]))
  d_l = w_l.shape[0] // 4
  l12 = sum(np.sum(np.abs(w_l[j * d_l:(j + 1) * d_l, i])) ** 2
            for i in range(w_l.shape[1]) for j in range(4))
  logits = np.asarray(outputs["logits"], np.float64)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce = -log_p[:, np.arange(3), labels].mean(-1)
  np.testing.assert_allclose([parts["cross_entropy_global"], parts["cross_entropy_local"]], ce, rtol=1e-5)
  np.testing.assert_allclose(parts["l21_global"], l21, rtol=1e-5)
  np.testing.assert_allclose(parts["l12_local"], l12, rtol=1e-5)
  np.testing.assert_allclose(total, ce.sum() + 0.1 * l21 + 0.01 * l12, rtol=1e-5)
  # The default lambdas are the paper's.
  assert models.get_spec("jlml").loss_defaults() == dict(
      label_smoothing=0.0, lambda_global=5e-4, lambda_local=5e-4)


def _regulariser_history(lambda_global, lambda_local, steps=8):
  """(l2,1, l1,2, loss) after each SGD step of the real train step on one batch."""
  config = config_schema.base_config("jlml")
  config.image_size, config.optimizer = (64, 64), "sgd"
  model = models.get_model("jlml", 4, **TINY)
  mesh = sharding.create_mesh()
  variables = train.init_variables(config, model, jax.random.key(0))
  state = jax.device_put(train.state_from_variables(
      model, variables, optimizers.create_optimizer(config, 0.05)), sharding.replicated(mesh))
  step = train.compile_train_step(mesh, models.get_spec("jlml"),
                                  {"lambda_global": lambda_global, "lambda_local": lambda_local})
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(mesh, {"image": rng.normal(size=(8, 64, 64, 3)).astype(np.float32),
                                       "label": np.repeat(np.arange(4), 2).astype(np.int32)})
  history = []
  for _ in range(steps):
    state, metrics = step(state, batch, jax.random.key(1))
    history.append([float(metrics[k]) for k in ("l21_global", "l12_local", "cross_entropy_global")])
  return np.array(history)


def test_group_sparsity_terms_shrink_the_fc_kernels_through_the_train_step():
  # The loss reads the fc kernels from `params`: its gradient must reach them.
  plain = _regulariser_history(0.0, 0.0)
  sparse = _regulariser_history(0.5, 0.05)
  assert plain[-1, 2] < plain[0, 2] and sparse[-1, 2] < sparse[0, 2]   # both learn
  assert sparse[-1, 0] < 0.9 * plain[-1, 0], (plain, sparse)
  assert sparse[-1, 1] < 0.5 * plain[-1, 1], (plain, sparse)
