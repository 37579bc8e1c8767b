"""Canonical sprites of the procedural families, drawn from a seed with numpy alone.

Each builder returns a float32 array (classes, styles, R, R) in [0, 1]: one centred,
upright image per (class, style), spanning normalised [-1, 1]². The families then scale,
rotate and place them. Nothing here needs fonts or downloads, so a family looks the same on
every machine for a given seed.

* shapes: dSprites' square, ellipse and heart (implicit curves, one style).
* digits / letters: a hand-designed pen-stroke skeleton per character, written by
  "writers" (styles) that differ in slant, aspect, pen width and a smooth random wobble of
  the whole glyph, and each (character, writer) pair gets its own wobble: handwriting-like
  variety, in the spirit of MNIST.
* garments: filled silhouettes of Fashion-MNIST's ten classes with per-style proportions and
  fill textures (solid, stripes, gradient, checks).
"""

from __future__ import annotations

import numpy as np

from ._raster import pixel_grid, polygon_mask, stroke_raster

__all__ = [
    "SHAPE_NAMES",
    "DIGIT_NAMES",
    "LETTER_NAMES",
    "GARMENT_NAMES",
    "build_shape_sources",
    "build_glyph_sources",
    "build_garment_sources",
]

SOURCE_RES = 64  # resolution of the canonical sprites (resampled to the patch size later)

SHAPE_NAMES = ("square", "ellipse", "heart")
DIGIT_NAMES = tuple("0123456789")
LETTER_NAMES = tuple("ACEHKMPSTX")
GARMENT_NAMES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)


# --------------------------------------------------------------------------- shapes
def build_shape_sources(seed: int = 0, resolution: int = 128) -> np.ndarray:
    """(3, 1, R, R) square, ellipse and heart; the seed is unused (dSprites has one style)."""
    del seed
    ss = 2
    x, y = pixel_grid(resolution * ss)
    square = (np.maximum(np.abs(x), np.abs(y)) <= 0.55).astype(np.float32)
    ellipse = ((x / 0.72) ** 2 + (y / 0.40) ** 2 <= 1.0).astype(np.float32)
    k = 0.62
    hx = x / k
    hy = -(y / k) + 0.125  # y up, centred
    heart = ((hx * hx + hy * hy - 1.0) ** 3 - hx * hx * hy**3 <= 0.0).astype(np.float32)
    imgs = np.stack([square, ellipse, heart])
    imgs = imgs.reshape(3, resolution, ss, resolution, ss).mean(axis=(2, 4))
    return imgs[:, None].astype(np.float32)


# --------------------------------------------------------------------------- glyphs
def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float) -> list[tuple[float, float]]:
    """Points of an elliptical arc in design space (y down; 0° = right, 90° = down)."""
    n = max(4, int(abs(a1 - a0) / 12) + 1)
    t = np.deg2rad(np.linspace(a0, a1, n))
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


# Pen strokes in a unit design box: x in [0, 1] left to right, y in [0, 1] top to bottom.
_DIGIT_STROKES: dict[str, list[list[tuple[float, float]]]] = {
    "0": [_arc(0.5, 0.5, 0.45, 0.5, -90, 270)],
    "1": [[(0.25, 0.22), (0.55, 0.0), (0.55, 1.0)]],
    "2": [_arc(0.5, 0.3, 0.42, 0.3, 200, 380) + [(0.05, 1.0), (0.95, 1.0)]],
    "3": [_arc(0.5, 0.25, 0.4, 0.25, 200, 450) + _arc(0.5, 0.75, 0.45, 0.25, -90, 160)],
    "4": [[(0.7, 0.0), (0.05, 0.7), (0.95, 0.7)], [(0.7, 0.05), (0.7, 1.0)]],
    "5": [[(0.9, 0.0), (0.2, 0.0), (0.13, 0.45)] + _arc(0.5, 0.68, 0.42, 0.32, -150, 150)],
    "6": [_arc(0.55, 0.5, 0.42, 0.5, -60, -190) + _arc(0.5, 0.72, 0.38, 0.28, 180, 540)],
    "7": [[(0.05, 0.0), (0.95, 0.0), (0.35, 1.0)]],
    "8": [_arc(0.5, 0.25, 0.35, 0.25, 90, 450), _arc(0.5, 0.72, 0.42, 0.28, -90, 270)],
    "9": [_arc(0.5, 0.3, 0.4, 0.3, 0, 360) + [(0.9, 0.3), (0.78, 1.0)]],
}

_LETTER_STROKES: dict[str, list[list[tuple[float, float]]]] = {
    "A": [[(0.0, 1.0), (0.5, 0.0), (1.0, 1.0)], [(0.22, 0.6), (0.78, 0.6)]],
    "C": [_arc(0.55, 0.5, 0.48, 0.5, -40, -320)],
    "E": [[(0.9, 0.0), (0.1, 0.0), (0.1, 1.0), (0.9, 1.0)], [(0.1, 0.5), (0.7, 0.5)]],
    "H": [[(0.1, 0.0), (0.1, 1.0)], [(0.9, 0.0), (0.9, 1.0)], [(0.1, 0.5), (0.9, 0.5)]],
    "K": [[(0.1, 0.0), (0.1, 1.0)], [(0.9, 0.0), (0.12, 0.62)], [(0.38, 0.45), (0.95, 1.0)]],
    "M": [[(0.0, 1.0), (0.1, 0.0), (0.5, 0.7), (0.9, 0.0), (1.0, 1.0)]],
    "P": [[(0.1, 1.0), (0.1, 0.0)], [(0.1, 0.0)] + _arc(0.55, 0.27, 0.38, 0.27, -90, 90) + [(0.1, 0.54)]],
    "S": [_arc(0.5, 0.27, 0.42, 0.27, -20, -270) + _arc(0.5, 0.77, 0.45, 0.23, -90, 160)],
    "T": [[(0.0, 0.0), (1.0, 0.0)], [(0.5, 0.0), (0.5, 1.0)]],
    "X": [[(0.05, 0.0), (0.95, 1.0)], [(0.95, 0.0), (0.05, 1.0)]],
}

GLYPH_STROKES = {**_DIGIT_STROKES, **_LETTER_STROKES}


def _densify(stroke: np.ndarray, step: float = 0.07) -> np.ndarray:
    """Resample a polyline so that a smooth displacement field can bend straight lines."""
    out = [stroke[:1]]
    for a, b in zip(stroke[:-1], stroke[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step)))
        t = np.linspace(0.0, 1.0, n + 1)[1:, None]
        out.append(a + t * (b - a))
    return np.concatenate(out, axis=0)


def _smooth_field(rng: np.random.Generator, amplitude: float, n_waves: int = 3):
    """A random smooth 2-D displacement field (sum of low-frequency plane waves)."""
    freqs = rng.uniform(0.5, 1.6, size=(2, n_waves, 2)) * rng.choice([-1.0, 1.0], size=(2, n_waves, 2))
    phases = rng.uniform(0.0, 2.0 * np.pi, size=(2, n_waves))
    amps = amplitude * rng.uniform(0.4, 1.0, size=(2, n_waves)) / np.sqrt(n_waves)

    def field(p: np.ndarray) -> np.ndarray:
        arg = np.einsum("nd,cwd->cnw", p, freqs) * np.pi + phases[:, None, :]
        return (np.sin(arg) * amps[:, None, :]).sum(axis=-1).T  # (n, 2)

    return field


def build_glyph_sources(
    characters: tuple[str, ...], num_styles: int, seed: int = 0, resolution: int = SOURCE_RES
) -> np.ndarray:
    """(len(characters), num_styles, R, R) handwriting-like glyphs.

    A style is a "writer": slant, aspect ratio, pen width and a wobble amplitude drawn from
    the seed; every (character, writer) pair also draws its own smooth wobble field and
    small stroke-end jitter, so no two glyphs are identical.
    """
    rng = np.random.default_rng([seed, 0x61F0])
    writers = [
        dict(
            slant=rng.uniform(-0.1, 0.28),
            aspect=rng.uniform(0.8, 1.15),
            width=rng.uniform(0.08, 0.15),
            wobble=rng.uniform(0.03, 0.09),
        )
        for _ in range(num_styles)
    ]
    out = np.zeros((len(characters), num_styles, resolution, resolution), dtype=np.float32)
    for ci, ch in enumerate(characters):
        if ch not in GLYPH_STROKES:
            raise ValueError(f"no stroke design for character {ch!r}; known: {''.join(sorted(GLYPH_STROKES))}")
        for si, w in enumerate(writers):
            g = np.random.default_rng([seed, ci, si, 0x7A])
            field = _smooth_field(g, w["wobble"])
            strokes = []
            for stroke in GLYPH_STROKES[ch]:
                pts = np.asarray(stroke, dtype=np.float64)
                pts = pts + g.normal(0.0, 0.025, size=pts.shape) * (len(pts) <= 5)
                pts = _densify(pts)
                # design box -> normalised coordinates (height 1.6, width ~0.8 * aspect)
                xy = np.empty_like(pts)
                xy[:, 0] = (pts[:, 0] - 0.5) * 0.8 * w["aspect"]
                xy[:, 1] = (pts[:, 1] - 0.5) * 1.6
                xy[:, 0] -= w["slant"] * xy[:, 1]
                strokes.append(xy + field(xy))
            width = w["width"] * g.uniform(0.85, 1.15)
            # keep the whole glyph inside the unit disk, so no rotation ever clips it
            reach = max(float(np.hypot(s[:, 0], s[:, 1]).max()) for s in strokes) + width
            shrink = min(1.0, (0.98 - width) / (reach - width))
            strokes = [(s * shrink).astype(np.float32) for s in strokes]
            out[ci, si] = stroke_raster(strokes, width, resolution)
    return out


# --------------------------------------------------------------------------- garments
def _half_ellipse(cx, cy, rx, ry, n=16):
    t = np.linspace(np.pi, 2 * np.pi, n)
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in t]


# (fill polygons, hole polygons) in the unit design box, y down.
_GARMENTS: dict[str, tuple[list, list]] = {
    "t-shirt": (
        [
            [
                (0.32, 0.05),
                (0.42, 0.05),
                (0.5, 0.12),
                (0.58, 0.05),
                (0.68, 0.05),
                (0.95, 0.25),
                (0.85, 0.42),
                (0.75, 0.34),
                (0.75, 0.95),
                (0.25, 0.95),
                (0.25, 0.34),
                (0.15, 0.42),
                (0.05, 0.25),
            ]
        ],
        [],
    ),
    "trouser": (
        [[(0.28, 0.02), (0.72, 0.02), (0.8, 0.98), (0.58, 0.98), (0.5, 0.3), (0.42, 0.98), (0.2, 0.98)]],
        [],
    ),
    "pullover": (
        [
            [
                (0.32, 0.05),
                (0.42, 0.05),
                (0.5, 0.1),
                (0.58, 0.05),
                (0.68, 0.05),
                (0.88, 0.2),
                (0.98, 0.85),
                (0.86, 0.88),
                (0.76, 0.4),
                (0.76, 0.92),
                (0.24, 0.92),
                (0.24, 0.4),
                (0.14, 0.88),
                (0.02, 0.85),
                (0.12, 0.2),
            ]
        ],
        [],
    ),
    "dress": (
        [
            [
                (0.36, 0.02),
                (0.45, 0.02),
                (0.5, 0.09),
                (0.55, 0.02),
                (0.64, 0.02),
                (0.63, 0.35),
                (0.86, 0.98),
                (0.14, 0.98),
                (0.37, 0.35),
            ]
        ],
        [],
    ),
    "coat": (
        [
            [
                (0.3, 0.02),
                (0.5, 0.2),
                (0.7, 0.02),
                (0.9, 0.15),
                (0.99, 0.9),
                (0.87, 0.92),
                (0.78, 0.38),
                (0.78, 0.99),
                (0.22, 0.99),
                (0.22, 0.38),
                (0.13, 0.92),
                (0.01, 0.9),
                (0.1, 0.15),
            ]
        ],
        [[(0.49, 0.22), (0.51, 0.22), (0.51, 0.99), (0.49, 0.99)]],
    ),
    "sandal": (
        [
            [(0.02, 0.8), (0.98, 0.74), (0.98, 0.86), (0.02, 0.92)],
            [(0.14, 0.8), (0.34, 0.42), (0.43, 0.45), (0.25, 0.8)],
            [(0.45, 0.78), (0.6, 0.42), (0.69, 0.45), (0.56, 0.78)],
            [(0.68, 0.77), (0.78, 0.5), (0.86, 0.52), (0.8, 0.76)],
            [(0.02, 0.8), (0.07, 0.52), (0.14, 0.53), (0.11, 0.8)],
        ],
        [],
    ),
    "shirt": (
        [
            [
                (0.33, 0.03),
                (0.5, 0.1),
                (0.67, 0.03),
                (0.86, 0.14),
                (0.94, 0.9),
                (0.83, 0.91),
                (0.74, 0.36),
                (0.74, 0.97),
                (0.26, 0.97),
                (0.26, 0.36),
                (0.17, 0.91),
                (0.06, 0.9),
                (0.14, 0.14),
            ]
        ],
        [[(0.42, 0.05), (0.5, 0.24), (0.58, 0.05)]]
        + [[(0.485, y), (0.515, y), (0.515, y + 0.03), (0.485, y + 0.03)] for y in (0.35, 0.5, 0.65, 0.8)],
    ),
    "sneaker": (
        [[(0.02, 0.52), (0.32, 0.48), (0.48, 0.32), (0.62, 0.3), (0.7, 0.44), (0.98, 0.58), (0.98, 0.8), (0.02, 0.8)]],
        [[(0.02, 0.7), (0.98, 0.7), (0.98, 0.73), (0.02, 0.73)]],
    ),
    "bag": (
        [[(0.08, 0.38), (0.92, 0.38), (0.92, 0.95), (0.08, 0.95)], _half_ellipse(0.5, 0.39, 0.28, 0.3)],
        [_half_ellipse(0.5, 0.39, 0.2, 0.22)],
    ),
    "ankle-boot": (
        [[(0.3, 0.03), (0.62, 0.03), (0.64, 0.5), (0.98, 0.68), (0.98, 0.93), (0.04, 0.93), (0.05, 0.72), (0.28, 0.6)]],
        [[(0.04, 0.84), (0.98, 0.84), (0.98, 0.87), (0.04, 0.87)]],
    ),
}


def _texture(kind: int, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    shade = rng.uniform(0.55, 1.0)
    contrast = rng.uniform(0.25, 0.5)
    freq = rng.uniform(3.0, 6.0)
    if kind == 0:
        t = np.ones_like(x)
    elif kind == 1:
        t = 1.0 - contrast * (np.sin(np.pi * freq * y) > 0)
    elif kind == 2:
        t = 1.0 - contrast * (np.sin(np.pi * freq * x) > 0)
    elif kind == 3:
        t = 1.0 - contrast * (y + 1.0) / 2.0
    else:
        t = 1.0 - contrast * ((np.sin(np.pi * freq * x) > 0) ^ (np.sin(np.pi * freq * y) > 0))
    return (shade * t).astype(np.float32)


def build_garment_sources(num_styles: int, seed: int = 0, resolution: int = SOURCE_RES) -> np.ndarray:
    """(10, num_styles, R, R) garment silhouettes with per-style proportions and textures."""
    out = np.zeros((len(GARMENT_NAMES), num_styles, resolution, resolution), dtype=np.float32)
    x, y = pixel_grid(resolution)
    for ci, name in enumerate(GARMENT_NAMES):
        fills, holes = _GARMENTS[name]
        for si in range(num_styles):
            g = np.random.default_rng([seed, ci, si, 0x6A])
            sx = g.uniform(0.88, 1.08)
            sy = g.uniform(0.9, 1.05)

            def to_norm(poly):
                p = np.asarray(poly, dtype=np.float64)
                p = p + g.normal(0.0, 0.012, size=p.shape)  # noqa: B023
                return np.stack([(p[:, 0] - 0.5) * 1.55 * sx, (p[:, 1] - 0.5) * 1.55 * sy], axis=1)  # noqa: B023

            cover = np.zeros((resolution, resolution), dtype=np.float32)
            for poly in fills:
                cover = np.maximum(cover, polygon_mask([to_norm(poly)], resolution))
            for poly in holes:
                cover = cover * (1.0 - polygon_mask([to_norm(poly)], resolution))
            out[ci, si] = cover * _texture(si % 5, x, y, g)
    return out
