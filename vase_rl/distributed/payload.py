"""What crosses the wire between actors and the learner, and how much of it (no Ray needed).

* :func:`encoder_payload` — the part of a learner's ``state_dict()`` an actor needs to encode
  (config, seed, encoder and classifier weights, latent mask, domain memory, update counters),
  on the CPU: roughly the encoder's weights (0.7 MB for ``cpu32``), not the decoder, the
  optimiser moments or the frame window (~3 MB more for ``cpu32``).
* :func:`learner_from_payload` — a frozen ``VASE`` rebuilt from a payload through the public
  ``VASE.state_dict`` / ``VASE.from_state_dict`` round trip (the decoder, optimiser and window of
  a fresh learner of the same config fill the rest; an actor never uses them).
* :class:`FrameStride` — which raw frames an actor keeps for the learner: env ``i`` keeps the
  observation of step ``t`` when ``(t + i) % every == 0``. The rule depends only on the global env
  index and the step, so the learner receives the same frames however the envs are spread over
  actors; the bytes sent per env step are ``frame_bytes / every`` (plus the terminal frames of the
  kept envs that ended, which go with them).
* :func:`order_frame_packets` — merges the actors' packets in the order a single-process
  ``VecVASE`` feeds its window (by step; observations by env index, then the terminal observations
  of the envs that ended), whatever order the packets arrive in.
* :func:`payload_bytes` — the pickled size of an object (protocol 5, as Ray serialises it; for
  numpy arrays and tensors that is their data plus a few dozen bytes).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vase_rl.learner import VASE

__all__ = [
    "PAYLOAD_KEYS",
    "encoder_payload",
    "learner_from_payload",
    "payload_version",
    "payload_bytes",
    "FrameStride",
    "empty_packet",
    "order_frame_packets",
]

# the learner state an actor's frozen encoder needs (everything else is taken from a fresh learner)
PAYLOAD_KEYS = (
    "format",
    "format_version",
    "vase_rl_version",
    "config",
    "seed",
    "encoder",
    "classifier",
    "mask",
    "memory",
    "num_updates",
    "skipped_updates",
)


def cpu_copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: cpu_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [cpu_copy(v) for v in value]
    return value


def encoder_payload(learner: VASE) -> dict[str, Any]:
    """The slice of ``learner.state_dict()`` that decides its latents, as CPU tensors and plain data."""
    if not isinstance(learner, VASE):
        raise TypeError(f"encoder_payload needs a vase_rl.VASE, got {type(learner).__name__}")
    state = learner.state_dict()
    return {key: cpu_copy(state[key]) for key in PAYLOAD_KEYS}


def payload_version(payload: dict[str, Any]) -> tuple[int, int]:
    """(num_updates, skipped_updates) of the learner a payload was taken from."""
    return int(payload["num_updates"]), int(payload["skipped_updates"])


def learner_from_payload(
    payload: dict[str, Any], device: str | torch.device = "cpu", template: dict[str, Any] | None = None
) -> VASE:
    """A learner whose ``encode`` gives the same latents as the one ``payload`` was taken from.

    ``template`` is the ``state_dict()`` of any learner with the same config (the decoder,
    optimiser, snapshot and window are taken from it; pass one to skip building a fresh learner)."""
    if not isinstance(payload, dict) or any(key not in payload for key in PAYLOAD_KEYS):
        missing = [key for key in PAYLOAD_KEYS if not isinstance(payload, dict) or key not in payload]
        raise ValueError(f"not an encoder payload (missing {missing}); make one with encoder_payload(learner)")
    if template is None:
        from vase_rl.config import VASEConfig

        config = VASEConfig.from_dict(dict(payload["config"]))
        template = VASE(config, seed=int(payload["seed"]), device="cpu").state_dict()
    elif template.get("config") != payload["config"]:
        raise ValueError("the template learner has another config than the payload; build it from the payload's config")
    state = dict(template)
    state["window"] = None
    state.update({key: payload[key] for key in PAYLOAD_KEYS})
    return VASE.from_state_dict(state, device=device, source="encoder payload")


def payload_bytes(obj: Any) -> int:
    """Pickled size of ``obj`` (protocol 5, out-of-band buffers counted in)."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return len(head) + sum(memoryview(b).nbytes for b in buffers)


@dataclass(frozen=True)
class FrameStride:
    """Keep the observation of env ``i`` at step ``t`` when ``(t + i) % every == 0`` (``every=0``: none)."""

    every: int

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, (int, np.integer)) or self.every < 0:
            raise ValueError(
                f"frame_every must be an integer >= 0 (1: every frame, k: one frame in k per env, 0: none), "
                f"got {self.every!r}"
            )

    def keep(self, step: int, env_indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Boolean mask over ``env_indices`` of the frames kept at ``step``."""
        idx = np.asarray(env_indices, dtype=np.int64)
        if self.every == 0:
            return np.zeros(idx.shape, dtype=bool)
        return (int(step) + idx) % int(self.every) == 0


def empty_packet(image_shape: Sequence[int], dtype: Any, frames_seen: int = 0) -> dict[str, Any]:
    """A frame packet with no frames (``steps``, ``slots``, ``envs``, ``images``, ``frames_seen``)."""
    return {
        "steps": np.zeros(0, np.int64),
        "slots": np.zeros(0, np.int64),
        "envs": np.zeros(0, np.int64),
        "images": np.zeros((0, *image_shape), dtype=dtype),
        "frames_seen": int(frames_seen),
    }


def order_frame_packets(packets: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One packet holding every frame of ``packets`` in the order ``VecVASE`` feeds its window:
    by step; within a step the observations (slot 0) by env index, then the terminal observations
    of the envs that ended (slot 1) by env index. ``frames_seen`` (all frames the envs produced,
    kept or not) is summed."""
    packets = [p for p in packets if p is not None]
    if not packets:
        raise ValueError("order_frame_packets needs at least one packet (an empty one carries the image shape)")
    steps = np.concatenate([np.asarray(p["steps"], np.int64) for p in packets])
    envs = np.concatenate([np.asarray(p["envs"], np.int64) for p in packets])
    slots = np.concatenate([np.asarray(p.get("slots", np.zeros(len(p["steps"]))), np.int64) for p in packets])
    images = np.concatenate([np.asarray(p["images"]) for p in packets], axis=0)
    if not (steps.shape[0] == envs.shape[0] == slots.shape[0] == images.shape[0]):
        raise ValueError(
            f"frame packets disagree: {steps.shape[0]} steps, {slots.shape[0]} slots, {envs.shape[0]} env indices, "
            f"{images.shape[0]} images"
        )
    order = np.lexsort((envs, slots, steps))
    keys = np.stack([steps[order], slots[order], envs[order]], axis=1)
    if keys.shape[0] > 1 and bool((np.diff(keys, axis=0) == 0).all(axis=1).any()):
        raise ValueError("two frame packets hold a frame of the same env at the same step; was an env counted twice?")
    return {
        "steps": steps[order],
        "slots": slots[order],
        "envs": envs[order],
        "images": images[order],
        "frames_seen": sum(int(p.get("frames_seen", 0)) for p in packets),
    }
