"""synthetic_reid: the split plan, the renderer and the built dataset."""
import collections
import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds

from reid_jax.data import pedestrians, synthetic_reid

SMALL = synthetic_reid.SyntheticReid.builder_configs["small"]
TINY = synthetic_reid.SyntheticReidConfig(
    name="tiny_test", num_train_ids=5, num_test_ids=4, min_images_per_id=4,
    max_images_per_id=6, num_cameras=3, height=32, width=16, num_distractors=3, num_junk=2)


def test_plan_follows_the_market_protocol():
  plan = synthetic_reid.plan(SMALL)
  train_ids = sorted({i.person_id for i in plan["train"]})
  test_ids = sorted({i.person_id for i in plan["query"]})
  assert len(train_ids) == 120 and len(test_ids) == 100
  assert not set(train_ids) & set(test_ids)
  assert train_ids != list(range(1, 121))  # ids are not class indices
  assert [i.label for i in plan["train"]] == [train_ids.index(i.person_id) for i in plan["train"]]
  assert {i.label for i in plan["query"] + plan["gallery"]} == {-1}
  people = collections.defaultdict(list)
  for item in plan["train"] + plan["query"] + plan["gallery"]:
    people[item.person_id].append(item)
  assert len(people[0]) == SMALL.num_distractors and len(people[-1]) == SMALL.num_junk
  for pid in train_ids + test_ids:
    assert 8 <= len(people[pid]) <= 12
    assert len({i.camera_id for i in people[pid]}) >= 2
  gallery = {(i.person_id, i.camera_id) for i in plan["gallery"]}
  query_cams = collections.defaultdict(list)
  for q in plan["query"]:
    query_cams[q.person_id].append(q.camera_id)
    assert (q.person_id, q.camera_id) in gallery  # removed by the protocol
    assert any(g[0] == q.person_id and g[1] != q.camera_id for g in gallery)
  for pid in test_ids:  # one query per camera the identity appears in
    assert sorted(query_cams[pid]) == sorted({i.camera_id for i in people[pid]})
  for split in plan.values():
    assert len({i.filename for i in split}) == len(split)
    for i in split:  # Market-style names: pppp_cC_..., -1_cC_... for junk
      pid = f"{i.person_id:04d}" if i.person_id >= 0 else "-1"
      assert i.filename.startswith(f"{pid}_c{i.camera_id + 1}_"), i.filename
  assert {i.camera_id for s in plan.values() for i in s} == set(range(6))


def test_config_rejects_sizes_without_cross_camera_matches():
  with pytest.raises(ValueError, match="4 <= min_images_per_id"):
    synthetic_reid.SyntheticReidConfig(name="bad", min_images_per_id=3)
  with pytest.raises(ValueError, match="num_cameras >= 2"):
    synthetic_reid.SyntheticReidConfig(name="bad", num_cameras=1)


def test_drawing_is_deterministic_and_order_independent():
  items = synthetic_reid.plan(TINY)["gallery"]
  cams = synthetic_reid.cameras(TINY)
  forward = [synthetic_reid.draw(TINY, i, cams) for i in items]
  backward = [synthetic_reid.draw(TINY, i, synthetic_reid.cameras(TINY)) for i in items[::-1]]
  for (image, mask), (image2, mask2) in zip(forward, backward[::-1]):
    np.testing.assert_array_equal(image, image2)
    np.testing.assert_array_equal(mask, mask2)
  other_seed = dataclasses.replace(TINY, seed=1)
  assert not np.array_equal(synthetic_reid.draw(other_seed, items[0], cams)[0], forward[0][0])


def _build(data_dir, config):
  builder = synthetic_reid.SyntheticReid(data_dir=data_dir, config=config)
  builder.download_and_prepare()
  return builder


def test_build_is_byte_identical_and_matches_the_renderer(tmp_path, read_examples):
  builders = [_build(tmp_path / name, TINY) for name in ("a", "b")]
  shards = [sorted(b.data_path.glob("*.tfrecord*")) for b in builders]
  assert [p.name for p in shards[0]] == [p.name for p in shards[1]] and shards[0]
  for a, b in zip(*shards):
    assert a.read_bytes() == b.read_bytes()
  builder, cams = builders[0], synthetic_reid.cameras(TINY)
  for split, items in synthetic_reid.plan(TINY).items():
    examples = read_examples(builder, split)
    items = sorted(items, key=lambda i: i.filename)
    assert [e["filename"] for e in examples] == [i.filename for i in items]
    for e, item in zip(examples, items):
      assert (e["person_id"], e["camera_id"], e["label"]) == (
          item.person_id, item.camera_id, item.label)
      image, mask = synthetic_reid.draw(TINY, item, cams)
      np.testing.assert_array_equal(e["image"], image)  # PNG: lossless
      np.testing.assert_array_equal(e["mask"], mask)
      assert e["image"].shape == (32, 16, 3) and e["mask"].shape == (32, 16, 1)
  reloaded = tfds.builder_from_directory(builder.data_dir)
  assert reloaded.info.metadata["num_classes"] == 5
  assert reloaded.info.metadata["num_cameras"] == 3


def _shots(n, **changes):
  for k in range(n):
    camera = pedestrians.sample_camera(np.random.default_rng([9, k]))
    shot = pedestrians.sample_shot(camera, np.random.default_rng([10, k]))
    yield pedestrians.sample_identity(np.random.default_rng([11, k])), dataclasses.replace(
        shot, **{"blur": 0.0, "occluder": None, **changes})


def test_mask_marks_the_pixels_the_person_changes():
  for identity, shot in _shots(20):
    image, mask = pedestrians.render(identity, shot, 64, 32)
    background, empty = pedestrians.render(None, shot, 64, 32)
    changed = np.abs(image.astype(int) - background).max(-1) > 24
    person = mask[..., 0] == 255
    assert set(np.unique(mask)) == {0, 255} and not empty.any()
    assert 0.1 < person.mean() < 0.6
    assert changed[~person].mean() < 0.03  # anti-aliased edges only
    assert changed[person].mean() > 0.6


def test_occluders_hide_the_person_from_the_mask():
  for identity, shot in _shots(5, occluder=("bottom", 0.4, np.zeros(3, np.float32))):
    image, mask = pedestrians.render(identity, shot, 64, 32)
    assert not mask[40:].any() and mask[:38].any()


@pytest.mark.parametrize("attribute, hidden, seen", [
    ({"bag": "shoulder", "bag_side": 1}, "right", "left"),
    ({"bag": "handbag", "bag_side": -1}, "left", "right"),
    ({"logo": np.array([255, 0, 0], np.float32)}, "back", "front"),
])
def test_the_view_decides_what_is_visible(attribute, hidden, seen):
  (identity, shot), = _shots(1, dx=0.0, dy=0.0)
  plain = dataclasses.replace(identity, bag="none", logo=None)
  carrying = dataclasses.replace(plain, **attribute)
  for view, differs in ((hidden, False), (seen, True)):
    view_shot = dataclasses.replace(shot, view=view)
    a, _ = pedestrians.render(plain, view_shot, 64, 32)
    b, _ = pedestrians.render(carrying, view_shot, 64, 32)
    assert (not np.array_equal(a, b)) == differs, view


def _raw_pixel_retrieval(query, gallery):
  """Rank-1 and mAP of euclidean raw-pixel retrieval, Market protocol."""
  q, g = (np.stack([e["image"].ravel() for e in s]).astype(np.float32) for s in (query, gallery))
  q_ids, q_cams, g_ids, g_cams = (np.array([e[k] for e in s]) for s in (query, gallery)
                                  for k in ("person_id", "camera_id"))
  dist = (q ** 2).sum(1)[:, None] + (g ** 2).sum(1)[None] - 2 * q @ g.T
  rank1, aps = [], []
  for i in range(len(q)):
    keep = (g_ids != -1) & ~((g_ids == q_ids[i]) & (g_cams == q_cams[i]))
    hits = (g_ids[keep] == q_ids[i])[np.argsort(dist[i][keep], kind="stable")]
    rank1.append(hits[0])
    aps.append(np.mean(np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)))
  return np.mean(rank1), np.mean(aps)


def test_small_has_market_style_splits_and_is_hard_for_raw_pixels(tmp_path, read_examples):
  builder = _build(tmp_path, "small")
  split_sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
  assert split_sizes == {k: len(v) for k, v in synthetic_reid.plan(SMALL).items()}
  assert builder.info.metadata["num_classes"] == 120
  query, gallery = read_examples(builder, "query"), read_examples(builder, "gallery")
  assert query[0]["image"].shape == (64, 32, 3)
  rank1, mean_ap = _raw_pixel_retrieval(query, gallery)
  # Chance is about 1%: identities show through, cameras make it hard.
  assert 0.02 < rank1 < 0.2 and 0.02 < mean_ap < 0.2, (rank1, mean_ap)
