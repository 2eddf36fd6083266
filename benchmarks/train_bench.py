"""Training-step speed of reid_jax against PyTorch, same network, same process.

  python benchmarks/train_bench.py                                  # mlfn, resnet50, mgn; full and tiny
  python benchmarks/train_bench.py --networks=mlfn --sizes=full --dtype=bfloat16

For each network and size, both frameworks train the same network (full-size MLFN
is torchreid's own `MLFN` class from the `torchreid` package when it is installed;
otherwise, and for the other networks and sizes, the PyTorch twins of
`torch_reference.py`: torchreid's MLFN layout, torchvision's ResNet-50 as the IDE
baseline, MGN) on the same random batches of P x K identities: same batch size and
resolution, same loss, same optimiser and learning rate (the network's
`configs/<net>.py`). `full` is the config's network and resolution (ResNet-50: IDE's
`configs/ide.py`, last stride 1) at --batch_size images; `tiny` is the config's
`:synthetic` quick-start network, resolution and batch. Steps alternate between the
two frameworks (one reid_jax step, one PyTorch step, ...) so both see the same
machine load; each includes its host-to-device copy and ends when the loss is on
the host (the reid_jax training loop syncs every step too). Reported: the median
step over --steps steps after --warmup steps as img/s, reid_jax / PyTorch, and
reid_jax's compilation (lowering + XLA) and PyTorch's first step separately.
`--dtype=bfloat16` runs reid_jax with `dtype=bfloat16` (float32 params) and PyTorch
under `torch.autocast(bfloat16)`. Networks without a PyTorch twin (jlml, mpn, kpm)
are timed on the reid_jax side only. On a GPU, PyTorch runs on CUDA when it can.
"""
import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import torch_reference  # noqa: E402
from reid_jax import config_schema, models, optimizers, sharding, train  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# network -> (config file, PyTorch twin or None)
NETWORKS = {"mlfn": ("mlfn", torch_reference.MLFN), "resnet50": ("ide", torch_reference.ResNet50),
            "mgn": ("mgn", torch_reference.MGN), "jlml": ("jlml", None), "mpn": ("mpn", None),
            "kpm": ("kpm", None)}


def load_config(network, size):
  """The network's config: its defaults (`full`) or its quick-start (`tiny`)."""
  name = NETWORKS[network][0]
  spec = importlib.util.spec_from_file_location(f"configs_{name}", os.path.join(CONFIGS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("synthetic" if size == "tiny" else None)


def torch_twin(network, size):
  """(PyTorch constructor `f(num_classes, **model_kwargs)`, its name) or (None, None)."""
  if network == "mlfn" and size == "full":
    torchreid_mlfn = torch_reference.torchreid_model("mlfn")
    if torchreid_mlfn is not None:
      # loss='triplet': torchreid's MLFN then returns (logits, embedding) in training.
      return (lambda num_classes: torchreid_mlfn.MLFN(num_classes, loss="triplet"),
              "torchreid.models.mlfn.MLFN")
  twin = NETWORKS[network][1]
  return twin, twin and f"torch_reference.{twin.__name__}"


def make_batches(spec, image_size, batch_size, k, count, seed=0):
  """`count` random batches of the inputs `spec` trains on, P x K identities."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(batch_size // k), k).astype(np.int32)
  batches = []
  for _ in range(count):
    batch = {key: rng.standard_normal((batch_size, *image_size, c), np.float32)
             for key, c in spec.inputs}
    batch.update({key: (rng.random((batch_size, *image_size, c)) > 0.5).astype(np.float32)
                  for key, c in spec.train_inputs})
    batch["label"] = labels
    batches.append(batch)
  return batches


class JaxSide:
  """reid_jax's jitted train step (`train.compile_train_step`) on one network."""

  def __init__(self, network, config, num_classes, batch):
    self.spec = models.get_spec(network)
    model = models.get_model(network, num_classes, dtype=jnp.dtype(config.dtype),
                             **config.model_kwargs)
    self.mesh = sharding.create_mesh()
    t0 = time.perf_counter()
    variables = train.init_variables(config, model, jax.random.key(0), load_weights=False)
    tx = optimizers.create_optimizer(config, config.learning_rate)
    self.state = jax.device_put(train.state_from_variables(model, variables, tx),
                                sharding.replicated(self.mesh))
    jax.block_until_ready(self.state)
    self.init_s = time.perf_counter() - t0
    self.rng = jax.random.key(1)
    step = train.compile_train_step(self.mesh, self.spec, config.loss)
    t0 = time.perf_counter()
    self.step = step.lower(self.state, self._global(batch), self.rng).compile()
    self.compile_s = time.perf_counter() - t0
    self.num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))

  def _global(self, batch):
    return sharding.global_batch(self.mesh, batch)

  def __call__(self, batch):
    self.state, metrics = self.step(self.state, self._global(batch), self.rng)
    return float(metrics["loss"])


class TorchSide:
  """The PyTorch twin's eager train step: zero_grad, forward, loss, backward, step."""

  def __init__(self, network, twin, config, num_classes, dtype):
    self.network, self.config = network, config
    self.device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    self.model = twin(num_classes, **config.model_kwargs).to(self.device).train()
    self.num_params = sum(p.numel() for p in self.model.parameters())
    params, lr = self.model.parameters(), config.learning_rate
    if config.optimizer == "sgd":
      self.optimizer = torch.optim.SGD(params, lr, momentum=config.momentum,
                                       nesterov=config.nesterov, weight_decay=config.weight_decay)
    elif config.optimizer == "adamw":
      self.optimizer = torch.optim.AdamW(params, lr, weight_decay=config.weight_decay)
    else:
      self.optimizer = torch.optim.Adam(params, lr, weight_decay=config.weight_decay)
    self.autocast = torch.autocast(self.device, dtype=torch.bfloat16,
                                   enabled=dtype == "bfloat16")

  def __call__(self, batch):
    images = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).contiguous().to(self.device)
    labels = torch.from_numpy(batch["label"]).long().to(self.device)
    self.optimizer.zero_grad(set_to_none=True)
    with self.autocast:
      outputs = self.model(images)
      loss = torch_reference.loss(self.network, outputs, labels,
                                  **({"triplet_margin": self.config.loss.triplet_margin}
                                     if self.network == "mgn" else {}))
    loss.backward()
    self.optimizer.step()
    return loss.item()


def bench(network, size, args):
  config = load_config(network, size)
  config.dtype = args.dtype
  config_schema.validate(config)
  twin, twin_name = torch_twin(network, size)
  if size == "full":
    batch_size, k = args.batch_size, min(config.k_instances, args.batch_size)
  else:
    batch_size = config_schema.train_batch_size(config)
    k = config.k_instances if config.sampler == "pk" else 1
  spec = models.get_spec(network)
  batches = make_batches(spec, tuple(config.image_size), batch_size, k, args.warmup + args.steps)
  jax_side = JaxSide(network, config, args.num_classes, batches[0])
  torch_side = TorchSide(network, twin, config, args.num_classes, args.dtype) if twin else None
  if torch_side and torch_side.num_params != jax_side.num_params:
    raise AssertionError(f"{network}: {jax_side.num_params} parameters in reid_jax, "
                         f"{torch_side.num_params} in the PyTorch twin.")
  times = {"jax": [], "torch": []}
  first_torch, failed = None, {}
  for i, batch in enumerate(batches):
    for side, fn in (("jax", jax_side), ("torch", torch_side)):
      if fn is None or side in failed:
        continue
      t0 = time.perf_counter()
      loss = fn(batch)
      elapsed = time.perf_counter() - t0
      if not np.isfinite(loss):  # that side is reported as failed, not timed
        failed[side] = f"non-finite loss at step {i}"
        continue
      if side == "torch" and i == 0:
        first_torch = elapsed
      if i >= args.warmup:
        times[side].append(elapsed)
  ips = {side: batch_size / statistics.median(t) if t and side not in failed else None
         for side, t in times.items()}
  jax_ips, torch_ips = ips["jax"], ips["torch"]
  return {"network": network, "size": size, "batch": batch_size,
          "resolution": "x".join(map(str, config.image_size)), "jax_ips": jax_ips,
          "torch_ips": torch_ips, "ratio": jax_ips / torch_ips if jax_ips and torch_ips else None,
          "compile_s": jax_side.compile_s, "init_s": jax_side.init_s, "torch_first_s": first_torch,
          "optimizer": config.optimizer,
          "twin": twin_name + (f" ({failed['torch']})" if "torch" in failed else "") if twin_name else None,
          "jax_failed": failed.get("jax")}


def machine():
  cpu = platform.processor()
  if os.path.exists("/proc/cpuinfo"):
    names = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
    cpu = names[0] if names else cpu
  device = jax.devices()[0]
  return (f"reid_jax on {device.platform} ({device.device_kind}), jax {jax.__version__}; "
          f"PyTorch {torch.__version__} on {'cuda' if jax.default_backend() == 'gpu' and torch.cuda.is_available() else 'cpu'} "
          f"({torch.get_num_threads()} threads); {os.cpu_count()} CPUs: {cpu}")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--networks", default="mlfn,resnet50,mgn")
  parser.add_argument("--sizes", default="full,tiny")
  parser.add_argument("--dtype", default="float32", choices=config_schema.DTYPES)
  parser.add_argument("--batch_size", type=int, default=16, help="images per step at full size")
  parser.add_argument("--num_classes", type=int, default=751)
  parser.add_argument("--steps", type=int, default=5, help="timed steps per framework")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
  args = parser.parse_args()
  print(machine(), flush=True)
  header = ("| network | size | batch, resolution | optimiser | reid_jax img/s | PyTorch img/s "
            "| reid_jax / PyTorch | reid_jax compile | PyTorch first step | PyTorch model |")
  print(f"dtype {args.dtype}, median of {args.steps} steps after {args.warmup}\n{header}\n"
        + "|---" * 10 + "|", flush=True)
  for network in args.networks.split(","):
    if network not in NETWORKS:
      raise SystemExit(f"--networks: {network!r} is not one of {sorted(NETWORKS)}")
    for size in args.sizes.split(","):
      r = bench(network, size, args)
      fmt = lambda v, f: "—" if v is None else f.format(v)
      print(f"| {network} | {size} | {r['batch']}, {r['resolution']} | {r['optimizer']} "
            f"| {fmt(r['jax_ips'], '{:.2f}') if r['jax_ips'] else r['jax_failed']} | {fmt(r['torch_ips'], '{:.2f}')} "
            f"| {fmt(r['ratio'], '{:.2f}x')} | {r['compile_s']:.1f} s "
            f"| {fmt(r['torch_first_s'], '{:.2f} s')} | {fmt(r['twin'], '{}')} |", flush=True)


if __name__ == "__main__":
  main()
