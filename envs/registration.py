"""Gymnasium registration of the ``vase_rl/<Name>-v0`` environments (run at import of vase_rl.envs).

Entry points are strings, so registering costs nothing: an environment's module and sprite
bank are only loaded when it is made. ``ENV_IDS`` lists what is registered here.
"""

from __future__ import annotations

import gymnasium as gym

__all__ = ["ENV_IDS", "register_envs"]

_TASK = "vase_rl.envs.sprite_task:SpriteTaskEnv"
_SEQUENCE = "vase_rl.envs.sprite_task:DomainSequenceEnv"

# id -> (entry point, default kwargs); kwargs stay JSON-able so specs round-trip.
_SPECS: dict[str, tuple[str, dict]] = {
    "vase_rl/SpriteTask-v0": (_TASK, {"domain": "shapes"}),
    "vase_rl/SpriteTaskContinuous-v0": (_TASK, {"domain": "shapes", "continuous": True}),
    "vase_rl/DigitTask-v0": (_TASK, {"domain": "digits"}),
    "vase_rl/DomainSequence-v0": (_SEQUENCE, {}),
    "vase_rl/DomainSequenceContinuous-v0": (_SEQUENCE, {"continuous": True}),
    # the paper's moving Fashion -> MNIST analogue, as an RL environment
    "vase_rl/MovingSprites-v0": (
        _SEQUENCE,
        {"domains": ["moving_garments", "moving_digits"], "switch_every": 50, "switch_unit": "episodes"},
    ),
}

ENV_IDS: tuple[str, ...] = tuple(_SPECS)


def register_envs() -> None:
    """Register every id in ``ENV_IDS`` (idempotent: already-registered ids are left alone)."""
    for env_id, (entry_point, kwargs) in _SPECS.items():
        if env_id in gym.registry:
            continue
        gym.register(id=env_id, entry_point=entry_point, kwargs=dict(kwargs))
