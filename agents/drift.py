"""How much an agent's behaviour moves because its representation moved (encoder drift).

An agent trained on the latents of a learning encoder sees its inputs change between rollouts
for three reasons: the encoder changed, the ``VecNormalize`` statistics above it changed, and
the agent itself was trained (PPO's own update). At each rollout end :class:`DriftMeter` keeps a
sample of recent frames ``F`` with the latents ``z = e_k(F)`` the agent saw, the normalised inputs
``o = n_k(z)`` and the policy's action distribution ``pi_k(o)``. At the next rollout end it
separates the three changes, each with everything else held fixed:

* **encoder**: ``KL(pi_{k+1}(n_{k+1}(z)) || pi_{k+1}(n_{k+1}(e_{k+1}(F))))`` — the same policy
  and statistics, the new encoder — and the mean absolute change of the value estimate;
* **normaliser**: ``KL(pi_{k+1}(n_k(z)) || pi_{k+1}(n_{k+1}(z)))``;
* **policy** (PPO's own update): ``KL(pi_k(o) || pi_{k+1}(o))``.

KL is per observation, summed over action dimensions (SB3's ``kl_divergence``), averaged over
the sample. The frames are the agent's own observations during the latest rollout, collected by
:meth:`DriftMeter.collect` (``VASECallback`` calls it every few steps).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.distributions import kl_divergence
from stable_baselines3.common.vec_env import VecEnvWrapper, VecMonitor, VecNormalize

from vase_rl.wrappers import VecVASE

__all__ = ["DriftMeter", "layers_above", "normalise", "policy_outputs", "mean_kl"]

# layers between VecVASE and the agent that leave observations as they are
_PASS_THROUGH = (VecMonitor,)


def layers_above(env: Any, vec: VecVASE) -> list[VecEnvWrapper] | None:
    """The wrappers between ``vec`` and ``env`` (``env`` first), or None when one of them changes
    observations in a way that cannot be replayed (only ``VecNormalize`` and pass-through layers
    can)."""
    layers: list[VecEnvWrapper] = []
    layer = env
    while layer is not vec:
        if not isinstance(layer, VecEnvWrapper):
            return None
        if not isinstance(layer, (VecNormalize, *_PASS_THROUGH)):
            return None
        layers.append(layer)
        layer = layer.venv
    return layers


def normalise(layers: list[VecEnvWrapper], latents: Any) -> Any:
    """What the agent gets for ``latents`` through ``layers`` (outermost first), with the current
    statistics and without updating them."""
    out = latents
    for layer in reversed(layers):
        if isinstance(layer, VecNormalize):
            out = layer.normalize_obs(out)
    return out


@torch.no_grad()
def policy_outputs(policy: Any, obs: Any) -> tuple[Any, torch.Tensor]:
    """(action distribution, values) of an SB3 actor-critic policy for a batch of observations.
    The distribution is a copy: SB3 policies hand out one distribution object that each call
    overwrites."""
    tensor, _ = policy.obs_to_tensor(obs)
    return copy.copy(policy.get_distribution(tensor)), policy.predict_values(tensor).flatten()


@torch.no_grad()
def mean_kl(p: Any, q: Any) -> float:
    """Mean over the batch of KL(p || q) between two SB3 distributions (summed over action dims).
    Per-observation values below 0 (float32 rounding of two nearly equal distributions) count as 0."""
    kl = kl_divergence(p, q)
    if kl.ndim > 1:
        kl = kl.sum(dim=tuple(range(1, kl.ndim)))
    return float(kl.clamp_min(0.0).double().mean())


class DriftMeter:
    """Per-rollout drift of an agent on VecVASE latents (see the module docstring).

    Call :meth:`measure` at every rollout end after the boundary updates (``VASECallback`` does);
    it returns ``{}`` the first time, then a dict of ``encoder_kl``, ``encoder_value_shift``,
    ``latent_change`` (RMS change of the raw latents), ``normaliser_kl`` and ``policy_kl``.
    ``history`` keeps every measurement with the timestep."""

    def __init__(self, sample: int = 256, seed: int = 0) -> None:
        self.sample = int(sample)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.history: list[dict[str, float]] = []
        self._frames: torch.Tensor | None = None
        self._latents: np.ndarray | None = None
        self._obs: Any = None
        self._dist: Any = None
        self._pending: list[torch.Tensor] = []

    def collect(self, vec: VecVASE) -> None:
        """Keep the agent's current raw observations (prepared for the learner) for the next
        measurement."""
        if vec.old_obs is None:
            return
        x = vec.feed.prepare(np.asarray(vec.feed.adapter.select(vec.old_obs)))
        self._pending.append(x.reshape(-1, vec.feed.frames, *x.shape[1:]).clone())

    def _sample_frames(self) -> torch.Tensor | None:
        """Up to ``sample`` collected observations (rows of ``frames`` frames each), flattened to
        the prepared-frame layout the feed encodes."""
        if not self._pending:
            return None
        groups = torch.cat(self._pending)
        self._pending = []
        n = groups.shape[0]
        if n > self.sample:
            idx = torch.randperm(n, generator=self.generator)[: self.sample]
            groups = groups[idx.to(groups.device)]
        return groups.reshape(-1, *groups.shape[2:])

    def measure(self, policy: Any, env: Any, vec: VecVASE, timestep: int = 0) -> dict[str, float]:
        layers = layers_above(env, vec)
        if layers is None or vec.feed.keep_keys is not None:
            return {}
        out: dict[str, float] = {}
        if self._frames is not None:
            new_latents = vec.feed.encode(self._frames)
            old_now = normalise(layers, self._latents)
            new_now = normalise(layers, new_latents)
            dist_old, value_old = policy_outputs(policy, old_now)
            dist_new, value_new = policy_outputs(policy, new_now)
            out["encoder_kl"] = mean_kl(dist_old, dist_new)
            out["encoder_value_shift"] = float((value_new - value_old).abs().mean())
            out["latent_change"] = float(np.sqrt(np.mean((new_latents - self._latents) ** 2)))
            dist_prev_inputs, _ = policy_outputs(policy, self._obs)
            out["policy_kl"] = mean_kl(self._dist, dist_prev_inputs)
            out["normaliser_kl"] = mean_kl(dist_prev_inputs, dist_old)
            self.history.append({"timestep": int(timestep), **out})
        frames = self._sample_frames()
        if frames is None:
            self._frames = None
            return out
        self._frames = frames
        self._latents = vec.feed.encode(frames)
        self._obs = normalise(layers, self._latents)
        self._dist, _ = policy_outputs(policy, self._obs)
        return out

    def summary(self) -> dict[str, float]:
        """Mean and median of each quantity over the history."""
        out: dict[str, float] = {"rollouts": len(self.history)}
        if not self.history:
            return out
        for key in ("encoder_kl", "encoder_value_shift", "latent_change", "normaliser_kl", "policy_kl"):
            values = np.array([h[key] for h in self.history], dtype=float)
            out[f"{key}_mean"] = float(values.mean())
            out[f"{key}_median"] = float(np.median(values))
        return out
