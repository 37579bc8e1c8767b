"""The continual-RL benchmark's learner without an agent (a helper of the diagnostic scripts).

``run_without_agent`` builds a VASE arm of ``benchmarks/bench_continual_rl.py`` exactly as the
benchmark does (``agents.continual.make_arm_env``: pretraining, ``train_every``, slow encoder,
slow mask) and drives it along the benchmark's schedule with a uniformly random policy, ending a
"rollout" every ``n_steps`` steps as ``VASECallback`` does for PPO. Under a random policy the
frames do not depend on any agent, so what the learner does there is the learner's own
behaviour. ``benchmarks/diag_mask_churn.py``, ``diag_switch_test.py`` and
``probe_continual_latents.py`` hook into it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def run_without_agent(
    arm: str,
    settings: Any,
    seed: int,
    *,
    on_ready: Callable[[Any], None] | None = None,
    on_pretrained: Callable[[Any, int], None] | None = None,
    on_phase_end: Callable[[Any, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Drive ``arm``'s learner (``settings``: an ``agents.continual.ContinualSettings``) for the
    whole schedule under a random policy seeded by ``seed``.

    ``on_ready(vec)`` runs before the first reset (install recording hooks there),
    ``on_pretrained(vec, frames)`` after the pretraining, ``on_phase_end(vec, row)`` at every phase
    end with ``row = {"frames", "update", "domain", "num_domains"}``. Returns the pretraining
    frames and updates and those rows."""
    import torch

    from agents import continual
    from vase_rl.wrappers import find_vec_vase_in

    torch.set_num_threads(1)
    env, _ = continual.make_arm_env(arm, settings, seed)
    vec = find_vec_vase_in(env)
    if vec is None:
        raise ValueError(f"arm {arm!r} has no VASE learner; choose a VASE arm (vase, cci_vae, ...)")
    learner = vec.learner
    if on_ready is not None:
        on_ready(vec)
    n = settings.n_envs
    n_steps = int(settings.ppo_kwargs.get("n_steps", 128))
    vec.drive_rollouts(True)  # what VASECallback does for PPO: updates wait for rollout ends
    vec.feed.fit_window_to_rollout(n_steps * n)
    rng = np.random.default_rng(seed)
    env.reset()  # pretrains on the first reset
    pretrain = int(vec.feed.schedule.pretrain_frames)
    pretrain_updates = int(learner.num_updates)
    if on_pretrained is not None:
        on_pretrained(vec, pretrain)
    phase_ends: list[dict[str, Any]] = []
    try:
        for i in range((settings.total_steps - pretrain) // n):
            env.step(rng.integers(0, env.action_space.n, size=n))
            if (i + 1) % n_steps == 0:
                vec.end_rollout()
            frames = (i + 1) * n + pretrain
            if frames % settings.phase_steps == 0:
                row = {
                    "frames": frames,
                    "update": int(learner.num_updates),
                    "domain": learner.current_domain,
                    "num_domains": int(learner.num_domains),
                }
                phase_ends.append(row)
                print(row, flush=True)
                if on_phase_end is not None:
                    on_phase_end(vec, row)
    finally:
        env.close()
    return {"pretrain_frames": pretrain, "pretrain_updates": pretrain_updates, "phase_ends": phase_ends}
