"""The optax optimiser and learning-rate schedule a config names.

Epoch-based settings (`lr_decay_epochs`, `warmup_epochs`, `num_epochs`) count an
epoch as len(train split) / batch size steps, as torchreid and fast-reid do;
`lr_decay_steps` gives the decays in iterations instead (JLML's Table 4).
"""
import optax


def learning_rate_schedule(config, steps_per_epoch, total_steps):
  base = config.learning_rate
  if config.lr_schedule == "constant":
    schedule = optax.constant_schedule(base)
  elif config.lr_schedule == "step":
    steps = [int(round(e * steps_per_epoch)) for e in config.lr_decay_epochs]
    boundaries = {s: config.lr_decay_factor for s in steps + list(config.lr_decay_steps)}
    schedule = optax.piecewise_constant_schedule(base, boundaries)
  else:  # cosine
    schedule = optax.cosine_decay_schedule(base, total_steps)
  warmup = int(round(config.warmup_epochs * steps_per_epoch))
  if warmup:
    schedule = optax.join_schedules(
        [optax.linear_schedule(base * 0.01, base, warmup), schedule], [warmup])
  return schedule


def create_optimizer(config, learning_rate):
  """The optimiser `config.optimizer` with `learning_rate` (a number or schedule).

  SGD and Adam take `weight_decay` as an L2 term on the gradient (PyTorch's
  `weight_decay`); AdamW decouples it (Loshchilov & Hutter, 2019)."""
  lr = learning_rate
  if config.optimizer == "adamw":
    return optax.adamw(lr, weight_decay=config.weight_decay)
  if config.optimizer == "sgd":
    tx = optax.sgd(lr, momentum=config.momentum, nesterov=config.nesterov)
  else:
    tx = optax.adam(lr)
  if config.weight_decay:
    tx = optax.chain(optax.add_decayed_weights(config.weight_decay), tx)
  return tx
