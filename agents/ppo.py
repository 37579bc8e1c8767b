"""One-call "PPO on VASE latents": :func:`ppo_on_latents`.

Builds ``make_vec_env(env_id, n_envs)`` (Monitor on each env), wraps it in
:class:`~vase_rl.wrappers.VecVASE` (VASE learning online in the main process) and returns an
SB3 ``PPO("MlpPolicy", ...)`` on the latents (``"MultiInputPolicy"`` when a ``Dict``
observation passes other entries through). Everything can be overridden:

    model = ppo_on_latents("vase_rl/SpriteTask-v0", n_envs=8, config="cpu32", seed=0)
    model.learn(100_000, callback=VASECallback())
    save_stack("run/stack", model)             # VecVASE + VecNormalize + agent, in one folder
    model, env = load_stack("run/stack", make_vec_env(...))   # frozen, for evaluation

The latents are normalised for PPO by :class:`VecNormalizeLatents`, a ``VecNormalize`` whose
``training`` flag reaches every learning layer below it: ``model.get_env().training = False``
freezes VASE too. The learner's seed is the agent's (``seed=``).
"""

from __future__ import annotations

from typing import Any

from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, unwrap_vec_normalize

from vase_rl.wrappers import LATENT_KEY, ConfigLike, VecVASE, find_vec_vase_in, make_vase_vec_env, set_stack_training

__all__ = ["ppo_on_latents", "DEFAULT_PPO_KWARGS", "VecNormalizeLatents"]


class VecNormalizeLatents(VecNormalize):
    """``VecNormalize`` whose ``training`` flag reaches every learning layer below it (VecVASE,
    other VecNormalize, VASEWrapper sub-envs): ``env.training = False`` freezes the whole stack.
    Setting it at construction does not touch the layers below (a frozen VecVASE stays frozen).
    Saved and loaded as any ``VecNormalize`` (``save`` / ``VecNormalize.load``)."""

    def __init__(self, venv: VecEnv, *args: Any, **kwargs: Any) -> None:
        super().__init__(venv, *args, **kwargs)
        self._reach_below = True

    @property
    def training(self) -> bool:
        return self.__dict__.get("_training", True)

    @training.setter
    def training(self, flag: bool) -> None:
        self.__dict__["_training"] = bool(flag)
        if self.__dict__.get("_reach_below") and self.__dict__.get("venv") is not None:
            set_stack_training(self.venv, flag)

    def set_own_training(self, flag: bool) -> None:
        """Switch this layer only (what :func:`~vase_rl.wrappers.set_stack_training` calls)."""
        self.__dict__["_training"] = bool(flag)


# PPO settings for small latent observations with 8 envs: 1024 transitions per update,
# minibatches of 256 (measured on the sprite task, benchmarks/bench_rl.py)
DEFAULT_PPO_KWARGS: dict[str, Any] = {
    "n_steps": 128,
    "batch_size": 256,
    "n_epochs": 4,
    "learning_rate": 3e-4,
    "ent_coef": 0.01,
    "gamma": 0.99,
}


def ppo_on_latents(
    env: str | VecEnv,
    n_envs: int = 8,
    config: ConfigLike = None,
    *,
    seed: int | None = None,
    vec_env_cls: str | type = "dummy",
    env_kwargs: dict[str, Any] | None = None,
    vase_kwargs: dict[str, Any] | None = None,
    ppo_kwargs: dict[str, Any] | None = None,
    device: str = "auto",
    policy_device: str = "cpu",
    normalize: bool = True,
    verbose: int = 0,
) -> PPO:
    """PPO (``MlpPolicy``) on the VASE latents of ``env`` (an env id, or a VecEnv, which is wrapped
    in :class:`VecVASE` unless it already contains one).

    ``device`` places the VASE learner (``"auto"``: CUDA when present); ``policy_device`` the
    PPO policy (an MLP on latents runs best on the CPU). ``vase_kwargs`` go to ``VecVASE``,
    ``ppo_kwargs`` override :data:`DEFAULT_PPO_KWARGS`. ``normalize=True`` stacks SB3's
    ``VecNormalize`` (observations only) on the latents — measured to help PPO markedly on the
    sprite task (docs/RL.md); ``model.get_env()`` is then a :class:`VecNormalizeLatents`: save
    everything with ``vase_rl.agents.save_stack(path, model)``. A ``Dict`` observation (latents
    plus entries passed through) gets ``MultiInputPolicy`` and only its latents are normalised.
    """
    vase_kwargs = dict(vase_kwargs or {})
    if isinstance(env, VecEnv):
        venv = (
            env if find_vec_vase_in(env) is not None else VecVASE(env, config, seed=seed, device=device, **vase_kwargs)
        )
    elif isinstance(env, str) or callable(env):
        venv = make_vase_vec_env(
            env, n_envs, config, seed=seed, vec_env_cls=vec_env_cls, env_kwargs=env_kwargs, device=device, **vase_kwargs
        )
    else:
        raise TypeError(f"env must be an env id, an env factory or an SB3 VecEnv, got {type(env).__name__}")
    is_dict = isinstance(venv.observation_space, spaces.Dict)
    if normalize and unwrap_vec_normalize(venv) is None:
        clip = find_vec_vase_in(venv).feed.clip
        keys = [LATENT_KEY] if is_dict else None
        venv = VecNormalizeLatents(venv, norm_obs=True, norm_reward=False, clip_obs=clip, norm_obs_keys=keys)
    kwargs = dict(DEFAULT_PPO_KWARGS)
    kwargs.update(ppo_kwargs or {})
    policy = "MultiInputPolicy" if is_dict else "MlpPolicy"
    return PPO(policy, venv, seed=seed, device=policy_device, verbose=verbose, **kwargs)
