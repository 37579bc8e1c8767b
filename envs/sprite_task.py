"""Gymnasium environments: move a sprite to the goal region of its class.

``SpriteTaskEnv`` shows one sprite (uint8 HWC image). Actions translate it: ``Discrete(5)``
(stay, up, down, left, right by ``step_size``) or, with ``continuous=True``, a ``Box[-1, 1]²``
translation scaled by ``max_shift`` (the action space of the imagination policy). Each class
has its own goal region (K goals evenly spaced on a circle around the centre), so the reward
depends on what the sprite is *and* where it is: an agent needs both identity and position
latents. Reward per step: decrease in distance to the goal - 0.01, plus 1 on reaching the
goal (which ends the episode); episodes are truncated after ``max_steps``.

``num_classes=k`` keeps only the first k classes of every family and puts the same k goals on
the ring for all of them, so class i of the shapes and class i of the digits go to the same
goal: the task is the same and only its look changes between domains.

``DomainSequenceEnv`` is the same task whose sprite family / variant switches on a schedule
(every N episodes or steps, or blocks of given lengths; fixed cyclic or random order, with
returns to earlier domains) without telling the agent. ``info`` carries the ground truth for evaluation only:
``domain`` (id), ``domain_name``, ``factors`` (the 7 factor columns of the families),
``class``, ``position``, ``goal``, ``distance`` and ``is_success``.

``reset(seed=s)`` reproduces an episode exactly, and also restarts the domain schedule.
Positions are normalised to [0, 1] (x right, y down) over the range the sprite can move in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .domains import make_domain
from .families import SpriteFamily, X, Y, validate_image_args

__all__ = [
    "SpriteTaskEnv",
    "DomainSequenceEnv",
    "SpriteTaskOracle",
    "oracle_action",
    "goal_layout",
    "ACTION_MEANINGS",
]

ACTION_MEANINGS = ("stay", "up", "down", "left", "right")
_MOVES = np.array([[0.0, 0.0], [0.0, -1.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])
GOAL_RING_RADIUS = 0.35
STEP_PENALTY = 0.01
SUCCESS_BONUS = 1.0


def goal_layout(num_classes: int, goal_radius: float | None = None) -> tuple[np.ndarray, float]:
    """Goal centres (K, 2) on a ring around the image centre, and a radius that keeps them apart."""
    k = max(int(num_classes), 1)
    angles = 2.0 * np.pi * np.arange(k) / k - np.pi / 2.0
    centres = 0.5 + GOAL_RING_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if goal_radius is None:
        chord = 2.0 * GOAL_RING_RADIUS * math.sin(math.pi / k) if k > 1 else 1.0
        goal_radius = min(0.1, 0.45 * chord)
    return centres, float(goal_radius)


def _check_positive(name: str, value, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if upper is not None and value > upper:
        raise ValueError(f"{name} must be <= {upper}, got {value!r}")
    return float(value)


class SpriteTaskEnv(gym.Env):
    """Bring each sprite to its class's goal region (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        domain: str = "shapes",
        image_size: int = 32,
        channels: int = 1,
        continuous: bool = False,
        max_steps: int = 50,
        step_size: float = 0.125,
        max_shift: float = 0.2,
        goal_radius: float | None = None,
        family_seed: int = 0,
        render_mode: str | None = None,
        num_classes: int | None = None,
    ):
        self._setup(
            [domain],
            image_size,
            channels,
            continuous,
            max_steps,
            step_size,
            max_shift,
            goal_radius,
            family_seed,
            render_mode,
            num_classes,
        )

    def _setup(
        self,
        domains,
        image_size,
        channels,
        continuous,
        max_steps,
        step_size,
        max_shift,
        goal_radius,
        family_seed,
        render_mode,
        num_classes=None,
    ):
        self.image_size, self.channels = validate_image_args(image_size, channels)
        if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.max_steps = int(max_steps)
        self.step_size = _check_positive("step_size", step_size, 1.0)
        self.max_shift = _check_positive("max_shift", max_shift, 1.0)
        if goal_radius is not None:
            _check_positive("goal_radius", goal_radius, 0.5)
        self.continuous = bool(continuous)
        self.render_mode = render_mode
        if isinstance(domains, str) or not len(domains):
            raise ValueError(
                "domains must be a non-empty list of domain names, e.g. ['moving_shapes', 'moving_digits']"
            )
        self.domain_names: list[str] = list(dict.fromkeys(domains))
        self.families: list[SpriteFamily] = [
            make_domain(name, self.image_size, self.channels, seed=family_seed).prepare() for name in self.domain_names
        ]  # banks are built here (cached per process) so that no step pays for them
        for name, fam in zip(self.domain_names, self.families):
            if fam.image_size - fam.patch_size < 4:
                raise ValueError(
                    f"domain {name!r} fills the frame, so the sprite's position could not be seen; "
                    f"use 'moving_{name}' (a smaller sprite) instead"
                )
        if num_classes is not None:
            if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
                raise ValueError(
                    f"num_classes must be a positive integer (classes kept per family), got {num_classes!r}"
                )
            fewest = min(f.num_classes for f in self.families)
            if num_classes > fewest:
                smallest = self.domain_names[[f.num_classes for f in self.families].index(fewest)]
                raise ValueError(
                    f"num_classes={num_classes} but domain {smallest!r} has only {fewest} classes; use num_classes <= {fewest}"
                )
        self.num_classes = None if num_classes is None else int(num_classes)
        self._goals = [goal_layout(self.num_classes or f.num_classes, goal_radius) for f in self.families]
        self.observation_space = spaces.Box(
            0, 255, shape=(self.image_size, self.image_size, self.channels), dtype=np.uint8
        )
        if self.continuous:
            self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        else:
            self.action_space = spaces.Discrete(len(ACTION_MEANINGS))
        self._domain = 0
        self._factors: np.ndarray | None = None
        self._pos = np.zeros(2)
        self._t = 0
        self._frame: np.ndarray | None = None

    # ----- ground truth
    @property
    def family(self) -> SpriteFamily:
        return self.families[self._domain]

    @property
    def domain_name(self) -> str:
        return self.domain_names[self._domain]

    @property
    def goal(self) -> np.ndarray:
        centres, _ = self._goals[self._domain]
        return centres[int(self._factors[0])]

    @property
    def goal_radius(self) -> float:
        return self._goals[self._domain][1]

    @property
    def position(self) -> np.ndarray:
        return self._pos.copy()

    @property
    def movement_range_pixels(self) -> int:
        """Pixels between the extreme positions 0 and 1 (image side minus sprite patch side)."""
        return self.family.image_size - self.family.patch_size

    @property
    def action_scale_pixels(self) -> float:
        """Pixels moved per unit of action: ``max_shift`` (continuous) or ``step_size`` (discrete)
        times the movement range. Lets an image-space translation policy act in the env."""
        return (self.max_shift if self.continuous else self.step_size) * self.movement_range_pixels

    def _distance(self) -> float:
        return float(np.hypot(*(self._pos - self.goal)))

    def oracle_action(self):
        """The action a policy that knows the true class and position would take."""
        delta = self.goal - self._pos
        if self.continuous:
            return np.clip(delta / self.max_shift, -1.0, 1.0).astype(np.float32)
        if np.all(np.abs(delta) <= self.step_size / 2.0):
            return 0
        if abs(delta[0]) >= abs(delta[1]):
            return 4 if delta[0] > 0 else 3
        return 2 if delta[1] > 0 else 1

    # ----- episode logic
    def _sample_sprite(self) -> np.ndarray:
        """One factor row of the current family (of its first ``num_classes`` classes)."""
        fam = self.family
        if self.num_classes is None:
            return fam.sample_factors(1, self.np_random)[0]
        classes = fam.factor_values[0][: self.num_classes]
        for _ in range(1000):
            rows = fam.sample_factors(16, self.np_random)
            kept = rows[np.isin(rows[:, 0], classes)]
            if len(kept):
                return kept[0]
        raise RuntimeError(f"could not draw a sprite of the first {self.num_classes} classes of {self.domain_name!r}")

    def _new_sprite(self, keep_position: bool) -> None:
        self._factors = self._sample_sprite()
        if keep_position:
            return
        centre, radius = self.goal, self.goal_radius
        for _ in range(100):
            pos = self.np_random.uniform(0.0, 1.0, size=2)
            if np.hypot(*(pos - centre)) > radius + self.step_size:
                break
        self._pos = pos

    def _observe(self) -> np.ndarray:
        row = self._factors.copy()
        row[X], row[Y] = self._pos
        self._frame = self.family.render(row[None], self.np_random)[0]
        return self._frame.copy()

    def _info(self) -> dict[str, Any]:
        row = self._factors.copy()
        row[X], row[Y] = self._pos
        dist = self._distance()
        return {
            "domain": int(self._domain),
            "domain_name": self.domain_name,
            "factors": row,
            "class": int(row[0]),
            "position": self._pos.astype(np.float32),
            "goal": self.goal.astype(np.float32),
            "distance": dist,
            "is_success": bool(dist <= self.goal_radius),
        }

    def _on_reset(self, seeded: bool) -> None:
        """Hook for schedules (domain-sequence env)."""

    def _before_step(self) -> None:
        """Hook for schedules (domain-sequence env)."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._on_reset(seed is not None)
        self._t = 0
        self._new_sprite(keep_position=False)
        return self._observe(), self._info()

    def step(self, action):
        if self._factors is None:
            raise RuntimeError("call reset() before step()")
        if self.continuous:
            a = np.asarray(action, dtype=np.float64).reshape(-1)
            if a.shape != (2,) or not np.all(np.isfinite(a)):
                raise ValueError(f"continuous actions are finite (dx, dy) pairs in [-1, 1]², got {action!r}")
            delta = np.clip(a, -1.0, 1.0) * self.max_shift
        else:
            try:
                a = int(action)
            except (TypeError, ValueError):
                raise ValueError(f"discrete actions are integers 0..4 {ACTION_MEANINGS}, got {action!r}") from None
            if not 0 <= a < len(ACTION_MEANINGS) or a != np.asarray(action).reshape(()):
                raise ValueError(f"discrete actions are integers 0..4 {ACTION_MEANINGS}, got {action!r}")
            delta = _MOVES[a] * self.step_size
        self._before_step()
        before = self._distance()
        self._pos = np.clip(self._pos + delta, 0.0, 1.0)
        self._t += 1
        after = self._distance()
        success = after <= self.goal_radius
        reward = (before - after) - STEP_PENALTY + (SUCCESS_BONUS if success else 0.0)
        truncated = (not success) and self._t >= self.max_steps
        return self._observe(), float(reward), bool(success), bool(truncated), self._info()

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._frame is None:
            return np.zeros((self.image_size, self.image_size, 3), dtype=np.uint8)
        frame = self._frame
        return np.repeat(frame, 3, axis=-1) if frame.shape[-1] == 1 else frame.copy()

    def close(self):
        self._frame = None


class DomainSequenceEnv(SpriteTaskEnv):
    """The sprite task on a piece-wise stationary schedule of domains (see the module docstring).

    ``domains`` may repeat names (returns); ``switch_every`` counts ``switch_unit`` =
    "episodes" or "steps" — one number (every block as long), or a list of block lengths (block
    i lasts ``switch_every[i % len]``); ``order`` = "fixed" cycles through ``domains``, "random"
    draws the next domain uniformly among the others. A switch mid-episode replaces the sprite
    by one of the new domain at the same position. Steps are this env's own: n envs stepped
    together (a vector env) switch together after ``n x`` as many environment steps in all.
    ``info["block"]`` is the index of the current block.
    """

    def __init__(
        self,
        domains: Sequence[str] = ("moving_shapes", "moving_digits", "moving_letters"),
        switch_every: int = 20,
        switch_unit: str = "episodes",
        order: str = "fixed",
        image_size: int = 32,
        channels: int = 1,
        continuous: bool = False,
        max_steps: int = 50,
        step_size: float = 0.125,
        max_shift: float = 0.2,
        goal_radius: float | None = None,
        family_seed: int = 0,
        render_mode: str | None = None,
        num_classes: int | None = None,
    ):
        if isinstance(domains, str):
            domains = [domains]
        domains = list(domains)
        if not domains:
            raise ValueError("domains is empty; pass e.g. ['moving_shapes', 'moving_digits', 'moving_shapes']")
        lengths = list(switch_every) if isinstance(switch_every, (list, tuple)) else [switch_every]
        if not lengths or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in lengths):
            raise ValueError(
                f"switch_every must be a positive integer or a non-empty list of them (block lengths), got {switch_every!r}"
            )
        if switch_unit not in ("episodes", "steps"):
            raise ValueError(f"switch_unit must be 'episodes' or 'steps', got {switch_unit!r}")
        if order not in ("fixed", "random"):
            raise ValueError(f"order must be 'fixed' or 'random', got {order!r}")
        self.schedule = domains
        self.block_lengths = [int(v) for v in lengths]
        self.switch_every = self.block_lengths[0] if len(self.block_lengths) == 1 else list(self.block_lengths)
        self.switch_unit = switch_unit
        self.order = order
        self._setup(
            domains,
            image_size,
            channels,
            continuous,
            max_steps,
            step_size,
            max_shift,
            goal_radius,
            family_seed,
            render_mode,
            num_classes,
        )
        self._schedule_rng: np.random.Generator | None = None
        self._block = -1
        self._count = 0  # episodes or steps since the schedule started
        self._slot = 0  # position in `schedule` of the current block

    def _next_slot(self) -> int:
        n = len(self.schedule)
        if self._block < 0:
            return 0
        if self.order == "fixed" or n == 1:
            return (self._slot + 1) % n
        others = [i for i in range(n) if self.schedule[i] != self.schedule[self._slot]] or list(range(n))
        return int(others[self._schedule_rng.integers(len(others))])

    def _advance(self, block: int) -> bool:
        changed = False
        while self._block < block:
            self._slot = self._next_slot()
            self._block += 1
            changed = True
        if changed:
            self._domain = self.domain_names.index(self.schedule[self._slot])
        return changed

    def _on_reset(self, seeded: bool) -> None:
        if seeded or self._schedule_rng is None:
            self._schedule_rng = np.random.default_rng(self.np_random.integers(0, 2**63 - 1))
            self._block, self._count, self._slot = -1, 0, 0
        if self.switch_unit == "episodes":
            self._advance(self.block_at(self._count))
            self._count += 1
        else:
            self._advance(self.block_at(self._count))

    def _before_step(self) -> None:
        if self.switch_unit != "steps":
            return
        self._count += 1
        if self._advance(self.block_at(self._count)):
            self._new_sprite(keep_position=True)

    def block_at(self, count: int) -> int:
        """The block that episode/step number ``count`` (from the schedule's start) falls in."""
        lengths = self.block_lengths
        if len(lengths) == 1:
            return int(count) // lengths[0]
        cycle = sum(lengths)
        full, rest = divmod(int(count), cycle)
        block = full * len(lengths)
        for length in lengths:
            if rest < length:
                return block
            rest -= length
            block += 1
        return block  # pragma: no cover - rest < cycle

    def _info(self) -> dict[str, Any]:
        info = super()._info()
        info["block"] = int(self._block)
        return info

    @property
    def schedule_position(self) -> dict[str, int]:
        """Where the schedule stands (for evaluation/debugging only)."""
        return {"block": self._block, "count": self._count, "slot": self._slot}


class SpriteTaskOracle:
    """Scripted policy with access to the true state; ``predict`` mimics SB3's signature."""

    def __init__(self, env: gym.Env):
        self.env = env

    def __call__(self, observation=None):
        return oracle_action(self.env)

    def predict(self, observation=None, state=None, episode_start=None, deterministic: bool = True):
        return oracle_action(self.env), state


def oracle_action(env: gym.Env):
    """Oracle action for a (possibly wrapped) SpriteTaskEnv / DomainSequenceEnv."""
    base = env.unwrapped
    if not isinstance(base, SpriteTaskEnv):
        raise TypeError(f"oracle_action needs a vase_rl sprite-task env, got {type(base).__name__}")
    return base.oracle_action()
