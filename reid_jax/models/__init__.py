"""Networks by name, from the `SPEC` each `models/<net>.py` exports.

`get_model(name, num_classes, **overrides)` returns a `flax.linen.Module` whose
`__call__(images, train)` returns a dict with at least `'embedding'`;
`get_loss(name)` returns its training objective
`loss(outputs, batch, params, **config.loss) -> (scalar, {name: scalar})`, so the
trainer never needs to know which network it trains; `get_spec(name)` the whole
contract (`reid_jax.models.spec`). Every module of this package that defines a
`SPEC` is registered: a new network needs no edit here.
"""
import importlib
import pkgutil

from reid_jax.models.spec import NetworkSpec


def _discover():
  specs = {}
  for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    module = importlib.import_module(f"{__name__}.{info.name}")
    spec = getattr(module, "SPEC", None)
    if isinstance(spec, NetworkSpec):
      if spec.name in specs:
        raise ValueError(f"Two networks are named {spec.name!r}.")
      specs[spec.name] = spec
  return specs


_SPECS = _discover()


def names():
  return sorted(_SPECS)


def get_spec(name):
  """The `NetworkSpec` of network `name`."""
  if name not in _SPECS:
    raise ValueError(f"Unknown model {name!r}; known models: {', '.join(names())}.")
  return _SPECS[name]


def get_model(name, num_classes, **overrides):
  """The network `name` with identity classifiers of `num_classes` outputs (0: none)."""
  return get_spec(name).module(num_classes=num_classes, **overrides)


def get_loss(name):
  """The training objective of network `name`."""
  return get_spec(name).loss
