"""Property-based tests (Hypothesis) of how observation spaces are read.

For random Box shapes, dtypes, bounds and options, and random Dict layouts, the adapter and the
wrappers' feed either work — and then read every frame as the documented rules say (value range,
channel axis, frame order, Dict entries passed through untouched) — or raise the documented
``TypeError``/``ValueError`` naming the fix. Nothing is silently misread. The rules are written
out here independently of vase_rl/observations.py (``documented_reading``). A few hundred
examples (the same ones every run: ``derandomize``) take a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vase_rl import VASE, VASEConfig
from vase_rl.observations import LUMA_WEIGHTS, MIN_IMAGE_SIDE, ImageObservationAdapter
from vase_rl.wrappers import LATENT_KEY, LatentFeed

# derandomize: the same examples on every run (a deterministic suite); no example database on disk
SETTINGS = settings(
    max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
LEARNER_SHAPES = [(1, 16, 16), (3, 16, 16)]
DTYPES = [np.uint8, np.int16, np.int32, np.float32, np.float64, np.bool_]
# weighted towards readable images, so that both outcomes are common
BOUNDS = [(0, 255)] * 4 + [(0, 1)] * 3 + [(-1, 1), (0, 10), (0, np.inf), (-np.inf, np.inf), (0, 1000), (10, 255)]
SIDES = [16, 20, 33] * 3 + [1, 2, 3, 4, 6, 7, 9]
FIX_WORDS = ("value_range", "allow_small_images", "frame_stack", "channels_first", "image_key", "Supported", "drop")


def documented_reading(shape, dtype, low, high, channels_first, value_range, frame_stack, allow_small):
    """The rules of docs/RL.md: (layout, frames, C, H, W, (lo, hi)) or None if it must be refused."""
    dtype = np.dtype(dtype)
    k = frame_stack or 1
    fits = {1, 3} if k == 1 else {k, 3 * k}
    if len(shape) == 2:
        if channels_first is not None or k != 1:
            return None
        layout, c, h, w = "hw", 1, shape[0], shape[1]
    elif len(shape) == 3:
        first, last = shape[0] in fits, shape[-1] in fits
        cf = channels_first
        if cf is None:
            cf = False if last else (True if first else None)
        if cf is None or (cf and not first) or (not cf and not last):
            return None
        total = shape[0] if cf else shape[-1]
        layout, c = ("chw" if cf else "hwc"), total // k
        h, w = (shape[1], shape[2]) if cf else (shape[0], shape[1])
    elif len(shape) == 4 and k > 1 and shape[0] == k and shape[-1] in (1, 3) and channels_first is None:
        layout, c, h, w = "khwc", shape[-1], shape[1], shape[2]
    else:
        return None
    if min(h, w) < MIN_IMAGE_SIDE and not allow_small:
        return None
    if value_range is not None:
        rng = tuple(float(v) for v in value_range)
    else:
        rng = None
        if np.isfinite(low) and np.isfinite(high) and low >= 0:
            if np.issubdtype(dtype, np.integer):
                rng = (0.0, 255.0) if high == 255 else (0.0, 1.0) if high == 1 else None
            elif np.issubdtype(dtype, np.floating):
                rng = (0.0, 1.0) if high <= 1 else (0.0, 255.0) if high == 255 else None
        if rng is None:
            return None
    return layout, k, c, h, w, rng


@st.composite
def box_cases(draw):
    ndim = draw(st.sampled_from([1, 2, 2, 3, 3, 3, 3, 4]))
    shape = []
    for axis in range(ndim):
        # channel-like sizes often at the ends, so that valid layouts come up
        if ndim >= 3 and axis in (0, ndim - 1) and draw(st.booleans()):
            shape.append(draw(st.sampled_from([1, 3, 1, 3, 2, 4, 6, 9])))
        else:
            shape.append(draw(st.sampled_from(SIDES)))
    dtype = draw(st.sampled_from(DTYPES))
    low, high = draw(st.sampled_from(BOUNDS))
    if np.issubdtype(np.dtype(dtype), np.integer) and not (np.isfinite(low) and np.isfinite(high)):
        low, high = 0, 255  # integer Boxes cannot be unbounded
    if np.dtype(dtype) == np.bool_:
        low, high = 0, 1
    elif np.issubdtype(np.dtype(dtype), np.integer):  # what the dtype can hold (Gymnasium refuses more)
        info = np.iinfo(dtype)
        low, high = max(low, info.min), min(high, info.max)
    options = dict(
        channels_first=draw(st.sampled_from([None, None, None, True, False])),
        value_range=draw(st.sampled_from([None, None, None, None, (0, 255), (0, 1), (-1, 1)])),
        frame_stack=draw(st.sampled_from([None, None, None, 1, 2, 3])),
        allow_small_images=draw(st.booleans()),
    )
    learner_shape = draw(st.sampled_from(LEARNER_SHAPES))
    return tuple(shape), dtype, low, high, options, learner_shape


def _fill_value(dtype, rng, fraction):
    """A pixel value near ``fraction`` of the range that ``dtype`` can hold, and what it must read as."""
    lo, hi = rng
    dtype = np.dtype(dtype)
    value = lo + fraction * (hi - lo)
    if dtype == np.bool_:
        value = 1.0 if fraction > 0.5 else 0.0
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        value = float(np.clip(np.round(value), info.min, info.max))
    else:
        value = float(np.asarray(value, dtype=dtype))
    return value, float(np.clip((value - lo) / (hi - lo), 0.0, 1.0))


@st.composite
def image_like_cases(draw):
    """Spaces built from a layout (mostly readable ones), so the reading itself is exercised."""
    layout = draw(st.sampled_from(["hw", "hwc", "chw", "khwc"]))
    c = draw(st.sampled_from([1, 3]))
    k = (
        1
        if layout == "hw"
        else draw(st.sampled_from([1, 1, 2, 3]))
        if layout != "khwc"
        else draw(st.sampled_from([2, 3]))
    )
    h, w = draw(st.sampled_from([16, 20, 33])), draw(st.sampled_from([16, 21, 32]))
    shape = {"hw": (h, w), "hwc": (h, w, k * c), "chw": (k * c, h, w), "khwc": (k, h, w, c)}[layout]
    dtype = draw(st.sampled_from([np.uint8, np.int32, np.float32, np.float64]))
    if np.issubdtype(np.dtype(dtype), np.integer):
        low, high = draw(st.sampled_from([(0, 255), (0, 255), (0, 1), (0, 10)]))
    else:
        low, high = draw(st.sampled_from([(0, 1), (0, 255), (-np.inf, np.inf), (-1, 1)]))
    options = dict(
        channels_first=None,
        value_range=draw(st.sampled_from([None, None, (0, 255), (0, 1), (-1, 1)])),
        frame_stack=None if k == 1 and draw(st.booleans()) else k,
        allow_small_images=False,
    )
    return shape, dtype, low, high, options, draw(st.sampled_from(LEARNER_SHAPES))


@SETTINGS
@given(st.one_of(box_cases(), image_like_cases()))
def test_every_box_is_read_as_documented_or_refused_with_the_fix(case):
    shape, dtype, low, high, options, learner_shape = case
    space = spaces.Box(low, high, shape, dtype)
    expected = documented_reading(
        shape,
        dtype,
        float(low),
        float(high),
        options["channels_first"],
        options["value_range"],
        options["frame_stack"],
        options["allow_small_images"],
    )
    event("refused" if expected is None else f"read as {expected[0]}, {expected[1]} frame(s)")
    if expected is None:
        with pytest.raises((TypeError, ValueError)) as info:
            ImageObservationAdapter(space, learner_shape, **options)
        assert any(word in str(info.value) for word in FIX_WORDS), str(info.value)
        return
    adapter = ImageObservationAdapter(space, learner_shape, **options)
    layout, k, c, h, w, rng = expected
    assert (adapter.layout, adapter.frames, adapter.input_shape) == (layout, k, (c, h, w))
    assert adapter.value_range == pytest.approx(rng)

    # one observation whose frame j, channel i holds its own constant: the reading must give, per
    # frame row, the constant (grey) or the per-channel constants (RGB learner) or their luma (grey learner)
    fractions = np.linspace(0.1, 0.9, k * c).reshape(k, c)
    values = np.zeros((k, c))
    reads = np.zeros((k, c))
    for j in range(k):
        for i in range(c):
            values[j, i], reads[j, i] = _fill_value(dtype, rng, fractions[j, i])
    frames = np.stack([np.broadcast_to(values[j], (h, w, c)) for j in range(k)])  # (k, H, W, C)
    if layout == "hw":
        obs = frames[0, ..., 0]
    elif layout == "hwc":
        obs = frames.transpose(1, 2, 0, 3).reshape(h, w, k * c)
    elif layout == "chw":
        obs = frames.transpose(0, 3, 1, 2).reshape(k * c, h, w)
    else:
        obs = frames
    x = adapter.to_tensor(obs.astype(dtype), batched=False)
    out_c = learner_shape[0]
    assert x.shape == (k, *learner_shape) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    for j in range(k):
        if out_c == c:
            target = reads[j]
        elif out_c == 1:  # RGB -> grey: luma of the channel constants
            target = np.array([np.dot(LUMA_WEIGHTS, reads[j])])
        else:  # grey -> RGB: repeated
            target = np.repeat(reads[j], 3)
        got = x[j].reshape(out_c, -1)
        np.testing.assert_allclose(got.min(1).values.numpy(), target, atol=2e-3)
        np.testing.assert_allclose(got.max(1).values.numpy(), target, atol=2e-3)


_LEARNER = None


def _learner():
    global _LEARNER
    if _LEARNER is None:
        cfg = VASEConfig.preset("cpu32", image_shape=(1, 16, 16), width=0.25, latent_dim=4)
        _LEARNER = VASE(cfg, seed=0, device="cpu")
    return _LEARNER


OTHER_SPACES = [
    spaces.Discrete(4),
    spaces.Box(-1.0, 1.0, (3,), np.float32),
    spaces.MultiBinary(2),
    spaces.Box(0, 255, (20, 20), np.uint8),  # a second image is passed through, not encoded
]


@st.composite
def dict_cases(draw):
    n_other = draw(st.integers(0, 3))
    names = draw(
        st.lists(
            st.sampled_from(["direction", "state", "flags", "aux", "latents"]),
            min_size=n_other,
            max_size=n_other,
            unique=True,
        )
    )
    others = {name: draw(st.sampled_from(OTHER_SPACES)) for name in names}
    image_name = draw(st.sampled_from(["image", "pixels", "rgb"]))
    image = spaces.Box(0, 255, draw(st.sampled_from([(20, 20, 3), (16, 24), (1, 32, 32)])), np.uint8)
    layout = dict(others)
    layout[image_name] = image
    image_key = draw(st.sampled_from([image_name, image_name, None, "missing"]))
    keep = draw(st.sampled_from([None, None, [], "some"]))
    if keep == "some":
        keep = draw(st.lists(st.sampled_from(sorted(layout)), max_size=2, unique=True))
    latents_only = draw(st.booleans())
    return spaces.Dict(layout), image_name, image_key, keep, latents_only


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(dict_cases(), st.integers(0, 2**16))
def test_every_dict_layout_encodes_its_image_and_passes_the_rest_through_or_raises(case, seed):
    space, image_name, image_key, keep, latents_only = case
    others = [k for k in space.spaces if k != image_name]
    valid = image_key == image_name
    if valid and latents_only and keep:
        valid = False
    if valid and keep is not None and not latents_only and any(k not in others for k in keep):
        valid = False
    kept = None if latents_only else (others if keep is None else list(keep))
    if valid and kept is not None and LATENT_KEY in kept:
        valid = False
    event("valid" if valid else "refused")
    learner = _learner()
    kwargs = dict(image_key=image_key, keep_keys=keep, latents_only=latents_only)
    if not valid:
        with pytest.raises((TypeError, ValueError)) as info:
            LatentFeed(space, learner, **kwargs)
        assert any(
            word in str(info.value) for word in (*FIX_WORDS, "keep_keys", "latents_only", "keys are", LATENT_KEY)
        )
        return
    feed = LatentFeed(space, learner, learning=False, **kwargs)
    space.seed(seed)
    batch = [space.sample() for _ in range(3)]
    raw = {k: np.stack([b[k] for b in batch]) for k in space.spaces}
    z = feed.encode(feed.prepare(raw[image_name]))
    out = feed.output(z, raw)
    if kept is None:
        assert isinstance(feed.output_space, spaces.Box) and isinstance(out, np.ndarray)
        assert out.shape == (3, feed.dim)
        return
    assert isinstance(feed.output_space, spaces.Dict)
    assert sorted(feed.output_space.spaces) == sorted([LATENT_KEY, *kept])
    assert sorted(out) == sorted([LATENT_KEY, *kept])
    np.testing.assert_array_equal(out[LATENT_KEY], z)
    for key in kept:
        np.testing.assert_array_equal(out[key], raw[key])  # passed through untouched
        assert not np.shares_memory(out[key], raw[key])  # as a copy
        assert feed.output_space[key] == space[key]
    for i in range(3):
        single = feed.output(z[i], batch[i])
        assert feed.output_space.contains(single)
