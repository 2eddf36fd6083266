"""The datasets of a run: `config.dataset` names one tfds dataset or several joined by '+'.

`'market1501'`, `'cuhk03/labeled'`, `'viper'`: that dataset's train, query and
gallery (of partition `config.split` where it has several, see `partitions`).
`'market1501+cuhk03/labeled'`: training on the union of the sources' training
sets, as JLML pretrains on CUHK03 + Market-1501 (Sec. 3, "Implementation")
before fine-tuning on the small VIPeR and GRID. Each source keeps its own
identities: its train labels follow the previous sources' (source 2's label 0 is
label n1), so no two sources share a class, and its file names are prefixed with
its dataset name; person and camera ids stay the source's own. Evaluation uses the
first source's query and gallery. Person masks are kept only if every source has them.

`whole=True` (`config.train_on='all'`) trains on every image of each source that has
a person id (> 0: no junk, no distractors), train, query and gallery alike, each
image once and labelled by its person: JLML pretrains on "CUHK03+Market (whole
datasets)". Its evaluation then scores images it trained on. A source whose splits
number their persons apart (MSMT17) cannot be used whole.
"""
import dataclasses
from typing import Sequence

import numpy as np

from reid_jax.data import partitions, pipeline


class WholeSourceError(ValueError):
  """A source that cannot be trained on whole (see `whole_split`)."""


@dataclasses.dataclass(frozen=True)
class ReidData:
  train: pipeline.Split | None
  query: pipeline.Split | None
  gallery: pipeline.Split | None
  info: object  # the evaluated (first) dataset's tfds DatasetInfo


def names(dataset: str) -> list[str]:
  """The tfds names of `dataset`: 'market1501+cuhk03/labeled' -> ['market1501',
  'cuhk03/labeled']."""
  parts = [p.strip() for p in dataset.split("+")]
  if not all(parts):
    raise ValueError(f"dataset {dataset!r}: expected tfds names joined by '+', e.g. "
                     "'market1501+cuhk03/labeled'.")
  return parts


def builders(dataset: str, data_dir: str = "", manual_dir: str = "") -> list:
  """The prepared tfds builder of each source of `dataset` (see `pipeline.builder`)."""
  return [pipeline.builder(name, data_dir, manual_dir) for name in names(dataset)]


def num_partitions(dataset_builders: Sequence) -> int:
  """How many partitions a run can choose from: the evaluated (first) dataset's."""
  return partitions.num_partitions(dataset_builders[0].info)


def _partition(dataset_builder, partition):
  """Sources with one fixed split always use it; the others use `partition`."""
  return partition if partitions.num_partitions(dataset_builder.info) > 1 else 0


def load(dataset_builders: Sequence, partition: int = 0,
         splits: Sequence[str] = ("train", "query", "gallery"), whole: bool = False) -> ReidData:
  """Reads `splits` of the sources (query and gallery from the first only); with
  `whole`, the training split of each source is all of it (module docstring)."""
  first = dataset_builders[0]
  read = lambda b, names: pipeline.load_splits(b, names, _partition(b, partition))
  # The first source's splits in one read (a multi-partition dataset stores them together).
  from_first = [s for s in ("train", "query", "gallery")
                if s in splits and not (s == "train" and whole)]
  out = read(first, from_first) if from_first else {}
  if "train" in splits:
    train_of = lambda b: whole_split(b) if whole else read(b, ["train"])["train"]
    trains = ([out["train"] if "train" in out else train_of(first)]
              + [train_of(b) for b in dataset_builders[1:]])
    out["train"] = trains[0] if len(trains) == 1 else combine(trains)
  return ReidData(train=out.get("train"), query=out.get("query"), gallery=out.get("gallery"),
                  info=first.info)


def _concatenate(splits: Sequence[pipeline.Split], labels, filenames, dataset) -> pipeline.Split:
  """The images of `splits` one after the other, as a training split (masks kept
  only if every split has them)."""
  join = lambda field: np.concatenate([getattr(s, field) for s in splits])
  return pipeline.Split(
      images=join("images"),
      masks=join("masks") if all(s.masks is not None for s in splits) else None,
      person_ids=join("person_ids"), camera_ids=join("camera_ids"), labels=labels,
      filenames=filenames, name="train", dataset=dataset)


def combine(trains: Sequence[pipeline.Split]) -> pipeline.Split:
  """One training split of several sources' (see the module docstring)."""
  offsets = np.cumsum([0] + [int(s.labels.max()) + 1 for s in trains[:-1]])
  return _concatenate(
      trains, labels=np.concatenate([s.labels + offset for s, offset in zip(trains, offsets)]),
      filenames=np.concatenate([np.char.add(f"{s.dataset}:", s.filenames.astype(str))
                                for s in trains]),
      dataset="+".join(s.dataset for s in trains))


def whole_split(dataset_builder) -> pipeline.Split:
  """Every image of a source with a person id > 0, once, labelled 0..n-1 by person id
  (its partition 0 holds every image of a multi-partition dataset)."""
  name = pipeline.dataset_name(dataset_builder)
  if (dataset_builder.info.metadata or {}).get("person_ids_per_split"):
    raise WholeSourceError(f"{name} numbers the persons of each split apart: it cannot be "
                           "trained on whole.")
  splits = ("train", "query", "gallery")
  parts = list(pipeline.load_splits(dataset_builder, splits).values())
  split = _concatenate(parts, np.concatenate([p.labels for p in parts]),
                       np.concatenate([p.filenames for p in parts]), name)
  # An image is in several splits only in a partition (CUHK03 classic: query = gallery);
  # elsewhere a file name may recur in another split's folder as another image.
  stored_once = partitions.num_partitions(dataset_builder.info) > 1
  keys = np.concatenate([p.filenames if stored_once else np.char.add(f"{s}/", p.filenames)
                         for s, p in zip(splits, parts)])
  _, first = np.unique(keys, return_index=True)
  keep = np.sort(first[split.person_ids[first] > 0])
  split = split.take(keep)
  return dataclasses.replace(split, labels=partitions.train_labels(split.person_ids))
