"""Datasets evaluated over several train/test partitions (CUHK03 classic, VIPeR, GRID).

The papers report such datasets as the mean over fixed random partitions of the
identities into train and test. Their builders store every image once, in the
tfds split `images`, with a `roles` feature: roles[k] is the bit set (TRAIN,
QUERY, GALLERY) of what the image is in partition k (0: unused there; QUERY |
GALLERY: both, as in CUHK03's classic protocol). The builder's metadata holds
`num_partitions`. `pipeline.load_split(builder, 'train', partition=k)` selects
the rows of partition k and numbers the train identities 0..n-1 in id order.
"""
from absl import logging
import numpy as np
import tensorflow_datasets as tfds

SPLIT = "images"
TRAIN, QUERY, GALLERY = 1, 2, 4
ROLES = {"train": TRAIN, "query": QUERY, "gallery": GALLERY}


def roles_feature(num_partitions: int) -> tfds.features.Tensor:
  return tfds.features.Tensor(
      shape=(num_partitions,), dtype=np.uint8,
      doc=f"Per partition: bit set of train ({TRAIN}), query ({QUERY}), gallery ({GALLERY}).")


def num_partitions(info) -> int:
  """How many partitions a built dataset has (1 for one fixed train/query/gallery)."""
  return int((info.metadata or {}).get("num_partitions", 1))


def rows(roles: np.ndarray, split: str, partition: int) -> np.ndarray:
  """Indices of the images of `split` in `partition`, given roles [N, num_partitions]."""
  return np.flatnonzero(roles[:, partition] & ROLES[split])


def train_labels(person_ids: np.ndarray) -> np.ndarray:
  """Contiguous class indices 0..n-1 of the person ids [N], in id order."""
  return np.unique(person_ids, return_inverse=True)[1].astype(np.int64)


def warn_on_counts(name: str, image_roles: np.ndarray, official: dict) -> None:
  """Logs one warning when a partition's split sizes differ from `official` (split ->
  images in every partition of the real release); image_roles [N, num_partitions]."""
  for k in range(image_roles.shape[-1]):
    found = {split: int(np.count_nonzero(image_roles[:, k] & bit)) for split, bit in ROLES.items()}
    if found != official:
      logging.warning(
          "%s: partition %d has %s images; the official release has %s in every partition. "
          "Building from what was found.", name, k, found, official)
      return
