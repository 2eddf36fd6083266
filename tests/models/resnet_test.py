"""ResNet-50 backbone: parameter counts, torchvision names, stage map sizes."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from reid_jax import models
from reid_jax.models import resnet


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _init_shapes(model, shape=(1, 64, 32, 3)):
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape)))


def test_resnet50_parameter_counts():
  assert _count(_init_shapes(models.get_model("resnet50", 0))["params"]) == 23_508_032
  assert _count(_init_shapes(models.get_model("resnet50", 1000))["params"]) == 25_557_032


def test_torchvision_layout():
  params = _init_shapes(models.get_model("resnet50", 0))["params"]["backbone"]
  assert params["conv1"]["kernel"].shape == (7, 7, 3, 64)
  assert sorted(params) == ["bn1", "conv1", "layer1", "layer2", "layer3", "layer4"]
  assert [len(params[f"layer{i}"]) for i in range(1, 5)] == [3, 4, 6, 3]
  block = params["layer2"]["block0"]
  assert block["conv1"]["kernel"].shape == (1, 1, 256, 128)
  assert block["conv2"]["kernel"].shape == (3, 3, 128, 128)
  assert block["conv3"]["kernel"].shape == (1, 1, 128, 512)
  assert block["downsample_conv"]["kernel"].shape == (1, 1, 256, 512)
  assert "downsample_conv" in params["layer1"]["block0"]  # 64 -> 256 channels
  assert "downsample_conv" not in params["layer2"]["block1"]


def test_stage_maps_and_last_stride():
  images = jax.ShapeDtypeStruct((2, 384, 128, 3), jnp.float32)
  for last_stride, layer4 in ((2, (12, 4)), (1, (24, 8))):
    backbone = resnet.ResNetBackbone(last_stride=last_stride)
    variables = jax.eval_shape(backbone.init, jax.random.PRNGKey(0), images)
    maps = jax.eval_shape(backbone.apply, variables, images)
    assert {k: v.shape for k, v in maps.items()} == {
        "stem": (2, 96, 32, 64), "layer1": (2, 96, 32, 256), "layer2": (2, 48, 16, 512),
        "layer3": (2, 24, 8, 1024), "layer4": (2, *layer4, 2048)}


def test_width_keeps_names_and_scales_channels():
  full = _init_shapes(models.get_model("resnet50", 0))
  tiny = _init_shapes(models.get_model("resnet50", 0, width=0.125))
  names = lambda v: sorted(traverse_util.flatten_dict(v))
  assert names(full) == names(tiny)
  assert tiny["params"]["backbone"]["layer4"]["block2"]["conv3"]["kernel"].shape == (1, 1, 64, 256)


def test_tiny_forward_and_batch_stats_update():
  model = models.get_model("resnet50", 5, width=0.125, stage_blocks=(1, 1, 1, 1))
  images = jax.random.normal(jax.random.PRNGKey(1), (4, 64, 32, 3))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), images)
  outputs, updates = jax.jit(
      lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, images)
  assert outputs["embedding"].shape == (4, 256)
  assert outputs["logits"].shape == (1, 4, 5)
  before = variables["batch_stats"]["backbone"]["bn1"]["mean"]
  after = updates["batch_stats"]["backbone"]["bn1"]["mean"]
  assert not np.allclose(before, after)
  value, _ = resnet.SPEC.loss(outputs, {"label": jnp.array([0, 1, 2, 3])}, variables["params"])
  assert np.isfinite(value)
