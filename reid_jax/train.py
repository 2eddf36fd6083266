"""Training: the state, a pure train step jitted over a data mesh, and the loop.

The step is one `jax.jit` over a `Mesh` with a `data` axis: the batch is sharded,
the state replicated, so BatchNorm statistics and batch-hard mining see the global
batch on any number of devices or hosts. The step knows no network: it hands the
module the batch inputs its `NetworkSpec` declares and the loss the outputs, the
whole batch and the params. Checkpoints (orbax) hold the whole state; the input
pipeline is a pure function of the step, so resuming is exact.
"""
import contextlib
import functools
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers, periodic_actions
from flax.training import train_state

from reid_jax import (checkpoints, classification, config_schema, console, data, datasets,
                      evaluate, interrupts, models, optimizers, pretrained, sharding,
                      workdir_lock)


class TrainState(train_state.TrainState):
  batch_stats: Any


def init_variables(config, model, rng, load_weights=True):
  """The network's initial variables: random, then (with `load_weights`) read from
  `config.init_from` (another run's checkpoint) or `config.pretrained` (ImageNet).

  `load_weights=False` skips the files, for variables a checkpoint is about to replace.
  """
  spec = models.get_spec(config.model)
  variables = jax.jit(lambda r: spec.init(model, r, tuple(config.image_size)))(rng)
  if not load_weights:
    return variables
  if config.init_from:
    try:
      variables, report = checkpoints.init_from(variables, config.init_from,
                                                sharding.create_mesh())
    except ValueError as e:
      raise config_schema.ConfigError(f"config.init_from={config.init_from!r}: {e}") from None
    logging.info(report.summary())
  elif config.pretrained:
    variables = pretrained.load_pretrained(variables, config.pretrained, config.model)
  elif spec.imagenet_layout is not None:
    logging.warning("config.pretrained is empty: %s's backbone starts from random weights, "
                    "not ImageNet as in its paper.", config.model)
  return variables


def state_from_variables(model, variables, tx):
  """A fresh `TrainState` (step 0, new optimiser state) holding `variables`.

  The step is a strongly typed int32, like a restored checkpoint's (flax's `0` is
  weakly typed): fresh and resumed runs then compile the same train step, which a
  resumed run finds in JAX's persistent compilation cache.
  """
  state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                            batch_stats=variables.get("batch_stats", {}))
  return state.replace(step=np.int32(0))


def create_train_state(config, num_classes, steps_per_epoch, mesh, ckpt_manager):
  """The model, its state (restored from `ckpt_manager`'s latest checkpoint if any),
  the learning-rate schedule and the number of training steps."""
  model = models.get_model(config.model, num_classes, dtype=jnp.dtype(config.dtype),
                           **config.model_kwargs)
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else int(round(config.num_epochs * steps_per_epoch)))
  schedule = optimizers.learning_rate_schedule(config, steps_per_epoch, total_steps)
  tx = optimizers.create_optimizer(config, schedule)
  fresh = ckpt_manager.latest_step() is None
  variables = init_variables(config, model, jax.random.key(config.seed), load_weights=fresh)
  state = jax.device_put(state_from_variables(model, variables, tx), sharding.replicated(mesh))
  state = checkpoints.restore_latest(ckpt_manager, state, mesh)
  return model, state, schedule, total_steps


def train_step(state, batch, rng, *, spec, loss_kwargs):
  """One optimiser step on a global batch; pure, so it can be jitted and sharded."""
  rng = jax.random.fold_in(rng, state.step)
  args, kwargs = spec.apply_inputs(batch, train=True)

  def compute_loss(params):
    outputs, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, *args, train=True, **kwargs,
        mutable=["batch_stats"], rngs={"dropout": rng})
    loss, parts = spec.loss(outputs, batch, params, **loss_kwargs)
    return loss, (parts, updates["batch_stats"])

  (loss, (parts, batch_stats)), grads = jax.value_and_grad(compute_loss, has_aux=True)(state.params)
  finite = jnp.isfinite(loss) & all_finite(grads) & all_finite(batch_stats)
  updated = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  # A non-finite step changes nothing but the step count, so the state (and every
  # checkpoint of it) stays finite; the loop stops or skips on `finite`.
  state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated,
                       state.replace(step=updated.step))
  return state, {"loss": loss, **parts, "finite": finite}


def all_finite(tree):
  """Whether every leaf of `tree` is finite: a scalar bool array."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def compile_train_step(mesh, spec, loss_kwargs):
  """`train_step` of network `spec` jitted over `mesh`; `loss_kwargs` is `config.loss`."""
  spec.bind_loss_kwargs(dict(loss_kwargs))
  replicated, sharded = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  step = functools.partial(train_step, spec=spec, loss_kwargs=dict(loss_kwargs))
  return jax.jit(step, in_shardings=(replicated, sharded, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def metric_writer(workdir):
  """clu's writer: TensorBoard events in `workdir` (process 0), and each scalar in
  the log when it is at INFO (`console.full_log`; the other processes only then)."""
  if console.full_log():
    return metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  return metric_writers.AsyncMultiWriter(
      [metric_writers.SummaryWriter(workdir)] if jax.process_index() == 0 else [])


def save_config(workdir, config):
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))


class NonFiniteError(FloatingPointError):
  """A training step's loss or gradients were not finite (config.nonfinite='stop')."""


def _nonfinite_message(step, step_metrics, latest):
  parts = ", ".join(f"{k}={float(v):.6g}" for k, v in jax.device_get(step_metrics).items()
                    if k != "finite")
  kept = (f"the latest checkpoint, step {latest}, holds finite weights" if latest is not None
          else "no checkpoint was written")
  return (f"step {step}: the loss or its gradients are not finite ({parts}). The update was not "
          f"applied and the run stopped; {kept}. Lower config.learning_rate, or set "
          "config.nonfinite='skip' to skip such steps (bf16 runs).")


def train_and_evaluate(config, workdir):
  """Trains `config.model` on `config.dataset`, evaluating and checkpointing in `workdir`.

  Returns the final evaluation metrics. Holds the workdir (`workdir_lock`) for the
  whole run. Raises NonFiniteError at a non-finite step (`config.nonfinite`),
  and `interrupts.Interrupted` on SIGINT/SIGTERM once the checkpoint in flight is
  complete, naming the step to resume from.
  """
  config_schema.validate(config)
  batch_size = config_schema.train_batch_size(config)
  if batch_size % jax.device_count() or config.eval_batch_size % jax.device_count():
    raise ValueError(f"Batch sizes {batch_size} (train) and {config.eval_batch_size} "
                     f"(eval_batch_size) must divide among {jax.device_count()} devices.")
  os.makedirs(workdir, exist_ok=True)
  with contextlib.ExitStack() as stack:
    if jax.process_index() == 0:
      stack.enter_context(workdir_lock.hold(workdir))
      save_config(workdir, config)
    return _train(config, workdir)


def _train(config, workdir):
  mesh = sharding.create_mesh()
  batch_size = config_schema.train_batch_size(config)
  if config.task == "classification":  # a tfds classification dataset (reid_jax.classification)
    train_split, test_split = classification.load(config)
    num_classes = train_split.num_classes
  else:
    reid = datasets.load(config)
    train_split, query, gallery = reid.train, reid.query, reid.gallery
    num_classes = int(train_split.labels.max()) + 1
  # An epoch passes over every (offline-translated) copy of every training image.
  steps_per_epoch = max(1, data.train_size(train_split, config) // batch_size)
  ckpt_manager = checkpoints.manager(workdir, config.keep_checkpoints)
  model, state, schedule, total_steps = create_train_state(
      config, num_classes, steps_per_epoch, mesh, ckpt_manager)
  step_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
  start_step = int(state.step)
  progress = console.Progress(total_steps, batch_size, show=jax.process_index() == 0)
  progress.note(f"{config.model} on {config.dataset}: {num_classes} classes, {len(train_split)} "
                f"train images, {total_steps} steps ({steps_per_epoch} per epoch) of {batch_size} "
                f"images ({config.sampler} sampler), {jax.device_count()} devices.")

  writer = metric_writer(workdir)
  step_fn = compile_train_step(mesh, models.get_spec(config.model), config.loss)
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=total_steps, writer=writer, every_steps=config.log_every_steps,
      every_secs=None)

  def run_evaluation(step):
    with report_progress.timed("eval"):
      variables = {"params": state.params, "batch_stats": state.batch_stats}
      if config.task == "classification":
        metrics = classification.evaluate_model(model, variables, test_split, config, mesh)
      else:
        metrics = evaluate.evaluate_model(model, variables, query, gallery, config, mesh)
    writer.write_scalars(step, evaluate.scalar_summary(metrics))
    if jax.process_index() == 0:
      evaluate.write_metrics(workdir, step, metrics)
    progress.note(f"step {step} | {evaluate.format_metrics(metrics)}")
    return metrics

  metrics = None
  step = start_step
  try:
    with interrupts.as_exception():
      if start_step == 0 and config.eval_at_start:
        metrics = run_evaluation(0)
      train_batches = (classification.train_batches if config.task == "classification"
                       else data.train_batches)
      batches = train_batches(train_split, config, start_step)  # fails as data.DataError
      report_progress(start_step, time.monotonic())
      window = []
      for step in range(start_step + 1, total_steps + 1):
        batch = sharding.global_batch(mesh, next(batches))
        state, step_metrics = step_fn(state, batch, step_rng)
        interrupts.check()
        # One host sync per step: a non-finite step must be known before anything is saved.
        if not bool(step_metrics.pop("finite")):
          if config.nonfinite == "stop":
            ckpt_manager.wait_until_finished()
            raise NonFiniteError(_nonfinite_message(step, step_metrics, ckpt_manager.latest_step()))
          logging.warning("step %d: non-finite loss or gradients; the update was skipped.", step)
        else:
          window.append(step_metrics)
        logged = bool(window) and (step % config.log_every_steps == 0 or step == total_steps)
        if logged:
          summary = {k: float(np.mean([m[k] for m in jax.device_get(window)])) for k in window[0]}
          summary["learning_rate"] = float(schedule(step - 1))
          writer.write_scalars(step, summary)
          window = []
        progress.step(step, summary if logged else None)
        report_progress(step, time.monotonic())
        if step % config.checkpoint_every_steps == 0 or step == total_steps:
          with interrupts.deferred():
            ckpt_manager.save(step, args=ocp.args.StandardSave(state))
          interrupts.check()
        if (config.eval_every_steps and step % config.eval_every_steps == 0) or step == total_steps:
          metrics = run_evaluation(step)
      ckpt_manager.wait_until_finished()
  except interrupts.Interrupted as e:
    with interrupts.as_exception():  # a second signal abandons the write in flight
      try:
        ckpt_manager.wait_until_finished()
      except interrupts.Interrupted:
        pass
    latest = checkpoints.latest_step(workdir)
    resume = (f"the checkpoint of step {latest} is complete: rerun the same command to resume "
              "from it" if latest is not None else "no checkpoint was written yet")
    raise interrupts.Interrupted(
        e.signum, f"Interrupted by {signal.Signals(e.signum).name} during step {step}; {resume}."
    ) from None
  writer.flush()
  if metrics is None:  # resumed after the last step: evaluate what was restored
    metrics = run_evaluation(start_step)
  return metrics
