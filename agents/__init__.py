"""Stable-Baselines3 side of vase_rl (installed as ``vase_rl.agents``).

* :class:`VASECallback` — ``vase/*`` scalars through SB3's logger, learner checkpoints;
* :class:`VASEFeaturesExtractor` — a frozen VASE encoder (loaded from a path) inside a policy;
* :func:`ppo_on_latents` — PPO on :class:`~vase_rl.wrappers.VecVASE` latents in one call;
* :mod:`vase_rl.agents.real_envs` — ALE Atari (incl. a game-switching sequence) and MiniGrid
  pixel environments (optional extras ``atari`` / ``minigrid``).
"""

from .callbacks import EpisodeReturns, VASECallback, find_vec_vase
from .features import VASEFeaturesExtractor
from .ppo import DEFAULT_PPO_KWARGS, ppo_on_latents

__all__ = [
    "VASECallback",
    "EpisodeReturns",
    "VASEFeaturesExtractor",
    "ppo_on_latents",
    "DEFAULT_PPO_KWARGS",
    "find_vec_vase",
]


def __getattr__(name: str):
    if name in ("AtariGameSequence", "make_atari", "make_minigrid"):
        from . import real_envs

        return getattr(real_envs, name)
    raise AttributeError(f"module 'vase_rl.agents' has no attribute {name!r}")
