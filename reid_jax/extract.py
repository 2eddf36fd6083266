"""Features of your own images: `python -m reid_jax.extract --workdir=W --images=DIR --out=F.npz`.

Writes `features` [N, D] float32 and `paths` [N] (the images under DIR, sorted)
to the .npz file, computed exactly as the evaluation does (`FeatureExtractor`).
An unreadable image is an error listing every such file, unless `--skip_bad`
leaves them out and reports them. The file appears only when complete.
"""

import numpy as np
from absl import app, flags

from reid_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by reid_jax.main.")
_IMAGES = flags.DEFINE_string("images", None, "A folder of JPEG/PNG images (searched "
                              "recursively), or one image file.")
_OUT = flags.DEFINE_string("out", None, "The .npz file to write.")
_FLIP = flags.DEFINE_bool("flip", None, "Average each feature with its mirrored image's "
                          "(default: the run's config.flip_test).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Images per batch (default: the run's "
                                   "config.eval_batch_size).")
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False, "Leave out unreadable images and report them, "
                              "instead of stopping.")
flags.mark_flags_as_required(["workdir", "images", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  paths = cli.image_paths(_IMAGES.value, "--images")
  cli.check_out_folder(_OUT.value)
  extract = cli.load(_WORKDIR.value, flip=_FLIP.value, batch_size=_BATCH_SIZE.value)
  features, kept, bad = cli.features(extract, paths, _SKIP_BAD.value)
  with cli.exit_on_write_error(_OUT.value):
    cli.write_npz_atomically(_OUT.value, features=features, paths=np.array(kept))
  skipped = f"; skipped {len(bad)} unreadable" if bad else ""
  print(f"Wrote {features.shape[0]} features of dimension {features.shape[1]} to {_OUT.value} "
        f"({extract.config.model}, step {extract.step}){skipped}.")


if __name__ == "__main__":
  app.run(main)
