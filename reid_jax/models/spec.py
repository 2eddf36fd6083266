"""The network contract: what the trainer, evaluator and weight import know of a network.

Each `models/<net>.py` exports one `NetworkSpec` named `SPEC` beside its module.
Everything generic derives from it: the registry (`reid_jax.models`), the inputs
the train step and the feature extractor hand the module, the dummy inputs of
`init`, the loss and its configurable keywords, the evaluation kind and the
ImageNet weight layout. Adding a network means adding its file, its config and
its tests; nothing else changes.

A module's `__call__(<first input>, train=..., **<other inputs>)` returns a dict:
`'embedding'` [B, D] (the test-time feature), `'logits'` [H, B, C] (the H
identity heads, stacked, when it has classes), `'metric_features'` [H, B, D]
(the features of metric losses, if any); intermediates only through
`self.sow('intermediates', ...)`. A 'pairwise' network (KPM) also has the
methods `encode(images)` (a dict of per-image arrays, computed once per image)
and `score(encoded_query, encoded_gallery)` ([Q, G] same-person logits).
"""
import dataclasses
import inspect
from typing import Any, Callable, Optional

import jax.numpy as jnp

# Positional parameters of every loss: loss(outputs, batch, params, **config.loss).
LOSS_POSITIONAL = ("outputs", "batch", "params")
# How a trained network is scored; `reid_jax.evaluate` implements each kind.
EVALUATIONS = ("embedding", "pairwise")


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
  """One network's side of the contract.

  name: the registry name (`config.model`).
  module: the `flax.linen.Module` class; `num_classes` is its first field.
  loss: `loss(outputs, batch, params, **kwargs) -> (total, {name: scalar})`;
    its keyword arguments and defaults are the network's `config.loss`.
  inputs: (batch key, channels) of each [B, H, W, channels] float input the module
    reads, in order: the first is passed positionally, the others by their key.
  train_inputs: (batch key, channels) of inputs read in training only, passed by
    their key when the batch has them (MPN's person `mask`).
  requires: None, or a function of the configured module giving the keys of
    `train_inputs` it cannot train without (MPN's mask prior needs `mask`, its
    uniform prior nothing); the trainer checks them against the dataset.
  train_labels: the module reads the batch's identity labels [B] in training,
    as the keyword `label` (KPM draws its training pairs from them).
  evaluation: how it is scored at test time: 'embedding' = distances between the
    `embedding` outputs of query and gallery images; 'pairwise' = the module's
    `score` of encoded query and gallery images (`reid_jax.evaluate`).
  imagenet_layout: None, or a function of the params tree giving the
    (Flax module prefix, torchvision module prefix) pairs that receive ImageNet
    ResNet-50 weights (`reid_jax.pretrained`).
  """
  name: str
  module: type
  loss: Callable[..., Any]
  inputs: tuple = (("image", 3),)
  train_inputs: tuple = ()
  requires: Optional[Callable[[Any], tuple]] = None
  train_labels: bool = False
  evaluation: str = "embedding"
  imagenet_layout: Optional[Callable[[Any], list]] = None

  def __post_init__(self):
    params = list(inspect.signature(self.loss).parameters)
    if tuple(params[:3]) != LOSS_POSITIONAL:
      raise TypeError(f"{self.name}: the loss must take {LOSS_POSITIONAL} first, not {params[:3]}.")
    if self.evaluation not in EVALUATIONS:
      raise ValueError(f"{self.name}: evaluation {self.evaluation!r} is not one of {EVALUATIONS}.")

  @property
  def input_keys(self):
    return tuple(key for key, _ in self.inputs)

  def loss_defaults(self):
    """{keyword: default} of the loss beyond (outputs, batch, params): `config.loss`."""
    params = list(inspect.signature(self.loss).parameters.values())[3:]
    return {p.name: p.default for p in params}

  def bind_loss_kwargs(self, kwargs):
    """Raises TypeError naming the accepted keywords when `kwargs` does not fit the loss."""
    try:
      inspect.signature(self.loss).bind(None, None, None, **kwargs)
    except TypeError as e:
      raise TypeError(f"{e}; {self.name}'s loss accepts {sorted(self.loss_defaults())}") from None

  def module_fields(self):
    """The constructor fields of the module beyond `num_classes` (config.model_kwargs)."""
    fields = [f.name for f in dataclasses.fields(self.module) if f.init]
    return [f for f in fields if f not in ("num_classes", "parent", "name")]

  def required_inputs(self, model):
    """The batch keys `model` (a configured module) cannot train without."""
    return self.input_keys + tuple(self.requires(model) if self.requires else ())

  def apply_inputs(self, batch, train=False):
    """(args, kwargs) for `module.apply(variables, *args, train=train, **kwargs)`:
    the declared inputs, plus in training the `train_inputs` the batch has."""
    missing = [k for k in self.input_keys if k not in batch]
    if missing:
      raise KeyError(f"{self.name} reads batch keys {list(self.input_keys)}; the batch has "
                     f"{sorted(batch)} (missing {missing}).")
    first, *rest = self.input_keys
    if train:
      rest += [k for k, _ in self.train_inputs if k in batch]
      if self.train_labels:
        rest.append("label")
    return (batch[first],), {k: batch[k] for k in rest}

  def init(self, model, rng, image_size):
    """`model.init` on zero inputs of `image_size` (height, width), train inputs included."""
    args, kwargs = self.apply_inputs(self.dummy_batch(image_size), train=True)
    return model.init(rng, *args, train=False, **kwargs)

  def dummy_batch(self, image_size, batch_size=1):
    """Zero inputs of the declared shapes, for `init` and `jax.eval_shape`."""
    batch = {key: jnp.zeros((batch_size, *image_size, channels), jnp.float32)
             for key, channels in self.inputs + self.train_inputs}
    if self.train_labels:
      batch["label"] = jnp.zeros((batch_size,), jnp.int32)
    return batch
