"""Partitioned datasets (`partitions`), combined training sets (`sources`) and the
config checks against a built dataset."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from reid_jax import config_schema, datasets
from reid_jax.data import features, partitions, pipeline, sources

T, Q, G = partitions.TRAIN, partitions.QUERY, partitions.GALLERY
# (person_id, camera_id, roles in partitions 0 and 1) of each image.
ROWS = [(5, 0, (T, Q)), (5, 1, (T, G)), (9, 0, (Q, T)), (9, 1, (G, T)),
        (7, 0, (T, Q | G)), (7, 1, (T, Q | G)), (0, 1, (G, G))]


class Partitioned(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """ROWS stored once with their roles in two partitions, as VIPeR or GRID are."""
  VERSION = tfds.core.Version("1.0.0")
  PROTOCOL = None

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, metadata=tfds.core.MetadataDict(),
                                 features=features.reid_features("png", True, num_partitions=2))

  def _split_generators(self, dl_manager):
    self.info.metadata.update(num_partitions=2, has_masks=False)
    if self.PROTOCOL:
      self.info.metadata["protocol"] = self.PROTOCOL
    return {partitions.SPLIT: self._generate_examples()}

  def _generate_examples(self):
    for i, (pid, cam, roles) in enumerate(ROWS):
      yield i, {"image": np.full((4, 2, 3), i, np.uint8), "mask": np.zeros((1, 1, 1), np.uint8),
                "person_id": pid, "camera_id": cam, "label": -1, "filename": f"{i}.png",
                "roles": np.array(roles, np.uint8)}


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory):
  builder = Partitioned(data_dir=str(tmp_path_factory.mktemp("tfds")))
  builder.download_and_prepare()
  return builder


def _rows(split):
  """(person, camera, label, filename) of each image, in file name order (tfds stores
  a split's examples in the order of their keys' hashes)."""
  return sorted([(int(p), int(c), int(l), str(f)) for p, c, l, f in
                 zip(split.person_ids, split.camera_ids, split.labels, split.filenames)],
                key=lambda row: row[3])


def test_load_split_selects_a_partition_and_numbers_its_train_identities(partitioned):
  assert partitions.num_partitions(partitioned.info) == 2
  load = lambda split, k: _rows(pipeline.load_split(partitioned, split, partition=k))
  assert load("train", 0) == [(5, 0, 0, "0.png"), (5, 1, 0, "1.png"), (7, 0, 1, "4.png"),
                              (7, 1, 1, "5.png")]
  assert load("query", 0) == [(9, 0, -1, "2.png")]
  assert load("gallery", 0) == [(9, 1, -1, "3.png"), (0, 1, -1, "6.png")]
  assert load("train", 1) == [(9, 0, 0, "2.png"), (9, 1, 0, "3.png")]
  assert load("query", 1) == [(5, 0, -1, "0.png"), (7, 0, -1, "4.png"), (7, 1, -1, "5.png")]
  assert load("gallery", 1) == [(5, 1, -1, "1.png"), (7, 0, -1, "4.png"), (7, 1, -1, "5.png"),
                                (0, 1, -1, "6.png")]
  split = pipeline.load_split(partitioned, "gallery", partition=1)
  pixels = {f: int(pipeline.augment.decode(im, 3, (4, 2)).numpy()[0, 0, 0])
            for f, im in zip(split.filenames, split.images)}
  assert pixels == {"1.png": 1, "4.png": 4, "5.png": 5, "6.png": 6}
  assert split.describe() == "split 'gallery' of partitioned partition 1"


def test_a_partition_the_dataset_lacks_is_an_error(partitioned, tmp_path):
  with pytest.raises(ValueError, match=r"^partitioned has 2 partitions \(0 to 1\); there is no "
                     r"partition 2\.$"):
    pipeline.load_split(partitioned, "train", partition=2)
  config = config_schema.base_config("mlfn")
  config.dataset, config.split = "partitioned", 2
  with pytest.raises(config_schema.ConfigError,
                     match=r"^config.split=2: 'partitioned' has 2 partitions \(0 to 1\)$"):
    datasets.check_dataset_info(config, [partitioned.info])
  config.split = 1
  datasets.check_dataset_info(config, [partitioned.info])


def test_a_dataset_with_its_own_protocol_requires_it(tmp_path):
  builder_class = type("Classic", (Partitioned,), {"PROTOCOL": "cuhk03"}, skip_registration=True)
  builder = builder_class(data_dir=str(tmp_path))
  builder.download_and_prepare()
  config = config_schema.base_config("mlfn")
  config.dataset = "classic"
  with pytest.raises(config_schema.ConfigError, match=(
      r"^config.eval.protocol='market': 'classic' is evaluated by the 'cuhk03' protocol \(set "
      r"--config.eval.protocol=cuhk03\)$")):
    datasets.check_dataset_info(config, [builder.info])
  config.eval.protocol = "cuhk03"
  datasets.check_dataset_info(config, [builder.info])


def _split(name, pids, labels, with_masks):
  n = len(pids)
  return pipeline.Split(
      images=np.array([f"{name}{i}".encode() for i in range(n)], object),
      masks=np.array([b"m"] * n, object) if with_masks else None,
      person_ids=np.array(pids), camera_ids=np.zeros(n, np.int64), labels=np.array(labels),
      filenames=np.array([f"{i}.jpg" for i in range(n)]), name="train", dataset=name)


def test_combined_training_sets_renumber_identities_per_source():
  market = _split("market1501", [2, 2, 7], [0, 0, 1], with_masks=True)
  cuhk = _split("cuhk03/labeled", [1, 3, 3, 8], [0, 1, 1, 2], with_masks=False)
  train = sources.combine([market, cuhk])
  assert train.labels.tolist() == [0, 0, 1, 2, 3, 3, 4]
  assert train.person_ids.tolist() == [2, 2, 7, 1, 3, 3, 8]
  assert train.filenames.tolist() == ["market1501:0.jpg", "market1501:1.jpg", "market1501:2.jpg",
                                      "cuhk03/labeled:0.jpg", "cuhk03/labeled:1.jpg",
                                      "cuhk03/labeled:2.jpg", "cuhk03/labeled:3.jpg"]
  assert train.images.tolist() == [b"market15010", b"market15011", b"market15012",
                                   b"cuhk03/labeled0", b"cuhk03/labeled1", b"cuhk03/labeled2",
                                   b"cuhk03/labeled3"]
  assert train.masks is None  # one source has none
  assert train.dataset == "market1501+cuhk03/labeled"
  both = sources.combine([market, _split("other", [4], [0], with_masks=True)])
  assert both.masks.tolist() == [b"m"] * 4 and both.labels.tolist() == [0, 0, 1, 2]


def test_load_trains_on_every_source_and_evaluates_on_the_first(partitioned, tmp_path):
  other = type("Other", (Partitioned,), {}, skip_registration=True)(data_dir=str(tmp_path))
  other.download_and_prepare()
  reid = sources.load([partitioned, other], partition=1)
  assert reid.train.labels.tolist() == [0, 0, 1, 1]  # partition 1's identity 9, once per source
  assert reid.train.dataset == "partitioned partition 1+other partition 1"
  assert sorted(reid.train.filenames) == [
      "other partition 1:2.png", "other partition 1:3.png",
      "partitioned partition 1:2.png", "partitioned partition 1:3.png"]
  assert _rows(reid.query) == _rows(pipeline.load_split(partitioned, "query", 1))
  assert reid.info is partitioned.info
  only_test = sources.load([partitioned], 0, splits=("query", "gallery"))
  assert only_test.train is None and len(only_test.gallery) == 2


@pytest.mark.parametrize("dataset", ["market1501+", "+viper", "a++b"])
def test_a_malformed_combination_is_a_config_error(dataset):
  config = config_schema.base_config("mlfn")
  config.dataset = dataset
  with pytest.raises(config_schema.ConfigError, match=(
      rf"^config.dataset='{dataset.replace('+', '[+]')}': expected tfds names joined by '\+'")):
    config_schema.validate(config)
  assert sources.names("market1501 + cuhk03/labeled") == ["market1501", "cuhk03/labeled"]


class ThreeSplits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A Market-style release: train, query and gallery, a file name in two folders."""
  VERSION = tfds.core.Version("1.0.0")
  PER_SPLIT_IDS = False
  # split -> (person_id, filename) of each image
  SPLITS = {"train": [(3, "a.jpg"), (3, "b.jpg"), (4, "c.jpg")],
            "query": [(8, "q.jpg")],
            "gallery": [(8, "q.jpg"), (8, "g.jpg"), (0, "d.jpg"), (-1, "j.jpg")]}

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, metadata=tfds.core.MetadataDict(),
                                 features=features.reid_features("png", True))

  def _split_generators(self, dl_manager):
    self.info.metadata.update(has_masks=False)
    if self.PER_SPLIT_IDS:
      self.info.metadata["person_ids_per_split"] = True
    return {split: self._generate_examples(split) for split in self.SPLITS}

  def _generate_examples(self, split):
    for i, (pid, name) in enumerate(self.SPLITS[split]):
      yield name, {"image": np.full((4, 2, 3), 10 * len(split) + i, np.uint8),
                   "mask": np.zeros((1, 1, 1), np.uint8), "person_id": pid, "camera_id": 0,
                   "label": [3, 4].index(pid) if split == "train" else -1, "filename": name}


def test_a_whole_source_is_every_image_with_a_person_once(partitioned, tmp_path):
  three = ThreeSplits(data_dir=str(tmp_path))
  three.download_and_prepare()
  whole = sources.whole_split(three)
  rows = sorted(zip(whole.filenames, whole.person_ids.tolist(), whole.labels.tolist(),
                    [pipeline.augment.decode(im, 3, (4, 2)).numpy()[0, 0, 0] for im in whole.images]))
  # q.jpg is a query image and, another one, a gallery image: both kept; 0 and -1 dropped.
  assert [r[:3] for r in rows] == [("a.jpg", 3, 0), ("b.jpg", 3, 0), ("c.jpg", 4, 1),
                                   ("g.jpg", 8, 2), ("q.jpg", 8, 2), ("q.jpg", 8, 2)]
  assert sorted(r[3] for r in rows if r[0] == "q.jpg") == [50, 70]  # the query and gallery images
  # A partitioned dataset stores each image once: partition 0 holds every one.
  whole = sources.whole_split(partitioned)
  assert sorted(zip(whole.filenames, whole.person_ids.tolist(), whole.labels.tolist())) == [
      ("0.png", 5, 0), ("1.png", 5, 0), ("2.png", 9, 2), ("3.png", 9, 2), ("4.png", 7, 1),
      ("5.png", 7, 1)]
  reid = sources.load([three, partitioned], whole=True)
  assert len(reid.train) == 12 and reid.train.labels.max() == 2 + 3
  assert len(reid.query) == 1  # evaluation: the first source's own query and gallery


def test_a_source_numbering_each_split_apart_cannot_be_whole(tmp_path):
  apart = type("Apart", (ThreeSplits,), {"PER_SPLIT_IDS": True}, skip_registration=True)(
      data_dir=str(tmp_path))
  apart.download_and_prepare()
  with pytest.raises(sources.WholeSourceError, match=(
      "^apart numbers the persons of each split apart: it cannot be trained on whole.$")):
    sources.load([apart], whole=True)
  assert len(sources.load([apart]).train) == 3
