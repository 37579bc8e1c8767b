"""Acting and learning beyond one process: Stable-Baselines3 vector envs over Ray actors, VASE
encoding on the actors, the VASE learner as a Ray actor, and an RLlib connector.

Nothing here imports Ray until a Ray-backed object is built (``import vase_rl.distributed`` is
free, and the ray-free pieces — :class:`EnvWorker`, :class:`BoundaryLearner`, the payload and
frame-sampling helpers — run and are tested without it). Install the extra with
``pip install "vase-rl[ray]"``. See docs/SCALING.md for the topology and measured costs.

* :class:`RayVecEnv` — an SB3 ``VecEnv`` whose sub-envs live in Ray actors (several per actor,
  stepped in one call per actor). Raw observations by default (``VecVASE(RayVecEnv(...))`` runs
  unchanged); with ``vase=...`` every actor holds a frozen copy of the VASE encoder, returns
  latents and keeps a strided sample of raw frames for the learner.
* :class:`BoundaryLearner` — the VASE learner fed by those frames, trained at rollout boundaries
  (in the driver, or as a Ray actor, optionally on a GPU, overlapping the next rollout).
* :class:`RolloutBoundarySync` — the SB3 callback that hands frames to the learner and broadcasts
  its new encoder weights to every actor at the end of each rollout.
* ``vase_rl.distributed.rllib`` — an env-to-module ConnectorV2 applying the synced encoder on
  RLlib EnvRunners (imports RLlib; import it explicitly).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "RayVecEnv",
    "WorkerDiedError",
    "RolloutBoundarySync",
    "BoundaryLearner",
    "EnvWorker",
    "FrameStride",
    "encoder_payload",
    "learner_from_payload",
    "payload_bytes",
    "order_frame_packets",
    "require_ray",
]

_EXPORTS = {
    "RayVecEnv": "vase_rl.distributed.ray_vec_env",
    "WorkerDiedError": "vase_rl.distributed.ray_vec_env",
    "RolloutBoundarySync": "vase_rl.distributed.callbacks",
    "BoundaryLearner": "vase_rl.distributed.learner",
    "EnvWorker": "vase_rl.distributed.worker",
    "FrameStride": "vase_rl.distributed.payload",
    "encoder_payload": "vase_rl.distributed.payload",
    "learner_from_payload": "vase_rl.distributed.payload",
    "payload_bytes": "vase_rl.distributed.payload",
    "order_frame_packets": "vase_rl.distributed.payload",
}

RAY_MISSING = (
    "this needs Ray, which is an optional extra of vase_rl: pip install 'vase-rl[ray]' "
    "(or pip install ray); the single-process path (VecVASE over DummyVecEnv/SubprocVecEnv) needs nothing more"
)


def require_ray() -> Any:
    """The ``ray`` module, or an ImportError that says how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError as err:
        raise ImportError(f"{RAY_MISSING} ({err})") from err


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vase_rl.distributed' has no attribute {name!r}")
