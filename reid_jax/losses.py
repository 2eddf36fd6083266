"""Losses as pure functions of arrays.

Per-example losses return one value per example (the caller reduces, so masking
and weighting stay outside); weight regularisers return a scalar. Every network's
training objective (`reid_jax.models.get_loss`) is assembled from these.
"""
import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Softmax cross-entropy per example.

  logits: [..., C]; labels: integer class indices broadcastable to logits.shape[:-1].
  Returns [...]. With `label_smoothing` = eps the target is (1 - eps) on the true
  class plus eps / C on every class (Szegedy et al., 2016), as in torchreid's
  `CrossEntropyLoss(label_smooth=True)`.
  """
  logits = logits.astype(jnp.float32)
  labels = jnp.broadcast_to(labels, logits.shape[:-1])
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype),
                                label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def identity_loss(outputs, batch, params, label_smoothing=0.0):
  """The objective of identity-classification networks (MLFN, the IDE ResNet):
  softmax cross-entropy of every head of `outputs['logits']` [H, B, C], averaged
  over the batch and summed over the heads."""
  del params
  ce = cross_entropy(outputs["logits"], batch["label"], label_smoothing).mean(axis=-1).sum()
  return ce, {"cross_entropy": ce}


def binary_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Sigmoid cross-entropy per example (KPM's verification loss, Sec. 4.3).

  logits: [...] same-person logits; targets: [...] in [0, 1] (1 = same person).
  Returns [...]: -t log sigmoid(z) - (1 - t) log sigmoid(-z), computed stably for
  logits of any magnitude.
  """
  return optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                            targets.astype(jnp.float32))


def pairwise_distances(x: jax.Array, y: jax.Array, metric: str = "euclidean") -> jax.Array:
  """[N, M] distances between the rows of `x` [N, D] and `y` [M, D].

  'euclidean': ||x - y||_2 (clamped at 1e-12 under the root so the gradient stays
  finite at zero); 'cosine': 1 - cos(x, y).
  """
  x = x.astype(jnp.float32)
  y = y.astype(jnp.float32)
  if metric == "euclidean":
    squared = (jnp.sum(x * x, -1)[:, None] + jnp.sum(y * y, -1)[None, :] - 2 * x @ y.T)
    return jnp.sqrt(jnp.maximum(squared, 1e-12))
  if metric == "cosine":
    normalize = lambda v: v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    return 1.0 - normalize(x) @ normalize(y).T
  raise ValueError(f"Unknown triplet metric {metric!r}; use 'euclidean' or 'cosine'.")


def batch_hard_triplet(features: jax.Array, labels: jax.Array, margin: float = 0.3,
                       metric: str = "euclidean", soft_margin: bool = False) -> jax.Array:
  """Batch-hard triplet loss per anchor (Hermans et al., 2017; MGN Eq. 2).

  features: [B, D]; labels: [B]. Returns [B]. Each anchor takes its farthest
  positive and closest negative in the batch; its loss is
  [margin + d(a, p) - d(a, n)]_+, or softplus(d(a, p) - d(a, n)) with
  `soft_margin` (the margin is then unused). An anchor without any negative in
  the batch gets 0.
  """
  distances = pairwise_distances(features, features, metric)
  same = labels[:, None] == labels[None, :]
  hardest_positive = jnp.max(jnp.where(same, distances, -jnp.inf), axis=1)
  hardest_negative = jnp.min(jnp.where(same, jnp.inf, distances), axis=1)
  gap = hardest_positive - hardest_negative
  return jax.nn.softplus(gap) if soft_margin else jax.nn.relu(gap + margin)


def active_mean(values: jax.Array) -> jax.Array:
  """Mean over the entries that are non-zero: per-anchor hinge losses averaged over
  the N_T triplets that violate the margin (MPN Eq. 3; Hermans et al., 2017's
  "mean over active triplets"). values: [N] >= 0. Returns a scalar, 0 when none is."""
  return jnp.sum(values) / jnp.maximum(jnp.sum(values > 0), 1)


def cosine_distance(x: jax.Array, y: jax.Array) -> jax.Array:
  """1 - cos(x_i, y_i) per row (MPN Eq. 4). x, y: [N, D]. Returns [N]; a zero row
  counts as orthogonal to everything (distance 1), with a finite gradient."""
  normalize = lambda v: v / optax.safe_norm(v, 1e-12, axis=-1, keepdims=True)
  return 1.0 - jnp.sum(normalize(x.astype(jnp.float32)) * normalize(y.astype(jnp.float32)), -1)


def class_mean_alignment(h: jax.Array, g: jax.Array, labels: jax.Array) -> jax.Array:
  """Class-wise feature space alignment L_CF (MPN Eq. 6-8).

  h, g: [B, D], the main and auxiliary tasks' features of the same images;
  labels: [B]. Returns the scalar (1/S) sum_i D(mean_a h_i^a, mean_a g_i^a) over
  the S identities of the batch, D the cosine distance. Identities may have
  different image counts.
  """
  same = (labels[:, None] == labels[None, :]).astype(jnp.float32)
  count = jnp.sum(same, axis=1)
  h_mean = same @ h.astype(jnp.float32) / count[:, None]
  g_mean = same @ g.astype(jnp.float32) / count[:, None]
  # Row b holds its identity's distance; weighting by 1 / count counts each identity once.
  return jnp.sum(cosine_distance(h_mean, g_mean) / count) / jnp.sum(1.0 / count)


def sample_alignment(h: jax.Array, g: jax.Array) -> jax.Array:
  """Sample-wise feature alignment L_SF (MPN Eq. 9): the mean over the batch of
  D(h^a, g^a). h, g: [B, D]. Returns a scalar."""
  return jnp.mean(cosine_distance(h, g))


def group_lasso(kernel: jax.Array) -> jax.Array:
  """l2,1 norm of a dense kernel over its input dimensions (JLML Eq. 1).

  kernel: [d_in, d_out] (Flax layout: W_G transposed). Returns the scalar
  sum_i ||w^i||_2, where w^i [d_out] are the weights leaving input dimension i:
  the penalty switches whole input features off. A zero group has gradient 0.
  """
  return jnp.sum(optax.safe_norm(kernel.astype(jnp.float32), 0.0, axis=1))


def exclusive_group_lasso(kernel: jax.Array, num_groups: int) -> jax.Array:
  """l1,2 exclusive group LASSO of a dense kernel (JLML Eq. 2).

  kernel: [m * d_l, d_out], its inputs the concatenation of `num_groups` = m
  blocks of d_l (the local stripes). Returns the scalar
  sum_i sum_j ||w_{l,j}^i||_1^2: per output i and block j the squared L1 norm of
  the weights from block j to output i, so the blocks compete within each output.
  A zero weight has gradient 0.
  """
  d_in, d_out = kernel.shape
  if d_in % num_groups:
    raise ValueError(f"A kernel of {d_in} inputs does not split into {num_groups} groups.")
  blocks = kernel.astype(jnp.float32).reshape(num_groups, d_in // num_groups, d_out)
  # sign(w) * w is |w| with the subgradient 0 at w = 0 (jnp.abs's is 1 there).
  return jnp.sum(jnp.sum(jnp.sign(blocks) * blocks, axis=1) ** 2)
