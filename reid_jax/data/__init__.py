"""Re-ID datasets (tfds builders) and their tf.data pipelines.

Importing this package registers the builders `synthetic_reid`, `market1501` and
`dukemtmc_reid` with tfds.
"""
from reid_jax.data import dukemtmc_reid, market1501, synthetic_reid  # noqa: F401  registration
from reid_jax.data.batches import Batches, DataError, eval_batches, train_batches
from reid_jax.data.pipeline import (Split, builder, eval_dataset, load_split, train_dataset,
                                    train_size)

__all__ = ["Batches", "DataError", "Split", "builder", "eval_batches", "eval_dataset", "load_split",
           "train_batches", "train_dataset", "train_size"]
