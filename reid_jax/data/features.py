"""The feature schema every re-ID dataset shares (the pipeline relies on it)."""
import numpy as np
import tensorflow_datasets as tfds

from reid_jax.data import partitions


def reid_features(encoding_format, with_mask=False, num_partitions=None):
  """image, person_id (-1 junk, 0 distractor), 0-based camera_id, train label and
  filename; with_mask adds a coarse person mask (255 on the person). Every builder
  passes with_mask=True; one without masks stores 1x1 black ones and says so in its
  metadata (`has_masks`). With `num_partitions`, the `roles` of each image in each
  partition (see `partitions`); labels are then -1, numbered when a partition loads."""
  features = {
      "image": tfds.features.Image(shape=(None, None, 3), encoding_format=encoding_format),
      "person_id": tfds.features.Scalar(np.int64, doc="-1 junk, 0 distractor."),
      "camera_id": tfds.features.Scalar(np.int64, doc="0-based."),
      "label": tfds.features.Scalar(np.int64, doc="Train class index; -1 in query/gallery."),
      "filename": tfds.features.Text(),
  }
  if with_mask:
    features["mask"] = tfds.features.Image(
        shape=(None, None, 1), encoding_format="png",
        doc="255 on the person, 0 elsewhere; 1x1 black when the dataset has none.")
  if num_partitions is not None:
    features["roles"] = partitions.roles_feature(num_partitions)
  return tfds.features.FeaturesDict(features)


def reid_info(builder, encoding_format, description, homepage=None, num_partitions=None):
  """The `DatasetInfo` every re-ID builder returns from `_info`: `reid_features` with
  masks (and `roles` for `num_partitions`), and metadata the builder fills in
  `_split_generators`."""
  return tfds.core.DatasetInfo(
      builder=builder, description=description, homepage=homepage,
      features=reid_features(encoding_format, with_mask=True, num_partitions=num_partitions),
      metadata=tfds.core.MetadataDict())
