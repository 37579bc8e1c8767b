"""One-call "PPO on VASE latents": :func:`ppo_on_latents`.

Builds ``make_vec_env(env_id, n_envs)`` (Monitor on each env), wraps it in
:class:`~vase_rl.wrappers.VecVASE` (VASE learning online in the main process) and returns an
SB3 ``PPO("MlpPolicy", ...)`` on the latents. Everything can be overridden:

    model = ppo_on_latents("vase_rl/SpriteTask-v0", n_envs=8, config="cpu32", seed=0)
    model.learn(100_000, callback=VASECallback())
    env = model.get_env()                      # VecNormalize(VecVASE(...)) with normalize=True
    vase_rl.unwrap_vase(env).save("vase.pt"); env.save("vecnormalize.pkl"); model.save("ppo.zip")
"""

from __future__ import annotations

from typing import Any

from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, unwrap_vec_normalize

from vase_rl.wrappers import ConfigLike, VecVASE, find_vec_vase_in, make_vase_vec_env

__all__ = ["ppo_on_latents", "DEFAULT_PPO_KWARGS"]

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
    sprite task (docs/RL.md); ``model.get_env()`` is then the ``VecNormalize``: save it too
    (``vase_rl.unwrap_vase(env).save(...)`` for the learner, ``env.save(...)`` for the statistics).
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
    if normalize and unwrap_vec_normalize(venv) is None:
        clip = find_vec_vase_in(venv).feed.clip
        venv = VecNormalize(venv, norm_obs=True, norm_reward=False, clip_obs=clip)
    kwargs = dict(DEFAULT_PPO_KWARGS)
    kwargs.update(ppo_kwargs or {})
    return PPO("MlpPolicy", venv, seed=seed, device=policy_device, verbose=verbose, **kwargs)
