"""Reference returns of the sprite tasks: the scripted oracle versus a uniformly random policy.

``evaluate_policy_returns("vase_rl/SpriteTask-v0", "oracle", episodes=100)`` runs whole episodes
(the first reset seeded with ``seed``, the rest continuing) and reports the mean/std return, success rate and episode
length; the numbers in docs/ENVIRONMENTS.md come from here (via benchmarks/bench_envs.py).
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from .sprite_task import oracle_action

__all__ = ["evaluate_policy_returns"]


def evaluate_policy_returns(
    env: str | gym.Env,
    policy: str | Callable[[np.ndarray, gym.Env], object] = "oracle",
    episodes: int = 100,
    seed: int = 0,
    **make_kwargs,
) -> dict[str, float]:
    """Run ``episodes`` episodes; ``policy`` is "oracle", "random" or ``f(obs, env) -> action``."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    own = isinstance(env, str)
    env = gym.make(env, **make_kwargs) if own else env
    if policy == "oracle":
        act = lambda obs, e: oracle_action(e)
    elif policy == "random":
        env.action_space.seed(seed)
        act = lambda obs, e: e.action_space.sample()
    elif callable(policy):
        act = policy
    else:
        raise ValueError(f"policy must be 'oracle', 'random' or a callable, got {policy!r}")
    returns, lengths, successes = [], [], []
    try:
        for ep in range(episodes):
            # seed once, then continue: a domain-sequence env keeps its schedule across episodes
            obs, info = env.reset(seed=seed if ep == 0 else None)
            total, n, done = 0.0, 0, False
            while not done:
                obs, reward, terminated, truncated, info = env.step(act(obs, env))
                total += reward
                n += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(n)
            successes.append(bool(info.get("is_success", False)))
    finally:
        if own:
            env.close()
    r = np.asarray(returns)
    return {
        "mean_return": float(r.mean()),
        "std_return": float(r.std()),
        "success_rate": float(np.mean(successes)),
        "mean_length": float(np.mean(lengths)),
        "episodes": episodes,
    }
