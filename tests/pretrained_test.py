"""ImageNet weight import: parity with an independent PyTorch forward, formats, errors.

The weights are a random ResNet-50 state dict with torchvision's names, built
here without torchvision; the reference forward pass is plain torch.nn.functional.
"""
import numpy as np
import jax
import jax.numpy as jnp
import pytest
from safetensors.numpy import save_file

from reid_jax import models, pretrained
from reid_jax.models import resnet

SMALL = dict(width=0.125, stage_blocks=(1, 1, 1, 1))


def state_dict(width=1.0, stage_blocks=resnet.RESNET50_BLOCKS, seed=0):
  """A random torchvision-named ResNet-50 (torch layout, float32, with `fc`)."""
  rng = np.random.default_rng(seed)
  state = {}

  def conv(name, out, inp, k):
    state[f"{name}.weight"] = rng.normal(0, np.sqrt(2 / (inp * k * k)), (out, inp, k, k))

  def bn(name, c):
    state[f"{name}.weight"] = rng.uniform(0.5, 1.5, c)
    state[f"{name}.bias"] = rng.normal(0, 0.1, c)
    state[f"{name}.running_mean"] = rng.normal(0, 0.1, c)
    state[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c)
    state[f"{name}.num_batches_tracked"] = np.array(100)

  inplanes = resnet.scaled(64, width)
  conv("conv1", inplanes, 3, 7)
  bn("bn1", inplanes)
  for stage, num_blocks in enumerate(stage_blocks):
    planes = resnet.scaled(64 * 2**stage, width)
    for i in range(num_blocks):
      p = f"layer{stage + 1}.{i}"
      for j, (out, inp, k) in enumerate(((planes, inplanes, 1), (planes, planes, 3),
                                         (4 * planes, planes, 1)), 1):
        conv(f"{p}.conv{j}", out, inp, k)
        bn(f"{p}.bn{j}", out)
      if i == 0:
        conv(f"{p}.downsample.0", 4 * planes, inplanes, 1)
        bn(f"{p}.downsample.1", 4 * planes)
      inplanes = 4 * planes
  state["fc.weight"] = rng.normal(0, 0.01, (1000, inplanes))
  state["fc.bias"] = np.zeros(1000)
  return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in state.items()}


def torch_stage_maps(state, images, stage_blocks=resnet.RESNET50_BLOCKS, last_stride=2):
  """torchvision ResNet-50's eval-mode forward in plain torch: NHWC map per stage."""
  torch = pytest.importorskip("torch")
  F = torch.nn.functional
  w = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
  bn = lambda x, n: F.batch_norm(x, w[f"{n}.running_mean"], w[f"{n}.running_var"],
                                 w[f"{n}.weight"], w[f"{n}.bias"], training=False, eps=1e-5)
  x = torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2)
  x = F.max_pool2d(F.relu(bn(F.conv2d(x, w["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
  maps = {}
  for stage, num_blocks in enumerate(stage_blocks):
    for i in range(num_blocks):
      p = f"layer{stage + 1}.{i}"
      stride = (1 if stage == 0 else last_stride if stage == 3 else 2) if i == 0 else 1
      y = F.relu(bn(F.conv2d(x, w[f"{p}.conv1.weight"]), f"{p}.bn1"))
      y = F.relu(bn(F.conv2d(y, w[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn2"))
      y = bn(F.conv2d(y, w[f"{p}.conv3.weight"]), f"{p}.bn3")
      if i == 0:
        x = bn(F.conv2d(x, w[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
      x = F.relu(x + y)
    maps[f"layer{stage + 1}"] = x.permute(0, 2, 3, 1).numpy()
  return maps


def relative_error(actual, expected):
  return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


def shapes(model, image_shape=(2, 128, 64, 3)):
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(image_shape))


def concrete(variables):
  """Leaves the import did not touch (reductions, classifiers) set to zero."""
  return jax.tree_util.tree_map(
      lambda x: jnp.zeros(x.shape, x.dtype) if isinstance(x, jax.ShapeDtypeStruct) else x,
      variables)


@pytest.fixture(scope="module")
def full_weights(tmp_path_factory):
  state = state_dict()
  path = str(tmp_path_factory.mktemp("weights") / "resnet50.safetensors")
  save_file(state, path)
  images = np.random.default_rng(1).normal(size=(2, 128, 64, 3)).astype(np.float32)
  return state, path, images


def test_resnet50_matches_torch(full_weights):
  state, path, images = full_weights
  model = models.get_model("resnet50", 0)
  variables = pretrained.load_pretrained(shapes(model), path, "resnet50")
  outputs, state_out = jax.jit(lambda v, x: model.apply(
      v, x, capture_intermediates=lambda m, _: m.name == "backbone",
      mutable=["intermediates"]))(variables, images)
  maps = state_out["intermediates"]["backbone"]["__call__"][0]
  reference = torch_stage_maps(state, images)
  for name, expected in reference.items():
    assert maps[name].shape == expected.shape
    assert relative_error(maps[name], expected) < 1e-4, name
  assert relative_error(outputs["embedding"], reference["layer4"].mean(axis=(1, 2))) < 1e-4


def test_mgn_branches_match_torch(full_weights):
  state, path, images = full_weights
  model = models.get_model("mgn", 0)
  template = shapes(model)
  variables = pretrained.load_pretrained(template, path, "mgn")
  # Only the backbone is imported: reductions keep their (abstract) init.
  assert isinstance(variables["params"]["part3"]["reduction_part2"]["conv"]["kernel"],
                    jax.ShapeDtypeStruct)
  _, state_out = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))(
      concrete(variables), images)
  branch_maps = {k: v["feature_map"][0] for k, v in state_out["intermediates"].items()}
  # Global branch: stride-2 res_conv5_1; part branches: stride 1 (MGN Table 1).
  stride2 = torch_stage_maps(state, images)["layer4"]
  stride1 = torch_stage_maps(state, images, last_stride=1)["layer4"]
  assert relative_error(branch_maps["global"], stride2) < 1e-4
  assert relative_error(branch_maps["part2"], stride1) < 1e-4
  assert relative_error(branch_maps["part3"], stride1) < 1e-4


def test_mpn_backbone_matches_torch_with_last_stride_1(full_weights):
  state, path, images = full_weights
  model = models.get_model("mpn", 0)
  variables = pretrained.load_pretrained(shapes(model), path, "mpn")
  # The part tasks keep their (abstract) init: only the backbone is ImageNet's.
  assert isinstance(variables["params"]["part0"]["conv1"]["kernel"], jax.ShapeDtypeStruct)
  _, state_out = jax.jit(lambda v, x: model.apply(v, x, mutable=["intermediates"]))(
      concrete(variables), images)
  expected = torch_stage_maps(state, images, last_stride=1)["layer4"]
  assert relative_error(state_out["intermediates"]["feature_map"][0], expected) < 1e-4


def test_kpm_siamese_backbone_matches_torch(full_weights):
  state, path, images = full_weights
  model = models.get_model("kpm", 0)
  variables = pretrained.load_pretrained(shapes(model), path, "kpm")
  # The hourglass, attention and head keep their (abstract) init.
  assert isinstance(variables["params"]["pyramid"]["lateral0"]["kernel"], jax.ShapeDtypeStruct)
  encoded = jax.jit(lambda v, x: model.apply(v, x, method="encode"))(concrete(variables), images)
  layer4 = torch_stage_maps(state, images)["layer4"]
  assert relative_error(encoded["embedding"], layer4.mean(axis=(1, 2))) < 1e-4
  normalised = layer4 / np.linalg.norm(layer4, axis=-1, keepdims=True)  # S1, per position
  assert relative_error(encoded["maps"][0], normalised) < 1e-4


def test_mgn_branches_get_the_same_weights(full_weights):
  state, path, _ = full_weights
  params = pretrained.load_pretrained(shapes(models.get_model("mgn", 0)), path, "mgn")["params"]
  kernel = state["layer3.2.conv2.weight"].transpose(2, 3, 1, 0)
  for branch in ("global", "part2", "part3"):
    np.testing.assert_array_equal(params[branch]["layer3"]["block2"]["conv2"]["kernel"], kernel)
  np.testing.assert_array_equal(params["backbone"]["layer3"]["block0"]["conv1"]["kernel"],
                                state["layer3.0.conv1.weight"].transpose(2, 3, 1, 0))


def test_safetensors_npz_and_pth_load_the_same_variables(tmp_path):
  torch = pytest.importorskip("torch")
  state = state_dict(**SMALL)
  save_file(state, str(tmp_path / "w.safetensors"))
  np.savez(tmp_path / "w.npz", **state)
  torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, tmp_path / "w.pth")
  template = shapes(models.get_model("resnet50", 0, **SMALL))
  loaded = [pretrained.load_pretrained(template, str(tmp_path / f"w.{ext}"), "resnet50")
            for ext in ("safetensors", "npz", "pth")]
  for other in loaded[1:]:
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded[0], other)
  stats = loaded[0]["batch_stats"]["backbone"]["layer1"]["block0"]["downsample_bn"]
  np.testing.assert_array_equal(stats["var"], state["layer1.0.downsample.1.running_var"])
  np.testing.assert_array_equal(stats["mean"], state["layer1.0.downsample.1.running_mean"])


def test_wrong_file_lists_missing_unexpected_and_misshaped_names(tmp_path):
  state = state_dict(**SMALL)
  del state["conv1.weight"], state["layer2.0.bn3.running_var"]
  state["layer5.0.conv1.weight"] = np.zeros((8, 8, 1, 1), np.float32)
  state["layer1.0.conv2.weight"] = np.zeros((8, 8, 5, 5), np.float32)
  path = str(tmp_path / "wrong.npz")
  np.savez(path, **state)
  with pytest.raises(ValueError) as error:
    pretrained.load_pretrained(shapes(models.get_model("resnet50", 0, **SMALL)), path, "resnet50")
  message = str(error.value)
  assert "missing from the file (2):\n    conv1.weight\n    layer2.0.bn3.running_var" in message
  assert "unexpected in the file (1):\n    layer5.0.conv1.weight" in message
  assert "layer1.0.conv2.weight: file (8, 8, 5, 5), model (8, 8, 3, 3)" in message


def test_full_width_file_into_a_tiny_model_lists_the_shapes(full_weights):
  _, path, _ = full_weights
  template = shapes(models.get_model("mgn", 0, width=0.5))
  with pytest.raises(ValueError, match=r"shape mismatches \(torch layout\) \(265\)"
                                       r"[\s\S]*bn1.bias: file \(64,\), model \(32,\)"):
    pretrained.load_pretrained(template, path, "mgn")


def test_bad_path_format_or_model(tmp_path):
  template = shapes(models.get_model("resnet50", 0, **SMALL))
  with pytest.raises(FileNotFoundError, match="nope.safetensors"):
    pretrained.load_pretrained(template, str(tmp_path / "nope.safetensors"), "resnet50")
  (tmp_path / "w.h5").write_bytes(b"")
  with pytest.raises(ValueError, match="Unsupported weights file"):
    pretrained.load_pretrained(template, str(tmp_path / "w.h5"), "resnet50")
  np.savez(tmp_path / "w.npz", **state_dict(**SMALL))
  with pytest.raises(ValueError, match="'mlfn' has no ImageNet backbone"):
    pretrained.load_pretrained(template, str(tmp_path / "w.npz"), "mlfn")
