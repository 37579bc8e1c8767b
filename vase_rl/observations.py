"""Image observation adapter: from whatever image an environment emits to the learner's input.

Environments hand out images in many forms: ``(H, W)`` grey, ``(H, W, C)`` (Gymnasium's and
ALE's convention), ``(C, H, W)`` (after SB3's ``VecTransposeImage``), ``uint8`` 0..255 or float
in [0, 1] (or 0..255), any size (Atari: 210x160), or an image inside a ``Dict`` observation
(MiniGrid's ``RGBImgObsWrapper`` puts it under ``"image"``). :class:`ImageObservationAdapter`
checks such a space once, with a ``TypeError``/``ValueError`` that says what is supported and
how to fix it, and then converts batches with torch only (no OpenCV):

    raw batch ─► pick Dict key ─► (B, C, H, W) float in [0, 1] ─► grey/RGB to the learner's
    channel count (ITU-R 601 luma weights) ─► resize to the learner's (H, W) (exact block means
    for integer down-scaling factors, antialiased bilinear otherwise) ─► NaN-free tensor.

The result goes straight into ``VASE.update`` / ``VASE.encode_tensor``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

__all__ = ["ImageObservationAdapter", "SUPPORTED_OBSERVATIONS", "LUMA_WEIGHTS"]

# ITU-R BT.601 luma, the weights of PIL's "L" mode, OpenCV's and kornia's rgb_to_grayscale
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

SUPPORTED_OBSERVATIONS = (
    "an image Box: shape (H, W) grey, (H, W, C) or (C, H, W) with C = 1 (grey) or 3 (RGB), any size, "
    "dtype uint8 (0..255) or float (in [0, 1], or 0..255 when the Box's high is above 1); "
    "or a Dict observation space together with image_key naming its image entry"
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


class ImageObservationAdapter:
    """Validate an image observation space once; convert batches of it to the learner's input.

    ``image_shape`` is the learner's ``(C, H, W)``. ``image_key`` picks the image of a ``Dict``
    space. ``channels_first`` forces the layout of a 3-D Box (``None``: inferred; an ambiguous
    shape such as ``(3, 8, 3)`` is read as HWC, Gymnasium's convention). ``grayscale``: ``None``
    converts to whatever the learner has (RGB -> grey with luma weights, grey -> RGB by
    repetition); ``True`` requires and forces a grey learner input.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        image_shape: tuple[int, int, int],
        image_key: str | None = None,
        channels_first: bool | None = None,
        grayscale: bool | None = None,
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
        self.image_key = image_key
        self.image_space = self._select_space(observation_space, image_key)
        self.layout, (self.in_channels, self.in_height, self.in_width) = self._layout(self.image_space, channels_first)
        self.scale = self._scale(self.image_space)

    # ---------------------------------------------------------------- validation
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
    def _layout(space: spaces.Box, channels_first: bool | None) -> tuple[str, tuple[int, int, int]]:
        shape = tuple(int(v) for v in space.shape)
        if len(shape) == 2:
            if channels_first is not None:
                raise ValueError("channels_first only applies to 3-D image Boxes; this one is 2-D (H, W) grey")
            h, w = shape
            layout, dims = "hw", (1, h, w)
        elif len(shape) == 3:
            first_ok, last_ok = shape[0] in (1, 3), shape[-1] in (1, 3)
            if channels_first is None:
                if last_ok:
                    channels_first = False  # HWC, Gymnasium's convention (also when ambiguous)
                elif first_ok:
                    channels_first = True
                else:
                    raise _unsupported(
                        space,
                        f"shape {shape} has no channel axis of size 1 or 3 at either end "
                        "(4 channels: RGBA or stacked frames are not supported)",
                    )
            if channels_first:
                if not first_ok:
                    raise _unsupported(
                        space, f"channels_first=True but shape {shape} starts with {shape[0]} channels (need 1 or 3)"
                    )
                layout, dims = "chw", shape
            else:
                if not last_ok:
                    raise _unsupported(
                        space, f"channels_first=False but shape {shape} ends with {shape[-1]} channels (need 1 or 3)"
                    )
                layout, dims = "hwc", (shape[2], shape[0], shape[1])
        else:
            why = "a 1-D Box is a feature vector, not an image" if len(shape) <= 1 else f"{len(shape)}-D shape {shape}"
            raise _unsupported(space, why)
        if dims[1] < 1 or dims[2] < 1:
            raise _unsupported(space, f"empty image shape {shape}")
        return layout, dims

    @staticmethod
    def _scale(space: spaces.Box) -> float:
        dtype = np.dtype(space.dtype)
        high = np.asarray(space.high, dtype=np.float64)
        finite_high = float(high.max()) if np.all(np.isfinite(high)) else float("inf")
        if dtype == np.uint8:
            return 1.0 / 255.0
        if np.issubdtype(dtype, np.integer):
            if finite_high <= 255:
                return 1.0 / 255.0
            raise _unsupported(space, f"integer dtype {dtype} with values up to {finite_high:g} (use uint8 0..255)")
        if np.issubdtype(dtype, np.floating):
            if finite_high <= 1.0 + 1e-6 or not np.isfinite(finite_high):
                return 1.0  # [0, 1] images (unbounded float Boxes are read as [0, 1] and clamped)
            if finite_high <= 255.0 + 1e-6:
                return 1.0 / 255.0
            raise _unsupported(space, f"float image with high={finite_high:g} (expected [0, 1] or 0..255)")
        raise _unsupported(space, f"dtype {dtype} is not numeric")

    # ---------------------------------------------------------------- conversion
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the environment's image."""
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
        ``(B, C, H, W)`` float32 input in [0, 1] on ``device``."""
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

    def convert(self, t: torch.Tensor, prescaled: bool = False) -> torch.Tensor:
        """Convert a tensor batch already on its device (layout of the space) to the learner's
        input. ``prescaled=True`` means values are already in [0, 1] (e.g. SB3 divided by 255)."""
        # Order chosen for speed (the wrappers call this every step): integer frames are cast
        # once, colour is reduced before resizing, and the 1/255 scale is applied last, on the
        # smallest tensor. Float frames are cleaned of NaN/inf first.
        if prescaled:
            scale = 1.0
        elif t.dtype == torch.uint8:
            scale = 1.0 / 255.0
        else:
            scale = self.scale
        integer = not t.is_floating_point()
        x = t.float()
        if not integer:
            x = torch.nan_to_num(x, nan=0.0, posinf=1.0 / scale, neginf=0.0)
        b = x.shape[0]
        c, h, w = self.image_shape
        in_c = self.in_channels
        if self.layout == "hw":
            x = x.unsqueeze(1)
        elif self.layout == "hwc":
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
        needs_clamp = not integer
        if x.shape[2:] != (h, w):
            needs_clamp = needs_clamp or not _is_block_mean(x.shape[2:], (h, w))
            x = resize(x, (h, w))
        if scale != 1.0:
            x = x * scale
        elif x.data_ptr() == t.data_ptr():
            x = x.clone()  # never hand back (a view of) the caller's tensor
        if needs_clamp:
            x = x.clamp_(0.0, 1.0)
        return x.contiguous()

    def __repr__(self) -> str:
        key = f", image_key={self.image_key!r}" if self.image_key is not None else ""
        return (
            f"ImageObservationAdapter({self.layout.upper()} {self.input_shape} {np.dtype(self.image_space.dtype)}"
            f" -> {self.image_shape}{key})"
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
