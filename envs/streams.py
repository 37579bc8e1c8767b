"""Piece-wise stationary image streams for offline training (``VASE.fit``) and evaluation.

``make_stream(["moving_shapes", ("digits", 500), "moving_shapes"], batch_size=64)`` yields
``StreamBatch`` tuples, one per training step, each holding a batch of images and, beside it,
the ground truth the learner must not see: the true domain id and every image's factors.
Segments run one after another (a domain may return later and keeps its id); an optional
``transition_steps`` blends the first steps of each new segment with the previous domain.

Batches are a pure function of (seed, step), so a stream can be iterated again, indexed
(``stream[step]``) or resumed and always gives the same data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .domains import make_domain
from .families import SpriteFamily, validate_image_args

__all__ = ["StreamBatch", "Segment", "DataStream", "make_stream"]


class StreamBatch(NamedTuple):
    """One step of a stream. ``images`` first, so ``images = batch[0]`` works."""

    images: np.ndarray  # (B, H, W, C) uint8
    domain: int  # id of the segment's domain (index into DataStream.domain_names)
    domain_name: str
    factors: np.ndarray  # (B, 7) float32, columns FACTOR_NAMES
    step: int
    domain_ids: np.ndarray  # (B,) int64 true domain of each image (differs from `domain` only in transitions)


@dataclass(frozen=True)
class Segment:
    """A stationary stretch of the stream: steps [start, stop) drawn from ``name``."""

    name: str
    domain: int
    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class DataStream:
    """A finite, re-iterable sequence of :class:`StreamBatch` (see :func:`make_stream`)."""

    def __init__(
        self,
        sequence,
        batch_size: int,
        seed: int = 0,
        steps_per_domain: int = 1000,
        image_size: int = 32,
        channels: int = 1,
        transition_steps: int = 0,
        family_seed: int = 0,
    ):
        self.batch_size = _positive_int("batch_size", batch_size)
        self.image_size, self.channels = validate_image_args(image_size, channels)
        steps_per_domain = _positive_int("steps_per_domain", steps_per_domain)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        if (
            isinstance(transition_steps, bool)
            or not isinstance(transition_steps, (int, np.integer))
            or transition_steps < 0
        ):
            raise ValueError(f"transition_steps must be an integer >= 0, got {transition_steps!r}")
        self.transition_steps = int(transition_steps)

        if isinstance(sequence, (str, SpriteFamily)):
            sequence = [sequence]
        items = list(sequence) if sequence is not None else []
        if not items:
            raise ValueError(
                "sequence is empty; pass domain names such as ['moving_shapes', 'digits', 'moving_digits']"
            )

        self.families: dict[str, SpriteFamily] = {}
        self.domain_names: list[str] = []
        self.segments: list[Segment] = []
        start = 0
        for pos, item in enumerate(items):
            if isinstance(item, (tuple, list)):
                if len(item) != 2:
                    raise ValueError(f"sequence item {pos} must be a name or a (name, steps) pair, got {item!r}")
                what, steps = item
                steps = _positive_int(f"steps of sequence item {pos} ({what!r})", steps)
            else:
                what, steps = item, steps_per_domain
            name = self._add_domain(what, family_seed, pos)
            self.segments.append(Segment(name, self.domain_names.index(name), start, start + steps))
            start += steps
        self.num_steps = start
        for seg in self.segments[1:]:
            if self.transition_steps >= seg.length:
                raise ValueError(
                    f"transition_steps={self.transition_steps} must be shorter than every segment after the "
                    f"first; segment {seg.name!r} has {seg.length} steps"
                )
        self._starts = np.array([s.start for s in self.segments], dtype=np.int64)

    def _add_domain(self, what, family_seed: int, pos: int) -> str:
        if isinstance(what, SpriteFamily):
            fam, name = what, what.name
            if (fam.image_size, fam.channels) != (self.image_size, self.channels):
                raise ValueError(
                    f"family {name!r} renders {fam.image_size}x{fam.image_size}x{fam.channels} but the stream is "
                    f"{self.image_size}x{self.image_size}x{self.channels}; make them agree"
                )
            known = self.families.get(name)
            if known is not None and known is not fam:
                raise ValueError(f"two different families are both named {name!r}; give them distinct names")
        elif isinstance(what, str):
            name = what
            fam = self.families.get(name) or make_domain(name, self.image_size, self.channels, seed=family_seed)
        else:
            raise ValueError(f"sequence item {pos} must be a domain name or a SpriteFamily, got {what!r}")
        if name not in self.families:
            self.families[name] = fam
            self.domain_names.append(name)
        return name

    # ----- structure
    @property
    def boundaries(self) -> list[int]:
        """Steps at which the true domain changes (the first step of each new segment)."""
        return [b.start for a, b in zip(self.segments, self.segments[1:]) if a.name != b.name]

    @property
    def num_domains(self) -> int:
        return len(self.domain_names)

    def segment_at(self, step: int) -> Segment:
        if not 0 <= step < self.num_steps:
            raise IndexError(f"step {step} outside the stream's {self.num_steps} steps")
        return self.segments[int(np.searchsorted(self._starts, step, side="right")) - 1]

    def domain_at(self, step: int) -> int:
        """True domain id of the segment holding ``step``."""
        return self.segment_at(step).domain

    def __len__(self) -> int:
        return self.num_steps

    # ----- data
    def __getitem__(self, step: int) -> StreamBatch:
        if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
            raise TypeError(f"stream steps are integers, got {type(step).__name__}")
        if step < 0:
            step += self.num_steps
        seg_idx = int(np.searchsorted(self._starts, step, side="right")) - 1
        if not 0 <= step < self.num_steps:
            raise IndexError(f"step {step} outside the stream's {self.num_steps} steps")
        seg = self.segments[seg_idx]
        rng = np.random.default_rng([self.seed, int(step)])
        fam = self.families[seg.name]
        b = self.batch_size
        into = step - seg.start
        if seg_idx > 0 and into < self.transition_steps and self.segments[seg_idx - 1].name != seg.name:
            prev = self.segments[seg_idx - 1]
            p_new = (into + 1) / (self.transition_steps + 1)
            new = rng.random(b) < p_new
            n_new = int(new.sum())
            images = np.empty((b, self.image_size, self.image_size, self.channels), dtype=np.uint8)
            factors = np.empty((b, 7), dtype=np.float32)
            ids = np.where(new, seg.domain, prev.domain).astype(np.int64)
            if n_new:
                images[new], factors[new] = fam.sample(n_new, rng)
            if n_new < b:
                images[~new], factors[~new] = self.families[prev.name].sample(b - n_new, rng)
        else:
            images, factors = fam.sample(b, rng)
            ids = np.full(b, seg.domain, dtype=np.int64)
        return StreamBatch(images, seg.domain, seg.name, factors, int(step), ids)

    def __iter__(self) -> Iterator[StreamBatch]:
        for step in range(self.num_steps):
            yield self[step]

    def __repr__(self) -> str:
        segs = ", ".join(f"{s.name}[{s.start}:{s.stop}]" for s in self.segments)
        return (
            f"DataStream({segs}; batch_size={self.batch_size}, {self.image_size}x{self.image_size}x{self.channels}, "
            f"seed={self.seed}, transition_steps={self.transition_steps})"
        )


def make_stream(
    sequence: Sequence,
    batch_size: int,
    seed: int = 0,
    steps_per_domain: int = 1000,
    image_size: int = 32,
    channels: int = 1,
    transition_steps: int = 0,
    family_seed: int = 0,
) -> DataStream:
    """A piece-wise stationary stream of image batches with ground truth.

    ``sequence`` lists domain names (or SpriteFamily objects), each optionally paired with its
    number of steps: ``["moving_shapes", ("digits", 500), "moving_shapes"]``; unpaired items
    last ``steps_per_domain`` steps. A name that appears again keeps its domain id.
    ``seed`` drives the sampling, ``family_seed`` the procedural sprites themselves (writers,
    textures), so streams with different seeds share the same visual domains.
    ``transition_steps`` > 0 makes each change gradual: at the k-th step of a new segment each
    image comes from the new domain with probability k / (transition_steps + 1).
    """
    return DataStream(
        sequence,
        batch_size,
        seed=seed,
        steps_per_domain=steps_per_domain,
        image_size=image_size,
        channels=channels,
        transition_steps=transition_steps,
        family_seed=family_seed,
    )
