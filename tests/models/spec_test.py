"""The network contract: every registered network honours it; bad specs fail early."""
import jax
import jax.numpy as jnp
import pytest

from reid_jax import models
from reid_jax.models.spec import NetworkSpec

IMAGE_SIZE = {"jlml": (224, 224), "mgn": (384, 128), "mpn": (384, 128)}


def test_every_network_file_with_a_spec_is_registered():
  assert models.names() == ["jlml", "kpm", "mgn", "mlfn", "mpn", "resnet50"]
  with pytest.raises(ValueError,
                     match="Unknown model 'osnet'; known models: jlml, kpm, mgn, mlfn, mpn, resnet50"):
    models.get_spec("osnet")


@pytest.mark.parametrize("name", models.names())
def test_outputs_follow_the_contract(name):
  spec = models.get_spec(name)
  model = models.get_model(name, 11)
  size = IMAGE_SIZE.get(name, (256, 128))
  variables = jax.eval_shape(lambda: spec.init(model, jax.random.key(0), size))
  batch = spec.dummy_batch(size, batch_size=3)
  args, kwargs = spec.apply_inputs(batch, train=True)
  out, _ = jax.eval_shape(lambda v: model.apply(v, *args, train=True, mutable=["batch_stats"],
                                                rngs={"dropout": jax.random.key(1)}, **kwargs),
                          variables)
  assert out["embedding"].ndim == 2 and out["embedding"].shape[0] == 3
  if spec.evaluation == "pairwise":  # KPM: pairs drawn from the batch, no identity heads
    pairs = out["pair_logits"].shape
    assert len(pairs) == 1 and out["pair_targets"].shape == out["pair_weights"].shape == pairs
    assert set(out) == {"embedding", "pair_logits", "pair_targets", "pair_weights"}
  else:
    heads = out["logits"].shape[0]
    assert out["logits"].shape == (heads, 3, 11)
    if "metric_features" in out:
      assert out["metric_features"].ndim == 3 and out["metric_features"].shape[1] == 3
    assert set(out) <= {"embedding", "logits", "metric_features"}
  # The loss runs on these outputs with its own defaults (its config.loss).
  batch["label"] = jnp.arange(3) % 2
  total, parts = jax.eval_shape(lambda o, p: spec.loss(o, batch, p, **spec.loss_defaults()),
                                out, variables["params"])
  assert total.shape == () and all(v.shape == () for v in parts.values())


def test_missing_batch_key_names_what_the_network_reads():
  spec = models.get_spec("mlfn")
  with pytest.raises(KeyError, match=r"mlfn reads batch keys \['image'\]; the batch has \['label'\]"):
    spec.apply_inputs({"label": jnp.zeros(2)})


def test_train_inputs_reach_the_module_in_training_only():
  spec = models.get_spec("mpn")
  batch = spec.dummy_batch((64, 32), batch_size=2)
  assert set(batch) == {"image", "mask"} and batch["mask"].shape == (2, 64, 32, 1)
  assert spec.apply_inputs(batch, train=True)[1].keys() == {"mask"}
  assert spec.apply_inputs(batch)[1] == {}
  # A batch without the train input still applies: the module decides whether it needs it.
  assert spec.apply_inputs({"image": batch["image"]}, train=True)[1] == {}


def test_train_labels_reach_the_module_in_training_only():
  spec = models.get_spec("kpm")
  batch = spec.dummy_batch((64, 32), batch_size=2)
  assert set(batch) == {"image", "label"} and batch["label"].shape == (2,)
  assert spec.apply_inputs(batch, train=True)[1].keys() == {"label"}
  assert spec.apply_inputs(batch)[1] == {}


def test_a_loss_without_the_contracts_arguments_is_refused():
  with pytest.raises(TypeError, match=r"the loss must take \('outputs', 'batch', 'params'\) first"):
    NetworkSpec(name="x", module=object, loss=lambda outputs, labels: 0.0)
  with pytest.raises(ValueError, match="evaluation 'pairs' is not one of"):
    NetworkSpec(name="x", module=object, loss=lambda outputs, batch, params: 0.0, evaluation="pairs")


def test_bind_loss_kwargs_names_the_accepted_keywords():
  with pytest.raises(TypeError, match=r"mgn's loss accepts \['label_smoothing', 'soft_margin', "
                                      r"'triplet_margin', 'triplet_metric'\]"):
    models.get_spec("mgn").bind_loss_kwargs({"lambda_global": 1.0})
