"""`--config.KEY=...` overrides of keys a config lacks, named with the keys it has.

absl's config flags fail on such an override with a bare AttributeError or
KeyError; `reid_jax.main` asks `unknown_override` for the one-line message instead.
"""
import importlib.util

import ml_collections


def _config_from_flags(argv):
  """The config `--config=FILE[:ARG]` in `argv` names, without its overrides."""
  value = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if value is None:
    return None
  path, _, arg = value.partition(":")
  spec = importlib.util.spec_from_file_location("config_file", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def unknown_override(argv, override):
  """The message for `--config.KEY=...` when the config has no KEY, else None."""
  key = override[len("--config."):].split("=", 1)[0]
  config = _config_from_flags(argv)
  if config is None:
    return None
  node, path = config, []
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict):
      return None
    if part not in node:
      where = "config" + "".join(f".{p}" for p in path)
      what = {"loss": f" (the keyword arguments of {config.model}'s loss)",
              "eval": " (the keyword arguments of metrics.evaluate_features)"}.get(".".join(path), "")
      return (f"--config.{key}: {where} has no key {part!r}; it accepts "
              f"{sorted(node.keys())}{what}.")
    node = node[part]
    path.append(part)
  return None
