"""SB3 callback: at the end of each rollout, train the VASE learner on the actors' frames and
broadcast its new encoder weights to every actor of a :class:`~vase_rl.distributed.RayVecEnv`.

The rollout boundary is the one point where the agent-facing encoder may change without a
rollout mixing two encoders (docs/SCALING.md). SB3 calls ``_on_rollout_end`` after the last step
of a rollout and before the policy update, so with ``learner_on="actor"`` and ``overlap=True`` the
VASE updates run while PPO trains and while the next rollout is collected.

Logged through SB3's logger (``vase/...``): the mean loss terms of the updates just broadcast,
``vase/num_updates``, ``vase/num_domains``, ``vase/frames`` (frames the learner received at this
boundary), ``vase/boundary_seconds`` (driver time spent at the boundary) and, with
``log_transfer=True``, ``vase/bytes_per_env_step``.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

__all__ = ["RolloutBoundarySync", "find_ray_vec_env"]

_LOGGED = ("loss", "recon", "kl", "capacity", "regulariser", "classifier", "num_updates", "num_domains", "frames")


def find_ray_vec_env(env: Any) -> Any:
    """The RayVecEnv at the bottom of a VecEnv wrapper stack, or None."""
    from vase_rl.distributed.ray_vec_env import RayVecEnv

    seen = 0
    while isinstance(env, VecEnv) and seen < 64:
        if isinstance(env, RayVecEnv):
            return env
        env = env.venv if isinstance(env, VecEnvWrapper) else None
        seen += 1
    return None


class RolloutBoundarySync(BaseCallback):
    """Call :meth:`RayVecEnv.rollout_boundary` at every rollout end and log what it returns.

    Args:
        log_transfer: also log the bytes per env step crossing the wire (one extra round trip to
            the actors per rollout).
        verbose: 1 prints one line per boundary.
    """

    def __init__(self, log_transfer: bool = False, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.log_transfer = bool(log_transfer)
        self.venv: Any = None
        self.summaries: list[dict[str, Any]] = []

    def _init_callback(self) -> None:
        self.venv = find_ray_vec_env(self.training_env)
        if self.venv is None:
            raise ValueError(
                "RolloutBoundarySync needs a RayVecEnv in the training env (PPO('MlpPolicy', RayVecEnv(..., vase=...)))"
            )

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        summary = self.venv.rollout_boundary()
        if summary is None:
            return
        self.summaries.append(summary)
        for key in _LOGGED:
            if key in summary:
                self.logger.record(f"vase/{key}", summary[key])
        self.logger.record("vase/boundary_seconds", self.venv.boundary_seconds)
        if self.log_transfer:
            self.logger.record("vase/bytes_per_env_step", self.venv.transfer_stats()["bytes_per_env_step"])
        if self.verbose:
            print(
                f"boundary {summary['boundary']}: {summary['updates']} VASE updates on {summary['frames']} new frames, "
                f"num_updates={summary['num_updates']}, loss={summary.get('loss', float('nan')):.4g}"
            )
