"""Sprite families: ground-truth image generators with a disentanglement_lib-style interface.

A family draws one sprite per image and knows the factors that produced it. Every family uses
the same seven factor columns, so batches from different families stack:

    0 class     sprite identity (shape, digit, letter, garment, IDX label)
    1 style     writer / texture / dataset example index (constant 0 for shapes)
    2 scale     relative sprite size (1 = the full sprite patch)
    3 rotation  degrees, positive = clockwise on screen
    4 x         horizontal position in [0, 1] (0 = left edge, 1 = right edge of its range)
    5 y         vertical position in [0, 1] (0 = top)
    6 hue       sprite colour hue in [0, 1) (0 when not coloured)

Factors take values on a grid (``factor_values``; ``factor_sizes`` values each, the
disentanglement_lib convention); ``render`` also accepts off-grid values and snaps them to the
nearest grid value (positions to the nearest pixel). Rendering is a gather from a pre-rendered
bank of scaled/rotated patches plus a vectorised paste, so a batch costs microseconds per image.

Variants apply to any family: ``moving`` (position sampled uniformly; otherwise centred),
``inverted`` (255 - image, applied last), ``background`` ("none", "grey", "noise",
"texture"), additive Gaussian ``noise`` (std as a fraction of 255), ``colour`` ("random" hue,
needs ``channels=3``), ``channels`` 1 or 3 and any ``image_size`` >= 8.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import sprites
from ._raster import hue_to_rgb, resize_area, warp_bank

__all__ = [
    "FACTOR_NAMES",
    "FAMILY_KINDS",
    "BACKGROUNDS",
    "SpriteFamily",
    "ProceduralFamily",
    "as_generator",
]

FACTOR_NAMES = ("class", "style", "scale", "rotation", "x", "y", "hue")
CLASS, STYLE, SCALE, ROTATION, X, Y, HUE = range(7)
BACKGROUNDS = ("none", "grey", "noise", "texture")
NUM_HUES = 6
SPRITE_FRACTION = 0.6  # sprite patch side as a fraction of the image side
_MIN_IMAGE_SIZE = 8


def as_generator(rng) -> np.random.Generator:
    """Accept a Generator, a legacy RandomState (disentanglement_lib), an int seed or None."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.RandomState):
        return np.random.default_rng(rng.randint(0, 2**31 - 1))
    raise TypeError(f"rng must be a numpy Generator, RandomState, int seed or None, got {type(rng).__name__}")


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (got {value!r})")
    return int(value)


def validate_image_args(image_size, channels) -> tuple[int, int]:
    """Shared validation of the image size and channel count, with fix-it messages."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < _MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be an integer >= {_MIN_IMAGE_SIZE} (got {image_size!r}); "
            "use e.g. image_size=32 or image_size=64"
        )
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    return int(image_size), int(channels)


_GAUSS_TABLE: np.ndarray | None = None


def gaussian_noise(rng: np.random.Generator, shape) -> np.ndarray:
    """Standard normal float32 noise, fast: 16 random bits per value index a table of the
    normal quantiles at (i + 0.5) / 65536 (exact up to that quantisation; |z| <= 4.3)."""
    global _GAUSS_TABLE
    if _GAUSS_TABLE is None:
        from statistics import NormalDist

        inv = NormalDist().inv_cdf
        _GAUSS_TABLE = np.array([inv((i + 0.5) / 65536.0) for i in range(65536)], dtype=np.float32)
    size = int(np.prod(shape))
    idx = np.frombuffer(rng.bytes(2 * size), dtype="<u2")
    return _GAUSS_TABLE[idx].reshape(shape)


# --------------------------------------------------------------------------- kinds and banks
@dataclass(frozen=True)
class FamilyKind:
    """Static description of a procedural family (classes, factor grids, canonical builder)."""

    name: str
    class_names: tuple[str, ...]
    default_styles: int
    scales: tuple[float, ...]
    rotations: tuple[float, ...]
    rotation_period: float | None
    build: Callable[[int, int], np.ndarray]  # (seed, num_styles) -> (K, S, R, R) float32
    description: str


def _linspace(lo, hi, n, endpoint=True) -> tuple[float, ...]:
    return tuple(float(v) for v in np.linspace(lo, hi, n, endpoint=endpoint))


FAMILY_KINDS: dict[str, FamilyKind] = {
    "shapes": FamilyKind(
        "shapes",
        sprites.SHAPE_NAMES,
        1,
        _linspace(0.5, 1.0, 6),
        _linspace(0.0, 360.0, 40, endpoint=False),
        360.0,
        lambda seed, styles: sprites.build_shape_sources(seed),
        "dSprites-like square, ellipse and heart",
    ),
    "digits": FamilyKind(
        "digits",
        sprites.DIGIT_NAMES,
        12,
        _linspace(0.7, 1.0, 4),
        _linspace(-24.0, 24.0, 5),
        None,
        lambda seed, styles: sprites.build_glyph_sources(sprites.DIGIT_NAMES, styles, seed),
        "MNIST-like handwritten digits 0-9 (procedural pen strokes, one writer per style)",
    ),
    "letters": FamilyKind(
        "letters",
        sprites.LETTER_NAMES,
        12,
        _linspace(0.7, 1.0, 4),
        _linspace(-24.0, 24.0, 5),
        None,
        lambda seed, styles: sprites.build_glyph_sources(sprites.LETTER_NAMES, styles, seed),
        "handwritten capital letters " + "".join(sprites.LETTER_NAMES),
    ),
    "garments": FamilyKind(
        "garments",
        sprites.GARMENT_NAMES,
        8,
        _linspace(0.8, 1.0, 3),
        _linspace(-12.0, 12.0, 3),
        None,
        lambda seed, styles: sprites.build_garment_sources(styles, seed),
        "Fashion-MNIST-like garment silhouettes with textures (10 classes)",
    ),
}

_cache_lock = threading.Lock()
_SOURCE_CACHE: dict[tuple, np.ndarray] = {}
_BANK_CACHE: dict[tuple, np.ndarray] = {}


def sprite_bank(kind: str, num_styles: int, seed: int, patch: int) -> np.ndarray:
    """Cached (K, S, n_scales, n_rotations, patch, patch) uint8 bank of a procedural family."""
    key = (kind, num_styles, seed, patch)
    bank = _BANK_CACHE.get(key)
    if bank is not None:
        return bank
    with _cache_lock:
        bank = _BANK_CACHE.get(key)
        if bank is not None:
            return bank
        spec = FAMILY_KINDS[kind]
        skey = (kind, num_styles, seed)
        src = _SOURCE_CACHE.get(skey)
        if src is None:
            src = spec.build(seed, num_styles)
            _SOURCE_CACHE[skey] = src
        k, s, r, _ = src.shape
        flat = warp_bank(src.reshape(k * s, r, r), np.array(spec.scales), np.array(spec.rotations), patch)
        bank = flat.reshape(k, s, len(spec.scales), len(spec.rotations), patch, patch)
        bank.setflags(write=False)
        _BANK_CACHE[key] = bank
        return bank


def clear_caches() -> None:
    """Forget all pre-rendered sprite banks (they are rebuilt on demand)."""
    with _cache_lock:
        _SOURCE_CACHE.clear()
        _BANK_CACHE.clear()


# --------------------------------------------------------------------------- base family
class SpriteFamily:
    """One sprite per image, with ground-truth factors (see the module docstring).

    Subclasses provide the identity factors (class, style, scale, rotation) and the patches;
    this class handles positions, variants, sampling and the disentanglement_lib interface.
    """

    factor_names: tuple[str, ...] = FACTOR_NAMES

    def __init__(
        self,
        name: str,
        image_size: int = 32,
        channels: int = 1,
        seed: int = 0,
        *,
        patch_size: int,
        moving: bool = False,
        inverted: bool = False,
        background: str = "none",
        noise: float = 0.0,
        colour: str | None = None,
    ):
        self.image_size, self.channels = validate_image_args(image_size, channels)
        self.seed = _check_int("seed", seed, 0)
        self.name = str(name)
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
        if not (isinstance(noise, (int, float, np.floating)) and 0.0 <= float(noise) <= 1.0):
            raise ValueError(f"noise is the std of pixel noise as a fraction of 255, in [0, 1]; got {noise!r}")
        if colour not in (None, "random"):
            raise ValueError(f"colour must be None (white sprites) or 'random' (a random hue), got {colour!r}")
        if colour is not None and self.channels != 3:
            raise ValueError("colour='random' needs channels=3 (RGB); pass channels=3 or drop the colour variant")
        self.moving = bool(moving)
        self.inverted = bool(inverted)
        self.background = background
        self.noise = float(noise)
        self.colour = colour
        self.patch_size = int(min(max(patch_size, 1), self.image_size))
        self._span = self.image_size - self.patch_size  # pixel range of the patch's top-left corner
        self._texture: np.ndarray | None = None
        rows = np.arange(self.patch_size)
        self._paste_offsets = (rows[:, None] * self.image_size + rows[None, :]).reshape(-1)

    def prepare(self) -> SpriteFamily:
        """Build whatever the family renders from (its sprite bank) now rather than on first use."""
        return self

    # ----- subclass hooks
    def _identity_values(self) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _patches(self, idx: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """(n, 4) grid indices of class, style, scale, rotation -> (n, P, P) uint8."""
        raise NotImplementedError

    def _sample_identity(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 4) grid indices of class, style, scale, rotation; uniform by default."""
        sizes = [len(v) for v in self._values[:4]]
        return np.stack([rng.integers(0, s, size=n) for s in sizes], axis=1)

    @property
    def class_names(self) -> tuple[str, ...]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _rotation_period(self) -> float | None:
        return None

    # ----- factor description
    @property
    def _values(self) -> list[np.ndarray]:
        vals = getattr(self, "_values_cache", None)
        if vals is None:
            if self.moving and self._span > 0:
                pos = np.linspace(0.0, 1.0, self._span + 1, dtype=np.float32)
            else:
                pos = np.array([0.5], dtype=np.float32)
            hue = (
                np.arange(NUM_HUES, dtype=np.float32) / NUM_HUES
                if self.colour == "random"
                else np.zeros(1, dtype=np.float32)
            )
            vals = [np.asarray(v, dtype=np.float32) for v in self._identity_values()] + [pos, pos.copy(), hue]
            self._values_cache = vals
        return vals

    @property
    def factor_values(self) -> tuple[np.ndarray, ...]:
        """The grid of values each factor takes when sampled (copies)."""
        return tuple(v.copy() for v in self._values)

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self._values)

    @property
    def factors_num_values(self) -> list[int]:  # disentanglement_lib's name
        return list(self.factor_sizes)

    @property
    def factor_ranges(self) -> tuple[tuple[float, float], ...]:
        """(min, max) of each factor as sampled."""
        return tuple((float(v.min()), float(v.max())) for v in self._values)

    @property
    def num_factors(self) -> int:
        return len(self.factor_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def observation_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)

    def factor_index(self, name: str) -> int:
        try:
            return self.factor_names.index(name)
        except ValueError:
            raise ValueError(f"unknown factor {name!r}; factors are {self.factor_names}") from None

    def _grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First value, spacing and size of every factor's (evenly spaced) grid."""
        grid = getattr(self, "_grid_cache", None)
        if grid is None:
            vals = self._values
            first = np.array([v[0] for v in vals], dtype=np.float32)
            step = np.array([v[1] - v[0] if len(v) > 1 else 1.0 for v in vals], dtype=np.float32)
            size = np.array([len(v) for v in vals], dtype=np.int64)
            grid = self._grid_cache = (first, step, size)
        return grid

    def factors_to_indices(self, factors: np.ndarray) -> np.ndarray:
        """Nearest grid index of every factor value: (n, F) float -> (n, F) int64."""
        f = self._check_factors(factors)
        first, step, size = self._grid()
        k = np.rint((f - first) / step).astype(np.int64)
        if self._rotation_period() is not None:
            k[:, ROTATION] %= size[ROTATION]
        np.clip(k, 0, size - 1, out=k)
        return k

    def indices_to_factors(self, indices: np.ndarray) -> np.ndarray:
        """Grid indices (n, F) -> factor values (n, F) float32."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 2 or idx.shape[1] != self.num_factors:
            raise ValueError(f"indices must have shape (n, {self.num_factors}), got {idx.shape}")
        return np.stack([v[np.clip(idx[:, j], 0, len(v) - 1)] for j, v in enumerate(self._values)], axis=1)

    # ----- sampling and rendering
    def sample_factors(self, n: int, rng=None) -> np.ndarray:
        """(n, 7) float32 factor values drawn from this family's distribution."""
        n = _check_int("n", n, 0)
        g = as_generator(rng)
        ident = self._sample_identity(n, g)
        out = np.empty((n, self.num_factors), dtype=np.float32)
        vals = self._values
        for j in range(4):
            out[:, j] = vals[j][ident[:, j]]
        for j in (X, Y, HUE):
            v = vals[j]
            out[:, j] = v[g.integers(0, len(v), size=n)] if len(v) > 1 else v[0]
        return out

    def render(self, factors: np.ndarray, rng=None) -> np.ndarray:
        """Images (n, H, W, C) uint8 for factor rows (n, 7); ``rng`` feeds pixel noise only."""
        f = self._check_factors(factors)
        n = f.shape[0]
        h = self.image_size
        idx = self.factors_to_indices(f)
        patches = self._patches(idx[:, :4])
        ox = np.clip(np.rint(f[:, X] * self._span), 0, self._span).astype(np.int64)
        oy = np.clip(np.rint(f[:, Y] * self._span), 0, self._span).astype(np.int64)
        canvas = np.zeros((n, h, h), dtype=np.uint8)
        base = np.arange(n, dtype=np.int64) * (h * h) + oy * h + ox
        canvas.reshape(-1)[base[:, None] + self._paste_offsets[None, :]] = patches.reshape(n, self._paste_offsets.size)
        return self._finish(canvas, f, rng)

    def sample(self, n: int, rng=None) -> tuple[np.ndarray, np.ndarray]:
        """(images (n, H, W, C) uint8, factors (n, 7) float32)."""
        g = as_generator(rng)
        f = self.sample_factors(n, g)
        return self.render(f, g), f

    def sample_observations_from_factors(self, factors: np.ndarray, random_state=None) -> np.ndarray:
        """disentanglement_lib name of :meth:`render`."""
        return self.render(factors, random_state)

    def sample_observations(self, n: int, random_state=None) -> np.ndarray:
        return self.sample(n, random_state)[0]

    def labels(self, factors: np.ndarray) -> np.ndarray:
        """Class ids (n,) int64 of factor rows."""
        return np.asarray(factors)[:, CLASS].astype(np.int64)

    # ----- variants
    def _finish(self, canvas: np.ndarray, f: np.ndarray, rng) -> np.ndarray:
        """Sprite coverage (n, H, W) uint8 -> final images with background, colour, noise, inversion."""
        plain = self.background == "none" and self.colour is None and self.noise == 0.0
        if plain:
            img = canvas[..., None]
            if self.channels == 3:
                img = np.repeat(img, 3, axis=-1)
            if self.inverted:
                img = 255 - img
            return np.ascontiguousarray(img)
        # planar float32 layout (n, channels, H*W): broadcasting stays on contiguous rows
        n, h, w = canvas.shape
        g = None
        alpha = canvas.reshape(n, 1, h * w).astype(np.float32)
        alpha *= np.float32(1.0 / 255.0)
        fg = hue_to_rgb(f[:, HUE])[:, :, None] if self.colour is not None else np.float32(1.0)
        if self.background == "none":
            img = alpha * fg
        else:
            if self.background == "grey":
                bg = np.full((1, 1, h * w), 0.35, dtype=np.float32)
            elif self.background == "texture":
                bg = self._background_texture().reshape(1, 1, h * w)
            else:  # noise: uniform in [0, 0.5]
                g = as_generator(rng)
                bg = np.frombuffer(g.bytes(n * h * w), dtype=np.uint8).reshape(n, 1, h * w)
                bg = bg.astype(np.float32) * np.float32(0.5 / 255.0)
            img = bg + alpha * (fg - bg)
        if self.noise > 0.0:
            g = g if g is not None else as_generator(rng)
            img += gaussian_noise(g, img.shape) * np.float32(self.noise)
        img *= np.float32(255.0)
        img += np.float32(0.5)
        out = np.clip(img, 0.0, 255.0).astype(np.uint8)  # round half up, then saturate
        if self.inverted:
            np.subtract(255, out, out=out)
        out = out.transpose(0, 2, 1).reshape(n, h, w, out.shape[1])
        if out.shape[-1] != self.channels:
            out = np.repeat(out, self.channels, axis=-1)
        return np.ascontiguousarray(out)

    def _background_texture(self) -> np.ndarray:
        """A fixed, smooth grey texture in [0.1, 0.45] (same for every image of the family)."""
        if self._texture is None:
            g = np.random.default_rng([self.seed, 0x7E7])
            c = (np.arange(self.image_size, dtype=np.float32) + 0.5) / self.image_size
            yy, xx = np.meshgrid(c, c, indexing="ij")
            t = np.zeros_like(xx)
            for _ in range(4):
                fx, fy = g.uniform(1.0, 4.0, size=2) * g.choice([-1, 1], size=2)
                t += np.sin(2 * np.pi * (fx * xx + fy * yy) + g.uniform(0, 2 * np.pi))
            t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
            self._texture = (0.1 + 0.35 * t).astype(np.float32)
        return self._texture

    def _check_factors(self, factors) -> np.ndarray:
        f = np.asarray(factors, dtype=np.float32)
        if f.ndim == 1 and f.shape[0] == self.num_factors:
            f = f[None]
        if f.ndim != 2 or f.shape[1] != self.num_factors:
            raise ValueError(
                f"factors must have shape (n, {self.num_factors}) with columns {self.factor_names}, got {f.shape}"
            )
        return f

    def variant_config(self) -> dict:
        """JSON-able description of this family (name, size, variant flags)."""
        return {
            "name": self.name,
            "image_size": self.image_size,
            "channels": self.channels,
            "seed": self.seed,
            "moving": self.moving,
            "inverted": self.inverted,
            "background": self.background,
            "noise": self.noise,
            "colour": self.colour,
        }

    def __repr__(self) -> str:
        flags = [k for k in ("moving", "inverted") if getattr(self, k)]
        if self.background != "none":
            flags.append(f"background={self.background}")
        if self.noise:
            flags.append(f"noise={self.noise}")
        if self.colour:
            flags.append(f"colour={self.colour}")
        return (
            f"{type(self).__name__}({self.name!r}, {self.image_size}x{self.image_size}x{self.channels}, "
            f"classes={self.num_classes}, seed={self.seed}{', ' if flags else ''}{', '.join(flags)})"
        )


class ProceduralFamily(SpriteFamily):
    """A family drawn from a pre-rendered bank (shapes, digits, letters, garments)."""

    def __init__(
        self,
        kind: str,
        image_size: int = 32,
        channels: int = 1,
        seed: int = 0,
        *,
        name: str | None = None,
        num_styles: int | None = None,
        **variant,
    ):
        if kind not in FAMILY_KINDS:
            raise ValueError(f"unknown sprite family {kind!r}; known families: {sorted(FAMILY_KINDS)}")
        self.kind = kind
        self.spec = FAMILY_KINDS[kind]
        styles = self.spec.default_styles if num_styles is None else num_styles
        if kind == "shapes" and styles != 1:
            raise ValueError("the shapes family has a single style; drop num_styles")
        self.num_styles = _check_int("num_styles", styles, 1)
        size, _ = validate_image_args(image_size, channels)
        patch = max(5, int(round(SPRITE_FRACTION * size)))
        super().__init__(name or kind, image_size, channels, seed, patch_size=patch, **variant)
        self._bank: np.ndarray | None = None

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    def _identity_values(self):
        return [
            np.arange(len(self.spec.class_names)),
            np.arange(self.num_styles),
            np.array(self.spec.scales),
            np.array(self.spec.rotations),
        ]

    def _rotation_period(self):
        return self.spec.rotation_period

    @property
    def bank(self) -> np.ndarray:
        """(K, S, n_scales, n_rotations, P, P) uint8, built on first use and shared (cached)."""
        if self._bank is None:
            self._bank = sprite_bank(self.kind, self.num_styles, self.seed, self.patch_size)
        return self._bank

    def prepare(self) -> ProceduralFamily:
        self.bank  # noqa: B018 - builds and caches the bank
        return self

    def _patches(self, idx: np.ndarray) -> np.ndarray:
        return self.bank[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]]

    def variant_config(self) -> dict:
        cfg = super().variant_config()
        cfg.update(kind=self.kind, num_styles=self.num_styles)
        return cfg


def resize_sprites(images: np.ndarray, size: int) -> np.ndarray:
    """Area-resize a stack (n, h, w) uint8 to (n, size, size) uint8."""
    if images.shape[-2:] == (size, size):
        return np.asarray(images, dtype=np.uint8)
    return np.clip(np.rint(resize_area(images, size)), 0, 255).astype(np.uint8)
