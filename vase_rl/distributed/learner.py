"""The VASE learner fed by actors' frames and trained at rollout boundaries (no Ray needed).

:class:`BoundaryLearner` owns one :class:`vase_rl.VASE`. At each rollout boundary it receives
the frame packets of every actor (:meth:`boundary`), adds their frames to the learner's window in
(step, global env index) order — the order a single-process run sees them — runs the updates the
schedule makes due, and returns the new encoder payload for the actors plus a summary of the
updates. The same object runs in the driver or, wrapped with ``ray.remote``, as a Ray actor
(optionally on a GPU); being deterministic given the frames and the seed, both give the same
weights.

The schedule counts frames, as ``VecVASE`` does with ``update_at="rollout"``: every frame the
actors' envs produce counts (observations and terminal observations, kept for the learner or not);
one round of ``gradient_steps`` updates is due each time the count crosses a multiple of
``train_every``, from ``learning_starts`` frames on (:func:`update_rounds_due`), and the due rounds
run at the boundary, each update on ``batch_size`` frames drawn from the window (``VASE.update``
with ``sample_window``). With ``frame_every=1`` the window receives exactly the frames a
single-process ``VecVASE`` would add, in the same order.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from vase_rl.distributed.payload import cpu_copy, encoder_payload, order_frame_packets, payload_bytes
from vase_rl.learner import VASE

__all__ = ["BoundaryLearner", "update_rounds_due", "SCHEDULE_OPTIONS", "ADAPTER_OPTIONS", "DEFAULT_TRAIN_EVERY"]

SCHEDULE_OPTIONS = ("train_every", "gradient_steps", "batch_size", "learning_starts", "window_size")
ADAPTER_OPTIONS = ("image_key", "channels_first", "grayscale", "value_range", "frame_stack", "allow_small_images")
_MEAN_KEYS = ("loss", "recon", "kl", "regulariser", "classifier", "capacity")
DEFAULT_TRAIN_EVERY = 64  # frames per update round (8 envs x 8 steps)


def update_rounds_due(before: int, after: int, train_every: int, learning_starts: int) -> int:
    """Update rounds due when the frame count goes from ``before`` to ``after``: the multiples of
    ``train_every`` crossed, not counting those below ``learning_starts`` (the first round is due
    at the first multiple >= ``learning_starts``, and never at 0 frames)."""
    first = max(1, -(-int(learning_starts) // int(train_every)))
    return max(0, int(after) // train_every - max(int(before) // train_every, first - 1))


def _positive(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class BoundaryLearner:
    """A VASE learner that trains on frames collected by actors, at rollout boundaries.

    Args:
        learner: a ``VASE`` (used as is), or a ``VASE.state_dict()`` (rebuilt on ``device``; how a
            Ray actor receives it).
        observation_space: the raw observation space of one sub-env (the frames' layout).
        options: adapter options (``image_key``, ``frame_stack``, ...) and schedule options
            (``train_every`` = 64 frames, ``gradient_steps`` = 1, ``batch_size`` = config's,
            ``learning_starts`` = ``batch_size`` frames, ``window_size`` = config's).
        device: where a learner given as a state dict is rebuilt ("cuda" for a GPU learner).
        threads: torch intra-op threads in this process.
    """

    def __init__(
        self,
        learner: VASE | dict[str, Any],
        observation_space: spaces.Space,
        options: dict[str, Any] | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        if threads is not None:
            torch.set_num_threads(int(threads))
            os.environ.setdefault("OMP_NUM_THREADS", str(int(threads)))
        if isinstance(learner, dict):
            learner = VASE.from_state_dict(learner, device=device, source="learner state")
        if not isinstance(learner, VASE):
            raise TypeError(f"learner must be a vase_rl.VASE or its state_dict(), got {type(learner).__name__}")
        options = dict(options or {})
        unknown = sorted(set(options) - set(SCHEDULE_OPTIONS) - set(ADAPTER_OPTIONS))
        if unknown:
            raise TypeError(f"unknown learner option(s) {unknown}; known: {[*ADAPTER_OPTIONS, *SCHEDULE_OPTIONS]}")
        from vase_rl.observations import ImageObservationAdapter

        cfg = learner.config
        self.learner = learner
        self.adapter = ImageObservationAdapter(
            observation_space, cfg.image_shape, **{k: options[k] for k in ADAPTER_OPTIONS if k in options}
        )
        self.train_every = _positive("train_every", options.get("train_every", DEFAULT_TRAIN_EVERY), 1)
        self.gradient_steps = _positive("gradient_steps", options.get("gradient_steps", 1), 1)
        batch = options.get("batch_size")
        self.batch_size = _positive("batch_size", cfg.batch_size if batch is None else batch, 2)
        starts = options.get("learning_starts")
        self.learning_starts = _positive("learning_starts", self.batch_size if starts is None else starts, 0)
        window = options.get("window_size")
        if window is not None:
            learner.window.resize(_positive("window_size", window, 2))
        self.frames_seen = 0
        self._received = [0, 0]  # frames ingested and seen through receive() since the last boundary
        self.boundaries = 0
        self.frames_ingested = 0
        self.update_seconds = 0.0
        self.ingest_seconds = 0.0
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ data path
    def ingest(self, *packets: dict[str, np.ndarray]) -> int:
        """Add the packets' frames to the window in (step, env) order; returns the frames added."""
        start = time.perf_counter()
        merged = order_frame_packets(packets)
        n = int(merged["images"].shape[0])
        if n:
            images = torch.from_numpy(np.ascontiguousarray(merged["images"]))
            x = self.adapter.convert(images.to(self.learner.device))
            if self.adapter.frames > 1:
                x = x.reshape(-1, self.adapter.frames, *x.shape[1:])[:, -1]
            self.learner.observe(x)
            self.frames_ingested += n
        self.ingest_seconds += time.perf_counter() - start
        return n

    def receive(self, packet: dict[str, Any]) -> int:
        """Ingest one packet now, in arrival order (what RLlib EnvRunners send between boundaries);
        its frames count at the next :meth:`boundary`."""
        n = self.ingest(packet)
        self._received[0] += n
        self._received[1] += int(packet.get("frames_seen", 0))
        return n

    def updates_due(self, frames: int) -> int:
        """Updates due after ``frames`` more frames were seen by the actors (counts them)."""
        before = self.frames_seen
        self.frames_seen += _positive("frames", frames, 0)
        rounds = update_rounds_due(before, self.frames_seen, self.train_every, self.learning_starts)
        if len(self.learner.window) < 2:
            return 0
        return rounds * self.gradient_steps

    def train(self, n: int) -> list[dict[str, Any]]:
        """``n`` updates on draws from the window; their plain-data statistics."""
        out = []
        start = time.perf_counter()
        for _ in range(int(n)):
            stats = self.learner.update(self.learner.sample_window(self.batch_size))
            out.append({k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))})
        self.update_seconds += time.perf_counter() - start
        self.history.extend(out)
        del self.history[:-1000]
        return out

    def boundary(self, *packets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """One rollout boundary: ingest ``packets``, run the updates due for the frames they report
        seen; (encoder payload, summary)."""
        frames = self.ingest(*packets) if packets else 0
        seen = sum(int(p.get("frames_seen", 0)) for p in packets if p is not None)
        frames, seen = frames + self._received[0], seen + self._received[1]
        self._received = [0, 0]
        stats = self.train(self.updates_due(seen))
        self.boundaries += 1
        payload = encoder_payload(self.learner)
        summary = self.summary(stats, frames)
        summary["payload_bytes"] = payload_bytes(payload)
        summary["frames_seen"] = self.frames_seen
        return payload, summary

    # ------------------------------------------------------------------ reading
    def summary(self, stats: list[dict[str, Any]] | None = None, frames: int = 0) -> dict[str, Any]:
        learner = self.learner
        out: dict[str, Any] = {
            "boundary": self.boundaries,
            "updates": len(stats or []),
            "frames": int(frames),
            "num_updates": int(learner.num_updates),
            "skipped_updates": int(learner.skipped_updates),
            "num_domains": int(learner.num_domains),
            "domain": int(learner.current_domain),
            "active_latents": int(learner.latent_mask.sum()),
            "window_frames": len(learner.window),
            "frames_ingested": self.frames_ingested,
            "update_seconds": self.update_seconds,
            "ingest_seconds": self.ingest_seconds,
            "device": str(learner.device),
        }
        valid = [s for s in stats or [] if not s.get("skipped")]
        for key in _MEAN_KEYS:
            values = [float(s[key]) for s in valid if key in s]
            if values:
                out[key] = float(np.mean(values))
        events = [s.get("event") for s in stats or []]
        for event in ("new", "switch", "pending"):
            out[f"events_{event}"] = events.count(event)
        return out

    def payload(self) -> dict[str, Any]:
        return encoder_payload(self.learner)

    def state_dict(self) -> dict[str, Any]:
        """The learner's full state (``VASE.from_state_dict`` reads it), tensors on the CPU."""
        return cpu_copy(self.learner.state_dict())

    def save(self, path: str | os.PathLike) -> Path:
        return self.learner.save(path)

    def reseed(self, seed: int) -> bool:
        """Rebuild the learner with ``seed`` if it has not seen a frame yet (as VecVASE does for
        ``PPO(seed=s)``); True when rebuilt."""
        old = self.learner
        if old.num_updates or len(old.window) or self.frames_seen or int(seed) == old.seed:
            return False
        capacity = old.window.capacity
        self.learner = VASE(old.config, seed=int(seed), device=old.device)
        self.learner.window.resize(capacity)
        return True

    def ping(self) -> int:
        return os.getpid()
