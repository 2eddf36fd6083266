"""The after-training entry points end to end: `python -m reid_jax.extract`, `.search`
and `.export` on a trained run, as a user runs them."""
import csv
import io
import json
import os
import subprocess
import sys

import jax
import numpy as np
import PIL.Image
import pytest

from reid_jax import cli, data, evaluate, extractor, inference, metrics, serving, sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def folders(tmp_path_factory, synthetic_data_dir):
  """`query/` (2 images) and `gallery/` (10, the queries first) of synthetic_reid/small
  PNGs, and `mixed/`: 3 of them beside a truncated JPEG, an empty file and a text file
  named .png (and a .txt, which is not listed)."""
  query = data.load_split(data.builder("synthetic_reid/small", synthetic_data_dir), "query")
  root = tmp_path_factory.mktemp("folders")
  for folder, rows in (("query", range(2)), ("gallery", range(10)), ("mixed", range(3))):
    os.makedirs(root / folder)
    for i in rows:
      (root / folder / f"{i:02d}.png").write_bytes(query.images[i])
  buffer = io.BytesIO()
  PIL.Image.open(io.BytesIO(query.images[0])).save(buffer, "JPEG")
  (root / "mixed" / "03_truncated.jpg").write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
  (root / "mixed" / "04_empty.png").write_bytes(b"")
  (root / "mixed" / "05_notes.png").write_text("not an image")
  (root / "mixed" / "readme.txt").write_text("not an image name")
  return root


def _run(tool, *flags):
  return subprocess.run([sys.executable, "-m", f"reid_jax.{tool}", *flags], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


def test_extract_writes_the_evaluations_features_and_paths_or_nothing(two_step_run, folders,
                                                                       tmp_path):
  config, workdir = two_step_run
  mixed, out = folders / "mixed", tmp_path / "features.npz"
  extract = extractor.FeatureExtractor(workdir)
  with pytest.raises(SystemExit) as error:
    cli.features(extract, str(mixed), skip_bad=False)
  message = str(error.value.code)
  assert message.startswith("error: Cannot read 3 image(s): ")
  assert message.endswith("(--skip_bad leaves them out).") and "\n" not in message
  for name in ("03_truncated.jpg", "04_empty.png", "05_notes.png"):
    assert str(mixed / name) in message

  run = _run("extract", f"--workdir={workdir}", f"--images={mixed}", f"--out={out}",
             "--skip_bad")
  assert run.returncode == 0, run.stderr[-3000:]
  assert f"skipped {mixed / '04_empty.png'}: Input is empty." in run.stderr
  assert "3/3" in run.stderr   # the progress bar
  assert f"Wrote 3 features of dimension 32 to {out} (mlfn, step 2); skipped 3" in run.stdout
  assert os.listdir(tmp_path) == ["features.npz"]   # no temporary left
  good = [str(mixed / f"{i:02d}.png") for i in range(3)]
  mesh = sharding.create_mesh()
  variables, step, model = evaluate._read_checkpoint(config, workdir, mesh)
  split = extractor.FeatureExtractor.split([open(p, "rb").read() for p in good], good)
  with np.load(out) as saved:
    assert list(saved["paths"]) == good and extract.step == step == 2
    np.testing.assert_array_equal(
        saved["features"], inference.extract_features(model, variables, split, config, mesh))


def test_search_ranks_an_unlabelled_gallery_by_the_runs_metric(two_step_run, folders, tmp_path):
  _, workdir = two_step_run
  out = tmp_path / "out"
  run = _run("search", f"--workdir={workdir}", f"--query={folders / 'query'}",
             f"--gallery={folders / 'gallery'}", "--top_k=3", f"--out={out}")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "Ranked 10 gallery images for 2 queries (mlfn, step 2)" in run.stdout

  extract = extractor.FeatureExtractor(workdir)
  qf, gf = extract(str(folders / "query")), extract(str(folders / "gallery"))
  expected = metrics.pairwise_distance(qf, gf, "euclidean")   # the run's metric
  np.testing.assert_allclose(expected, np.linalg.norm(qf[:, None] - gf[None], axis=-1),
                             atol=2e-3)
  with open(out / "top3.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 6
  for q in range(2):
    mine = rows[3 * q:3 * q + 3]
    assert {r["query"] for r in mine} == {str(folders / "query" / f"{q:02d}.png")}
    assert [int(r["rank"]) for r in mine] == [1, 2, 3]
    ranked = [int(os.path.basename(r["gallery"])[:2]) for r in mine]
    assert ranked == list(np.argsort(expected[q], kind="stable")[:3])
    assert ranked[0] == q   # the query image itself is in the gallery
    np.testing.assert_allclose([float(r["distance"]) for r in mine], expected[q, ranked],
                               rtol=1e-5, atol=1e-6)
  figure = PIL.Image.open(out / "ranked.png")
  assert figure.size == (12 + 4 * 70, 2 * (128 + 6 + 14))   # query + 3 tiles per row


def test_a_missing_image_folder_is_a_one_line_error_naming_the_flag(tmp_path):
  with pytest.raises(SystemExit, match=f"^error: --query={tmp_path / 'no'}: no such file or "
                                       "folder.$"):
    cli.image_paths(str(tmp_path / "no"), "--query")
  with pytest.raises(SystemExit, match=f"^error: --gallery={tmp_path}: no .jpg, .jpeg or .png "
                                       "files in it.$"):
    cli.image_paths(str(tmp_path), "--gallery")


def test_export_writes_the_model_and_its_description(two_step_run, tmp_path):
  _, workdir = two_step_run
  out = tmp_path / "exported"
  run = _run("export", f"--workdir={workdir}", "--format=stablehlo", f"--out={out}")
  assert run.returncode == 0, run.stderr[-3000:]
  assert f"Exported mlfn (step 2) as stablehlo to {out}." in run.stdout
  assert os.listdir(tmp_path) == ["exported"]   # no temporary folder left
  with open(out / serving.INFO_FILE) as f:
    info = json.load(f)
  assert info["inputs"] == [{"name": "image", "shape": [None, 64, 32, 3], "dtype": "uint8"}]
  assert info["output"]["shape"] == [None, 32] and info["step"] == 2
  assert info["image"]["mean"] == [0.485, 0.456, 0.406] and info["metric"] == "euclidean"

  images = np.random.default_rng(7).integers(0, 256, (3, 64, 32, 3), np.uint8)
  with open(out / serving.STABLEHLO_FILE, "rb") as f:
    exported = jax.export.deserialize(f.read())
  extract = extractor.FeatureExtractor(workdir)
  np.testing.assert_allclose(exported.call(images), extract(images), rtol=0, atol=1e-5)
  with pytest.raises(FileExistsError, match=f"{out} exists and is not an empty folder"):
    serving.export(extract, "savedmodel", str(out))
