"""Runs two train steps of a tiny MLFN on however many devices JAX sees and saves
the resulting parameters (used by data_parallel_test.py under forced CPU devices)."""
import sys

import jax
import numpy as np

from reid_jax import config_schema, models, optimizers, sharding, train


def main(out_path):
  config = config_schema.base_config("mlfn")
  config.image_size = (64, 32)
  model = models.get_model("mlfn", 8, width=0.25, stage_blocks=(1, 1, 1, 1), groups=8, embed_dim=32)
  config.optimizer, config.weight_decay = "sgd", 5e-4  # linear in the gradient: no Adam 1/sqrt(v) amplification of float noise
  tx = optimizers.create_optimizer(config, 0.05)
  mesh = sharding.create_mesh()
  variables = train.init_variables(config, model, jax.random.key(0))
  state = jax.device_put(train.state_from_variables(model, variables, tx), sharding.replicated(mesh))
  step = train.compile_train_step(mesh, models.get_spec("mlfn"), {"label_smoothing": 0.1})
  rng = np.random.default_rng(0)
  losses = []
  for _ in range(2):
    batch = {"image": rng.normal(size=(8, 64, 32, 3)).astype(np.float32),
             "label": np.repeat(rng.permutation(8)[:4], 2).astype(np.int32)}
    state, metrics = step(state, sharding.global_batch(mesh, batch), jax.random.key(1))
    losses.append(float(metrics["loss"]))
  leaves = jax.tree.leaves({"params": state.params, "batch_stats": state.batch_stats})
  np.savez(out_path, losses=np.array(losses), devices=jax.device_count(),
           **{f"leaf{i}": np.asarray(x) for i, x in enumerate(leaves)})


if __name__ == "__main__":
  main(sys.argv[1])
