"""Exports a trained network for serving: `python -m reid_jax.export --workdir=W
--format=savedmodel|stablehlo --out=DIR`.

The export maps uint8 RGB images [b, H, W, 3] at the run's `config.image_size` to
its [b, D] test features, for any batch size b (`reid_jax.serving` says what is
inside). `DIR/reid_jax_export.json` describes the input and output. DIR appears
only when complete.
"""

from absl import app, flags

from reid_jax import cli, serving

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by reid_jax.main.")
_FORMAT = flags.DEFINE_enum("format", None, serving.FORMATS,
                            "savedmodel (jax2tf, for TF Serving / TFLite) or stablehlo "
                            "(jax.export, for JAX runtimes).")
_OUT = flags.DEFINE_string("out", None, "The folder to write (absent or empty).")
_FLIP = flags.DEFINE_bool("flip", None, "Average each feature with its mirrored image's "
                          "(default: the run's config.flip_test).")
_PLATFORMS = flags.DEFINE_list("platforms", None, "Backends to export for, e.g. cpu,cuda "
                               "(default: the one this runs on).")
flags.mark_flags_as_required(["workdir", "format", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.check_out_folder(_OUT.value.rstrip("/"))
  extract = cli.load(_WORKDIR.value, flip=_FLIP.value)
  with cli.exit_on_write_error(_OUT.value):
    serving.export(extract, _FORMAT.value, _OUT.value, _PLATFORMS.value)
  print(f"Exported {extract.config.model} (step {extract.step}) as {_FORMAT.value} to "
        f"{_OUT.value}.")


if __name__ == "__main__":
  app.run(main)
