"""Small numpy rasterisation kernels behind the sprite families.

Everything here is pure numpy (no Pillow, no fonts), vectorised, and deterministic: the
canonical sprite of a class is drawn once at a fixed resolution (anti-aliased strokes,
polygons or implicit shapes), then resampled into a bank of scaled and rotated patches with a
bilinear warp and a box filter. Coordinates are *normalised*: a canonical image spans
[-1, 1] x [-1, 1], x to the right, y downwards, pixel centres at ``2 * (i + 0.5) / R - 1``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "pixel_grid",
    "stroke_raster",
    "polygon_mask",
    "resize_area",
    "warp_bank",
    "dilate",
    "hue_to_rgb",
]


def pixel_grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (x, y) coordinates of the pixel centres of a ``resolution``² image."""
    c = (2.0 * (np.arange(resolution, dtype=np.float32) + 0.5) / resolution - 1.0).astype(np.float32)
    y, x = np.meshgrid(c, c, indexing="ij")
    return x, y


def stroke_raster(points: list[np.ndarray], width: float, resolution: int) -> np.ndarray:
    """Anti-aliased rendering of polylines with round caps.

    ``points`` is a list of (n_i, 2) arrays of normalised (x, y) vertices; ``width`` is the
    stroke's half-width in normalised units. Returns a float32 (R, R) image in [0, 1].
    """
    segs = [np.stack([p[:-1], p[1:]], axis=1) for p in points if len(p) >= 2]
    singles = [p for p in points if len(p) == 1]
    for p in singles:  # a dot: a zero-length segment
        segs.append(np.stack([p, p], axis=1))
    seg = np.concatenate(segs, axis=0).astype(np.float32)  # (S, 2, 2)
    x, y = pixel_grid(resolution)
    px = x.reshape(-1, 1)
    py = y.reshape(-1, 1)
    ax, ay = seg[:, 0, 0][None], seg[:, 0, 1][None]
    dx, dy = (seg[:, 1, 0] - seg[:, 0, 0])[None], (seg[:, 1, 1] - seg[:, 0, 1])[None]
    length2 = np.maximum(dx * dx + dy * dy, 1e-12)
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / length2, 0.0, 1.0)
    ex = px - ax - t * dx
    ey = py - ay - t * dy
    dist = np.sqrt((ex * ex + ey * ey).min(axis=1))
    pixel = 2.0 / resolution
    img = np.clip(0.5 + (width - dist) / pixel, 0.0, 1.0)
    return img.reshape(resolution, resolution).astype(np.float32)


def polygon_mask(polygons: list[np.ndarray], resolution: int, supersample: int = 2) -> np.ndarray:
    """Even-odd fill of one or more closed polygons (holes by nesting), anti-aliased.

    Returns a float32 (R, R) coverage image in [0, 1].
    """
    r = resolution * supersample
    x, y = pixel_grid(r)
    inside = np.zeros((r, r), dtype=bool)
    for poly in polygons:
        p = np.asarray(poly, dtype=np.float32)
        q = np.roll(p, -1, axis=0)
        for (x1, y1), (x2, y2) in zip(p, q):
            if y1 == y2:
                continue
            crosses = (y1 > y) != (y2 > y)
            xint = (x2 - x1) * (y - y1) / (y2 - y1) + x1
            inside ^= crosses & (x < xint)
    cov = inside.astype(np.float32)
    if supersample > 1:
        cov = cov.reshape(resolution, supersample, resolution, supersample).mean(axis=(1, 3))
    return cov


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of an area-averaging (box) resampling, exact for any ratio."""
    edges_out = np.linspace(0.0, n_in, n_out + 1)
    lo = edges_out[:-1, None]
    hi = edges_out[1:, None]
    pix_lo = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, pix_lo + 1) - np.maximum(lo, pix_lo), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def _linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of a linear (triangle) upsampling with centre alignment."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    pos = np.clip(pos, 0.0, n_in - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = pos - i0
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), i0] += 1.0 - w1
    m[np.arange(n_out), i1] += w1
    return m


def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Area weights when shrinking, linear interpolation when enlarging."""
    return _area_matrix(n_in, n_out) if n_out <= n_in else _linear_matrix(n_in, n_out)


def resize_area(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a stack of square-or-not images (..., H, W) to (..., size, size) in float32.

    Separable: area averaging for shrinking (no aliasing), linear for enlarging.
    """
    h, w = images.shape[-2:]
    a = resample_matrix(h, size)
    b = resample_matrix(w, size)
    x = np.asarray(images, dtype=np.float32)
    return np.matmul(np.matmul(a, x), b.T)


def warp_bank(
    sources: np.ndarray,
    scales: np.ndarray,
    rotations_deg: np.ndarray,
    patch: int,
    supersample: int = 2,
    chunk: int = 16,
) -> np.ndarray:
    """Scaled and rotated copies of canonical sources, anti-aliased, as uint8.

    ``sources``: (M, R, R) float in [0, 1], content centred, spanning normalised [-1, 1]².
    Returns (M, len(scales), len(rotations_deg), patch, patch) uint8, where at scale 1 and
    rotation 0 the source fills the patch exactly. Positive angles rotate clockwise on screen.
    """
    m = sources.shape[0]
    out_res = patch * supersample
    src = resize_area(sources, out_res)  # match the source to the output sampling density
    src = np.pad(src, ((0, 0), (1, 1), (1, 1)))  # zero border for out-of-range taps
    res = out_res
    u, v = pixel_grid(out_res)
    u = u.reshape(-1)
    v = v.reshape(-1)
    th = np.deg2rad(np.asarray(rotations_deg, dtype=np.float64))
    sc = np.asarray(scales, dtype=np.float64)
    cos = (np.cos(th)[None, :] / sc[:, None]).reshape(-1, 1).astype(np.float32)
    sin = (np.sin(th)[None, :] / sc[:, None]).reshape(-1, 1).astype(np.float32)
    # inverse map: rotate the output coordinate by -theta, divide by the scale
    sx = cos * u[None] + sin * v[None]
    sy = -sin * u[None] + cos * v[None]
    # to padded pixel coordinates
    fx = (sx + 1.0) * (res / 2.0) - 0.5 + 1.0
    fy = (sy + 1.0) * (res / 2.0) - 0.5 + 1.0
    fx = np.clip(fx, 0.0, res + 0.999)
    fy = np.clip(fy, 0.0, res + 0.999)
    x0 = np.floor(fx).astype(np.intp)
    y0 = np.floor(fy).astype(np.intp)
    wx = (fx - x0).astype(np.float32)
    wy = (fy - y0).astype(np.float32)
    x1 = np.minimum(x0 + 1, res + 1)
    y1 = np.minimum(y0 + 1, res + 1)
    stride = res + 2
    i00 = y0 * stride + x0
    i01 = y0 * stride + x1
    i10 = y1 * stride + x0
    i11 = y1 * stride + x1
    n_t = cos.shape[0]
    out = np.empty((m, n_t, patch, patch), dtype=np.uint8)
    flat = src.reshape(m, -1)
    for start in range(0, m, chunk):
        f = flat[start : start + chunk]
        val = (
            f[:, i00] * ((1 - wx) * (1 - wy))
            + f[:, i01] * (wx * (1 - wy))
            + f[:, i10] * ((1 - wx) * wy)
            + f[:, i11] * (wx * wy)
        )  # (c, T, out_res²)
        val = val.reshape(-1, n_t, patch, supersample, patch, supersample).mean(axis=(3, 5))
        out[start : start + chunk] = np.clip(np.rint(val * 255.0), 0, 255).astype(np.uint8)
    return out.reshape(m, len(sc), len(th), patch, patch)


def dilate(image: np.ndarray, radius: int) -> np.ndarray:
    """Grey-level dilation (radius > 0) or erosion (radius < 0) with a square window."""
    if radius == 0:
        return image
    op = np.maximum if radius > 0 else np.minimum
    out = image.copy()
    r = abs(radius)
    pad_value = 0.0 if radius > 0 else 1.0
    padded = np.pad(image, r, constant_values=pad_value)
    h, w = image.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out = op(out, padded[r + dy : r + dy + h, r + dx : r + dx + w])
    return out


def hue_to_rgb(hue: np.ndarray) -> np.ndarray:
    """Fully saturated, full-value colours for hues in [0, 1): (n,) -> (n, 3) float32 in [0, 1]."""
    h = (np.asarray(hue, dtype=np.float32) % 1.0) * 6.0
    k = (np.array([5.0, 3.0, 1.0], dtype=np.float32)[None, :] + h[:, None]) % 6.0
    return (1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)).astype(np.float32)
