"""Building blocks the networks share: initialisation, BatchNorm, identity classifier,
horizontal stripes."""
import flax.linen as nn

# Kaiming-normal (fan_out), as torchvision and torchreid initialise convolutions.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(train, dtype, name):
  """PyTorch-semantics BatchNorm (momentum 0.1, eps 1e-5) with a two-pass batch
  variance: E[x^2] - E[x]^2 loses the small variances of pooled features to
  cancellation, enough to make sharded and unsharded steps disagree."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      use_fast_variance=False, dtype=dtype, name=name)


def classifier(num_classes, dtype, name="classifier"):
  """Identity classifier: a linear layer with N(0, 0.01) weights and zero bias."""
  return nn.Dense(num_classes, kernel_init=nn.initializers.normal(0.01), dtype=dtype, name=name)


def stripe_bounds(height: int, num_parts: int) -> list:
  """(first, end) rows of each of `num_parts` horizontal stripes of `height` rows:
  floor(k h / K) .. ceil((k + 1) h / K), torch's adaptive pooling bands, which are the
  uniform division when K divides h and overlap by a row otherwise."""
  return [((k * height) // num_parts, -((-(k + 1) * height) // num_parts))
          for k in range(num_parts)]
