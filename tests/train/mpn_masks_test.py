"""MPN on a Market-1501-format release: masks from the mask folder reach the train step;
without them the mask prior is refused before anything compiles and the uniform prior trains."""
import importlib.util
import io
import json
import os

import numpy as np
from PIL import Image
import pytest

from reid_jax import config_schema, train

ROOT = "Market-1501-v15.09.15"
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "configs")


def _png_or_jpeg(array, fmt):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, fmt)
  return buffer.getvalue()


def _write_release(manual_dir, with_masks):
  """4 train identities x 4 images (2 cameras), 4 query and 8 gallery images of 2 test ids."""
  rng = np.random.default_rng(0)
  names = [("bounding_box_train", f"{pid:04d}_c{cam}s1_{i:06d}_00.jpg")
           for pid in (2, 4, 6, 8) for cam in (1, 2) for i in range(2)]
  names += [("query", f"{pid:04d}_c1s1_{900 + pid:06d}_00.jpg") for pid in (11, 13)]
  names += [("bounding_box_test", f"{pid:04d}_c2s1_{i:06d}_00.jpg") for pid in (11, 13)
            for i in range(4)]
  for folder, name in names:
    person = np.zeros((64, 32), bool)
    top = int(rng.integers(0, 16))
    person[top:top + 48, 8:24] = True
    image = np.where(person[..., None], rng.integers(0, 256, 3), 40).astype(np.uint8)
    path = manual_dir / ROOT / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png_or_jpeg(image, "JPEG"))
    if with_masks:
      mask = manual_dir / f"{ROOT}_masks" / folder / name.replace(".jpg", ".png")
      mask.parent.mkdir(parents=True, exist_ok=True)
      mask.write_bytes(_png_or_jpeg(person.astype(np.uint8) * 255, "PNG"))


def _config(tmp_path, with_masks, prior):
  spec = importlib.util.spec_from_file_location("mpn_config", os.path.join(CONFIGS, "mpn.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("synthetic")
  manual_dir = tmp_path / "manual"
  _write_release(manual_dir, with_masks)
  c.dataset = "market1501"
  c.manual_dir = str(manual_dir)
  c.data_dir = str(tmp_path / "tfds")
  c.image_size = (64, 32)
  c.model_kwargs = dict(prior=prior, num_parts=2, width=0.125, stage_blocks=(1, 1, 1, 1))
  c.p_identities, c.k_instances = 2, 2
  c.eval_batch_size = 16
  c.num_train_steps = 2
  c.lr_decay_steps = ()
  c.eval_at_start = False
  c.checkpoint_every_steps = 2
  c.log_every_steps = 1
  return c


def test_without_masks_the_mask_prior_is_refused_saying_where_masks_go(tmp_path):
  config = _config(tmp_path, with_masks=False, prior="mask")
  folder = os.path.join(config.manual_dir, f"{ROOT}_masks")
  with pytest.raises(config_schema.ConfigError) as error:
    train.train_and_evaluate(config, str(tmp_path / "w"))
  message = str(error.value)
  assert message.startswith("config.model_kwargs=")
  assert "trains on batch keys ['mask'] and dataset 'market1501' has none" in message
  assert f"in {folder}," in message and "--config.model_kwargs.prior=uniform" in message
  assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_without_masks_the_uniform_prior_trains(tmp_path):
  config = _config(tmp_path, with_masks=False, prior="uniform")
  metrics = train.train_and_evaluate(config, str(tmp_path / "w"))
  assert metrics["num_valid_queries"] == 2
  assert os.path.isdir(tmp_path / "w" / "checkpoints" / "2")


def test_with_a_mask_folder_the_mask_prior_trains_on_the_masks(tmp_path):
  config = _config(tmp_path, with_masks=True, prior="mask")
  workdir = tmp_path / "w"
  metrics = train.train_and_evaluate(config, str(workdir))
  assert np.isfinite(metrics["mAP"])
  with open(workdir / "config.json") as f:
    assert json.load(f)["model_kwargs"]["prior"] == "mask"
