"""The device mesh and the two shardings every jitted program here uses.

A 1-D `Mesh` over every device of every process with axis `data`: batches are
split along it, parameters and optimiser state replicated. This is what `pmap`
data parallelism is in current JAX, and it spans hosts unchanged.
"""
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec


def create_mesh():
  """A 1-D mesh over every device of every process, axis `data`."""
  return jax.sharding.Mesh(np.array(jax.devices()), ("data",))


def replicated(mesh):
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh):
  """Leading (batch) axis split over `data`."""
  return NamedSharding(mesh, PartitionSpec("data"))


def global_batch(mesh, local_batch):
  """Assembles each process's rows into global arrays sharded over the `data` axis."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
