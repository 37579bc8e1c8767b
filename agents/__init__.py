"""Stable-Baselines3 side of vase_rl (installed as ``vase_rl.agents``).

* :class:`VASECallback` — ``vase/*`` scalars through SB3's logger, learner checkpoints, the
  wrapper's rollout boundaries (VASE updates between rollouts) and, optionally, drift measurement;
* :class:`DriftMeter` — per rollout, the change of the agent's action distribution caused by the
  encoder, the normaliser and the agent's own update (:mod:`vase_rl.agents.drift`);
* :class:`VASEFeaturesExtractor` — a frozen VASE encoder (loaded from a path) inside a policy;
* :func:`ppo_on_latents` — PPO on :class:`~vase_rl.wrappers.VecVASE` latents in one call;
* :func:`save_stack` / :func:`load_stack` — the whole stack (VecVASE + VecNormalize + agent) in
  one call each, with a fingerprint of the representation stored with the agent and checked;
* :mod:`vase_rl.agents.continual` — the continual-RL benchmark (a task whose look changes
  A -> B -> A; arms, runs, per-phase metrics, plots): ``vase-rl continual-rl``;
* :mod:`vase_rl.agents.real_envs` — ALE Atari (incl. a game-switching sequence) and MiniGrid
  pixel environments with recipes (image size, colour) per environment (optional extras
  ``atari`` / ``minigrid``).
"""

from .callbacks import EpisodeReturns, VASECallback, find_vec_vase
from .drift import DriftMeter
from .features import VASEFeaturesExtractor
from .ppo import DEFAULT_PPO_KWARGS, VecNormalizeLatents, ppo_on_latents
from .stack import LoadedStack, check_representation, load_stack, save_stack

__all__ = [
    "VASECallback",
    "DriftMeter",
    "EpisodeReturns",
    "VASEFeaturesExtractor",
    "ppo_on_latents",
    "DEFAULT_PPO_KWARGS",
    "VecNormalizeLatents",
    "find_vec_vase",
    "save_stack",
    "load_stack",
    "LoadedStack",
    "check_representation",
]


def __getattr__(name: str):
    if name in ("AtariGameSequence", "make_atari", "make_minigrid", "RECIPES", "recipe", "EnvRecipe"):
        from . import real_envs

        return getattr(real_envs, name)
    raise AttributeError(f"module 'vase_rl.agents' has no attribute {name!r}")
