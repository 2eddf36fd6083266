"""A corrupt image ends the run at once with `DataError` naming it, never a hang.

The hang this guards against: the training iterator's tf.data threads call back
into Python (the sampler is a generator). Left alive in the frames of an uncaught
exception, the iterator was freed only in the interpreter's teardown, which then
waited forever for a thread that could no longer enter Python.
"""
import io
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import numpy as np
import PIL.Image
import pytest

from reid_jax import config_schema, inference, sharding
from reid_jax.data import augment, pipeline
from reid_jax.data import batches as batches_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H, W = 32, 16
JPEG_ERROR = "jpeg::Uncompress failed. Invalid JPEG data or crop window."


def _encode(value, fmt, channels=3):
  buffer = io.BytesIO()
  PIL.Image.fromarray(np.full((H, W, channels), value, np.uint8).squeeze()).save(buffer, fmt)
  return buffer.getvalue()


def _truncated_jpeg():
  """A JPEG cut short, as a failed copy leaves it: the header is fine, the data not."""
  rng = np.random.default_rng(0)
  buffer = io.BytesIO()
  PIL.Image.fromarray(rng.integers(0, 256, (64, 32, 3), np.uint8)).save(buffer, "JPEG")
  data = buffer.getvalue()
  return data[:len(data) // 2]


def _split(bad=(), bad_masks=(), n=8, with_masks=False, name="train"):
  """n JPEGs of n // 2 identities; those at `bad` (masks at `bad_masks`) corrupt."""
  images = [_truncated_jpeg() if i in bad else _encode(i, "JPEG") for i in range(n)]
  masks = [b"\x89PNG garbage" if i in bad_masks else _encode(255, "PNG", 1) for i in range(n)]
  labels = np.repeat(np.arange(n // 2), 2)
  return pipeline.Split(
      images=np.array(images, dtype=object),
      masks=np.array(masks, dtype=object) if with_masks else None,
      person_ids=labels + 1, camera_ids=np.arange(n) % 2,
      labels=labels if name == "train" else np.full(n, -1),
      filenames=np.array([f"{i:04d}_c1s1_{i:06d}_00.jpg" for i in range(n)]),
      name=name, dataset="market1501")


def _config():
  c = config_schema.base_config("mlfn")
  c.image_size = (H, W)
  c.p_identities, c.k_instances = 4, 2  # every batch holds all 8 images
  c.eval_batch_size = 4
  return c


def test_a_corrupt_training_image_raises_data_error_naming_it_at_once():
  batches = batches_lib.train_batches(_split(bad=(3,)), _config())
  tf_iterator = weakref.ref(batches._iterator)
  start = time.monotonic()
  with pytest.raises(batches_lib.DataError) as error:
    next(batches)
  assert time.monotonic() - start < 30
  assert str(error.value) == (
      f"Cannot decode image 0003_c1s1_000003_00.jpg of split 'train' of market1501: {JPEG_ERROR}")
  assert isinstance(error.value, ValueError)
  assert error.value.__context__ is None and error.value.__cause__ is None  # no tf frames
  assert tf_iterator() is None  # freed before the error is raised: its threads are gone
  with pytest.raises(StopIteration):
    next(batches)


def test_every_corrupt_image_and_mask_of_the_failing_batch_is_named():
  batches = batches_lib.train_batches(_split(bad=(1, 6), bad_masks=(4,), with_masks=True), _config())
  with pytest.raises(batches_lib.DataError) as error:
    next(batches)
  message = str(error.value)
  assert message.startswith("Cannot decode ")
  for what in ("image 0001_c1s1_000001_00.jpg", "person mask of image 0004_c1s1_000004_00.jpg",
               "image 0006_c1s1_000006_00.jpg"):
    assert f"{what} of split 'train' of market1501: " in message
  assert "\n" not in message
  assert "0000_c1s1" not in message


def test_a_failing_pipeline_without_a_bad_image_names_the_split_and_step(monkeypatch):
  def broken_shift(*args):
    raise RuntimeError("the sampler broke")

  monkeypatch.setattr(augment, "offline_shift", broken_shift)
  batches = batches_lib.train_batches(_split(), _config(), start_step=4)
  with pytest.raises(batches_lib.DataError) as error:
    next(batches)
  assert str(error.value) == ("Input pipeline of split 'train' of market1501 failed on the batch "
                              "of step 5: RuntimeError: the sampler broke")


def test_a_corrupt_evaluation_image_raises_data_error_naming_it():
  batches = batches_lib.eval_batches(_split(bad=(6,), name="gallery"), 4, (H, W))
  assert list(next(batches)["index"]) == [0, 1, 2, 3]
  with pytest.raises(batches_lib.DataError) as error:
    next(batches)
  assert str(error.value) == (
      f"Cannot decode image 0006_c1s1_000006_00.jpg of split 'gallery' of market1501: {JPEG_ERROR}")


def test_extract_features_raises_data_error_naming_the_corrupt_image():
  # The first batch fails, so nothing is embedded: no network is needed.
  with pytest.raises(batches_lib.DataError, match="image 0002_c1s1_000002_00.jpg of split 'query'"):
    inference.extract_features(None, None, _split(bad=(2,), name="query"), _config(),
                              sharding.create_mesh())


# The pipeline's threads are kept inside the Python generator (its images are slow to
# index), and the error goes uncaught: the traceback holds every frame until the
# interpreter's teardown, which hung while an iterator was left to it. The pipeline
# frees its iterator at a DataError, and at exit one that another error left open.
_UNCAUGHT = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, {tests!r})
    import corrupt_image_test as t
    from reid_jax.data import batches as batches_lib, pipeline

    class SlowImages(np.ndarray):
      def __getitem__(self, i):
        time.sleep(0.02)
        return super().__getitem__(i)

    mode = sys.argv[1]
    # Every training batch holds all 8 images; evaluation has 200 to go through.
    split = t._split(bad=() if mode == "elsewhere" else (0,), n=200 if mode == "gallery" else 8,
                     name="gallery" if mode == "gallery" else "train")
    split = pipeline.Split(**{{**split.__dict__, "images": split.images.view(SlowImages)}})
    if mode == "gallery":
      batches = batches_lib.eval_batches(split, 4, (t.H, t.W))
    else:
      batches = batches_lib.train_batches(split, t._config())
    print("iterating", flush=True)
    next(batches)
    raise RuntimeError("the train step broke")  # mode 'elsewhere': the pipeline is fine
""")


@pytest.mark.parametrize("mode, error", [
    ("train", "DataError: Cannot decode image 0000_c1s1_000000_00.jpg"),
    ("gallery", "DataError: Cannot decode image 0000_c1s1_000000_00.jpg"),
    ("elsewhere", "RuntimeError: the train step broke")])
def test_an_uncaught_error_ends_the_process_at_once(tmp_path, mode, error):
  script = tmp_path / "uncaught.py"
  script.write_text(_UNCAUGHT.format(tests=os.path.dirname(os.path.abspath(__file__))))
  process = subprocess.Popen([sys.executable, str(script), mode], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  try:
    assert process.stdout.readline() == "iterating\n"  # imports done, however slow
    start = time.monotonic()
    _, stderr = process.communicate(timeout=60)
  finally:
    process.kill()
  assert time.monotonic() - start < 60
  assert process.returncode == 1
  assert error in stderr


def _watch(process):
  """Collects `process`'s stderr lines with their arrival time, in a thread."""
  lines = []

  def read():
    for line in process.stderr:
      lines.append((time.monotonic(), line))

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  return lines, reader


def test_main_ends_on_a_corrupt_market_jpeg_naming_it(tmp_path, write_release):
  """The dataset build checks every image: the run ends before training, naming the file."""
  root = "Market-1501-v15.09.15"
  bad = "0002_c1s1_000451_03.jpg"
  names = [("bounding_box_train", "0002_c1s1_000001_00.jpg"),
           ("bounding_box_train", "0004_c1s1_000001_00.jpg"),
           ("bounding_box_train", "0004_c2s1_000002_00.jpg")]
  names += [("query", f"{pid:04d}_c1s1_000100_00.jpg") for pid in (11, 13)]
  names += [("bounding_box_test", f"{pid:04d}_c2s1_00020{i}_00.jpg") for pid in (11, 13)
            for i in range(2)]
  manual_dir, _ = write_release(
      root, names, extra={f"{root}/bounding_box_train/{bad}": _truncated_jpeg()})
  workdir, data_dir = tmp_path / "w", tmp_path / "tfds"
  process = subprocess.Popen(
      [sys.executable, "-m", "reid_jax.main", "--config=configs/mlfn.py:synthetic",
       "--config.dataset=market1501", f"--config.manual_dir={manual_dir}",
       f"--config.data_dir={data_dir}", "--config.image_size=(64,32)",
       "--config.p_identities=2", "--config.k_instances=2",
       "--config.num_train_steps=3", "--config.eval_at_start=False", f"--workdir={workdir}",
       "--verbosity=0"],  # the log says when the build starts
      cwd=ROOT, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  lines, reader = _watch(process)
  try:
    process.wait(timeout=600)  # start-up, on a loaded machine
  finally:
    process.kill()
  reader.join(10)
  end = time.monotonic()
  stderr = "".join(line for _, line in lines)
  started = [t for t, line in lines if "Generating dataset market1501" in line]
  assert started, stderr
  assert end - started[0] < 45, stderr
  assert process.returncode == 1, stderr
  assert (f"error: Market-1501: 1 of 10 images cannot be decoded: {manual_dir}/{root}/"
          f"bounding_box_train/{bad}: {JPEG_ERROR.rstrip('.')}. Replace or remove them and "
          "build again; nothing was written.\n" in stderr), stderr
  assert "Traceback" not in stderr
  assert not (data_dir / "market1501").exists() or not os.listdir(data_dir / "market1501")
  checkpoints = workdir / "checkpoints"
  assert not checkpoints.exists() or not os.listdir(checkpoints)
