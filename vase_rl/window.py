"""The learner's window of recent frames (``VASE.observe`` / ``VASE.sample_window``).

VASE trains on *current* data only (spec §8: the past is rehearsed by dreaming, never replayed).
When frames arrive one environment step at a time, an update still needs a batch that is close
to i.i.d. for the current domain: consecutive frames of a few episodes are strongly correlated,
and the atypicality of eq. 4 reads a batch whose latent marginals differ from the prior as
"atypical". The window is a FIFO ring buffer of the last ``capacity`` prepared frames; an update
draws its batch uniformly without replacement from it. It belongs to the learner, so wrappers
sharing a learner feed one window, and it is saved in the learner's checkpoint, so a resumed
run draws the same batches.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["FrameWindow"]


class FrameWindow:
    """FIFO ring buffer of prepared (C, H, W) float frames on one device."""

    def __init__(self, capacity: int) -> None:
        self.capacity = self._check_capacity(capacity)
        self._frames: torch.Tensor | None = None
        self._pos = 0
        self._count = 0

    @staticmethod
    def _check_capacity(capacity: Any) -> int:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 2:
            raise ValueError(f"window capacity must be an int >= 2 (frames), got {capacity!r}")
        return capacity

    def __len__(self) -> int:
        return self._count

    def clear(self) -> None:
        self._frames, self._pos, self._count = None, 0, 0

    def resize(self, capacity: int) -> None:
        """Change the capacity, keeping the most recent frames that fit."""
        capacity = self._check_capacity(capacity)
        if capacity == self.capacity:
            return
        recent = self.frames()
        self.capacity = capacity
        self.clear()
        if recent.shape[0]:
            self.append(recent)

    def append(self, x: torch.Tensor) -> None:
        """Add a batch (B, C, H, W); the oldest frames drop out when the window is full."""
        n, size = int(x.shape[0]), self.capacity
        if n == 0:
            return
        if (
            self._frames is None
            or self._frames.device != x.device
            or self._frames.dtype != x.dtype
            or self._frames.shape[1:] != x.shape[1:]
        ):
            self._frames = torch.empty((size, *x.shape[1:]), dtype=x.dtype, device=x.device)
            self._pos, self._count = 0, 0
        if n >= size:
            self._frames.copy_(x[-size:])
            self._pos, self._count = 0, size
            return
        end = self._pos + n
        if end <= size:
            self._frames[self._pos : end] = x
        else:
            first = size - self._pos
            self._frames[self._pos :] = x[:first]
            self._frames[: n - first] = x[first:]
        self._pos = end % size
        self._count = min(self._count + n, size)

    def frames(self) -> torch.Tensor:
        """The frames held, oldest first (a view or copy; empty (0,) tensor when empty)."""
        if self._frames is None or self._count == 0:
            return torch.empty(0)
        if self._count < self.capacity:
            return self._frames[: self._count]
        return torch.cat([self._frames[self._pos :], self._frames[: self._pos]])

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` frames drawn without replacement (all of them when fewer are held)."""
        if self._frames is None or self._count == 0:
            raise RuntimeError("the frame window is empty; add frames with learner.observe(frames) first")
        if self._count <= n:
            return self._frames[: self._count]
        idx = torch.randperm(self._count, generator=generator, device=generator.device)[:n]
        return self._frames[idx.to(self._frames.device)]

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "frames": self.frames().detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.capacity = self._check_capacity(int(state["capacity"]))
        self.clear()
        frames = state["frames"]
        if frames.ndim == 4 and frames.shape[0]:
            self.append(frames.to(device))
