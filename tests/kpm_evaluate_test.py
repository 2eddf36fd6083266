"""KPM through the evaluator: cascade and full pairwise modes, and a run through main."""
import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from reid_jax import config_schema, data, evaluate, inference, models, sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(width=0.25, stage_blocks=(1, 1, 1, 1))


@pytest.fixture(scope="module")
def setup(synthetic_data_dir):
  """(config, model, variables, query, gallery): a tiny random KPM and a small
  query / gallery subset of synthetic_reid/small."""
  config = config_schema.base_config("kpm")
  config.dataset, config.data_dir = "synthetic_reid/small", synthetic_data_dir
  config.image_size = (64, 32)
  config.model_kwargs = TINY
  config.eval_batch_size = 16
  dataset = data.builder(config.dataset, config.data_dir)
  query = data.load_split(dataset, "query").take(np.arange(9))
  gallery = data.load_split(dataset, "gallery").take(np.arange(37))
  model = models.get_model("kpm", 0, **TINY)
  variables = models.get_spec("kpm").init(model, jax.random.key(0), config.image_size)
  images = jax.random.normal(jax.random.key(1), (8, 64, 32, 3))
  _, stats = model.apply(variables, images, train=True, label=jnp.arange(8) // 2,
                         mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})
  return config, model, {"params": variables["params"], **stats}, query, gallery


def _evaluate(setup, **pairwise):
  config, model, variables, query, gallery = setup
  config = config.copy_and_resolve_references()
  config.pairwise.update(pairwise)
  return evaluate.evaluate_model(model, variables, query, gallery, config, sharding.create_mesh(),
                                 return_details=True)


def test_full_mode_equals_scoring_every_pair_one_by_one(setup):
  config, model, variables, query, gallery = setup
  full = _evaluate(setup, mode="full", gallery_block=16)
  mesh = sharding.create_mesh()
  eq, eg = (inference.encode_split(model, variables, s, config, mesh) for s in (query, gallery))
  one = lambda tree, i: jax.tree.map(lambda a: a[i:i + 1], tree)
  scores = np.array([[float(model.apply(variables, one(eq, q), one(eg, g), method="score")[0, 0])
                      for g in range(len(gallery))] for q in range(len(query))])
  assert len(np.unique(scores.round(5))) > len(gallery)  # the pairs score differently
  cmc, aps = [], []
  for i in range(len(query)):
    order = np.argsort(-scores[i], kind="stable")
    junk = (gallery.person_ids[order] == -1) | (
        (gallery.person_ids[order] == query.person_ids[i])
        & (gallery.camera_ids[order] == query.camera_ids[i]))
    matches = (gallery.person_ids[order] == query.person_ids[i])[~junk]
    if matches.any():
      hits = np.flatnonzero(matches)
      cmc.append(np.cumsum(matches)[:10] > 0)
      aps.append(np.mean((np.arange(len(hits)) + 1) / (hits + 1)))
  assert full["num_valid_queries"] == len(aps) > 0
  np.testing.assert_allclose(full["cmc"][:10], np.mean(cmc, axis=0))
  np.testing.assert_allclose(full["mAP"], np.mean(aps), rtol=1e-6)


def test_full_mode_equals_cascade_over_the_whole_gallery(setup):
  full = _evaluate(setup, mode="full", gallery_block=64)
  cascade = _evaluate(setup, mode="cascade", top_k=64)
  np.testing.assert_array_equal(full["cmc"], cascade["cmc"])
  assert full["mAP"] == cascade["mAP"] and full["mINP"] == cascade["mINP"]
  np.testing.assert_array_equal(full["ranked_indices"], cascade["ranked_indices"])


def _run(workdir, data_dir, *overrides):
  cmd = [sys.executable, "-m", "reid_jax.main", "--config=configs/kpm.py:synthetic",
         f"--workdir={workdir}", f"--config.data_dir={data_dir}", *overrides]
  run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  return run


def test_a_tiny_kpm_trains_through_main_and_evaluates_in_both_modes(tmp_path, synthetic_data_dir):
  workdir = str(tmp_path / "kpm")
  _run(workdir, synthetic_data_dir, "--config.num_train_steps=200", "--config.lr_decay_steps=()",
       "--config.log_every_steps=20", "--config.checkpoint_every_steps=200")
  untrained = json.load(open(os.path.join(workdir, "eval", "metrics_0.json")))
  cascade = json.load(open(os.path.join(workdir, "metrics.json")))
  assert cascade["step"] == 200 and cascade["mAP"] > untrained["mAP"] + 0.05
  losses = _verification_losses(workdir)
  assert losses[-1] < 0.8 * losses[0]
  _run(workdir, synthetic_data_dir, "--mode=evaluate", "--config.pairwise.mode=full")
  full = json.load(open(os.path.join(workdir, "eval", "step200_full.json")))
  assert os.path.getsize(os.path.join(workdir, "eval", "step200_full_matching.png")) > 10_000
  assert full["pairwise"]["mode"] == "full" and full["mAP"] > untrained["mAP"] + 0.05


def _verification_losses(workdir):
  """The logged 'verification' scalars in step order, from the run's TensorBoard events."""
  values = []
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      values += [(event.step, float(tf.make_ndarray(v.tensor))) for v in event.summary.value
                 if v.tag == "verification"]
  return [value for _, value in sorted(values)]
