"""Private helpers shared by the evaluation modules: array conversion and input checks.

Every public metric accepts numpy arrays, Python sequences or CPU/GPU torch tensors and
funnels them through these helpers, so that errors read the same everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """Convert ``x`` (array-like or torch tensor) to a numpy array without touching ``x``.

    Tensors are detached and copied to the CPU first, so converting never builds a graph.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, duck-typed
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be numeric array-like, got {type(x).__name__}: {err}") from None
    return arr


def as_2d(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a float64 ``(num_samples, num_columns)`` array; 1-D becomes one column."""
    arr = to_numpy(x, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (num_samples, num_columns), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no columns (shape {arr.shape})")
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf), first in sample {int(rows[0])}"
        )


def check_pair(latents: Any, factors: Any, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (latents, factors) pair as used by the disentanglement metrics."""
    z = as_2d(latents, "latents")
    v = as_2d(factors, "factors")
    if z.shape[0] != v.shape[0]:
        raise ValueError(
            f"latents and factors must have the same number of samples (rows): "
            f"latents has shape {z.shape}, factors has shape {v.shape}"
        )
    check_finite(z, "latents")
    check_finite(v, "factors")
    if z.shape[0] < min_samples:
        raise ValueError(f"too few samples: got {z.shape[0]}, need at least {min_samples}")
    return z, v


def as_labels(x: Any, name: str) -> np.ndarray:
    """Return a 1-D sequence of ids (ints or strings) as a numpy array."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of domain ids, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def check_same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name_a} and {name_b} must have the same length, got {a.shape[0]} and {b.shape[0]}")
