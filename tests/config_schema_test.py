"""Config validation: every shipped config is valid; a bad value names its key."""
import importlib.util
import os

import pytest

from reid_jax import config_schema

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


mlfn, mgn = _load("mlfn"), _load("mgn")


@pytest.mark.parametrize("module", [mlfn, mgn])
@pytest.mark.parametrize("arg", [None, "synthetic"])
def test_shipped_configs_are_valid(module, arg):
  config_schema.validate(module.get_config(arg))


def test_unknown_config_argument_is_an_error():
  with pytest.raises(ValueError, match="Unknown config argument 'tiny'"):
    mlfn.get_config("tiny")


@pytest.mark.parametrize("key, value, message", [
    ("model", "resnet18", r"config.model='resnet18': must be one of"),
    ("optimizer", "adagrad", r"config.optimizer='adagrad'"),
    ("image_size", (256,), r"config.image_size=\(256,\)"),
    ("p_identities", 1, r"config.p_identities=1: batch-hard mining"),
    ("metric", "l1", r"config.metric='l1'"),
    ("query_pooling", "median", r"config.query_pooling='median'"),
    ("loss.triplet_margin", -1.0, r"config.loss.triplet_margin=-1.0"),
    ("loss.triplet_metric", "l1", r"config.loss.triplet_metric='l1'"),
    ("augment.random_erasing", 1.5, r"config.augment.random_erasing=1.5"),
    ("pretrained", "/nonexistent/resnet50.safetensors", r"config.pretrained=.*no such file"),
])
def test_bad_values_name_their_key(key, value, message):
  config = mgn.get_config()
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=message):
    config_schema.validate(config)


def test_pretrained_weights_need_a_backbone(tmp_path):
  config = mlfn.get_config()
  config.pretrained = str(tmp_path / "w.npz")
  with pytest.raises(ValueError, match="model 'mlfn' has no ImageNet backbone"):
    config_schema.validate(config)
