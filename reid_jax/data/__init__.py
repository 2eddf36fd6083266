"""Re-ID datasets (tfds builders) and their tf.data pipelines.

Importing this package registers the builders with tfds: `synthetic_reid`,
`market1501`, `dukemtmc_reid`, `cuhk03`, `msmt17`, `viper`, `grid` and `reid_folder`
(a user's own images).
"""
from reid_jax.data import (  # noqa: F401  registration
    cuhk03, dukemtmc_reid, grid, market1501, msmt17, reid_folder, synthetic_reid, viper)
from reid_jax.data import partitions, sources
from reid_jax.data.batches import Batches, DataError, eval_batches, train_batches
from reid_jax.data.pipeline import (Split, builder, eval_dataset, load_split, train_dataset,
                                    train_size)

__all__ = ["Batches", "DataError", "Split", "builder", "eval_batches", "eval_dataset",
           "load_split", "partitions", "sources", "train_batches", "train_dataset", "train_size"]
