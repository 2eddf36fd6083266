"""The re-ID data of a run: `config.dataset` built, read and checked against the config.

`load` is what the trainer and the evaluator call: the sources' tfds builders
(`data.sources`), the values of the config they cannot serve raised as
`ConfigError`s naming the key (before any split is read, then right after the
training split loads, before anything compiles), and the splits.
"""
from reid_jax import config_schema, data, models
from reid_jax.config_schema import fail


def load(config, splits=("train", "query", "gallery")):
  """`data.sources.ReidData` of `config.dataset`, partition `config.split` (and
  `config.train_on`); without 'train' only the evaluated (first) source is built."""
  names = data.sources.names(config.dataset)
  if "train" not in splits:
    names = names[:1]
  dataset_builders = [data.builder(name, config.data_dir, config.manual_dir) for name in names]
  check_dataset_info(config, [b.info for b in dataset_builders])
  try:
    reid = data.sources.load(dataset_builders, config.split, splits,
                             whole=config.train_on == "all")
  except data.sources.WholeSourceError as e:
    raise config_schema.ConfigError(f"config.train_on='all': {e}") from None
  if reid.train is not None:
    check_against_dataset(config, reid.train, reid.info)
  return reid


def check_dataset_info(config, dataset_infos):
  """Raises ConfigError for values the built datasets (their tfds `info`s, the
  evaluated one first) cannot serve, before any split is read: a `split` beyond the
  evaluated dataset's partitions, or CUHK03's classic partitions evaluated by
  another protocol than its single-shot `cuhk03`."""
  count = data.partitions.num_partitions(dataset_infos[0])
  if config.split >= count:
    fail("split", config.split, f"{config.dataset!r} has {count} partition"
         f"{'s (0 to ' + str(count - 1) + ')' if count > 1 else ' (0)'}")
  wanted = (dataset_infos[0].metadata or {}).get("protocol")
  if wanted and config.eval.protocol != wanted:
    fail("eval.protocol", config.eval.protocol, f"{config.dataset!r} is evaluated by the "
         f"{wanted!r} protocol (set --config.eval.protocol={wanted})")


def check_against_dataset(config, train_split, dataset_info):
  """Raises ConfigError for values the loaded training split cannot serve, right after
  it loads and before anything compiles: more identities per batch than it has,
  a random batch larger than it, or a batch key the network trains on that it
  lacks (MPN's mask prior on a dataset without person masks). `dataset_info` is
  the tfds builder's `info`."""
  num_ids = len(set(train_split.labels.tolist()))
  where = f"the train split of {config.dataset!r}"
  if config.sampler == "pk" and config.p_identities > num_ids:
    fail("p_identities", config.p_identities, f"{where} has only {num_ids} identities")
  size = data.train_size(train_split, config)
  if config.sampler == "random" and config.batch_size > size:
    fail("batch_size", config.batch_size, f"{where} has only {size} images (with its copies)")
  spec = models.get_spec(config.model)
  module = models.get_model(config.model, 0, **config.model_kwargs)
  available = {"image", "label"} | ({"mask"} if train_split.masks is not None else set())
  missing = [k for k in spec.required_inputs(module) if k not in available]
  if not missing:
    return
  kwargs = ", ".join(f"{k}={v!r}" for k, v in dict(config.model_kwargs).items())
  why = (f"{config.model}({kwargs}) trains on batch keys {missing} and dataset "
         f"{config.dataset!r} has none")
  if "mask" in missing:
    folder = dataset_info.metadata.get("mask_folder") or "the dataset's mask folder"
    why += (f". Put one PNG person mask per image (the image's relative path, .png; any "
            f"non-zero pixel = person) in {folder}, then delete the built dataset "
            f"{dataset_info.data_dir} so that it is rebuilt with them; or set "
            "--config.model_kwargs.prior=uniform, which needs no masks")
  fail("model_kwargs", dict(config.model_kwargs), why)
