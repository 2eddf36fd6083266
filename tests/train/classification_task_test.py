"""task='classification' on tfds' own builders (`cifar100`, `imagenet2012`) with tfds' mock
data: the configs, the input pipeline (random access, pad-4 crop + flip, exact resume,
padded evaluation), a tiny MLFN trained through `train.train_and_evaluate` and
`python -m reid_jax.main`; and the real ArrayRecord path on a tiny builder of ours."""
import glob
import importlib.util
import io
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import PIL.Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from reid_jax import classification, config_schema, evaluate, models, optimizers, train
from reid_jax.data import augment, manual, samplers
from reid_jax.data import classification as data
from reid_jax.data.batches import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Examples per split of the mock data (tfds' mock gives every split the same examples).
NUM_EXAMPLES = 48
TINY = dict(stem="cifar", stage_blocks=(1, 1, 1), groups=4, width=0.125, embed_dim=32)
STEPS = 16


def _config_module(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _config(name, arg=None):
  return _config_module(name).get_config(arg)


def _tiny_cifar_config(data_dir):
  """configs/mlfn_cifar100.py with a tiny MLFN, 16-image batches and 16 steps (its first
  decay is at epoch 100 = step 300 here: the learning rate is constant)."""
  c = _config("mlfn_cifar100")
  c.model_kwargs = dict(TINY)
  c.data_dir = str(data_dir)  # the mock reads nothing from it
  c.batch_size = 16
  c.eval_batch_size = 20      # 48 test images: batches of 20, 20 and 8 (+ 12 padding)
  c.num_train_steps = STEPS
  c.checkpoint_every_steps, c.eval_every_steps, c.log_every_steps = STEPS // 2, 0, 1
  return c


def _mock():
  return tfds.testing.mock_data(num_examples=NUM_EXAMPLES)


def _decoded(encoded):
  return np.asarray(PIL.Image.open(io.BytesIO(encoded)).convert("RGB"), np.float32)


def _pixels(normalised):
  """augment.normalize undone: [0, 255] RGB."""
  return (normalised * np.array(augment.IMAGENET_STD) + np.array(augment.IMAGENET_MEAN)) * 255


def _numpy_top_k_error(logits, labels, k):
  """Mean over images of: k or more other classes score at least the true class's."""
  true = logits[np.arange(len(labels)), labels]
  return float(np.mean((logits >= true[:, None]).sum(axis=1) - 1 >= k))


def _logged_losses(workdir):
  losses = {}
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      losses.update({event.step: float(tf.make_ndarray(v.tensor)) for v in event.summary.value
                     if v.tag == "loss"})
  return [losses[s] for s in sorted(losses)]


def _checkpoint(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  return manager.restore(manager.latest_step())


# The configs.

def test_mlfn_cifar100_config_is_the_papers_and_its_network_has_the_stated_size():
  config = config_schema.validate(_config("mlfn_cifar100"))
  assert (config.task, config.dataset, config.image_size, config.sampler) == (
      "classification", "cifar100", (32, 32), "random")
  assert config.model_kwargs.stage_blocks == (3, 3, 3) and config.model_kwargs.groups == 32
  assert (config.augment.pad, config.augment.flip, config.augment.random_erasing) == (4, True, 0)
  assert (config.optimizer, config.nesterov, config.momentum, config.batch_size) == (
      "sgd", True, 0.9, 256)
  # 0.1, x0.1 every 100 epochs, 307 epochs of 50,000 / 256 = 195 steps.
  schedule = optimizers.learning_rate_schedule(config, 195, 307 * 195)
  np.testing.assert_allclose([schedule(s) for s in (0, 19_499, 19_500, 39_000, 58_500, 59_864)],
                             [0.1, 0.1, 0.01, 0.001, 1e-4, 1e-4], rtol=1e-5)
  assert config.num_epochs == 307 and config.num_train_steps == -1

  model = models.get_model("mlfn", 100, **config.model_kwargs)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  assert count == 8_289_796  # as the config's and models.mlfn's docstrings state
  assert "8,289,796 parameters" in " ".join(_config_module("mlfn_cifar100").__doc__.split())
  assert "8,289,796 parameters" in " ".join(sys.modules[model.__module__].__doc__.split())
  out, state = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3)), mutable=["intermediates"]), variables)
  assert state["intermediates"]["factor_signature"][0].shape == (2, 288)  # K = 9 x 32
  assert out["logits"].shape == (1, 2, 100) and out["embedding"].shape == (2, 1024)


def test_jlml_imagenet_config_and_its_data_on_mock_imagenet2012(tmp_path):
  config = config_schema.validate(_config("jlml", "imagenet"))
  assert (config.task, config.dataset, config.sampler, config.batch_size) == (
      "classification", "imagenet2012", "random", 32)
  assert (config.learning_rate, config.momentum, tuple(config.lr_decay_steps),
          config.num_train_steps) == (0.01, 0.9, (100_000, 200_000), 300_000)  # Table 4, Pre-train
  config.data_dir = str(tmp_path)
  with _mock():
    train_split, test_split = classification.load(config)
    assert (train_split.name, test_split.name) == ("train", "validation")
    assert len(train_split) == len(test_split) == NUM_EXAMPLES
    assert train_split.num_classes == 1000
    with data.train_batches(train_split, config) as batches:
      batch = next(batches)
    with data.eval_batches(test_split, 40, config.image_size) as batches:
      evaluation = list(batches)
  assert batch["image"].shape == (32, 224, 224, 3) and batch["image"].dtype == np.float32
  assert batch["label"].dtype == np.int32
  assert ((batch["label"] >= 0) & (batch["label"] < 1000)).all()
  assert [b["valid"].sum() for b in evaluation] == [40, 8]


@pytest.mark.parametrize("key, value, message", [
    ("task", "detection", r"config.task='detection': must be one of \('reid', 'classification'\)"),
    ("sampler", "pk", r"config.sampler='pk': task='classification' trains on random batches"),
    ("augment.offline_copies", 2, r"config.augment.offline_copies=2: task='classification' has "
                                  r"no offline translation"),
    ("dataset", "cifar100+cifar10", r"config.dataset='cifar100\+cifar10': task='classification' "
                                    r"trains on one tfds dataset"),
])
def test_values_classification_cannot_serve_are_config_errors(key, value, message):
  config = _config("mlfn_cifar100")
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value
  with pytest.raises(config_schema.ConfigError, match=message):
    config_schema.validate(config)


def test_a_pair_scoring_network_cannot_classify():
  config = _config("kpm")
  config.task, config.sampler = "classification", "random"
  with pytest.raises(config_schema.ConfigError, match=r"config.model='kpm': kpm scores pairs"):
    config_schema.validate(config)


# The input pipeline on mock cifar100.

def test_train_batches_pad_4_crop_and_flip_each_image_and_resume_exactly(tmp_path):
  config = _tiny_cifar_config(tmp_path)
  with _mock():
    split = data.load_split(data.builder("cifar100", str(tmp_path)), "train")
    with data.train_batches(split, config) as batches:
      first = [next(batches) for _ in range(3)]
    with data.train_batches(split, config, start_step=2) as batches:
      resumed = next(batches)
    sampled = [samplers.RandomSampler(NUM_EXAMPLES, 16, config.seed).batch(s) for s in range(3)]
    sources = {int(i): split.source[int(i)] for i in np.concatenate(sampled)}
  for key in ("image", "label"):
    np.testing.assert_array_equal(resumed[key], first[2][key])  # step 3 = resumed step 3
  transforms = []
  for batch, indices in zip(first, sampled):
    assert batch["image"].shape == (16, 32, 32, 3) and batch["image"].dtype == np.float32
    np.testing.assert_array_equal(batch["label"], [sources[int(i)]["label"] for i in indices])
    for image, i in zip(_pixels(batch["image"]), indices):
      raw = _decoded(sources[int(i)]["image"])
      found = [(flip, top, left) for flip in (False, True) for top in range(9) for left in range(9)
               if np.allclose(image, np.pad(raw[:, ::-1] if flip else raw, [(4, 4), (4, 4), (0, 0)])
                              [top:top + 32, left:left + 32], atol=1e-3)]
      assert len(found) == 1, found  # one flip and one 32x32 window of the zero-padded image
      transforms += found
  assert {flip for flip, _, _ in transforms} == {False, True}
  assert len({(top, left) for _, top, left in transforms}) > 10


def test_eval_batches_cover_the_test_split_once_unaugmented_with_the_padding_masked(tmp_path):
  with _mock():
    dataset = data.builder("cifar100", str(tmp_path))
    split = data.load_split(dataset, data.eval_split_name("cifar100"))
    with data.eval_batches(split, 20, (32, 32)) as batches:
      evaluation = list(batches)
    sources = [split.source[i] for i in range(NUM_EXAMPLES)]
  assert split.name == "test"
  assert [len(b["valid"]) for b in evaluation] == [20, 20, 20]
  valid = np.concatenate([b["valid"] for b in evaluation])
  assert valid.sum() == NUM_EXAMPLES and not valid[NUM_EXAMPLES:].any()
  index = np.concatenate([b["index"] for b in evaluation])[valid]
  np.testing.assert_array_equal(index, np.arange(NUM_EXAMPLES))
  labels = np.concatenate([b["label"] for b in evaluation])[valid]
  np.testing.assert_array_equal(labels, [s["label"] for s in sources])
  images = np.concatenate([b["image"] for b in evaluation])[valid]
  np.testing.assert_allclose(_pixels(images), [_decoded(s["image"]) for s in sources], atol=1e-3)


# Training end to end.

@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
  """(config, workdir, returned metrics) of a tiny MLFN trained 16 steps on mock cifar100."""
  config = _tiny_cifar_config(tmp_path_factory.mktemp("tfds"))
  workdir = str(tmp_path_factory.mktemp("straight"))
  with _mock():
    metrics = train.train_and_evaluate(config, workdir)
  return config, workdir, metrics


def test_a_tiny_mlfn_learns_and_reports_its_top_k_errors_recomputed_from_the_logits(cifar_run):
  config, workdir, metrics = cifar_run
  losses = _logged_losses(workdir)
  assert len(losses) == STEPS
  assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.3  # from ln(100) = 4.6
  with open(os.path.join(workdir, "metrics.json")) as f:
    written = json.load(f)
  assert sorted(os.listdir(os.path.join(workdir, "eval"))) == [f"metrics_{STEPS}.json"]
  assert written["step"] == STEPS and written["num_images"] == NUM_EXAMPLES
  assert 0 <= written["top1_error"] <= 1 and 0 <= written["top5_error"] <= written["top1_error"]
  assert {k: written[k] for k in metrics} == metrics

  restored = _checkpoint(workdir)
  variables = {"params": restored["params"], "batch_stats": restored["batch_stats"]}
  apply = jax.jit(models.get_model("mlfn", 100, **config.model_kwargs).apply)
  with _mock():
    split = data.load_split(data.builder("cifar100", config.data_dir), "test")
    with data.eval_batches(split, config.eval_batch_size, config.image_size) as batches:
      outputs = [(apply(variables, b["image"])["logits"][0], b["label"], b["valid"])
                 for b in batches]
  logits, labels, valid = (np.concatenate(x) for x in zip(*outputs))
  logits, labels = np.asarray(logits)[valid], labels[valid]
  assert written["top1_error"] == _numpy_top_k_error(logits, labels, 1)
  assert written["top5_error"] == _numpy_top_k_error(logits, labels, 5)


def test_a_resumed_run_ends_with_the_straight_runs_parameters(cifar_run, tmp_path):
  config, straight, _ = cifar_run
  half = config.copy_and_resolve_references()
  half.num_train_steps = STEPS // 2
  with _mock():
    train.train_and_evaluate(half, str(tmp_path))
    train.train_and_evaluate(config, str(tmp_path))
  a, b = _checkpoint(straight), _checkpoint(str(tmp_path))
  assert int(a["step"]) == int(b["step"]) == STEPS
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 50
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)


def test_evaluate_workdir_re_evaluates_the_classifier_of_the_latest_checkpoint(cifar_run, tmp_path):
  config, workdir, metrics = cifar_run
  with _mock():
    again = evaluate.evaluate_workdir(config, workdir, out=str(tmp_path / "eval"))
  assert again == metrics
  with open(tmp_path / "eval" / f"step{STEPS}.json") as f:
    assert json.load(f) == {"step": STEPS, **metrics}
  weights = config.copy_and_resolve_references()
  weights.init_from = workdir
  with pytest.raises(config_schema.ConfigError, match="evaluate a run's workdir"):
    evaluate.evaluate_weights(weights, str(tmp_path / "other"))


def test_main_with_the_cifar100_config_prints_the_top_k_errors(tmp_path):
  # tfds' mock holds in the process that enters it: main runs inside it.
  code = ("import sys\nimport tensorflow_datasets as tfds\nfrom absl import app\n"
          "from reid_jax import main\n"
          f"with tfds.testing.mock_data(num_examples={NUM_EXAMPLES}):\n"
          "  app.run(main.main, argv=sys.argv, flags_parser=main._parse_flags)\n")
  flags = [f"--config.model_kwargs.{k}={v}" for k, v in TINY.items()]
  run = subprocess.run(
      [sys.executable, "-c", code, "--config=configs/mlfn_cifar100.py",
       f"--workdir={tmp_path / 'w'}", f"--config.data_dir={tmp_path / 'tfds'}", *flags,
       "--config.batch_size=16", "--config.eval_batch_size=20", "--config.num_train_steps=2"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  last = run.stdout.strip().splitlines()[-1]
  with open(tmp_path / "w" / "metrics.json") as f:
    written = json.load(f)
  assert last == (f"Final evaluation on cifar100: top-1 error {written['top1_error']:.2%} | "
                  f"top-5 error {written['top5_error']:.2%} ({NUM_EXAMPLES} images)")


# The real ArrayRecord files, without the mock.

class TinyClasses(tfds.core.GeneratorBasedBuilder):
  """Six 8x8 train images of 3 classes and 3 test images, each one grey level."""
  pkg_dir_path = epath.Path(os.path.dirname(os.path.abspath(__file__)))  # not a package
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Test fixture."}

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(8, 8, 3)), "id": tfds.features.Text(),
        "label": tfds.features.ClassLabel(num_classes=3)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(0, 6), "test": self._generate_examples(6, 9)}

  def _generate_examples(self, start, stop):
    for i in range(start, stop):
      yield i, {"image": np.full((8, 8, 3), 20 * i, np.uint8), "id": f"img{i}", "label": i % 3}


def test_a_dataset_is_prepared_as_array_record_and_read_by_index(tmp_path):
  split = data.load_split(data.builder("tiny_classes", str(tmp_path)), "train")
  assert (len(split), split.num_classes) == (6, 3)
  assert split.describe() == "split 'train' of tiny_classes"
  assert "tiny_classes-train.array_record-00000-of-00001" in os.listdir(
      tmp_path / "tiny_classes" / "1.0.0")
  ids = [int(split.filenames[i][3:]) for i in range(6)]  # 'img<i>', in tfds' stored order
  assert sorted(ids) == list(range(6))
  config = _tiny_cifar_config(tmp_path)
  config.image_size, config.batch_size = (8, 8), 6
  config.augment.flip, config.augment.pad = False, 0
  with data.train_batches(split, config) as batches:
    batch = next(batches)
  order = samplers.RandomSampler(6, 6, config.seed).batch(0)
  np.testing.assert_allclose(_pixels(batch["image"]).mean(axis=(1, 2, 3)),
                             [20 * ids[i] for i in order], atol=1e-3)
  np.testing.assert_array_equal(batch["label"], [ids[i] % 3 for i in order])


def test_a_dataset_prepared_as_tfrecord_is_refused_naming_the_folder_and_the_fix(tmp_path):
  tfds.builder("tiny_classes", data_dir=str(tmp_path)).download_and_prepare()
  folder = tmp_path / "tiny_classes" / "1.0.0"
  with pytest.raises(DataError) as error:
    data.load_split(data.builder("tiny_classes", str(tmp_path)), "train")
  assert str(error.value) == (
      f"tiny_classes is prepared at {folder} as tfrecord, which has no random access; "
      "task='classification' reads examples by index from ArrayRecord files. Delete that folder "
      "or choose another --config.data_dir, and it is prepared again as ArrayRecord; or add "
      f"ArrayRecord files beside it with `tfds convert_format --dataset_version_dir={folder} "
      "--out_file_format=array_record` (which needs apache-beam installed).")


def test_imagenet_without_its_archives_fails_naming_them_and_the_manual_directory(tmp_path):
  with pytest.raises(manual.DatasetNotFoundError) as error:
    data.builder("imagenet2012", str(tmp_path / "tfds"), str(tmp_path / "manual"))
  message = str(error.value)
  assert message.startswith(f"imagenet2012: Manual directory {tmp_path / 'manual'} does not exist")
  assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message
