"""Validation and conversion of image batches for the learner.

The learner accepts ``(B, C, H, W)`` floats in [0, 1] or ``(B, H, W, C)`` uint8 in 0..255, as
numpy arrays or torch tensors (either layout is accepted with either dtype when the shape makes
it unambiguous). Everything else is rejected with a ``TypeError``/``ValueError`` that says what
was expected, what came, and how to fix it. Resizing and colour conversion of arbitrary
observations is the job of :mod:`vase_rl.observations`, not of this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["as_image_batch", "extract_images"]

_FLOAT_TOLERANCE = 1e-4


def extract_images(item: Any) -> Any:
    """The image batch inside a stream item: the item itself, ``item.images``, ``item["images"]``
    or the first element of a tuple/list."""
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return item
    if hasattr(item, "images"):
        return item.images
    if isinstance(item, dict):
        for key in ("images", "image", "obs", "x"):
            if key in item:
                return item[key]
        raise ValueError(f"stream item is a dict without an 'images' key (keys: {sorted(item)})")
    if isinstance(item, (tuple, list)) and item:
        return item[0]
    raise TypeError(
        f"cannot find an image batch in a stream item of type {type(item).__name__}; yield arrays, "
        "(images, ...) tuples, dicts with 'images', or objects with an .images attribute"
    )


def as_image_batch(batch: Any, image_shape: tuple[int, int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Validate ``batch`` and return it as a float32 ``(B, C, H, W)`` tensor in [0, 1] on ``device``."""
    c, h, w = image_shape
    if isinstance(batch, np.ndarray):
        if batch.dtype == object:
            raise TypeError("image batch has dtype object; pass a numeric array (uint8 0..255 or float in [0, 1])")
        t = torch.from_numpy(np.ascontiguousarray(batch))
    elif isinstance(batch, torch.Tensor):
        t = batch.detach()
    else:
        raise TypeError(
            f"image batch must be a numpy array or torch tensor, got {type(batch).__name__}; "
            "convert lists with np.asarray(...)"
        )
    if t.ndim != 4:
        hint = " (a single image? add a batch dimension with x[None])" if t.ndim == 3 else ""
        raise ValueError(
            f"image batch must have 4 dims, (B, C, H, W) or (B, H, W, C); got shape {tuple(t.shape)}{hint}"
        )
    if t.shape[0] == 0:
        raise ValueError("image batch is empty (batch size 0); pass at least one image")
    shape = tuple(t.shape[1:])
    if shape == (c, h, w):
        layout = "chw"
    elif shape == (h, w, c):
        layout = "hwc"
    else:
        raise ValueError(_shape_mismatch_message(shape, (c, h, w)))
    if t.dtype == torch.uint8:
        t = t.to(device=device, non_blocking=True).float().div_(255.0)
    elif t.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        t = t.to(device=device, dtype=torch.float32, non_blocking=True)
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise ValueError(f"image batch contains {bad} NaN/inf values; clean the input before training or encoding")
        lo, hi = float(t.min()), float(t.max())
        if lo < -_FLOAT_TOLERANCE or hi > 1 + _FLOAT_TOLERANCE:
            hint = " (it looks like 0..255: divide by 255 or pass uint8)" if hi > 1.5 else ""
            raise ValueError(f"float images must lie in [0, 1]; got values in [{lo:.4g}, {hi:.4g}]{hint}")
        if lo < 0 or hi > 1:
            t = t.clamp_(0.0, 1.0)
    else:
        raise TypeError(f"image batch has dtype {t.dtype}; use uint8 (0..255) or float (0..1)")
    if layout == "hwc":
        t = t.permute(0, 3, 1, 2)
    return t.contiguous()


def _shape_mismatch_message(got: tuple[int, ...], expected_chw: tuple[int, int, int]) -> str:
    c, h, w = expected_chw
    base = (
        f"image batch has per-image shape {got}; this learner expects (C, H, W)={expected_chw} or (H, W, C)={(h, w, c)}"
    )
    for cand_c, cand_hw in ((got[0], got[1:]), (got[2], got[:2])):
        if tuple(cand_hw) == (h, w) and cand_c != c:
            return (
                base + f": channel count {cand_c} != {c} (convert colour/grey, or build the learner "
                f"with image_shape=({cand_c}, {h}, {w}))"
            )
    return base + (
        ": image size differs (resize with vase_rl.observations or set image_shape in the config to the data's size)"
    )
