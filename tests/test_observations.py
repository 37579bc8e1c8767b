"""Tests of vase_rl.observations: image layouts, dtypes, sizes, colour, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from vase_rl.observations import LUMA_WEIGHTS, ImageObservationAdapter, resize


def u8_box(shape):
    return spaces.Box(0, 255, shape, np.uint8)


def test_atari_sized_rgb_hwc_becomes_grey_learner_input():
    adapter = ImageObservationAdapter(u8_box((210, 160, 3)), (1, 16, 16))
    assert adapter.layout == "hwc" and adapter.input_shape == (3, 210, 160)
    frames = np.zeros((2, 210, 160, 3), np.uint8)
    frames[0, ..., 0] = 255  # pure red
    frames[1] = (10, 200, 40)
    x = adapter.to_tensor(frames)
    assert x.shape == (2, 1, 16, 16) and x.dtype == torch.float32
    expected = [LUMA_WEIGHTS[0], np.dot(LUMA_WEIGHTS, (10, 200, 40)) / 255.0]
    for i in range(2):
        assert torch.allclose(x[i], torch.full((1, 16, 16), float(expected[i])), atol=1e-5)


def test_integer_downscaling_is_the_exact_block_mean():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 32, 32, 1), dtype=np.uint8)
    x = ImageObservationAdapter(u8_box((32, 32, 1)), (1, 16, 16)).to_tensor(frames)
    blocks = frames[..., 0].reshape(3, 16, 2, 16, 2).astype(np.float64).mean(axis=(2, 4)) / 255.0
    np.testing.assert_allclose(x[:, 0].numpy(), blocks, atol=1e-6)


def test_chw_float_and_odd_sizes_in_both_directions():
    space = spaces.Box(0.0, 1.0, (3, 21, 30), np.float32)
    adapter = ImageObservationAdapter(space, (3, 16, 16))
    assert adapter.layout == "chw"
    x = adapter.to_tensor(np.random.default_rng(1).random((4, 3, 21, 30), dtype=np.float32))
    assert x.shape == (4, 3, 16, 16) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    small = ImageObservationAdapter(u8_box((7, 7)), (1, 16, 16), allow_small_images=True)  # 2-D grey, upsampled
    assert small.layout == "hw"
    y = small.to_tensor(np.full((1, 7, 7), 128, np.uint8))
    assert y.shape == (1, 1, 16, 16)
    assert torch.allclose(y, torch.full_like(y, 128 / 255.0), atol=1e-5)


def test_grey_input_to_rgb_learner_repeats_the_channel():
    adapter = ImageObservationAdapter(u8_box((16, 16, 1)), (3, 16, 16))
    frames = np.random.default_rng(2).integers(0, 256, (2, 16, 16, 1), dtype=np.uint8)
    x = adapter.to_tensor(frames)
    assert x.shape == (2, 3, 16, 16)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    assert torch.allclose(x[:, 0], torch.from_numpy(frames[..., 0]).float() / 255.0)


def test_float_0_255_box_is_rescaled_and_nan_never_passes():
    adapter = ImageObservationAdapter(spaces.Box(0.0, 255.0, (16, 16, 1), np.float32), (1, 16, 16))
    frames = np.full((1, 16, 16, 1), 255.0, np.float32)
    frames[0, 0, 0, 0] = np.nan
    frames[0, 1, 1, 0] = np.inf
    x = adapter.to_tensor(frames)
    assert torch.isfinite(x).all()
    assert float(x[0, 0, 5, 5]) == pytest.approx(1.0)
    assert float(x[0, 0, 0, 0]) == 0.0


def test_single_observation_and_shape_mismatch():
    adapter = ImageObservationAdapter(u8_box((20, 24, 3)), (1, 16, 16))
    assert adapter.to_tensor(np.zeros((20, 24, 3), np.uint8), batched=False).shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match="expected"):
        adapter.to_tensor(np.zeros((2, 24, 20, 3), np.uint8))


def test_ambiguous_shape_reads_hwc_unless_channels_first():
    space = u8_box((3, 8, 3))
    assert ImageObservationAdapter(space, (1, 8, 8), allow_small_images=True).layout == "hwc"
    assert ImageObservationAdapter(space, (1, 8, 8), channels_first=True, allow_small_images=True).layout == "chw"


def test_dict_space_needs_an_image_key():
    space = spaces.Dict({"image": u8_box((64, 64, 3)), "direction": spaces.Discrete(4)})
    with pytest.raises(TypeError, match="image_key") as info:
        ImageObservationAdapter(space, (1, 16, 16))
    assert "'image'" in str(info.value) and "direction" in str(info.value)
    adapter = ImageObservationAdapter(space, (1, 16, 16), image_key="image")
    obs = {"image": np.zeros((2, 64, 64, 3), np.uint8), "direction": np.zeros(2)}
    assert adapter.to_tensor(obs).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="keys are"):
        ImageObservationAdapter(space, (1, 16, 16), image_key="pixels")
    with pytest.raises(ValueError, match="only for Dict"):
        ImageObservationAdapter(u8_box((16, 16, 1)), (1, 16, 16), image_key="image")


@pytest.mark.parametrize(
    "space",
    [
        spaces.Box(-1.0, 1.0, (4,), np.float32),  # a state vector
        spaces.Discrete(5),
        spaces.MultiBinary(3),
        u8_box((16, 16, 4)),  # RGBA / stacked frames
        u8_box((2, 16, 16, 3)),  # 4-D
        spaces.Box(0, 1000, (16, 16), np.int32),
        spaces.Dict({"state": spaces.Box(-1.0, 1.0, (3,), np.float32)}),
    ],
)
def test_non_image_spaces_raise_a_type_error_that_says_what_is_supported(space):
    with pytest.raises(TypeError) as info:
        ImageObservationAdapter(space, (1, 16, 16))
    message = str(info.value)
    assert "Supported" in message and "image_key" in message


def test_resize_is_identity_at_the_same_size():
    x = torch.rand(2, 1, 16, 16)
    assert resize(x, (16, 16)) is x


# ------------------------------------------------------------------------------------------
# issue 12: ambiguous inputs are resolved by explicit arguments or refused, never misread
# ------------------------------------------------------------------------------------------
def test_finding1_a_stack_of_three_grey_frames_is_read_frame_by_frame_with_frame_stack():
    # (84, 84, 3) from VecFrameStack(n_stack=3) over grey frames: frame j holds the value 10, 100, 200
    space = u8_box((84, 84, 3))
    frames = np.zeros((2, 84, 84, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 10, 100, 200
    stacked = ImageObservationAdapter(space, (1, 16, 16), frame_stack=3)
    x = stacked.to_tensor(frames)
    assert x.shape == (6, 1, 16, 16)  # one row per frame, oldest first
    for row, value in zip(range(3), (10, 100, 200)):
        assert torch.allclose(x[row], torch.full((1, 16, 16), value / 255.0), atol=1e-6)
        assert torch.allclose(x[3 + row], torch.full((1, 16, 16), value / 255.0), atol=1e-6)
    # without frame_stack the space alone reads as RGB (documented): the luma mix of the three times
    rgb = ImageObservationAdapter(space, (1, 16, 16)).to_tensor(frames[:1])
    assert float(rgb[0, 0, 0, 0]) == pytest.approx(np.dot(LUMA_WEIGHTS, (10, 100, 200)) / 255.0, abs=1e-5)
    # channels-first stacks (Gymnasium's FrameStackObservation of grey frames) and 4-D colour stacks
    chw = ImageObservationAdapter(u8_box((3, 20, 20)), (1, 16, 16), frame_stack=3)
    y = chw.to_tensor(np.stack([np.full((20, 20), v, np.uint8) for v in (10, 100, 200)])[None])
    np.testing.assert_allclose(y[:, 0, 0, 0].numpy(), np.array([10, 100, 200]) / 255.0, atol=1e-6)
    colour = ImageObservationAdapter(u8_box((2, 20, 20, 3)), (3, 16, 16), frame_stack=2)
    z = colour.to_tensor(
        np.stack([np.full((20, 20, 3), (1, 2, 3), np.uint8), np.full((20, 20, 3), (4, 5, 6), np.uint8)])[None]
    )
    np.testing.assert_allclose(z[:, :, 0, 0].numpy() * 255.0, [[1, 2, 3], [4, 5, 6]], atol=1e-4)
    with pytest.raises(TypeError, match="frame_stack"):
        ImageObservationAdapter(u8_box((84, 84, 4)), (1, 16, 16))  # 4 stacked frames: the message names the fix


def test_finding2_tiny_integer_grids_are_refused_unless_allowed():
    grid = u8_box((7, 7, 3))  # MiniGrid's default symbolic view declares 0..255 uint8
    with pytest.raises(TypeError, match="symbolic grid") as info:
        ImageObservationAdapter(grid, (1, 16, 16))
    assert "RGBImgObsWrapper" in str(info.value) and "allow_small_images=True" in str(info.value)
    # small integers declared as such need their range: they are indices, not intensities
    with pytest.raises(TypeError, match="value_range"):
        ImageObservationAdapter(spaces.Box(0, 10, (32, 32, 3), np.uint8), (1, 16, 16))
    adapter = ImageObservationAdapter(grid, (3, 16, 16), allow_small_images=True, value_range=(0, 10))
    x = adapter.to_tensor(np.full((1, 7, 7, 3), 5, np.uint8))
    assert torch.allclose(x, torch.full_like(x, 0.5), atol=1e-6)


def test_finding3_float_pixels_in_an_unbounded_box_need_a_value_range():
    unbounded = spaces.Box(-np.inf, np.inf, (16, 16, 1), np.float32)
    with pytest.raises(TypeError, match=r"value_range=\(0, 255\)"):
        ImageObservationAdapter(unbounded, (1, 16, 16))
    frames = np.full((1, 16, 16, 1), 128.0, np.float32)
    x = ImageObservationAdapter(unbounded, (1, 16, 16), value_range=(0, 255)).to_tensor(frames)
    assert torch.allclose(x, torch.full_like(x, 128 / 255.0), atol=1e-6)  # not clamped to white
    y = ImageObservationAdapter(unbounded, (1, 16, 16), value_range=(0, 1)).to_tensor(frames / 256.0)
    assert torch.allclose(y, torch.full_like(y, 0.5), atol=1e-6)
    # floats declared up to 10 are neither [0, 1] nor 0..255: refused, then read as told
    with pytest.raises(TypeError, match="value_range"):
        ImageObservationAdapter(spaces.Box(0.0, 10.0, (16, 16), np.float32), (1, 16, 16))
    # a signed range maps its low end to 0
    signed = ImageObservationAdapter(spaces.Box(-1.0, 1.0, (16, 16), np.float32), (1, 16, 16), value_range=(-1, 1))
    assert float(signed.to_tensor(np.zeros((1, 16, 16), np.float32)).mean()) == pytest.approx(0.5)


def test_value_range_must_be_a_finite_increasing_pair():
    for bad in [(1, 1), (0, np.inf), "0..255", (0,)]:
        with pytest.raises(ValueError, match="value_range"):
            ImageObservationAdapter(u8_box((16, 16)), (1, 16, 16), value_range=bad)
