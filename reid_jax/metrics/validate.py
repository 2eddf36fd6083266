"""Input checks shared by every public entry point of `reid_jax.metrics`.

Each check is a pure function that returns its (possibly converted) input or
raises; messages start with the name of the offending argument, so callers see
one style everywhere:

  TypeError   the dtype is not a real number type: complex, bool, object, strings,
              ... for distances and features; anything but an integer dtype for
              ids and cameras (floats are refused even when whole: convert with
              `.astype(int)`, so that a float label array is never mistaken for one);
              a non-integer max_rank.
  ValueError  wrong ndim, an empty query or gallery set (0 rows), mismatched lengths
              or feature dimensions, max_rank < 1, an unknown choice, NaN or inf
              entries ("distmat has 3 non-finite entries (first at [0, 5])").

All checks run on the host before anything is dispatched to a jitted kernel. The
finiteness check is the only one that reads every entry: one vectorised pass (row
sums of squares, which NaN and inf propagate to), followed by an exact count only
when that pass finds something. A `jax.Array` is checked where it lives (one
reduction), without copying it to the host.
"""
import numbers

import jax
import jax.numpy as jnp
import numpy as np

# Features whose squared L2 norm exceeds this make |q|^2 + |g|^2 - 2 q.g overflow float32.
MAX_SQ_NORM = float(np.finfo(np.float32).max) / 4


def _shape(x):
  return tuple(x.shape)


def as_array(x):
  """x as an array: a `jax.Array` is kept as it is (on its device), anything else via np.asarray."""
  return x if isinstance(x, jax.Array) else np.asarray(x)


def real_dtype(x, name):
  """Raises TypeError unless x has an integer or floating dtype (bool, complex, object,
  strings, datetimes, ... are refused)."""
  dtype = x.dtype
  if dtype == np.bool_ or not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
    raise TypeError(f"{name} must have a real (integer or floating) dtype, got {dtype}")
  return x


def ndim(x, name, expected, what=""):
  """Raises ValueError unless x has `expected` dimensions; `what` describes them."""
  if x.ndim != expected:
    raise ValueError(f"{name} must be {expected}-D{' ' + what if what else ''}, got shape {_shape(x)}")
  return x


def nonempty(x, name, what):
  """Raises ValueError if x has 0 rows; `what` names the set they are ("query", "gallery")."""
  if x.shape[0] == 0:
    raise ValueError(f"{name} has 0 rows: the {what} set is empty")
  return x


def length(x, name, n, source):
  """Raises ValueError unless len(x) == n; `source` says where n comes from."""
  if x.shape[0] != n:
    raise ValueError(f"{name} has length {x.shape[0]}, but {source} is {n}")
  return x


def _first_bad(bad):
  """'[i, j]' of the first True of a boolean array (C order)."""
  return "[" + ", ".join(str(int(i)) for i in np.unravel_index(int(np.argmax(bad)), bad.shape)) + "]"


def _non_finite_error(name, bad):
  return ValueError(f"{name} has {int(bad.sum())} non-finite entries (first at {_first_bad(bad)})")


def _host_all_finite(x):
  """Whether every entry of a floating numpy array is finite, in one fast pass."""
  if x.dtype in (np.float32, np.float64) and x.ndim == 2 and x.size:
    # NaN and inf make their row's sum of squares NaN or inf; a finite row whose sum
    # overflows only costs the exact check below.
    if np.isfinite(np.einsum("ij,ij->i", x, x)).all():
      return True
  return bool(np.isfinite(x).all())


def finite(x, name):
  """Raises ValueError if x has NaN or inf entries, with their count and the first index.

  Integer arrays are finite by construction and are not read. A `jax.Array` is
  reduced on its device; only when it has bad entries is their mask copied back.
  """
  if not jnp.issubdtype(x.dtype, jnp.floating):
    return x
  if isinstance(x, jax.Array):
    ok = jnp.isfinite(x)
    if not bool(ok.all()):
      raise _non_finite_error(name, ~np.asarray(ok))
    return x
  if not _host_all_finite(x):
    raise _non_finite_error(name, ~np.isfinite(x))
  return x


def distances(x, name, rows="query", cols="gallery"):
  """A [num_<rows>, num_<cols>] distance matrix: real dtype, 2-D, at least one row and
  one column (the sets they index are named in the error).

  Returns x as an array (a `jax.Array` stays one); `finite` checks its entries."""
  x = real_dtype(as_array(x), name)
  ndim(x, name, 2, f"[num_{rows}, num_{cols}]")
  if x.shape[0] == 0:
    raise ValueError(f"{name} has 0 rows: the {rows} set is empty")
  if x.shape[1] == 0:
    raise ValueError(f"{name} has 0 columns: the {cols} set is empty")
  return x


def shape(x, name, expected, source):
  """Raises ValueError unless x.shape == expected; `source` says where expected comes from."""
  if tuple(x.shape) != tuple(expected):
    raise ValueError(f"{name} has shape {_shape(x)}, expected {tuple(expected)} from {source}")
  return x


def features(x, name, what):
  """[n, d] features of the `what` set ("query", "gallery"): real dtype, 2-D, n >= 1.

  Returns a C-contiguous float32 numpy array; use `finite_features` on it next."""
  x = real_dtype(as_array(x), name)
  ndim(x, name, 2, "[num_images, feature_dim]")
  nonempty(x, name, what)
  return np.ascontiguousarray(x, np.float32)


def finite_features(x, name):
  """Raises ValueError unless every entry of float32 features x is finite and every
  row's squared norm stays below MAX_SQ_NORM (beyond it the distances overflow).

  One pass: the rows' squared norms (which NaN and inf propagate to)."""
  sq = np.einsum("ij,ij->i", x, x)
  if (sq <= MAX_SQ_NORM).all():  # False for NaN too
    return x
  finite(x, name)
  big = ~(sq <= MAX_SQ_NORM)
  raise ValueError(f"{name} has {int(big.sum())} rows whose squared L2 norm exceeds {MAX_SQ_NORM:.2e} "
                   f"(first at row {int(np.argmax(big))}): their distances would overflow float32")


def same_dim(a, a_name, b, b_name):
  """Raises ValueError unless features a and b have the same number of columns."""
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"{b_name} has feature dimension {b.shape[1]}, but {a_name} has {a.shape[1]}")


def ids(x, name, n, source):
  """1-D integer labels (person or camera ids) of length n, as int32.

  Raises TypeError for any non-integer dtype (bool and whole-number floats included),
  ValueError for the wrong ndim or length, or values outside int32."""
  x = as_array(x)
  if x.dtype == np.bool_ or not jnp.issubdtype(x.dtype, jnp.integer):
    raise TypeError(f"{name} must have an integer dtype, got {x.dtype}"
                    + (" (convert whole-number floats with .astype(int))"
                       if jnp.issubdtype(x.dtype, jnp.floating) else ""))
  x = np.asarray(x)
  ndim(x, name, 1)
  length(x, name, n, source)
  info = np.iinfo(np.int32)
  if x.size and (x.min() < info.min or x.max() > info.max):
    raise ValueError(f"{name} has values outside int32 [{info.min}, {info.max}]: "
                     f"[{x.min()}, {x.max()}]")
  return x.astype(np.int32)


def positive_int(x, name):
  """Raises TypeError unless x is an integer (bool refused), ValueError unless x >= 1."""
  if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Integral):
    raise TypeError(f"{name} must be an integer, got {x!r}")
  if x < 1:
    raise ValueError(f"{name} must be >= 1, got {x}")
  return int(x)


def fraction(x, name):
  """Raises TypeError unless x is a real number (bool refused), ValueError unless 0 <= x <= 1
  (NaN refused)."""
  if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
    raise TypeError(f"{name} must be a real number, got {x!r}")
  if not 0 <= x <= 1:
    raise ValueError(f"{name} must be in [0, 1], got {x}")
  return float(x)


def choice(x, name, choices):
  """Raises ValueError unless x is one of choices."""
  if x not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {x!r}")
  return x
