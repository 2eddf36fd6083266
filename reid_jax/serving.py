"""A trained network's test feature as a function for serving, exported with a dynamic
batch dimension (`python -m reid_jax.export` writes these exports).

The exported function takes uint8 RGB images [b, H, W, 3] already resized to the
network's `config.image_size` (bilinear, as `tf.image.resize` does) and returns
the [b, D] float32 test feature: the ImageNet normalisation and, when the run's
`config.flip_test` is set, the flip averaging happen inside, exactly as the
evaluation computes them. Networks that read more than the image at test time
take each further input of their `NetworkSpec.inputs` ([b, H, W, C] float32) as
a further argument. KPM exports its `embedding` (the pooled backbone feature, the
first stage of its cascade); its pair scores are not exported.

- `savedmodel`: `jax2tf` with native serialization, the weights as TF variables,
  signature `serving_default(image) -> {'embedding'}` (TF Serving, TFLite).
- `stablehlo`: `jax.export` serialized to `DIR/model.stablehlo`; reload it with
  `jax.export.deserialize(bytes).call(images)`.
Both write `DIR/reid_jax_export.json` (input size, dtype, normalisation, output).
"""
import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from jax.experimental import jax2tf

from reid_jax import inference
from reid_jax.data import augment

FORMATS = ("savedmodel", "stablehlo")
STABLEHLO_FILE = "model.stablehlo"
INFO_FILE = "reid_jax_export.json"


def serving_fn(extractor):
  """`f(variables, images, *inputs) -> [b, D]` float32, images [b, H, W, 3] uint8 at the
  network's size; the other `NetworkSpec.inputs` as [b, H, W, C] float32."""
  embed = inference.embedding_fn(extractor.model, extractor.spec,
                                 bool(extractor.config.flip_test))
  mean = np.asarray(augment.IMAGENET_MEAN, np.float32)
  std = np.asarray(augment.IMAGENET_STD, np.float32)

  def f(variables, images, *inputs):
    normalised = (images.astype(jnp.float32) / 255.0 - mean) / std  # augment.normalize
    return embed(variables, dict(zip(extractor.spec.input_keys, (normalised, *inputs))))

  return f


def _input_shapes(extractor, batch):
  """(shape, dtype) of each input of `serving_fn`, with `batch` as the leading size."""
  return [((batch, *extractor.image_size, channels), np.uint8 if i == 0 else np.float32)
          for i, (_, channels) in enumerate(extractor.spec.inputs)]


def stablehlo(extractor, platforms=None):
  """The `jax.export.Exported` of the feature on a symbolic batch `b`; `platforms`
  (e.g. ('cpu', 'cuda')) defaults to the current backend."""
  variables = jax.device_get(extractor.variables)
  f = jax.jit(functools.partial(serving_fn(extractor), variables))
  (b,) = jax.export.symbolic_shape("b")
  args = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in _input_shapes(extractor, b)]
  return jax.export.export(f, platforms=platforms)(*args)


def savedmodel_module(extractor, platforms=None):
  """A `tf.Module` whose `serve(image, ...)` returns {'embedding': [b, D]}, the
  weights held as TF variables (jax2tf, native serialization, batch polymorphic)."""
  specs = [tf.TensorSpec(shape, tf.as_dtype(dtype), name=key) for (shape, dtype), key in
           zip(_input_shapes(extractor, None), extractor.spec.input_keys)]
  converted = jax2tf.convert(serving_fn(extractor), with_gradient=False,
                             polymorphic_shapes=[None] + ["(b, ...)"] * len(specs),
                             native_serialization_platforms=platforms)
  leaves, tree = jax.tree.flatten(jax.device_get(extractor.variables))
  module = tf.Module()
  module.weights = [tf.Variable(x, trainable=False) for x in leaves]

  @tf.function(autograph=False, input_signature=specs)
  def serve(*inputs):
    return {"embedding": converted(jax.tree.unflatten(tree, list(module.weights)), *inputs)}

  module.serve = serve
  return module


def feature_dim(extractor):
  """D, the size of the exported feature."""
  shapes = [jax.ShapeDtypeStruct(s, d) for s, d in _input_shapes(extractor, 1)]
  return jax.eval_shape(serving_fn(extractor), extractor.variables, *shapes).shape[-1]


def describe(extractor, fmt):
  """What a user needs to feed the export and read its output (the JSON written beside it)."""
  height, width = extractor.image_size
  return {
      "format": fmt, "model": extractor.config.model, "step": extractor.step,
      "inputs": [{"name": key, "shape": [None, height, width, channels],
                  "dtype": "uint8" if i == 0 else "float32"}
                 for i, (key, channels) in enumerate(extractor.spec.inputs)],
      "image": {"channels": "RGB", "resize": f"bilinear to {height}x{width} (tf.image.resize)",
                "normalisation": "inside: (x / 255 - mean) / std",
                "mean": list(augment.IMAGENET_MEAN), "std": list(augment.IMAGENET_STD)},
      "output": {"name": "embedding", "shape": [None, feature_dim(extractor)],
                 "dtype": "float32"},
      "flip_averaged": bool(extractor.config.flip_test), "metric": extractor.config.eval.metric,
  }


def export(extractor, fmt, out, platforms=None):
  """Writes the `fmt` export of `extractor`'s network to the folder `out` (which must not
  exist or be empty), built beside it and renamed into place when complete."""
  if fmt not in FORMATS:
    raise ValueError(f"format {fmt!r} is not one of {FORMATS}.")
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise FileExistsError(f"{out} exists and is not an empty folder.")
  tmp = f"{out.rstrip(os.sep)}.tmp{os.getpid()}"
  try:
    if fmt == "savedmodel":
      module = savedmodel_module(extractor, platforms)
      tf.saved_model.save(module, tmp, signatures={"serving_default": module.serve})
    else:
      os.makedirs(tmp)
      with open(os.path.join(tmp, STABLEHLO_FILE), "wb") as f:
        f.write(stablehlo(extractor, platforms).serialize())
    with open(os.path.join(tmp, INFO_FILE), "w") as f:
      json.dump(describe(extractor, fmt), f, indent=2)
    if os.path.isdir(out):
      os.rmdir(out)
    os.replace(tmp, out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out
