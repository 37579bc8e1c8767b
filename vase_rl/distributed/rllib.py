"""RLlib (new API stack): VASE latents on the EnvRunners through an env-to-module ConnectorV2.

Import this module only when you use RLlib (it imports ``ray.rllib``). Written against the
ConnectorV2 interface of Ray 2.60 (``ray/rllib/connectors/connector_v2.py``): a connector piece
is called with ``episodes`` (and ``batch``, ``rl_module``, ...) on every EnvRunner after each env
reset and step; like RLlib's own ``SingleAgentObservationPreprocessor`` it replaces the newest
observation of every episode in place (``episode.set_observations(at_indices=-1, ...)``), so the
rest of the pipeline, the RLModule and the Learners only see latents, and it declares the latent
``Box`` through ``recompute_output_observation_space``. Unlike that per-observation helper it
encodes every episode's newest frame in one batch.

* :class:`VASEEncoderConnector` — holds a frozen copy of the encoder (rebuilt from an encoder
  payload, :mod:`vase_rl.distributed.payload`), encodes, and optionally sends every
  ``frame_every``-th raw frame to a named learner actor (fire and forget, in packets of
  ``send_every`` frames). Its RLlib state is the weights' version only (RLlib gathers and
  re-broadcasts connector states every iteration; the weights travel separately, once, as an
  object in Ray's store); the learner's weights are saved with ``VASE.save`` beside the RLlib
  checkpoint, as ``VecVASE`` is saved beside an SB3 agent.
* :func:`start_learner` — the VASE learner as a named Ray actor (a :class:`BoundaryLearner`),
  optionally on a GPU.
* :class:`VASEBoundaryCallback` — an ``RLlibCallback`` whose ``on_train_result`` (the iteration
  boundary, on the driver) runs the learner's due updates and pushes the new weights to every
  EnvRunner through ``EnvRunner.set_state``; the summary lands in ``result["vase"]``.

Frames from several EnvRunners reach the learner in arrival order, so RLlib runs are reproducible
in distribution, not bit for bit (the SB3 path, ``RayVecEnv``, is bit-reproducible).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import ray
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import COMPONENT_ENV_TO_MODULE_CONNECTOR

from vase_rl.distributed.learner import BoundaryLearner
from vase_rl.distributed.payload import FrameStride, learner_from_payload, payload_version
from vase_rl.distributed.worker import ENCODING_OPTIONS

__all__ = ["VASEEncoderConnector", "VASEBoundaryCallback", "start_learner", "connector_factory"]


class VASEEncoderConnector(ConnectorV2):
    """Env-to-module piece: raw image observation -> VASE latents (frozen, synced copy).

    Args:
        input_observation_space / input_action_space: given by RLlib.
        payload: an encoder payload (``encoder_payload(learner)``) or an ObjectRef to one.
        options: VecVASE observation options (``image_key``, ``frame_stack``, ``clip``, ...).
        learner_name: name of the learner actor to send frames to (None: send none).
        frame_every: keep one frame in ``frame_every`` per episode for the learner.
        send_every: frames per packet sent to the learner.
    """

    def __init__(
        self,
        input_observation_space: gym.Space | None = None,
        input_action_space: gym.Space | None = None,
        *,
        payload: Any = None,
        options: dict[str, Any] | None = None,
        learner_name: str | None = None,
        frame_every: int = 4,
        send_every: int = 256,
        **kwargs: Any,
    ) -> None:
        if payload is None:
            raise ValueError("VASEEncoderConnector needs payload=encoder_payload(learner) (or an ObjectRef to one)")
        self._payload = ray.get(payload) if isinstance(payload, ray.ObjectRef) else payload
        self._options = dict(options or {})
        unknown = sorted(set(self._options) - set(ENCODING_OPTIONS))
        if unknown:
            raise TypeError(f"unknown encoding option(s) {unknown}; known: {list(ENCODING_OPTIONS)}")
        self._feed = None
        self.learner_name = learner_name
        self.stride = FrameStride(int(frame_every) if learner_name else 0)
        self.send_every = int(send_every)
        self._calls = 0
        self._kept: list[np.ndarray] = []
        self._seen = 0
        self.frames_sent = 0
        super().__init__(input_observation_space, input_action_space, **kwargs)

    # ------------------------------------------------------------------ spaces
    def _build_feed(self, space: gym.Space) -> Any:
        from vase_rl.wrappers import LatentFeed

        learner = learner_from_payload(self._payload)
        return LatentFeed(space, learner, learning=False, **self._options)

    def recompute_output_observation_space(self, input_observation_space, input_action_space) -> gym.Space:
        if input_observation_space is None:
            return None
        self._feed = self._build_feed(input_observation_space)
        return self._feed.output_space

    # ------------------------------------------------------------------ the transform
    def _is_raw(self, observation: Any) -> bool:
        image = self._feed.adapter.select(observation)
        return tuple(np.shape(image)) == tuple(self._feed.adapter.single_shape)

    def __call__(self, *, rl_module: Any, batch: dict[str, Any], episodes: list[Any], **kwargs: Any) -> Any:
        todo = [ep for ep in self.single_agent_episode_iterator(episodes) if self._is_raw(ep.get_observations(-1))]
        if not todo:
            return batch
        raws = [ep.get_observations(-1) for ep in todo]
        images = np.stack([np.asarray(self._feed.adapter.select(r)) for r in raws])
        latents = self._feed.encode(self._feed.prepare(images))
        for j, (ep, raw) in enumerate(zip(todo, raws)):
            ep.set_observations(at_indices=-1, new_data=self._feed.output(latents[j], raw))
            ep.observation_space = self.observation_space
        self._keep_frames(images)
        return batch

    def _keep_frames(self, images: np.ndarray) -> None:
        if self.stride.every == 0:
            return
        self._seen += images.shape[0]
        keep = self.stride.keep(self._calls, np.arange(images.shape[0]))
        self._calls += 1
        if keep.any():
            self._kept.append(images[keep].copy())
        if sum(k.shape[0] for k in self._kept) >= self.send_every:
            self.flush()

    def flush(self) -> int:
        """Send the frames kept so far to the learner actor; returns how many were sent."""
        if not self._kept or not self.learner_name:
            return 0
        images = np.concatenate(self._kept)
        n = images.shape[0]
        packet = {
            "steps": np.arange(n, dtype=np.int64),
            "envs": np.zeros(n, np.int64),
            "images": images,
            "frames_seen": self._seen,
        }
        ray.get_actor(self.learner_name).receive.remote(packet)
        self._kept, self._seen = [], 0
        self.frames_sent += n
        return n

    # ------------------------------------------------------------------ weights and state
    def set_weights(self, payload: Any) -> tuple[int, int]:
        if isinstance(payload, ray.ObjectRef):
            payload = ray.get(payload)
        self._payload = payload
        self._feed.set_learner(learner_from_payload(payload))
        return payload_version(payload)

    def weights_version(self) -> tuple[int, int]:
        return payload_version(self._payload)

    def get_state(self, components=None, *, not_components=None, **kwargs) -> dict[str, Any]:
        return {"version": list(self.weights_version()), "frames_sent": self.frames_sent}

    def set_state(self, state: dict[str, Any]) -> None:
        if state and state.get("payload") is not None:
            self.set_weights(state["payload"])

    def merge_states(self, states: list[dict[str, Any]]) -> dict[str, Any]:
        newest = max((s for s in states if s), key=lambda s: tuple(s["version"]), default={})
        return {"version": newest.get("version", list(self.weights_version()))}


def connector_factory(payload_ref: Any, options: dict[str, Any] | None = None, **kwargs: Any):
    """What ``config.env_runners(env_to_module_connector=...)`` takes: a callable
    ``(env, spaces, device) -> VASEEncoderConnector``."""

    def make(env=None, spaces=None, device=None):
        return VASEEncoderConnector(payload=payload_ref, options=options, **kwargs)

    return make


def start_learner(
    learner: Any,
    observation_space: gym.Space,
    name: str,
    options: dict[str, Any] | None = None,
    device: str = "cpu",
    resources: dict[str, Any] | None = None,
) -> Any:
    """The VASE learner as a named Ray actor (``resources={"num_gpus": 1}``, ``device="cuda"``
    for a GPU learner). ``learner`` is a ``vase_rl.VASE``."""
    cls = ray.remote(BoundaryLearner)
    handle = cls.options(name=name, **{"num_cpus": 1, **(resources or {})}).remote(
        learner.state_dict(), observation_space, options or {}, device, 1
    )
    ray.get(handle.ping.remote())
    return handle


class VASEBoundaryCallback(RLlibCallback):
    """At each training iteration's end: the learner runs its due updates on the frames the
    EnvRunners sent, and every EnvRunner encodes with the new weights from the next sample on.
    ``learner_name`` is read from ``algorithm.config["vase_learner_name"]`` (set it with
    ``config.update_from_dict({"vase_learner_name": name})``) or the class attribute."""

    learner_name = "vase_learner"

    def on_train_result(self, *, algorithm, metrics_logger=None, result, **kwargs) -> None:
        name = algorithm.config.get("vase_learner_name", None) or self.learner_name
        learner = ray.get_actor(name)
        algorithm.env_runner_group.foreach_env_runner(lambda runner: _flush(runner))
        payload_ref, summary_ref = learner.boundary.options(num_returns=2).remote()
        summary = ray.get(summary_ref)
        state = {COMPONENT_ENV_TO_MODULE_CONNECTOR: {VASEEncoderConnector.__name__: {"payload": payload_ref}}}
        algorithm.env_runner_group.foreach_env_runner(lambda runner: runner.set_state(state))
        result["vase"] = {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}


def _flush(runner: Any) -> int:
    pipeline = getattr(runner, "_env_to_module", None)
    if pipeline is None:
        return 0
    return sum(c.flush() for c in pipeline[VASEEncoderConnector])
