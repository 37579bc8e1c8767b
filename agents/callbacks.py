"""SB3 callback for VASE: logs ``vase/*`` scalars through SB3's logger and saves the learner.

A VecEnv wrapper has no logger, so :class:`VASECallback` finds the VASE wrapper in the
training env (a :class:`~vase_rl.wrappers.VecVASE` in the VecEnv stack, or
:class:`~vase_rl.wrappers.VASEWrapper` sub-envs reached through ``env_method``) and records,
once per rollout (``_on_rollout_end``, so the values land in that iteration's log):

* ``vase/loss``, ``vase/recon``, ``vase/kl``, ``vase/regulariser``, ``vase/classifier``,
  ``vase/dream_*``: means over the updates since the last log;
* ``vase/capacity`` (C now) and ``vase/kl_minus_capacity`` (KL - C, eq. 3);
* ``vase/domain``, ``vase/num_domains``, ``vase/events_new``/``switch``/``pending``/
  ``max_domains`` (domain-inference decisions since the last log);
* ``vase/active_latents``, ``vase/used_latents``, ``vase/num_updates``, ``vase/frames_seen``.

**Rollout boundaries.** For an on-policy agent (PPO, A2C) the callback drives the wrapper's
rollout boundaries: at ``_init_callback`` it tells the wrapper so (``drive_rollouts``: with the
default ``update_at="auto"`` VASE's updates then wait for the boundary) and grows the learner's
window to hold one rollout; at every ``_on_rollout_end`` it calls ``end_rollout()`` (the updates
run there), re-encodes the agent's pending observation (``model._last_obs``, through the
``VecNormalize`` layers above) with the updated encoder, so every observation of a rollout comes
from one encoder, and logs ``vase/boundary_updates``. ``update_at_rollout_end=False`` leaves the
wrapper's schedule alone. With ``measure_drift=True`` it also measures, per rollout, how much the
agent's action distribution moved because of the encoder alone, the normaliser alone and PPO's
own update (:class:`vase_rl.agents.drift.DriftMeter`), logged as ``drift/*``.

With ``save_freq > 0`` it saves the whole stack every ``save_freq`` calls (as
``CheckpointCallback`` counts them; while it drives rollout boundaries, a save that falls due
inside a rollout is written at that rollout's end, after the updates that waited for it, so the
saved encoder is the one the agent sees next) into the folder ``{save_path}/{name_prefix}_{steps}_steps/``
with :func:`vase_rl.agents.stack.save_stack`: the learner (``vase.pt``), the statistics of every
``VecNormalize`` above it, and the agent (``agent.zip``, unless ``save_model=False``);
:func:`vase_rl.agents.stack.load_stack` restores it as trained.

The callback also keeps the representation's fingerprint on the model (``model.vase_fingerprint``,
updated at each rollout end and at the end of training), so a plain ``model.save`` carries it,
and at the start of training it refuses an agent whose stored fingerprint does not match the
representation it is given (``check_representation=False`` turns that into a warning).
Nothing here needs tensorboard, tqdm or rich.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env import VecNormalize as VecNormalizeType

from vase_rl.wrappers import VASEWrapper, VecVASE, find_vec_vase_in

from .drift import DriftMeter, layers_above
from .stack import FINGERPRINT_ATTRIBUTE, attach_fingerprint, save_stack
from .stack import check_representation as _check_representation

__all__ = ["VASECallback", "EpisodeReturns", "find_vec_vase"]


find_vec_vase = find_vec_vase_in


class VASECallback(BaseCallback):
    """Log VASE's training scalars under ``vase/`` and optionally checkpoint the whole stack.

    Args:
        log_freq: log every ``log_freq`` rollouts (0 disables logging).
        save_freq: save every ``save_freq`` callback calls (0: never). With n envs, one call
            is n environment steps, as in SB3's ``CheckpointCallback``.
        save_path: folder for the checkpoints (required when ``save_freq > 0``).
        name_prefix: prefix of each checkpoint folder's name.
        save_model: save the agent in each checkpoint too (default; ``False``: env layers only).
        check_representation: at the start of training, refuse an agent whose stored fingerprint
            does not match the env's representation (``False``: warn).
        update_at_rollout_end: drive the wrapper's rollout boundaries for on-policy agents (see
            the module docstring); ``False`` leaves its schedule as it is.
        measure_drift: measure the per-rollout drift of the agent's action distribution caused
            by the encoder, the normaliser and PPO's update (``drift/*``, ``drift_meter.history``).
        drift_sample: frames per drift measurement.
        verbose: 1 prints where checkpoints go.
    """

    def __init__(
        self,
        log_freq: int = 1,
        save_freq: int = 0,
        save_path: str | None = None,
        name_prefix: str = "vase",
        save_model: bool = True,
        check_representation: bool = True,
        update_at_rollout_end: bool = True,
        measure_drift: bool = False,
        drift_sample: int = 256,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        if log_freq < 0 or save_freq < 0:
            raise ValueError("log_freq and save_freq must be >= 0")
        if save_freq > 0 and not save_path:
            raise ValueError("save_freq > 0 needs save_path (a folder for the checkpoints)")
        self.log_freq = int(log_freq)
        self.save_freq = int(save_freq)
        self.save_path = save_path
        self.name_prefix = name_prefix
        self.save_model = bool(save_model)
        self.check_representation = bool(check_representation)
        self._vec: VecVASE | None = None
        self._per_env = False
        self._last_update: int | None = None
        self._rollouts = 0
        self.last_stats: dict[str, Any] = {}
        self.update_at_rollout_end = bool(update_at_rollout_end)
        self.drift_meter: DriftMeter | None = DriftMeter(drift_sample) if measure_drift else None
        self.boundary_updates: list[tuple[int, int]] = []  # (timestep, updates run at that boundary)
        self._driving = False
        self._save_due = False
        self._warned_refresh = False
        self._drift_stride = 1

    # ------------------------------------------------------------------ SB3 hooks
    def _init_callback(self) -> None:
        env = self.training_env
        self._vec = find_vec_vase(env)
        self._per_env = False
        if self._vec is None and isinstance(env, VecEnv):
            try:
                self._per_env = any(env.env_is_wrapped(VASEWrapper))
            except Exception:  # pragma: no cover - exotic VecEnvs
                self._per_env = False
        if self._vec is None and not self._per_env and self.verbose:
            print("VASECallback: no VecVASE or VASEWrapper found in the training env; nothing to log")
        if self.save_path is not None and self.save_freq > 0:
            os.makedirs(self.save_path, exist_ok=True)
        if self.found and getattr(self.model, FINGERPRINT_ATTRIBUTE, None) is not None:
            _check_representation(self.model, env, strict=self.check_representation)
        self._driving = self.found and self.update_at_rollout_end and isinstance(self.model, OnPolicyAlgorithm)
        if self.drift_meter is not None:  # collect about drift_sample observations per rollout
            per_rollout = int(getattr(self.model, "n_steps", 1)) * int(env.num_envs)
            self._drift_stride = max(1, per_rollout // max(self.drift_meter.sample, 1))
        if self._driving:
            self._drive(True)
            frames = int(self.model.n_steps) * int(env.num_envs)
            if self._vec is not None:
                self._vec.feed.fit_window_to_rollout(frames + frames // 4)  # terminal frames come too
            else:
                env.env_method("fit_window_to_rollout", max(2, int(self.model.n_steps) * 5 // 4), indices=self._indices)

    @property
    def _indices(self) -> list[int]:
        return [i for i, wrapped in enumerate(self.training_env.env_is_wrapped(VASEWrapper)) if wrapped]

    def _drive(self, flag: bool) -> None:
        if self._vec is not None:
            self._vec.drive_rollouts(flag)
        elif self._per_env:
            self.training_env.env_method("drive_rollouts", flag, indices=self._indices)

    def _on_rollout_end(self) -> None:
        self._rollouts += 1
        ran = self.end_rollout() if self._driving else 0
        if self._driving:
            self.boundary_updates.append((int(self.num_timesteps), ran))
            self.logger.record("vase/boundary_updates", ran)
        if self.drift_meter is not None and self._vec is not None:
            drift = self.drift_meter.measure(self.model.policy, self.model.get_env(), self._vec, self.num_timesteps)
            for key, value in drift.items():
                self.logger.record(f"drift/{key}", value)
        if self.log_freq and self._rollouts % self.log_freq == 0:
            self.log_stats()
        if self.found:
            attach_fingerprint(self.model, self.training_env)
        if self._save_due:
            self._save_due = False
            self.save_checkpoint()

    def _on_training_end(self) -> None:
        if self._driving:
            self._drive(False)  # stepping the env by hand afterwards updates at once again
        if self.found:
            attach_fingerprint(self.model, self.training_env)

    def end_rollout(self) -> int:
        """Run the updates that waited for this rollout boundary and make the agent's next
        observation come from the updated encoder; returns how many updates ran."""
        if self._vec is not None:
            ran = int(self._vec.end_rollout())
            if ran:
                self.refresh_last_obs()
            return ran
        if self._per_env:
            # per-env learners in the sub-envs: their next observation comes from the new encoder
            # (the agent's pending one was encoded before: one observation per env and rollout)
            return int(sum(self.training_env.env_method("end_rollout", indices=self._indices)))
        return 0

    def refresh_last_obs(self) -> bool:
        """Re-encode the raw observations the agent acts on next (``model._last_obs``) with the
        current encoder and pass them through the ``VecNormalize`` layers above ``VecVASE``
        (without updating their statistics). False when a layer above cannot be replayed
        (e.g. ``VecFrameStack``): the first observation of the next rollout then comes from
        the encoder of the previous one."""
        vec, model = self._vec, self.model
        if vec is None or vec.old_obs is None or getattr(model, "_last_obs", None) is None:
            return False
        layers = layers_above(model.get_env(), vec)
        if layers is None:
            if not self._warned_refresh:
                warnings.warn(
                    "VASECallback: a layer between VecVASE and the agent (e.g. VecFrameStack) cannot be replayed, so "
                    "the first observation of each rollout comes from the previous rollout's encoder",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._warned_refresh = True
            return False
        latents = vec.feed.output(vec.encode(vec.old_obs), vec.old_obs)
        for layer in reversed(layers):  # innermost first: each keeps the unnormalised input it saw
            if isinstance(layer, VecNormalizeType):
                layer.old_obs = latents
                latents = layer.normalize_obs(latents)
        model._last_obs = latents
        return True

    def _on_step(self) -> bool:
        if self.drift_meter is not None and self._vec is not None and self.n_calls % self._drift_stride == 0:
            self.drift_meter.collect(self._vec)
        if self.save_freq > 0 and self.n_calls % self.save_freq == 0:
            if self._driving:
                self._save_due = True  # at the rollout end, once the waiting updates ran
            else:
                self.save_checkpoint()
        return True

    # ------------------------------------------------------------------ work
    @property
    def found(self) -> bool:
        return self._vec is not None or self._per_env

    def collect_stats(self) -> dict[str, Any]:
        """Plain-data stats since the last log (means over sub-envs for per-env wrappers)."""
        since = self._last_update
        if self._vec is not None:
            return self._vec.get_vase_stats(since=since)
        if self._per_env:
            per_env = [s for s in self.training_env.env_method("get_vase_stats", since)]
            keys = set().union(*per_env)
            merged: dict[str, Any] = {}
            for key in keys:
                values = [s[key] for s in per_env if key in s and isinstance(s[key], (int, float, bool, np.number))]
                if values:
                    merged[key] = float(np.mean([float(v) for v in values]))
            return merged
        return {}

    def log_stats(self) -> dict[str, Any]:
        stats = self.collect_stats()
        if not stats:
            return stats
        for key, value in sorted(stats.items()):
            if isinstance(value, (bool, np.bool_)):
                value = int(value)
            if isinstance(value, (int, float, np.number)) and np.isfinite(value):
                self.logger.record(f"vase/{key}", float(value) if isinstance(value, float) else value)
        if "num_updates" in stats:
            self._last_update = int(stats["num_updates"])
        self.last_stats = stats
        return stats

    def checkpoint_path(self, steps: int | None = None) -> str:
        """The folder of the checkpoint at ``steps`` (default: now)."""
        if self.save_path is None:
            raise ValueError("VASECallback has no save_path")
        steps = self.num_timesteps if steps is None else int(steps)
        return os.path.join(self.save_path, f"{self.name_prefix}_{steps}_steps")

    def save_checkpoint(self) -> str | None:
        """Save the whole stack now (see :func:`vase_rl.agents.stack.save_stack`); returns its
        folder, or ``None`` when the training env has no VASE wrapper."""
        if not self.found:
            return None
        folder = str(save_stack(self.checkpoint_path(), self.model if self.save_model else None, self.training_env))
        if self.verbose >= 1:
            print(f"Saving the VASE stack checkpoint to {folder}")
        return folder


class EpisodeReturns(BaseCallback):
    """Collects ``(environment steps, return)`` of every finished episode from the ``Monitor``
    infos (``info["episode"]["r"]``), for learning curves."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "episode" in info:
                self.records.append((self.num_timesteps, float(info["episode"]["r"])))
        return True
