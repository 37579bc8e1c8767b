"""One actor's share of a vector env: several sub-envs stepped in one call (no Ray needed).

:class:`EnvWorker` is a plain class; :class:`~vase_rl.distributed.RayVecEnv` runs one per Ray
actor (``ray.remote(EnvWorker)``), and tests drive it in-process. It holds

* a ``DummyVecEnv`` of its sub-envs, so auto-reset, ``terminal_observation``,
  ``TimeLimit.truncated``, ``reset_infos``, seeds (``seed + global env index``) and options
  behave exactly as in SB3's own vector envs;
* optionally a frozen copy of the VASE encoder: the ``DummyVecEnv`` is wrapped in a
  ``VecVASE(training=False)`` built from an encoder payload, so the latents (and the encoded
  ``terminal_observation``) are the ones the driver-side ``VecVASE`` would compute with the same
  weights; :meth:`set_weights` swaps in new weights (at rollout boundaries);
* with an encoder, the raw frames kept for the learner by a
  :class:`~vase_rl.distributed.payload.FrameStride` rule (the observation and, when the episode
  ended, the raw terminal observation of each selected env), tagged with (step, slot, global env
  index), until :meth:`take_frames` collects them with the count of all frames seen; at most
  ``max_buffered_frames`` are held (the oldest are dropped and counted when nobody collects);
* byte counters: the pickled size of everything :meth:`reset` / :meth:`step` /
  :meth:`take_frames` return, so bandwidth per env step is measured, not estimated.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

from vase_rl.distributed.payload import (
    FrameStride,
    empty_packet,
    learner_from_payload,
    payload_bytes,
    payload_version,
)

__all__ = ["EnvWorker"]

# the observation options of a VecVASE that matter on an actor (the learning schedule lives with the learner)
ENCODING_OPTIONS = (
    "image_key",
    "channels_first",
    "grayscale",
    "value_range",
    "frame_stack",
    "allow_small_images",
    "latents_only",
    "keep_keys",
    "clip",
    "append_domain",
    "append_mask",
)


class _TerminalTap(VecEnvWrapper):
    """Keeps the raw terminal observations of the last step (VecVASE above encodes them in place)."""

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self.terminal: list[tuple[int, Any]] = []

    def reset(self) -> Any:
        self.terminal = []
        return self.venv.reset()

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = self.venv.step_wait()
        self.terminal = [
            (i, copy.deepcopy(infos[i]["terminal_observation"]))
            for i in range(len(dones))
            if dones[i] and infos[i].get("terminal_observation") is not None
        ]
        return obs, rewards, dones, infos


class EnvWorker:
    """Sub-envs ``first_index .. first_index + len(env_fns) - 1`` of a vector env.

    Args:
        env_fns: callables that each build one Gymnasium env.
        first_index: global index of the first sub-env (seeds and the frame rule use global indices).
        payload: an encoder payload (:func:`~vase_rl.distributed.payload.encoder_payload`); with it,
            observations are encoded on this worker, without it they are returned raw.
        encoding_options: VecVASE observation options (``image_key``, ``frame_stack``, ``clip``, ...).
        frame_every: keep one raw frame in ``frame_every`` per env for the learner (0: none).
        max_buffered_frames: frames held for the learner before the oldest are dropped.
        threads: torch intra-op threads in this process (1 by default: many workers share a machine).
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        first_index: int = 0,
        *,
        payload: dict[str, Any] | None = None,
        encoding_options: dict[str, Any] | None = None,
        frame_every: int = 0,
        max_buffered_frames: int = 4096,
        threads: int = 1,
    ) -> None:
        torch.set_num_threads(int(threads))
        os.environ.setdefault("OMP_NUM_THREADS", str(int(threads)))
        if not env_fns:
            raise ValueError("an EnvWorker needs at least one env function")
        self.base = DummyVecEnv(list(env_fns))
        self.first_index = int(first_index)
        self.indices = np.arange(self.first_index, self.first_index + self.base.num_envs, dtype=np.int64)
        options = dict(encoding_options or {})
        unknown = sorted(set(options) - set(ENCODING_OPTIONS))
        if unknown:
            raise TypeError(f"unknown encoding option(s) {unknown}; known: {list(ENCODING_OPTIONS)}")
        self.encoding_options = options
        self.top: VecEnv = self.base
        self.tap: _TerminalTap | None = None
        self._template: dict[str, Any] | None = None
        if payload is not None:
            from vase_rl.wrappers import VecVASE

            learner = learner_from_payload(payload)
            self._template = learner.state_dict()
            self.tap = _TerminalTap(self.base)
            self.top = VecVASE(self.tap, learner=learner, training=False, **options)
        self.stride = FrameStride(int(frame_every))
        self.sampling = self.stride.every > 0 and self.encodes
        self.max_buffered_frames = int(max_buffered_frames)
        self.step_count = 0
        self._frames: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # (step, slot, envs, images)
        self._buffered = 0
        self.frames_seen = 0  # frames the envs produced since the last take_frames (kept or not)
        self.frames_dropped = 0
        self.bytes_out = 0
        self.frame_bytes_out = 0
        self.env_steps = 0
        self.seconds_stepping = 0.0
        self.pid = os.getpid()

    # ------------------------------------------------------------------ description
    @property
    def num_envs(self) -> int:
        return self.base.num_envs

    @property
    def encodes(self) -> bool:
        return self.top is not self.base

    def spaces(self) -> dict[str, Any]:
        """Spaces and render mode, for the driver's ``VecEnv.__init__``."""
        return {
            "num_envs": self.num_envs,
            "observation_space": self.top.observation_space,
            "raw_observation_space": self.base.observation_space,
            "action_space": self.base.action_space,
            "render_mode": self.base.render_mode,
        }

    def ping(self) -> int:
        return self.pid

    # ------------------------------------------------------------------ VecEnv calls
    def _keep(self, slot: int, env_indices: np.ndarray, images: np.ndarray) -> None:
        self._frames.append((self.step_count, slot, env_indices, images))
        self._buffered += images.shape[0]
        while self._buffered > self.max_buffered_frames and self._frames:
            old = self._frames.pop(0)
            self._buffered -= old[3].shape[0]
            self.frames_dropped += old[3].shape[0]

    def _sample(self, raw: Any, terminal: list[tuple[int, Any]]) -> None:
        """Keep this step's frames of the envs the stride selects: observations (slot 0), then the
        terminal observations of those that ended (slot 1), as VecVASE adds them to its window."""
        if not self.sampling:
            return
        self.frames_seen += self.num_envs + len(terminal)
        keep = self.stride.keep(self.step_count, self.indices)
        if not keep.any():
            return
        adapter = self.top.feed.adapter
        self._keep(0, self.indices[keep], np.asarray(adapter.select(raw))[keep].copy())
        ended = [(i, t) for i, t in terminal if keep[i]]
        if ended:
            images = np.stack([np.asarray(adapter.select(t)) for _, t in ended])
            self._keep(1, self.indices[[i for i, _ in ended]], images)

    def reset(self) -> tuple[Any, list[dict[str, Any]]]:
        obs = self.top.reset()
        if self.encodes:
            self._sample(self.top.old_obs, [])
        out = (obs, [dict(info) for info in self.base.reset_infos])
        self.bytes_out += payload_bytes(out)
        return out

    def step(self, actions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        start = time.perf_counter()
        obs, rewards, dones, infos = self.top.step(np.asarray(actions))
        self.step_count += 1
        self.env_steps += self.num_envs
        if self.encodes:
            self._sample(self.top.old_obs, self.tap.terminal)
        out = (obs, rewards, dones, infos)
        self.seconds_stepping += time.perf_counter() - start
        self.bytes_out += payload_bytes(out)
        return out

    def reset_infos(self) -> list[dict[str, Any]]:
        return [dict(info) for info in self.base.reset_infos]

    def seed(self, seed: int) -> list[int | None]:
        """Seed sub-env ``k`` of this worker with ``seed + k`` at the next reset (the driver passes
        ``seed + first_index``, so every env gets ``seed + global index``, as in ``DummyVecEnv``)."""
        return list(self.base.seed(int(seed)))

    def set_options(self, options: list[dict[str, Any]]) -> None:
        self.base.set_options(list(options))

    def get_attr(self, name: str, indices: Sequence[int]) -> list[Any]:
        return self.base.get_attr(name, list(indices))

    def set_attr(self, name: str, value: Any, indices: Sequence[int]) -> None:
        self.base.set_attr(name, value, list(indices))

    def env_method(self, name: str, args: tuple, kwargs: dict[str, Any], indices: Sequence[int]) -> list[Any]:
        return self.base.env_method(name, *args, indices=list(indices), **kwargs)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Sequence[int]) -> list[bool]:
        return self.base.env_is_wrapped(wrapper_class, list(indices))

    def get_images(self) -> list[np.ndarray | None]:
        return list(self.base.get_images())

    def close(self) -> None:
        self.base.close()

    # ------------------------------------------------------------------ encoder and frames
    def set_weights(self, payload: dict[str, Any]) -> tuple[int, int]:
        """Encode with the weights of ``payload`` from the next call on; returns their version."""
        if not self.encodes:
            raise RuntimeError("this worker returns raw observations (built without an encoder payload)")
        learner = learner_from_payload(payload, template=self._template)
        self.top.set_learner(learner)
        return payload_version(payload)

    def weights_version(self) -> tuple[int, int] | None:
        """(num_updates, skipped_updates) of the learner whose weights encode here (None: raw)."""
        if not self.encodes:
            return None
        learner = self.top.learner
        return int(learner.num_updates), int(learner.skipped_updates)

    def encode(self, raw_observations: Any) -> np.ndarray:
        """Latents of a batch of raw observations with this worker's current weights (no side effect)."""
        if not self.encodes:
            raise RuntimeError("this worker returns raw observations (built without an encoder payload)")
        return self.top.encode(raw_observations)

    def set_sampling(self, flag: bool) -> None:
        """Keep frames for the learner (True, when ``frame_every > 0``) or not."""
        self.sampling = bool(flag) and self.stride.every > 0 and self.encodes
        if not self.sampling:
            self._frames, self._buffered, self.frames_seen = [], 0, 0

    def take_frames(self) -> dict[str, Any]:
        """The frames kept since the last call, tagged with their step, slot (0: observation,
        1: terminal observation) and global env index, and the count of all frames seen."""
        if self._frames:
            packet = {
                "steps": np.concatenate([np.full(len(e), s, np.int64) for s, _, e, _ in self._frames]),
                "slots": np.concatenate([np.full(len(e), k, np.int64) for _, k, e, _ in self._frames]),
                "envs": np.concatenate([e for _, _, e, _ in self._frames]),
                "images": np.concatenate([i for _, _, _, i in self._frames], axis=0),
                "frames_seen": self.frames_seen,
            }
        else:
            space = self.base.observation_space
            if self.encodes:
                shape, dtype = self.top.feed.adapter.single_shape, self.top.feed.adapter.image_space.dtype
            else:
                shape, dtype = space.shape, space.dtype
            packet = empty_packet(shape, dtype, self.frames_seen)
        self._frames, self._buffered, self.frames_seen = [], 0, 0
        self.frame_bytes_out += payload_bytes(packet)
        return packet

    def transfer_stats(self) -> dict[str, Any]:
        return {
            "first_index": self.first_index,
            "num_envs": self.num_envs,
            "env_steps": self.env_steps,
            "bytes_out": self.bytes_out,
            "frame_bytes_out": self.frame_bytes_out,
            "frames_dropped": self.frames_dropped,
            "seconds_stepping": self.seconds_stepping,
            "weights_version": self.weights_version(),
            "pid": self.pid,
        }
