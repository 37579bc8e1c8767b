"""Image observation adapter: from whatever image an environment emits to the learner's input.

Environments hand out images in many forms: ``(H, W)`` grey, ``(H, W, C)`` (Gymnasium's and
ALE's convention), ``(C, H, W)`` (after SB3's ``VecTransposeImage``), ``uint8`` 0..255 or float
in [0, 1], any size (Atari: 210x160), or an image inside a ``Dict`` observation (MiniGrid's
``RGBImgObsWrapper`` puts it under ``"image"``). :class:`ImageObservationAdapter` reads such a
space once and refuses what it cannot read without guessing:

* the value range comes from the space: ``uint8``/integer Boxes declared 0..255 (or 0..1), float
  Boxes declared [0, 1] or 0..255. Any other declaration (an unbounded float Box, floats up to
  10, integers up to 10) is ambiguous and needs ``value_range=(low, high)``;
* an image with a side under :data:`MIN_IMAGE_SIDE` pixels is most likely a symbolic grid
  (MiniGrid's 7x7x3 object/colour/state indices), not a picture: it needs
  ``allow_small_images=True``;
* a channel axis of 1 or 3 is grey or RGB; frames stacked along it (SB3's ``VecFrameStack``,
  Gymnasium's ``FrameStackObservation``) are only read as a stack with ``frame_stack=k``, and then
  every frame is converted on its own (the wrappers encode each and concatenate the latents).

Everything else raises a ``TypeError``/``ValueError`` that says what is supported and how to fix
it. Conversion uses torch only (no OpenCV)::

    raw batch ─► pick Dict key ─► (B*k, C, H, W) float ─► grey/RGB to the learner's channel count
    (ITU-R 601 luma weights) ─► resize to the learner's (H, W) (exact block means for integer
    down-scaling factors, antialiased bilinear otherwise) ─► (x - low) / (high - low) ─►
    clamp to [0, 1], NaN-free.

The result goes straight into ``VASE.update`` / ``VASE.encode_tensor``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

__all__ = [
    "ImageObservationAdapter",
    "SUPPORTED_OBSERVATIONS",
    "LUMA_WEIGHTS",
    "MIN_IMAGE_SIDE",
    "declared_value_range",
]

# ITU-R BT.601 luma, the weights of PIL's "L" mode, OpenCV's and kornia's rgb_to_grayscale
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# A side below this is read as a symbolic grid (MiniGrid's 7x7 view), not a picture.
MIN_IMAGE_SIDE = 16

SUPPORTED_OBSERVATIONS = (
    "an image Box: shape (H, W) grey, (H, W, C) or (C, H, W) with C = 1 (grey) or 3 (RGB), "
    f"both sides >= {MIN_IMAGE_SIDE} px (else allow_small_images=True), dtype uint8/integer declared 0..255 "
    "or float declared [0, 1] or 0..255 (any other range: value_range=(low, high)); frames stacked on the "
    "channel axis only with frame_stack=k; or a Dict observation space together with image_key naming its "
    "image entry"
)


def _describe(space: Any) -> str:
    return repr(space) if len(repr(space)) < 200 else f"{type(space).__name__}(...)"


def _unsupported(space: Any, why: str) -> TypeError:
    return TypeError(
        f"VASE needs image observations, got {_describe(space)}: {why}. Supported: {SUPPORTED_OBSERVATIONS}. "
        "For a Dict space pass image_key='<key of the image>' (e.g. image_key='image' for MiniGrid's "
        "RGBImgObsWrapper); render state-based envs to pixels first (e.g. gymnasium.wrappers.AddRenderObservation); "
        "stack frames after the VASE wrapper (VecFrameStack on the latents), not before it."
    )


def _check_range(value_range: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError) as err:
        raise ValueError(f"value_range must be a pair (low, high) of numbers, got {value_range!r}") from err
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ValueError(f"value_range must be finite with high > low, got {value_range!r}")
    return low, high


def declared_value_range(space: spaces.Box) -> tuple[float, float] | None:
    """The pixel range a Box declares without ambiguity: ``(0, 255)`` for integer Boxes declared
    within 0..255 and reaching 255 (or ``(0, 1)`` for 0/1 integers), ``(0, 1)`` for float Boxes
    within [0, 1], ``(0, 255)`` for float Boxes declared exactly 0..255; ``None`` otherwise (the
    caller must say, with ``value_range``)."""
    dtype = np.dtype(space.dtype)
    low = np.asarray(space.low, dtype=np.float64)
    high = np.asarray(space.high, dtype=np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        return None
    lo, hi = float(low.min()), float(high.max())
    if lo < 0:
        return None
    if np.issubdtype(dtype, np.integer):
        if hi == 255:
            return (0.0, 255.0)
        if hi == 1:
            return (0.0, 1.0)
        return None
    if np.issubdtype(dtype, np.floating):
        if hi <= 1.0 + 1e-6:
            return (0.0, 1.0)
        if abs(hi - 255.0) <= 1e-3:
            return (0.0, 255.0)
    return None


class ImageObservationAdapter:
    """Validate an image observation space once; convert batches of it to the learner's input.

    Args:
        observation_space: the environment's space (a Box, or a Dict with ``image_key``).
        image_shape: the learner's ``(C, H, W)``.
        image_key: the image entry of a ``Dict`` space.
        channels_first: force the layout of a 3-D Box (``None``: inferred; an ambiguous shape such
            as ``(3, 8, 3)`` is read as HWC, Gymnasium's convention).
        grayscale: ``None`` converts to whatever the learner has (RGB -> grey with luma weights,
            grey -> RGB by repetition); ``True`` requires a grey learner input.
        value_range: ``(low, high)`` of the pixel values, required when the space does not declare
            one of the unambiguous ranges (see :func:`declared_value_range`); values are mapped to
            [0, 1] and clamped.
        frame_stack: the channel axis (or, for a 4-D ``(k, H, W, C)`` Box, the leading axis) holds
            ``k`` stacked frames, oldest first; each frame is converted on its own. ``None`` or 1:
            no stack.
        allow_small_images: accept images with a side under :data:`MIN_IMAGE_SIDE` pixels.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        image_shape: tuple[int, int, int],
        image_key: str | None = None,
        channels_first: bool | None = None,
        grayscale: bool | None = None,
        *,
        value_range: tuple[float, float] | None = None,
        frame_stack: int | None = None,
        allow_small_images: bool = False,
    ) -> None:
        self.observation_space = observation_space
        self.image_shape = tuple(int(v) for v in image_shape)
        if len(self.image_shape) != 3 or self.image_shape[0] not in (1, 3):
            raise ValueError(f"image_shape must be (C, H, W) with C in (1, 3), got {image_shape!r}")
        if grayscale and self.image_shape[0] != 1:
            raise ValueError(
                f"grayscale=True needs a grey learner (image_shape with C=1), got {self.image_shape}; "
                "build the learner with image_shape=(1, H, W)"
            )
        if frame_stack is not None and (
            isinstance(frame_stack, bool) or not isinstance(frame_stack, (int, np.integer)) or frame_stack < 1
        ):
            raise ValueError(f"frame_stack must be None or an integer >= 1, got {frame_stack!r}")
        self.frames = int(frame_stack or 1)
        self.image_key = image_key
        self.image_space = self._select_space(observation_space, image_key)
        self.layout, (self.in_channels, self.in_height, self.in_width) = self._layout(
            self.image_space, channels_first, self.frames
        )
        if min(self.in_height, self.in_width) < MIN_IMAGE_SIDE and not allow_small_images:
            raise _unsupported(
                self.image_space,
                f"a {self.in_height}x{self.in_width} image is smaller than {MIN_IMAGE_SIDE} px on a side, which is "
                "most likely a symbolic grid (MiniGrid's default 'image' holds object/colour/state indices, not "
                "pixels) rather than a picture: render pixels (minigrid.wrappers.RGBImgObsWrapper, or "
                "vase_rl.agents.real_envs.make_minigrid) or, if it really is a picture, pass allow_small_images=True",
            )
        if value_range is None:
            declared = declared_value_range(self.image_space)
            if declared is None:
                raise _unsupported(self.image_space, self._range_problem(self.image_space))
            self.value_range = declared
        else:
            self.value_range = _check_range(value_range)
        low, high = self.value_range
        self.offset = low
        self.scale = 1.0 / (high - low)

    # ---------------------------------------------------------------- validation
    @staticmethod
    def _range_problem(space: spaces.Box) -> str:
        dtype = np.dtype(space.dtype)
        low = np.asarray(space.low, dtype=np.float64)
        high = np.asarray(space.high, dtype=np.float64)
        if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            return f"dtype {dtype} is not an integer or float pixel type"
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            what = "an unbounded float Box" if np.issubdtype(dtype, np.floating) else "an unbounded Box"
            return (
                f"{what} does not say whether pixels are in [0, 1] or 0..255: pass value_range=(0, 1) or "
                "value_range=(0, 255) (or the true (low, high))"
            )
        lo, hi = float(low.min()), float(high.max())
        return (
            f"{dtype} values declared in [{lo:g}, {hi:g}] are neither pixels 0..255 nor [0, 1] (small integers are "
            "often indices of a symbolic grid, not intensities): pass value_range=(low, high) if they are "
            "intensities, or render the environment to pixels"
        )

    @staticmethod
    def _select_space(space: spaces.Space, image_key: str | None) -> spaces.Box:
        if isinstance(space, spaces.Dict):
            keys = list(space.spaces)
            if image_key is None:
                candidates = [
                    k for k, s in space.spaces.items() if isinstance(s, spaces.Box) and len(s.shape) in (2, 3)
                ]
                hint = f" (image-like entries: {candidates})" if candidates else ""
                raise _unsupported(
                    space, f"a Dict observation needs image_key to choose the image; keys are {keys}{hint}"
                )
            if image_key not in space.spaces:
                raise ValueError(f"image_key={image_key!r} is not a key of the Dict observation space; keys are {keys}")
            sub = space.spaces[image_key]
            if not isinstance(sub, spaces.Box):
                raise _unsupported(sub, f"entry {image_key!r} of the Dict is not a Box")
            return sub
        if image_key is not None:
            raise ValueError(
                f"image_key={image_key!r} is only for Dict observation spaces; this one is "
                f"{type(space).__name__}: drop image_key"
            )
        if not isinstance(space, spaces.Box):
            raise _unsupported(space, f"{type(space).__name__} spaces carry no image")
        return space

    @staticmethod
    def _layout(space: spaces.Box, channels_first: bool | None, frames: int) -> tuple[str, tuple[int, int, int]]:
        """(layout, (C, H, W) of one frame). Layouts: ``hw``, ``hwc``, ``chw`` and, for stacks of
        colour frames along a new leading axis, ``khwc``."""
        shape = tuple(int(v) for v in space.shape)
        stack_hint = (
            " If the channels are stacked frames (SB3's VecFrameStack, Gymnasium's FrameStackObservation), "
            "stack latents instead (VecFrameStack after VecVASE), or pass frame_stack=<number of frames>."
        )
        if len(shape) == 2:
            if channels_first is not None:
                raise ValueError("channels_first only applies to 3-D image Boxes; this one is 2-D (H, W) grey")
            if frames != 1:
                raise _unsupported(space, f"frame_stack={frames} but a 2-D (H, W) Box holds a single grey frame")
            h, w = shape
            layout, dims = "hw", (1, h, w)
        elif len(shape) == 3:
            # channel counts that fit one frame (k = 1) or a stack of k grey/RGB frames
            fits = {1, 3} if frames == 1 else {frames, 3 * frames}
            first_ok, last_ok = shape[0] in fits, shape[-1] in fits
            if channels_first is None:
                if last_ok:
                    channels_first = False  # HWC, Gymnasium's convention (also when ambiguous)
                elif first_ok:
                    channels_first = True
                else:
                    what = "1 or 3" if frames == 1 else f"{frames} or {3 * frames} (frame_stack={frames})"
                    raise _unsupported(
                        space,
                        f"shape {shape} has no channel axis of size {what} at either end "
                        "(RGBA and stacked frames are not read as images)." + (stack_hint if frames == 1 else ""),
                    )
            side = 0 if channels_first else -1
            if shape[side] not in fits:
                raise _unsupported(
                    space,
                    f"channels_first={channels_first} but shape {shape} has {shape[side]} channels there "
                    f"(need {sorted(fits)})",
                )
            c_total = shape[side]
            c = c_total // frames
            if channels_first:
                layout, dims = "chw", (c, shape[1], shape[2])
            else:
                layout, dims = "hwc", (c, shape[0], shape[1])
        elif len(shape) == 4 and frames > 1 and shape[0] == frames and shape[-1] in (1, 3) and channels_first is None:
            layout, dims = "khwc", (shape[3], shape[1], shape[2])
        else:
            if len(shape) <= 1:
                why = "a 1-D Box is a feature vector, not an image"
            elif len(shape) == 4:
                why = (
                    f"4-D shape {shape}: a stack of colour frames (k, H, W, C) is read only with frame_stack=k"
                    if frames == 1
                    else f"4-D shape {shape} is not (frame_stack={frames}, H, W, 1 or 3)"
                )
            else:
                why = f"{len(shape)}-D shape {shape}"
            raise _unsupported(space, why)
        if dims[1] < 1 or dims[2] < 1:
            raise _unsupported(space, f"empty image shape {shape}")
        return layout, dims

    # ---------------------------------------------------------------- conversion
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one of the environment's frames."""
        return (self.in_channels, self.in_height, self.in_width)

    @property
    def single_shape(self) -> tuple[int, ...]:
        return tuple(self.image_space.shape)

    def select(self, obs: Any) -> Any:
        """The image part of an observation (the Dict entry, or the observation itself)."""
        if self.image_key is None:
            return obs
        if not isinstance(obs, dict) or self.image_key not in obs:
            raise ValueError(f"expected a dict observation with key {self.image_key!r}, got {type(obs).__name__}")
        return obs[self.image_key]

    def to_tensor(self, obs: Any, device: torch.device | str = "cpu", batched: bool = True) -> torch.Tensor:
        """Convert raw observations (a batch, or one with ``batched=False``) to the learner's
        ``(B * frame_stack, C, H, W)`` float32 input in [0, 1] on ``device``."""
        x = self.select(obs)
        if isinstance(x, torch.Tensor):
            t = x.detach()
        else:
            arr = np.asarray(x)
            if arr.dtype == object:
                raise TypeError("observation batch has dtype object; pass numeric arrays")
            t = torch.from_numpy(np.ascontiguousarray(arr))
        expected = self.single_shape
        if not batched:
            t = t.unsqueeze(0)
        if tuple(t.shape[1:]) != expected:
            raise ValueError(
                f"observation batch has shape {tuple(t.shape)}; expected (B, *{expected}) for the "
                f"space {_describe(self.image_space)}" + ("" if batched else " (batched=False)")
            )
        return self.convert(t.to(device), prescaled=False)

    def _unstack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *space shape) -> (B * k, ...) one frame per row in the space's own layout."""
        k = self.frames
        if k == 1:
            return x
        b = x.shape[0]
        c = self.in_channels
        if self.layout == "chw":
            return x.reshape(b * k, c, *x.shape[2:])
        if self.layout == "hwc":  # channels of frame j are j*c .. (j+1)*c - 1 (VecFrameStack, channels last)
            h, w = x.shape[1:3]
            return x.reshape(b, h, w, k, c).permute(0, 3, 1, 2, 4).reshape(b * k, h, w, c)
        return x.reshape(b * k, *x.shape[2:])  # khwc -> hwc

    def convert(self, t: torch.Tensor, prescaled: bool = False) -> torch.Tensor:
        """Convert a tensor batch already on its device (layout of the space) to the learner's
        input, one row per frame. ``prescaled=True`` means values are already in [0, 1] (e.g. SB3
        divided uint8 images by 255)."""
        # Order chosen for speed (the wrappers call this every step): integer frames are cast
        # once, colour is reduced before resizing, and the affine map to [0, 1] is applied last, on
        # the smallest tensor (resizing and luma weights are averages, so they commute with it).
        if prescaled:
            offset, scale = 0.0, 1.0
        else:
            offset, scale = self.offset, self.scale
        integer = not t.is_floating_point()
        x = self._unstack(t).float()
        if not integer:
            low = offset
            x = torch.nan_to_num(x, nan=low, posinf=low + 1.0 / scale, neginf=low)
        b = x.shape[0]
        c, h, w = self.image_shape
        in_c = self.in_channels
        layout = "hwc" if self.layout == "khwc" else self.layout
        if layout == "hw":
            x = x.unsqueeze(1)
        elif layout == "hwc":
            if in_c == 3 and c == 1:  # RGB -> grey on the channel-last layout: one matrix-vector product
                weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device)
                x = torch.matmul(x, weights).unsqueeze(1)
                in_c = 1
            elif in_c == 1:
                x = x.reshape(b, 1, *x.shape[1:3])
            else:
                x = x.permute(0, 3, 1, 2)
        if in_c != c:
            if c == 1:  # RGB -> grey
                weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
                x = (x * weights).sum(1, keepdim=True)
            else:  # grey -> RGB
                x = x.expand(-1, 3, -1, -1)
        needs_clamp = not integer or offset != 0.0 or prescaled
        if x.shape[2:] != (h, w):
            needs_clamp = needs_clamp or not _is_block_mean(x.shape[2:], (h, w))
            x = resize(x, (h, w))
        if offset != 0.0:
            x = (x - offset) * scale
        elif scale != 1.0:
            x = x * scale
        elif x.data_ptr() == t.data_ptr():
            x = x.clone()  # never hand back (a view of) the caller's tensor
        if needs_clamp or integer and scale * 255.0 > 1.0 + 1e-6:
            x = x.clamp(0.0, 1.0)  # not in place: x may be an expanded (grey -> RGB) view
        return x.contiguous()

    def __repr__(self) -> str:
        key = f", image_key={self.image_key!r}" if self.image_key is not None else ""
        stack = f", frame_stack={self.frames}" if self.frames > 1 else ""
        low, high = self.value_range
        return (
            f"ImageObservationAdapter({self.layout.upper()} {self.input_shape} {np.dtype(self.image_space.dtype)} "
            f"in [{low:g}, {high:g}] -> {self.image_shape}{key}{stack})"
        )


def _is_block_mean(shape: tuple[int, int], size: tuple[int, int]) -> bool:
    return shape[0] % size[0] == 0 and shape[1] % size[1] == 0


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (B, C, H, W) float batch: block means for integer down-scaling factors (the
    exact area average), antialiased bilinear otherwise (any size in, any size out; it may
    overshoot the input range slightly, so clamp afterwards)."""
    h, w = x.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return x
    if _is_block_mean((h, w), (th, tw)):
        return F.avg_pool2d(x, kernel_size=(h // th, w // tw))
    return F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
