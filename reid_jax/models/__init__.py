"""Networks by name.

`get_model(name, num_classes, **overrides)` returns a `flax.linen.Module` whose
`__call__(images, train)` returns a dict with at least `'embedding'`;
`get_loss(name)` returns that network's training objective
`loss(outputs, labels, **config.loss) -> (scalar, {name: scalar})`, so the trainer
never needs to know which network it trains.
"""
from reid_jax.models import mgn, mlfn, resnet

_MODELS = {
    "mlfn": (mlfn.MLFN, mlfn.loss),
    "mgn": (mgn.MGN, mgn.loss),
    "resnet50": (resnet.ResNet, resnet.loss),
}


def names():
  return sorted(_MODELS)


def _lookup(name):
  if name not in _MODELS:
    raise ValueError(f"Unknown model {name!r}; known models: {', '.join(names())}.")
  return _MODELS[name]


def get_model(name, num_classes, **overrides):
  """The network `name` with an identity classifier of `num_classes` outputs."""
  return _lookup(name)[0](num_classes=num_classes, **overrides)


def get_loss(name):
  """The training objective of network `name`."""
  return _lookup(name)[1]
