"""Training: the state, a pure train step jitted over a data mesh, and the loop.

The step is one `jax.jit` over a `Mesh` with a `data` axis: the batch is sharded,
the state replicated, so BatchNorm statistics and batch-hard mining see the global
batch on any number of devices or hosts. Checkpoints (orbax) hold the whole state;
the input pipeline is a pure function of the step, so resuming is exact.
"""
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers
from flax.training import train_state
from jax.sharding import NamedSharding, PartitionSpec

from reid_jax import config_schema, data, evaluate, models, optimizers


class TrainState(train_state.TrainState):
  batch_stats: Any


def create_mesh():
  """A 1-D mesh over every device of every process, axis `data`."""
  return jax.sharding.Mesh(np.array(jax.devices()), ("data",))


def init_state(config, model, tx, rng, load_pretrained=True):
  """Initialised (and, with `config.pretrained`, ImageNet-initialised) state.

  `load_pretrained=False` skips the weights file, for a state that a checkpoint
  is about to replace.
  """
  images = jnp.zeros((1, *config.image_size, 3), jnp.float32)
  variables = jax.jit(functools.partial(model.init, train=False))(rng, images)
  from reid_jax import pretrained
  if load_pretrained and config.pretrained:
    variables = pretrained.load_pretrained(variables, config.pretrained, config.model)
  elif load_pretrained and config.model in pretrained.LAYOUTS:
    logging.warning("config.pretrained is empty: %s's backbone starts from random weights, "
                    "not ImageNet as in its paper.", config.model)
  return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                           batch_stats=variables.get("batch_stats", {}))


def train_step(state, batch, rng, *, loss_fn, loss_kwargs):
  """One optimiser step on a global batch; pure, so it can be jitted and sharded."""
  rng = jax.random.fold_in(rng, state.step)

  def compute_loss(params):
    outputs, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
        mutable=["batch_stats"], rngs={"dropout": rng})
    loss, parts = loss_fn(outputs, batch["label"], **loss_kwargs)
    return loss, (parts, updates["batch_stats"])

  (loss, (parts, batch_stats)), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return state, {"loss": loss, **parts}


def compile_train_step(mesh, loss_fn, loss_kwargs):
  replicated = NamedSharding(mesh, PartitionSpec())
  sharded = NamedSharding(mesh, PartitionSpec("data"))
  step = functools.partial(train_step, loss_fn=loss_fn, loss_kwargs=dict(loss_kwargs))
  return jax.jit(step, in_shardings=(replicated, sharded, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def global_batch(mesh, local_batch):
  """Assembles each process's rows into arrays sharded over the `data` axis."""
  sharding = NamedSharding(mesh, PartitionSpec("data"))
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def quiet_checkpoint_logs():
  """orbax logs every save and restore step by step at INFO: keep the log to ours."""
  logging.get_absl_handler().addFilter(lambda record: "/orbax/" not in record.pathname)


def checkpoint_manager(workdir, config):
  options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)


def restore_latest(manager, state, mesh):
  """`state` replaced by the latest checkpoint, if there is one."""
  step = manager.latest_step()
  if step is None:
    return state
  replicated = NamedSharding(mesh, PartitionSpec())
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)
  logging.info("Resuming from checkpoint at step %d.", step)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def _format_eta(seconds):
  m, s = divmod(int(seconds), 60)
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
  """The progress line: step, loss, images/s and ETA."""

  def __init__(self, start_step, total_steps, batch_size):
    self.total, self.batch_size = total_steps, batch_size
    self.last_step, self.last_time = start_step, time.perf_counter()

  def line(self, step, loss):
    now = time.perf_counter()
    rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
    self.last_step, self.last_time = step, now
    eta = (self.total - step) / max(rate, 1e-9)
    return (f"step {step}/{self.total} | loss {loss:.4f} | "
            f"{rate * self.batch_size:.1f} images/s | ETA {_format_eta(eta)}")


def create_train_state(config, num_classes, steps_per_epoch, mesh, manager):
  """The model, its state (restored from `manager`'s latest checkpoint if any),
  the learning-rate schedule and the number of training steps."""
  model = models.get_model(config.model, num_classes, dtype=jnp.dtype(config.dtype),
                           **config.model_kwargs)
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else int(round(config.num_epochs * steps_per_epoch)))
  schedule = optimizers.learning_rate_schedule(config, steps_per_epoch, total_steps)
  tx = optimizers.create_optimizer(config, schedule)
  fresh = manager.latest_step() is None
  state = jax.device_put(init_state(config, model, tx, jax.random.key(config.seed), fresh),
                         NamedSharding(mesh, PartitionSpec()))
  state = restore_latest(manager, state, mesh)
  return model, state, schedule, total_steps


def save_config(workdir, config):
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))


def train_and_evaluate(config, workdir):
  """Trains `config.model` on `config.dataset`, evaluating and checkpointing in `workdir`.

  Returns the final evaluation metrics.
  """
  config_schema.validate(config)
  mesh = create_mesh()
  batch_size = config.p_identities * config.k_instances
  if batch_size % jax.device_count() or config.eval_batch_size % jax.device_count():
    raise ValueError(f"Batch sizes {batch_size} (p_identities * k_instances) and "
                     f"{config.eval_batch_size} (eval_batch_size) must divide among "
                     f"{jax.device_count()} devices.")
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    save_config(workdir, config)

  dataset = data.builder(config.dataset, config.data_dir, config.manual_dir)
  train_split = data.load_split(dataset, "train")
  query, gallery = data.load_split(dataset, "query"), data.load_split(dataset, "gallery")
  steps_per_epoch = max(1, len(train_split) // batch_size)
  num_classes = int(train_split.labels.max()) + 1
  manager = checkpoint_manager(workdir, config)
  model, state, schedule, total_steps = create_train_state(
      config, num_classes, steps_per_epoch, mesh, manager)
  step_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
  start_step = int(state.step)
  logging.info("%s on %s: %d classes, %d train images, %d steps (%d per epoch), "
               "%d devices.", config.model, config.dataset, num_classes, len(train_split),
               total_steps, steps_per_epoch, jax.device_count())

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  step_fn = compile_train_step(mesh, models.get_loss(config.model), config.loss)

  def run_evaluation(step):
    metrics = evaluate.evaluate_model(model, state, query, gallery, config, mesh)
    writer.write_scalars(step, evaluate.scalar_summary(metrics))
    if jax.process_index() == 0:
      evaluate.write_metrics(workdir, step, metrics)
    logging.info("step %d | %s", step, evaluate.format_metrics(metrics))
    return metrics

  metrics = None
  if start_step == 0 and config.eval_at_start:
    metrics = run_evaluation(0)
  batches = data.train_dataset(train_split, config, start_step).as_numpy_iterator()
  progress = Progress(start_step, total_steps, batch_size)
  window = []
  for step in range(start_step + 1, total_steps + 1):
    batch = global_batch(mesh, next(batches))
    state, step_metrics = step_fn(state, batch, step_rng)
    window.append(step_metrics)
    if step % config.log_every_steps == 0 or step == total_steps:
      summary = {k: float(np.mean([m[k] for m in jax.device_get(window)])) for k in window[0]}
      summary["learning_rate"] = float(schedule(step - 1))
      writer.write_scalars(step, summary)
      logging.info(progress.line(step, summary["loss"]))
      window = []
    if step % config.checkpoint_every_steps == 0 or step == total_steps:
      manager.save(step, args=ocp.args.StandardSave(state))
    if (config.eval_every_steps and step % config.eval_every_steps == 0) or step == total_steps:
      metrics = run_evaluation(step)
  manager.wait_until_finished()
  writer.flush()
  if metrics is None:  # resumed after the last step: evaluate what was restored
    metrics = run_evaluation(start_step)
  return metrics

