"""Runs two train steps of a tiny MLFN on however many devices JAX sees and saves
the resulting parameters (used by data_parallel_test.py under forced CPU devices)."""
import sys

import jax
import numpy as np

from reid_jax import config_schema, models, optimizers, train


def main(out_path):
  config = config_schema.base_config()
  config.model = "mlfn"
  config.image_size = (64, 32)
  model = models.get_model("mlfn", 8, width=0.25, stage_blocks=(1, 1, 1, 1), groups=8, embed_dim=32)
  config.optimizer, config.weight_decay = "sgd", 5e-4  # linear in the gradient: no Adam 1/sqrt(v) amplification of float noise
  tx = optimizers.create_optimizer(config, 0.05)
  mesh = train.create_mesh()
  state = jax.device_put(train.init_state(config, model, tx, jax.random.key(0)),
                         jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  step = train.compile_train_step(mesh, models.get_loss("mlfn"), {"label_smoothing": 0.1})
  rng = np.random.default_rng(0)
  losses = []
  for _ in range(2):
    batch = {"image": rng.normal(size=(8, 64, 32, 3)).astype(np.float32),
             "label": np.repeat(rng.permutation(8)[:4], 2).astype(np.int32)}
    state, metrics = step(state, train.global_batch(mesh, batch), jax.random.key(1))
    losses.append(float(metrics["loss"]))
  leaves = jax.tree.leaves({"params": state.params, "batch_stats": state.batch_stats})
  np.savez(out_path, losses=np.array(losses), devices=jax.device_count(),
           **{f"leaf{i}": np.asarray(x) for i, x in enumerate(leaves)})


if __name__ == "__main__":
  main(sys.argv[1])
