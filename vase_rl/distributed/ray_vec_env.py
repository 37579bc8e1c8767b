"""An SB3 ``VecEnv`` whose sub-envs live in Ray actors, with optional VASE encoding on the actors.

Topology (docs/SCALING.md)::

    driver (PPO, this VecEnv) ──actions──► EnvWorker actor 0: envs 0..k-1  ──obs / latents──► driver
                               ──actions──► EnvWorker actor 1: envs k..2k-1 ──obs / latents──► driver
                               ...
    at a rollout boundary:  actors ──strided raw frames──► learner (driver or Ray actor, CPU/GPU)
                            learner ──encoder weights (one object, fetched once per node)──► actors

* ``RayVecEnv(env_fns, envs_per_actor=k)`` returns raw observations: it is a drop-in for
  ``DummyVecEnv`` / ``SubprocVecEnv`` (same seeds ``seed + i``, auto-reset,
  ``terminal_observation``, ``reset_infos``, options, ``get_attr``/``env_method``), so
  ``VecVASE(RayVecEnv(...))`` and PPO run unchanged and give the same numbers.
* ``RayVecEnv(env_fns, k, vase="cpu32", frame_every=4)`` encodes on the actors with a frozen copy
  of the encoder and returns latents; every ``frame_every``-th raw frame per env is kept for the
  learner. :meth:`rollout_boundary` (called by :class:`~vase_rl.distributed.RolloutBoundarySync`
  at each rollout end) hands the frames to the learner, runs the due updates and broadcasts the
  new weights; with ``learner_on="actor"`` the learner is a Ray actor (``learner_resources=
  {"num_gpus": 1}`` puts it on a GPU) and, with ``overlap=True``, trains while the actors collect
  the next rollout (the weights then lag one rollout). Given the seeds, the learner's updates are
  the same whichever of these placements runs them.

An actor that dies is reported: the call raises :class:`WorkerDiedError` naming the actor and its
envs, and so does every later call (no rollout continues with fewer envs). Ray is imported when a
``RayVecEnv`` is built, not before.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from vase_rl.distributed import require_ray
from vase_rl.distributed.learner import ADAPTER_OPTIONS, SCHEDULE_OPTIONS, BoundaryLearner
from vase_rl.distributed.payload import encoder_payload, payload_bytes
from vase_rl.distributed.worker import ENCODING_OPTIONS, EnvWorker
from vase_rl.learner import VASE

__all__ = ["RayVecEnv", "WorkerDiedError"]


class WorkerDiedError(RuntimeError):
    """A Ray actor holding sub-envs (or the learner) died; the vector env cannot go on."""


def _concat(parts: list[Any]) -> Any:
    if isinstance(parts[0], dict):
        return {key: np.concatenate([p[key] for p in parts], axis=0) for key in parts[0]}
    return np.concatenate(parts, axis=0)


class RayVecEnv(VecEnv):
    """SB3 vector env over Ray actors (``envs_per_actor`` sub-envs each, stepped in one call).

    Args:
        env_fns: one callable per sub-env, each building a Gymnasium env (they are pickled to the
            actors with cloudpickle: closures and lambdas are fine).
        envs_per_actor: sub-envs per actor (the last actor takes the remainder).
        vase: ``None`` (raw observations) or what ``VecVASE`` takes as ``config``: a ``VASEConfig``,
            a preset name, a config ``.json``, or a ``vase_rl.VASE`` learner (its weights are used);
            actors then return latents.
        learning: train the learner on the actors' frames at rollout boundaries.
        frame_every: with learning, keep one raw frame in ``frame_every`` per env for the learner.
        learner_on: ``"driver"`` (the learner lives in this process) or ``"actor"`` (a Ray actor).
        overlap: with ``learner_on="actor"``, train while the next rollout is collected (weights lag
            one rollout; the same lag is applied with ``learner_on="driver"``, so results match).
        learner_device: device of the learner actor ("cuda" with ``learner_resources={"num_gpus": 1}``).
        seed: seed of a learner built from a config (None: the one ``seed(s)`` gives first, as VecVASE).
        actor_options: ``.options(...)`` for the env actors (default ``{"num_cpus": 1}``; e.g.
            ``{"num_cpus": 0.5}`` to pack several on a core, or ``{"resources": ...}`` to place them).
        learner_resources: ``.options(...)`` for the learner actor (default ``{"num_cpus": 1}``).
        threads_per_actor: torch threads in each actor process.
        max_buffered_frames: frames an actor holds for the learner between boundaries.
        **options: ``VecVASE`` observation options (``image_key``, ``frame_stack``, ``clip``,
            ``append_domain``, ...) and schedule options: ``train_every`` (frames per update round,
            counting every frame the envs produce, 64 by default), ``gradient_steps``,
            ``batch_size``, ``learning_starts`` (frames), ``window_size``.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        envs_per_actor: int = 1,
        *,
        vase: Any = None,
        learning: bool = True,
        frame_every: int = 4,
        learner_on: str = "driver",
        overlap: bool = False,
        learner_device: str = "cpu",
        seed: int | None = None,
        actor_options: dict[str, Any] | None = None,
        learner_resources: dict[str, Any] | None = None,
        threads_per_actor: int = 1,
        max_buffered_frames: int = 4096,
        **options: Any,
    ) -> None:
        ray = require_ray()
        self._ray = ray
        env_fns = list(env_fns)
        if not env_fns:
            raise ValueError("RayVecEnv needs at least one env function")
        if isinstance(envs_per_actor, bool) or not isinstance(envs_per_actor, int) or envs_per_actor < 1:
            raise ValueError(f"envs_per_actor must be an integer >= 1, got {envs_per_actor!r}")
        if learner_on not in ("driver", "actor"):
            raise ValueError(f"learner_on must be 'driver' or 'actor', got {learner_on!r}")
        known = set(ENCODING_OPTIONS) | set(SCHEDULE_OPTIONS) | set(ADAPTER_OPTIONS)
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"RayVecEnv got unknown option(s) {unknown}; known: {sorted(known)}")
        if vase is None and options:
            raise TypeError(f"options {sorted(options)} only apply with vase=... (encoding on the actors)")
        if not ray.is_initialized():
            ray.init(include_dashboard=False)

        self._learning = bool(learning) and vase is not None
        self.learner_on = learner_on
        self.overlap = bool(overlap)
        self._dead: str | None = None
        self._closed = False
        learner = None
        payload = None
        if vase is not None:
            from vase_rl.wrappers import resolve_learner

            if isinstance(vase, (str, os.PathLike)) and str(vase).endswith(".pt"):
                learner = resolve_learner(learner_path=vase, device="cpu")
            elif isinstance(vase, VASE):
                learner = resolve_learner(learner=vase)
            else:
                learner = resolve_learner(config=vase, seed=seed, device="cpu")
            payload = encoder_payload(learner)
        self._seed_from_env = vase is not None and seed is None and not isinstance(vase, VASE)

        worker_cls = ray.remote(EnvWorker)
        resources = {"num_cpus": 1, **(actor_options or {})}
        encoding = {k: v for k, v in options.items() if k in ENCODING_OPTIONS}
        self._chunks: list[tuple[int, int]] = []
        self._workers = []
        payload_ref = ray.put(payload) if payload is not None else None
        for first in range(0, len(env_fns), envs_per_actor):
            chunk = env_fns[first : first + envs_per_actor]
            self._chunks.append((first, first + len(chunk)))
            self._workers.append(
                worker_cls.options(**resources).remote(
                    chunk,
                    first,
                    payload=payload_ref,
                    encoding_options=encoding,
                    frame_every=frame_every if self._learning else 0,
                    max_buffered_frames=max_buffered_frames,
                    threads=threads_per_actor,
                )
            )
        self._owner = np.concatenate([np.full(b - a, k) for k, (a, b) in enumerate(self._chunks)])
        try:
            described = self._gather([w.spaces.remote() for w in self._workers], "start")
        except Exception:  # an env that cannot be built: leave no actor behind
            for w in self._workers:
                ray.kill(w)
            raise
        first = described[0]
        self.raw_observation_space = first["raw_observation_space"]
        for k, desc in enumerate(described[1:], start=1):
            if desc["observation_space"] != first["observation_space"] or desc["action_space"] != first["action_space"]:
                raise ValueError(
                    f"actor {k} (envs {self._chunks[k][0]}..{self._chunks[k][1] - 1}) has spaces "
                    f"{desc['observation_space']} / {desc['action_space']}, actor 0 has "
                    f"{first['observation_space']} / {first['action_space']}: every env must share its spaces"
                )
        self._pending_steps: list[Any] | None = None
        self._pending_job: tuple[Any, Any] | None = None
        self._local_pending: tuple[dict, dict] | None = None
        self.broadcast_bytes = 0
        self.broadcasts = 0
        self.boundary_seconds = 0.0
        self.last_learner_summary: dict[str, Any] = {}
        self._learner: Any = None
        if self._learning:
            learner_options = {k: v for k, v in options.items() if k in SCHEDULE_OPTIONS or k in ADAPTER_OPTIONS}
            if learner_on == "driver":
                self._learner = BoundaryLearner(learner, self.raw_observation_space, learner_options)
            else:
                learner_cls = ray.remote(BoundaryLearner)
                self._learner = learner_cls.options(**{"num_cpus": 1, **(learner_resources or {})}).remote(
                    learner.state_dict(), self.raw_observation_space, learner_options, learner_device, 1
                )
                self._gather([self._learner.ping.remote()], "learner start", learner=True)
        self._frozen = learner if not self._learning else None
        super().__init__(len(env_fns), first["observation_space"], first["action_space"])

    # ------------------------------------------------------------------ failures
    def _describe(self, k: int) -> str:
        a, b = self._chunks[k]
        return f"actor {k} (envs {a}..{b - 1})"

    def _gather(self, refs: list[Any], what: str, learner: bool = False) -> list[Any]:
        """``ray.get`` every ref. A dead actor raises WorkerDiedError naming it (and every later
        call raises it too); an exception raised inside an env is re-raised with the actor named."""
        ray = self._ray
        if self._dead is not None:
            raise WorkerDiedError(self._dead)
        try:
            return ray.get(refs)
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError):
            pass
        dead, failed = [], None
        for k, ref in enumerate(refs):
            name = "the learner actor" if learner else self._describe(k)
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError as err:
                dead.append(f"{name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            except ray.exceptions.RayTaskError as err:
                if failed is None:
                    failed = (name, err)
        if not dead and failed is not None:
            name, err = failed
            err.add_note(f"RayVecEnv: raised in {name} during {what}")
            raise err
        self._dead = (
            f"RayVecEnv: during {what}, {len(dead)} actor(s) died: " + "; ".join(dead) + ". Their envs are gone, so "
            "the vector env stops instead of going on with fewer envs; close() it and build a new one "
            "(e.g. from the last saved agent and learner)."
        )
        raise WorkerDiedError(self._dead)

    def check_workers(self, timeout: float = 30.0) -> list[str]:
        """Descriptions of the actors that do not answer a ping (empty when all are alive)."""
        ray = self._ray
        problems = []
        handles = [(self._describe(k), w) for k, w in enumerate(self._workers)]
        if self._learner is not None and self.learner_on == "actor":
            handles.append(("the learner actor", self._learner))
        for name, handle in handles:
            try:
                ray.get(handle.ping.remote(), timeout=timeout)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as err:
                problems.append(f"{name}: {type(err).__name__}")
        return problems

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> VecEnvObs:
        results = self._gather([w.reset.remote() for w in self._workers], "reset")
        self.reset_infos = [info for _, infos in results for info in infos]
        self._reset_seeds()
        self._reset_options()
        return _concat([obs for obs, _ in results])

    def step_async(self, actions: np.ndarray) -> None:
        if self._dead is not None:
            raise WorkerDiedError(self._dead)
        actions = np.asarray(actions)
        if actions.shape[:1] != (self.num_envs,):
            raise ValueError(f"expected one action per env ({self.num_envs}), got an array of shape {actions.shape}")
        self._pending_steps = [w.step.remote(actions[a:b]) for w, (a, b) in zip(self._workers, self._chunks)]

    def step_wait(self) -> VecEnvStepReturn:
        if self._pending_steps is None:
            raise RuntimeError("step_wait() called without step_async()")
        refs, self._pending_steps = self._pending_steps, None
        results = self._gather(refs, "step")
        obs = _concat([r[0] for r in results])
        rewards = np.concatenate([r[1] for r in results]).astype(np.float32, copy=False)
        dones = np.concatenate([r[2] for r in results])
        infos = [info for r in results for info in r[3]]
        return obs, rewards, dones, infos

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Sub-env ``i`` gets ``seed + i`` at the next reset (as SB3's vector envs); a learner built
        from a config without a seed, and untouched, is rebuilt with ``seed`` (as ``VecVASE``)."""
        if seed is None:
            seed = int(np.random.randint(0, np.iinfo(np.uint32).max, dtype=np.uint32))
        seeds = self._gather([w.seed.remote(seed + a) for w, (a, _) in zip(self._workers, self._chunks)], "seed")
        self._seeds = [s for part in seeds for s in part]
        if self._seed_from_env:
            self._reseed_learner(int(seed))
        return self._seeds

    def _reseed_learner(self, seed: int) -> None:
        if self._learner is None:
            return
        if self.learner_on == "driver":
            changed = self._learner.reseed(seed)
            payload = self._learner.payload() if changed else None
        else:
            changed = self._gather([self._learner.reseed.remote(seed)], "reseed", learner=True)[0]
            payload = self._gather([self._learner.payload.remote()], "reseed", learner=True)[0] if changed else None
        if changed:
            self._broadcast(payload)
        self._seed_from_env = False

    def set_options(self, options: list[dict] | dict | None = None) -> None:
        if options is None:
            options = {}
        per_env = copy.deepcopy([options] * self.num_envs if isinstance(options, dict) else list(options))
        if len(per_env) != self.num_envs:
            raise ValueError(f"set_options got {len(per_env)} option dicts for {self.num_envs} envs")
        self._gather(
            [w.set_options.remote(per_env[a:b]) for w, (a, b) in zip(self._workers, self._chunks)], "set_options"
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ray = self._ray
        handles = list(self._workers)
        if self._learner is not None and self.learner_on == "actor":
            handles.append(self._learner)
        for w in self._workers:
            with contextlib.suppress(Exception):  # a dead actor has nothing left to close
                ray.get(w.close.remote(), timeout=10)
        for handle in handles:
            ray.kill(handle)

    # ------------------------------------------------------------------ per-env access
    def _route(self, indices: VecEnvIndices) -> list[tuple[int, list[int], list[int]]]:
        """(actor, its local indices, positions in the answer) for the requested global indices."""
        idx = list(self._get_indices(indices))
        plan: dict[int, tuple[list[int], list[int]]] = {}
        for pos, i in enumerate(idx):
            if not 0 <= i < self.num_envs:
                raise IndexError(f"env index {i} out of range for {self.num_envs} envs")
            k = int(self._owner[i])
            local, where = plan.setdefault(k, ([], []))
            local.append(i - self._chunks[k][0])
            where.append(pos)
        return [(k, local, where) for k, (local, where) in plan.items()]

    def _per_env(self, method: str, indices: VecEnvIndices, *args: Any) -> list[Any]:
        plan = self._route(indices)
        refs = [getattr(self._workers[k], method).remote(*args, local) for k, local, _ in plan]
        answers = self._gather(refs, method)
        out: list[Any] = [None] * sum(len(w) for _, _, w in plan)
        for (_, _, where), values in zip(plan, answers):
            for pos, value in zip(where, values):
                out[pos] = value
        return out

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if not hasattr(self, "_workers"):
            raise AttributeError(attr_name)
        return self._per_env("get_attr", indices, attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        plan = self._route(indices)
        self._gather([self._workers[k].set_attr.remote(attr_name, value, local) for k, local, _ in plan], "set_attr")

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any):
        plan = self._route(indices)
        refs = [
            self._workers[k].env_method.remote(method_name, method_args, method_kwargs, local) for k, local, _ in plan
        ]
        answers = self._gather(refs, f"env_method({method_name!r})")
        out: list[Any] = [None] * sum(len(w) for _, _, w in plan)
        for (_, _, where), values in zip(plan, answers):
            for pos, value in zip(where, values):
                out[pos] = value
        return out

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._per_env("env_is_wrapped", indices, wrapper_class)

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [
            img for part in self._gather([w.get_images.remote() for w in self._workers], "get_images") for img in part
        ]

    # ------------------------------------------------------------------ encoder, learner, boundary
    @property
    def num_actors(self) -> int:
        return len(self._workers)

    @property
    def encodes(self) -> bool:
        return self._learner is not None or self._frozen is not None

    @property
    def training(self) -> bool:
        """Whether actors keep frames and boundaries train the learner (settable, as VecNormalize)."""
        return self._learning

    @training.setter
    def training(self, flag: bool) -> None:
        if flag and self._learner is None:
            raise ValueError("this RayVecEnv was built without a learner (vase=None or learning=False)")
        self._learning = bool(flag)
        self._gather([w.set_sampling.remote(self._learning) for w in self._workers], "set_training")

    def set_training(self, flag: bool) -> None:
        self.training = flag

    def _broadcast(self, payload: Any, size: int | None = None) -> None:
        """Send one encoder payload (a dict, or an ObjectRef to one with its ``size`` in bytes) to
        every actor and wait until each encodes with it."""
        ray = self._ray
        if isinstance(payload, dict):
            size = payload_bytes(payload)
            payload = ray.put(payload)
        versions = self._gather([w.set_weights.remote(payload) for w in self._workers], "weight broadcast")
        if len({tuple(v) for v in versions}) != 1:
            raise RuntimeError(f"actors report different weight versions after a broadcast: {versions}")
        self.broadcast_bytes += int(size or 0) * len(self._workers)
        self.broadcasts += 1

    def rollout_boundary(self) -> dict[str, Any] | None:
        """Hand the actors' frames to the learner, run the due updates and broadcast the new weights.

        Returns the learner's summary of the updates whose weights were just broadcast (None when
        not learning, or on the first boundary with ``overlap=True``)."""
        if not self._learning or self._learner is None:
            return None
        start = time.perf_counter()
        packet_refs = [w.take_frames.remote() for w in self._workers]
        summary = None
        if self.learner_on == "driver":
            packets = self._gather(packet_refs, "frame collection")
            result = self._learner.boundary(*packets)
            if self.overlap:
                result, self._local_pending = self._local_pending, result
            if result is not None:
                self._broadcast(result[0])
                summary = result[1]
        else:
            job = self._learner.boundary.options(num_returns=2).remote(*packet_refs)
            if self.overlap:
                job, self._pending_job = self._pending_job, job
            if job is not None:
                payload_ref, summary_ref = job
                summary = self._gather([summary_ref], "learner update", learner=True)[0]
                self._broadcast(payload_ref, summary["payload_bytes"])
        self.boundary_seconds += time.perf_counter() - start
        if summary is not None:
            self.last_learner_summary = summary
        return summary

    def end_rollout(self) -> int:
        """The rollout-boundary hook under the name the wrappers use: :meth:`rollout_boundary`,
        returning the number of updates whose weights were just broadcast."""
        summary = self.rollout_boundary()
        return 0 if summary is None else int(summary["updates"])

    def get_learner(self) -> Any:
        """The learner as a ``vase_rl.VASE`` in this process (a copy when it lives in an actor;
        waits for a pending overlapped update)."""
        if self._learner is None:
            if self._frozen is None:
                raise ValueError("this RayVecEnv returns raw observations: it has no learner")
            return self._frozen
        if self.learner_on == "driver":
            return self._learner.learner
        state = self._gather([self._learner.state_dict.remote()], "learner state", learner=True)[0]
        return VASE.from_state_dict(state, device="cpu", source="learner actor")

    def save(self, path: str | os.PathLike) -> Any:
        """Save the learner (``VASE.load`` reads the file)."""
        return self.get_learner().save(path)

    def actor_weights_versions(self) -> list[tuple[int, int] | None]:
        """(num_updates, skipped_updates) of the weights each actor encodes with."""
        return self._gather([w.weights_version.remote() for w in self._workers], "weights_version")

    def actor_encode(self, raw_observations: Any) -> list[np.ndarray]:
        """Each actor's latents of the same raw batch (they agree after a broadcast)."""
        ray = self._ray
        ref = ray.put(raw_observations)
        return self._gather([w.encode.remote(ref) for w in self._workers], "encode")

    def transfer_stats(self) -> dict[str, Any]:
        """Bytes that crossed the wire: step results, frames for the learner, weight broadcasts."""
        per_actor = self._gather([w.transfer_stats.remote() for w in self._workers], "transfer_stats")
        env_steps = sum(s["env_steps"] for s in per_actor)
        step_bytes = sum(s["bytes_out"] for s in per_actor)
        frame_bytes = sum(s["frame_bytes_out"] for s in per_actor)
        total = step_bytes + frame_bytes + self.broadcast_bytes
        per_step = lambda b: b / env_steps if env_steps else float("nan")
        return {
            "env_steps": env_steps,
            "step_bytes": step_bytes,
            "frame_bytes": frame_bytes,
            "broadcast_bytes": self.broadcast_bytes,
            "broadcasts": self.broadcasts,
            "bytes_per_env_step": per_step(total),
            "step_bytes_per_env_step": per_step(step_bytes),
            "frame_bytes_per_env_step": per_step(frame_bytes),
            "broadcast_bytes_per_env_step": per_step(self.broadcast_bytes),
            "frames_dropped": sum(s["frames_dropped"] for s in per_actor),
            "actor_seconds_stepping": [s["seconds_stepping"] for s in per_actor],
            "boundary_seconds": self.boundary_seconds,
        }
