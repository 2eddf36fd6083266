"""torchreid model-zoo weights (`pretrained.load_torchreid`): parity with torchreid's
own `MLFN` and `resnet50` classes (the `torchreid` package from PyPI), checkpoint
forms, the classifier, errors, and `python -m reid_jax.evaluate --config.init_from`.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from reid_jax import (checkpoints, config_schema, data, evaluate, models, pretrained, sharding,
                      train)

torch = pytest.importorskip("torch")
from benchmarks import torch_reference  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torchreid_module(name):
  module = torch_reference.torchreid_model(name)
  if module is None:
    pytest.skip("the torchreid package is not installed")
  return module


def randomise_batch_norm(net, seed=0):
  """Random affine parameters and running statistics, so that BatchNorm matters."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
        c = m.num_features
        m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
        m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
        m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
        m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
  return net.eval()


def template(name, num_classes, image_size=(64, 32), **overrides):
  """(model, the shapes of its variables): every leaf is replaced by a loaded array."""
  model = models.get_model(name, num_classes, **overrides)
  spec = models.get_spec(name)
  return model, jax.eval_shape(lambda: spec.init(model, jax.random.key(0), image_size))


def embedding(model, variables, images):
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False)["embedding"])(
      variables, images))


def relative_error(ours, theirs):
  return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def torchreid_mlfn(tmp_path_factory):
  """(torchreid MLFN(751) in eval mode, its bare .pth, its training checkpoint .pth.tar-60)."""
  torch.manual_seed(0)
  net = randomise_batch_norm(torchreid_module("mlfn").MLFN(751))
  folder = tmp_path_factory.mktemp("torchreid")
  bare = str(folder / "mlfn_market.pth")
  torch.save(net.state_dict(), bare)
  wrapped = str(folder / "model.pth.tar-60")
  torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()},
              "epoch": 60, "rank1": np.float64(0.9), "optimizer": {"state": {}}}, wrapped)
  return net, bare, wrapped


def test_mlfn_embedding_equals_torchreid_for_both_checkpoint_forms(torchreid_mlfn):
  net, bare, wrapped = torchreid_mlfn
  images = np.random.default_rng(0).normal(size=(2, 64, 32, 3)).astype(np.float32)
  with torch.no_grad():
    theirs = net(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()  # eval: the embedding v
  model, shapes = template("mlfn", 751)
  assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == 33_242_799
  variables, report = pretrained.load_torchreid(shapes, bare)
  assert relative_error(embedding(model, variables, images), theirs) < 1e-4
  assert "params/classifier/kernel" in report.loaded  # 751 classes on both sides
  assert len(report.loaded) == len(jax.tree.leaves(shapes))
  assert not (report.fresh or report.skipped or report.unused)
  from_checkpoint, _ = pretrained.load_torchreid(shapes, wrapped)
  jax.tree.map(np.testing.assert_array_equal, from_checkpoint, variables)


def test_a_classifier_of_another_class_count_is_kept_and_reported(torchreid_mlfn):
  _, bare, _ = torchreid_mlfn
  _, shapes = template("mlfn", 10)
  variables, report = pretrained.load_torchreid(shapes, bare)
  assert report.skipped == ("params/classifier/bias: file (751,)",
                            "params/classifier/kernel: file (751, 1024)")
  assert variables["params"]["classifier"] == shapes["params"]["classifier"]  # kept
  assert isinstance(variables["params"]["fc_x"]["kernel"], jax.Array)
  assert "not loaded, class count differs (2)" in report.summary()
  _, report = pretrained.load_torchreid(template("mlfn", 0)[1], bare)
  assert report.unused == ("classifier.bias", "classifier.weight") and not report.skipped


def test_resnet50_embedding_equals_torchreid(tmp_path):
  torch.manual_seed(1)
  net = randomise_batch_norm(torchreid_module("resnet").resnet50(751, pretrained=False))
  path = str(tmp_path / "resnet50.pth")
  torch.save({"state_dict": net.state_dict()}, path)
  images = np.random.default_rng(1).normal(size=(2, 64, 32, 3)).astype(np.float32)
  with torch.no_grad():
    theirs = net(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
  model, shapes = template("resnet50", 751)
  variables, _ = pretrained.load_torchreid(shapes, path)
  assert relative_error(embedding(model, variables, images), theirs) < 1e-4


def test_another_architecture_lists_every_difference_at_once(torchreid_mlfn, tmp_path):
  _, bare, _ = torchreid_mlfn
  with pytest.raises(ValueError) as error:
    pretrained.load_torchreid(template("mlfn", 0, width=0.5)[1], bare)
  message = str(error.value)
  assert f"Weights file {bare!r} does not match reid_jax's mlfn network" in message
  assert "shape mismatches (torch layout) (" in message
  assert "conv1.weight: file (64, 3, 7, 7), model (32, 3, 7, 7)" in message
  assert "fc_x.0.weight: file (1024, 2048, 1, 1), model (1024, 1024, 1, 1)" in message
  resnet = template("resnet50", 0)[1]
  with pytest.raises(ValueError) as error:
    pretrained.load_torchreid(resnet, bare)
  message = str(error.value)
  # Only conv1.weight and bn1.* are common to both: all the rest is listed.
  assert f"missing from the file ({len(jax.tree.leaves(resnet)) - 5}):" in message
  assert "layer1.0.bn1.bias" in message and "... and" in message
  assert "unexpected in the file (" in message and "feature.0.fm_bn1.bias" in message
  with pytest.raises(ValueError, match=r"reads torchreid's \['mlfn', 'resnet50'\].*neither"):
    pretrained.load_torchreid(template("jlml", 0)[1], bare)
  (tmp_path / "model.pth").write_bytes(b"not a torch file")
  with pytest.raises(ValueError, match="model.pth.* is not a torch file of tensors"):
    pretrained.load_torchreid(resnet, str(tmp_path / "model.pth"))


def test_init_from_names_a_torchreid_file(torchreid_mlfn, tmp_path):
  _, _, wrapped = torchreid_mlfn
  _, shapes = template("mlfn", 751)
  _, report = checkpoints.init_from(shapes, wrapped, sharding.create_mesh())
  assert report.source == f"{wrapped} (torchreid mlfn)"
  assert len(report.loaded) == len(jax.tree.leaves(shapes))
  config = config_schema.base_config("mlfn")
  config.dataset, config.init_from = "synthetic_reid/small", str(tmp_path / "absent.pth.tar")
  with pytest.raises(config_schema.ConfigError, match="no such torchreid weights file"):
    config_schema.validate(config)


# torchreid/reid/models/mlfn.py's module names for reid_jax's (written out here, apart
# from `pretrained`'s table, to build a torchreid checkpoint of a tiny network).
TORCHREID_MODULES = {"stem_conv": "conv1", "stem_bn": "bn1", "fc_x": "fc_x.0", "fc_x_bn": "fc_x.1",
                     "fc_s": "fc_s.0", "fc_s_bn": "fc_s.1", "fsm_conv0": "fsm.1",
                     "fsm_bn0": "fsm.2", "fsm_conv1": "fsm.4", "fsm_bn1": "fsm.5",
                     "fsm_gate": "fsm.7", "fsm_gate_bn": "fsm.8", "shortcut_conv": "downsample.0",
                     "shortcut_bn": "downsample.1"}
TORCH_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
                "var": "running_var"}


def as_torchreid_checkpoint(variables, path):
  """Saves MLFN `variables` as torchreid's `save_checkpoint` does (module. prefix included)."""
  state = {}
  for collection in ("params", "batch_stats"):
    for key, value in jax.tree_util.tree_flatten_with_path(variables[collection])[0]:
      *modules, leaf = [k.key for k in key]
      value = np.asarray(value)
      if value.ndim == 4:
        value = value.transpose(3, 2, 0, 1)
      elif value.ndim == 2:  # fc_x / fc_s are 1x1 convolutions in torchreid
        value = value.T[:, :, None, None]
      # One block per stage: block<s>_0 is torchreid's block s - 1.
      names = [f"feature.{int(m[5]) - 1}" if m.startswith("block") else m for m in modules]
      name = ".".join(TORCHREID_MODULES.get(m, m) for m in names)
      state[f"module.{name}.{TORCH_LEAVES[leaf]}"] = torch.from_numpy(value.copy())
  torch.save({"state_dict": state, "epoch": 60, "rank1": np.float64(0.5)}, path)


def test_python_m_reid_jax_evaluate_reads_a_torchreid_checkpoint(synthetic_data_dir, tmp_path):
  """One command evaluates torchreid weights; the metrics equal the same weights
  evaluated in process (a tiny MLFN, every array randomised so that each one matters)."""
  config = config_schema.base_config("mlfn")
  config.dataset, config.data_dir, config.image_size = "synthetic_reid/small", synthetic_data_dir, (64, 32)
  config.model_kwargs = dict(width=0.25, stage_blocks=(1, 1, 1, 1), groups=8, embed_dim=32)
  config.eval_batch_size = 200
  model, shapes = template("mlfn", 0, **config.model_kwargs)
  leaves, tree = jax.tree.flatten(shapes)
  rng = np.random.default_rng(0)
  variables = jax.tree.unflatten(tree, [
      (rng.uniform(0.5, 1.5, x.shape) if x.ndim == 1 else rng.normal(0, 0.3, x.shape)).astype(np.float32)
      for x in leaves])
  path = str(tmp_path / "model.pth.tar-60")
  as_torchreid_checkpoint(variables, path)
  dataset = data.builder(config.dataset, config.data_dir)
  query, gallery = data.load_split(dataset, "query"), data.load_split(dataset, "gallery")
  expected = evaluate.evaluate_model(model, variables, query, gallery, config, sharding.create_mesh())
  out = str(tmp_path / "reports")
  run = subprocess.run(
      [sys.executable, "-m", "reid_jax.evaluate", "--config=configs/mlfn.py:synthetic",
       f"--config.init_from={path}", f"--config.data_dir={synthetic_data_dir}",
       "--config.model_kwargs.embed_dim=32", "--config.eval_batch_size=200", f"--out={out}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert f"mlfn on synthetic_reid/small: {evaluate.format_metrics(expected)}" in run.stdout
  report = json.load(open(os.path.join(out, "model.json")))
  assert report["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
  assert set(report["tpr_at_fpr"]) == {"0.0001", "0.001", "0.01"}
  for name in ("model_roc.png", "model_camera_pairs.csv", "model_camera_pairs.png", "model_ranked.png"):
    assert os.path.isfile(os.path.join(out, name))
  # Training starts from the same file (a fresh classifier for the dataset's 120 classes).
  config.init_from = path
  trained = models.get_model("mlfn", 120, **config.model_kwargs)
  start = train.init_variables(config, trained, jax.random.key(0))
  np.testing.assert_array_equal(start["params"]["fc_x"]["kernel"], variables["params"]["fc_x"]["kernel"])
  config.model_kwargs.embed_dim = 128  # not this file's network
  with pytest.raises(config_schema.ConfigError) as error:
    evaluate.evaluate_weights(config, out)
  assert str(error.value).startswith(f"config.init_from='{path}': Weights file")
  assert "fc_x.1.weight: file (32,), model (128,)" in str(error.value)
