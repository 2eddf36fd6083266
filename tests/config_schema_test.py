"""Config validation: every shipped config is valid; a bad value names its key."""
import importlib.util
import inspect
import os

import pytest

from reid_jax import config_schema, metrics, models

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


mlfn, mgn, jlml, ide, mpn, kpm = (_load(n) for n in ("mlfn", "mgn", "jlml", "ide", "mpn", "kpm"))


@pytest.mark.parametrize("module", [mlfn, mgn, jlml, ide, mpn, kpm])
@pytest.mark.parametrize("arg", [None, "synthetic"])
def test_shipped_configs_are_valid(module, arg):
  config_schema.validate(module.get_config(arg))


@pytest.mark.parametrize("name, arg", [("mlfn_cifar100", None), ("jlml", "imagenet")])
def test_shipped_classification_configs_are_valid(name, arg):
  config = _load(name).get_config(arg)
  assert config.task == "classification"
  config_schema.validate(config)


@pytest.mark.parametrize("key, value, message", [
    ("split", -1, r"^config.split=-1: must be an integer >= 0$"),
    ("dataset", "market1501+", r"^config.dataset='market1501\+': expected tfds names joined by"),
    ("train_on", "everything", r"^config.train_on='everything': must be one of \('train', 'all'\)$"),
])
def test_dataset_keys_are_checked(key, value, message):
  config = mlfn.get_config()
  config[key] = value
  with pytest.raises(config_schema.ConfigError, match=message):
    config_schema.validate(config)


def test_unknown_config_argument_is_an_error():
  with pytest.raises(ValueError, match="Unknown config argument 'tiny'"):
    mlfn.get_config("tiny")


@pytest.mark.parametrize("key, value, message", [
    ("model", "resnet18", r"config.model='resnet18': must be one of"),
    ("optimizer", "adagrad", r"config.optimizer='adagrad'"),
    ("image_size", (256,), r"config.image_size=\(256,\)"),
    ("p_identities", 1, r"config.p_identities=1: batch-hard mining"),
    ("eval.metric", "l1", r"config.eval.metric='l1'"),
    ("eval.query_pooling", "median", r"config.eval.query_pooling='median'"),
    ("eval.k1", 0, r"config.eval.k1=0: must be a positive integer"),
    ("sampler", "triplets", r"config.sampler='triplets': must be one of \('pk', 'random'\)"),
    ("init_from", "/nonexistent/run", r"config.init_from='/nonexistent/run': No checkpoint at"),
    ("loss.triplet_margin", -1.0, r"config.loss.triplet_margin=-1.0"),
    ("loss.triplet_metric", "l1", r"config.loss.triplet_metric='l1'"),
    ("augment.random_erasing", 1.5, r"config.augment.random_erasing=1.5"),
    ("augment.offline_copies", 0, r"config.augment.offline_copies=0: must be a positive integer"),
    ("augment.offline_max_shift", 0.5, r"config.augment.offline_max_shift=0.5: must be in"),
    ("pretrained", "/nonexistent/resnet50.safetensors", r"config.pretrained=.*no such file"),
    ("checkpoint_every_steps", 0, r"config.checkpoint_every_steps=0: must be a positive integer"),
    ("keep_checkpoints", 0, r"config.keep_checkpoints=0: must be a positive integer"),
    ("seed", -1, r"config.seed=-1: must be an integer in \[0, 2\*\*31\)"),
    ("eval.max_rank", 0, r"config.eval.max_rank=0: must be a positive integer"),
    ("eval.lambda_value", 2.0, r"config.eval.lambda_value=2.0: must be in \[0, 1\]"),
    ("eval_every_steps", -5, r"config.eval_every_steps=-5: must be an integer >= 0"),
    ("num_train_steps", 0, r"config.num_train_steps=0: must be a positive integer, or -1"),
    ("num_epochs", 0.0, r"config.num_epochs=0.0: must be positive, or -1"),
    ("learning_rate", float("nan"), r"config.learning_rate=nan: must be positive and finite"),
    ("weight_decay", -1e-4, r"config.weight_decay=-0.0001: must be >= 0"),
    ("momentum", 1.0, r"config.momentum=1.0: must be in \[0, 1\)"),
    ("lr_decay_factor", 0.0, r"config.lr_decay_factor=0.0: must be in \(0, 1\]"),
    ("lr_decay_epochs", (60, 40), r"config.lr_decay_epochs=\(60, 40\): must be increasing"),
    ("lr_decay_epochs", (-1, 40), r"config.lr_decay_epochs=-1: must be positive"),
    ("image_size", (64.5, 32), r"config.image_size=\(64.5, 32\): must be \(height, width\)"),
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


@pytest.mark.parametrize("key, value, message", [
    ("model_kwargs.prior", "pose", r"config.model_kwargs=.*MPN: unknown prior 'pose'; use one of "
                                   r"\('mask', 'roi', 'uniform', 'none'\)"),
    ("loss.alignment", "pixel", r"config.loss.alignment='pixel': must be one of"),
    ("loss.alignment_weight", -1.0, r"config.loss.alignment_weight=-1.0: must be >= 0"),
])
def test_bad_mpn_values_name_their_key(key, value, message):
  config = mpn.get_config("synthetic")
  group, leaf = key.split(".")
  config[group][leaf] = value
  with pytest.raises(config_schema.ConfigError, match=message):
    config_schema.validate(config)


@pytest.mark.parametrize("key, value, message", [
    ("model_kwargs.matching", "dense", r"config.model_kwargs=.*KPM: unknown matching 'dense'"),
    ("model_kwargs.tau", 0.0, r"config.model_kwargs=.*KPM: tau must be positive"),
    ("pairwise.mode", "all", r"config.pairwise.mode='all': must be one of \('cascade', 'full'\)"),
    ("pairwise.top_k", 0, r"config.pairwise.top_k=0: must be a positive integer"),
    ("pairwise.gallery_block", -2, r"config.pairwise.gallery_block=-2: must be a positive integer"),
    ("eval.rerank", True, r"config.eval.rerank=True: kpm scores pairs of images"),
    ("eval.query_pooling", "mean", r"config.eval.query_pooling='mean': kpm scores pairs"),
    ("flip_test", True, r"config.flip_test=True: kpm scores pairs"),
])
def test_bad_kpm_values_name_their_key(key, value, message):
  config = kpm.get_config("synthetic")
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(config_schema.ConfigError, match=message):
    config_schema.validate(config)


def test_a_wrong_type_is_named_too():
  # ml_collections refuses most type changes itself; a config built another way is checked.
  config = mgn.get_config()
  config.augment = dict(config.augment, pad=2.5)
  with pytest.raises(config_schema.ConfigError, match=r"config.augment.pad=2.5: must be an integer"):
    config_schema.validate(config)


def test_pretrained_weights_need_a_backbone(tmp_path):
  config = mlfn.get_config()
  config.pretrained = str(tmp_path / "w.npz")
  with pytest.raises(ValueError, match="model 'mlfn' has no ImageNet backbone"):
    config_schema.validate(config)


def test_loss_group_is_the_loss_signature_and_a_foreign_key_names_the_accepted_ones():
  config = mlfn.get_config("synthetic")
  assert dict(config.loss) == models.get_spec("mlfn").loss_defaults() == {"label_smoothing": 0.0}
  assert sorted(jlml.get_config().loss) == ["label_smoothing", "lambda_global", "lambda_local"]
  config.loss.triplet_margin = 0.5          # an MGN key on MLFN
  with pytest.raises(config_schema.ConfigError,
                     match=r"config.loss.triplet_margin=0.5: mlfn's loss takes no 'triplet_margin'; "
                           r"it accepts \['label_smoothing'\]"):
    config_schema.validate(config)


def test_eval_group_is_the_evaluators_keyword_arguments():
  params = inspect.signature(metrics.evaluate_features).parameters
  keywords = [k for k, p in params.items() if p.default is not inspect.Parameter.empty]
  config = config_schema.base_config("mlfn")
  assert sorted(config.eval) == sorted(k for k in keywords if k != "return_details")
  for key in config.eval:
    assert config.eval[key] == params[key].default, key
  config = mgn.get_config()
  config.eval.rerank_k1 = 20
  with pytest.raises(config_schema.ConfigError, match=r"config.eval.rerank_k1=20: evaluate_features "
                                                      r"takes no 'rerank_k1'; it accepts \['metric'"):
    config_schema.validate(config)


def test_model_kwargs_are_the_modules_fields():
  config = jlml.get_config("synthetic")
  config.model_kwargs.groups = 8            # an MLFN field on JLML
  with pytest.raises(config_schema.ConfigError,
                     match=r"config.model_kwargs.groups=8: jlml takes no 'groups'; it takes "
                           r"\['width', 'stage_blocks', 'stripes'\]"):
    config_schema.validate(config)


def test_pretrained_and_init_from_exclude_each_other(tmp_path):
  config = mgn.get_config()
  weights = tmp_path / "w.npz"
  weights.write_bytes(b"")
  config.pretrained, config.init_from = str(weights), str(tmp_path)
  with pytest.raises(config_schema.ConfigError, match="set either it or config.pretrained"):
    config_schema.validate(config)


def test_lr_decay_in_steps_or_epochs_not_both():
  config = jlml.get_config()
  config.lr_decay_epochs = (10,)
  with pytest.raises(config_schema.ConfigError, match="config.lr_decay_steps=.*not both"):
    config_schema.validate(config)
