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
"""
import dataclasses
from typing import Sequence

import numpy as np

from reid_jax.data import partitions, pipeline


@dataclasses.dataclass(frozen=True)
class ReidData:
  train: pipeline.Split | None
  query: pipeline.Split | None
  gallery: pipeline.Split | None
  info: object  # the evaluated (first) dataset's tfds DatasetInfo


def names(dataset: str) -> list[str]:
  """The tfds names of `dataset`: 'market1501+cuhk03/labeled' -> ['market1501', 'cuhk03/labeled']."""
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
         splits: Sequence[str] = ("train", "query", "gallery")) -> ReidData:
  """Reads `splits` of the sources (query and gallery from the first only)."""
  first = dataset_builders[0]
  read = lambda b, split: pipeline.load_split(b, split, _partition(b, partition))
  out = {split: read(first, split) for split in ("query", "gallery") if split in splits}
  if "train" in splits:
    trains = [read(b, "train") for b in dataset_builders]
    out["train"] = trains[0] if len(trains) == 1 else combine(trains)
  return ReidData(train=out.get("train"), query=out.get("query"), gallery=out.get("gallery"),
                  info=first.info)


def combine(trains: Sequence[pipeline.Split]) -> pipeline.Split:
  """One training split of several sources' (see the module docstring)."""
  offsets = np.cumsum([0] + [int(s.labels.max()) + 1 for s in trains[:-1]])
  with_masks = all(s.masks is not None for s in trains)
  join = lambda arrays: np.concatenate(arrays)
  return pipeline.Split(
      images=join([s.images for s in trains]),
      masks=join([s.masks for s in trains]) if with_masks else None,
      person_ids=join([s.person_ids for s in trains]),
      camera_ids=join([s.camera_ids for s in trains]),
      labels=join([s.labels + offset for s, offset in zip(trains, offsets)]),
      filenames=join([np.char.add(f"{s.dataset}:", s.filenames.astype(str)) for s in trains]),
      name="train", dataset="+".join(s.dataset for s in trains))
