"""Real pixel environments for VASE agents: ALE Atari games and MiniGrid, without OpenCV.

Both are optional extras (``pip install "vase-rl[atari]"`` / ``"vase-rl[minigrid]"``); nothing
here imports them until used. No preprocessing wrapper is needed: the VASE wrappers take the
raw frames (Atari 210x160 grey or RGB, MiniGrid RGB) and resize them with torch. (SB3's
``make_atari_env`` / ``AtariWrapper`` need OpenCV; the ``atari`` extra installs the headless
build, but nothing here uses it.)

* :func:`make_atari` — ``ALE/<Game>-v5`` with the full 18-action set (so one policy head fits
  every game), grey frames by default;
* :class:`AtariGameSequence` — a piece-wise stationary stream of real games
  (e.g. Pong → Breakout → Pong) sharing one action space: the game switches every
  ``switch_every`` episodes or environment steps, without telling the agent (``info["game"]``
  and ``info["domain"]`` carry the truth for evaluation);
* :func:`make_minigrid` — a MiniGrid env with full-grid RGB pixel observations (8x8 grid,
  tile 8 → 64x64x3), as a Box or as MiniGrid's Dict (pick ``image_key="image"``);
* :data:`RECIPES` / :func:`recipe` — what to choose per environment (the learner's image size and
  colour, the wrapper options), as a config plus env factories: ``atari-grey64``,
  ``atari-rgb64``, ``minigrid-rgb64`` and ``minigrid-rgb64-dict``. The ``cpu32`` preset's
  32x32 grey input is too coarse for these: it shrinks Pong's ball to a faint smudge and maps
  MiniGrid's red and purple to almost the same grey (docs/RL.md has the numbers).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["make_atari", "AtariGameSequence", "make_minigrid", "ale_game_name", "EnvRecipe", "RECIPES", "recipe"]


def _import_ale():
    try:
        import ale_py
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("Atari environments need ale-py (ROMs included): pip install 'vase-rl[atari]'") from err
    gym.register_envs(ale_py)
    return ale_py


def ale_game_name(game: str) -> str:
    """'SpaceInvaders' / 'space_invaders' / 'ALE/SpaceInvaders-v5' -> 'space_invaders' (ALE's ROM name)."""
    name = game.split("/")[-1]
    name = re.sub(r"-v\d+$", "", name)
    if "_" in name or name.islower():
        return name.lower()
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def make_atari(
    game: str = "Pong",
    obs_type: str = "grayscale",
    full_action_space: bool = True,
    max_episode_steps: int | None = None,
    **kwargs: Any,
) -> gym.Env:
    """``gym.make("ALE/<Game>-v5", ...)``: frameskip 4 and sticky actions 0.25 (v5 defaults),
    grey 210x160 frames, all 18 actions. ``kwargs`` go to ``ale_py.env.AtariEnv``."""
    _import_ale()
    camel = "".join(part.capitalize() for part in ale_game_name(game).split("_"))
    return gym.make(
        f"ALE/{camel}-v5",
        obs_type=obs_type,
        full_action_space=full_action_space,
        max_episode_steps=max_episode_steps,
        **kwargs,
    )


class AtariGameSequence(gym.Env):
    """Real piece-wise stationary stream: Atari games that take turns on a schedule.

    Args:
        games: the schedule, names may repeat (returns), e.g. ``("Pong", "Breakout", "Pong")``;
            it cycles when it runs out.
        switch_every: length of each block, in ``switch_unit``.
        switch_unit: ``"episodes"`` or ``"steps"``; a switch on a step boundary truncates the
            running episode (``info["game_switch"] = True``) and the next reset starts the new game.
        obs_type: ``"grayscale"`` (210x160) or ``"rgb"`` (210x160x3).
        max_episode_steps: optional cap on an episode's length (truncation).
        frameskip, repeat_action_probability, render_mode: as for ``ale_py.env.AtariEnv``.

    ``reset(seed=s)`` restarts the schedule and reseeds every game from ``s``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        games: Sequence[str] = ("Pong", "Breakout", "Pong"),
        switch_every: int = 10,
        switch_unit: str = "episodes",
        obs_type: str = "grayscale",
        max_episode_steps: int | None = None,
        frameskip: int = 4,
        repeat_action_probability: float = 0.25,
        render_mode: str | None = None,
    ) -> None:
        ale_py = _import_ale()
        if isinstance(games, str):
            games = [games]
        self.schedule = [ale_game_name(g) for g in games]
        if not self.schedule:
            raise ValueError("games is empty; pass e.g. ('Pong', 'Breakout', 'Pong')")
        if isinstance(switch_every, bool) or not isinstance(switch_every, (int, np.integer)) or switch_every < 1:
            raise ValueError(f"switch_every must be a positive integer, got {switch_every!r}")
        if switch_unit not in ("episodes", "steps"):
            raise ValueError(f"switch_unit must be 'episodes' or 'steps', got {switch_unit!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be None or >= 1, got {max_episode_steps!r}")
        self.switch_every = int(switch_every)
        self.switch_unit = switch_unit
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.games = list(dict.fromkeys(self.schedule))
        self._envs = {
            g: ale_py.env.AtariEnv(
                game=g,
                obs_type=obs_type,
                frameskip=frameskip,
                repeat_action_probability=repeat_action_probability,
                full_action_space=True,
                render_mode=render_mode,
            )
            for g in self.games
        }
        shapes = {g: e.observation_space.shape for g, e in self._envs.items()}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"the games' frames differ in shape ({shapes}); they cannot share one observation space")
        first = self._envs[self.games[0]]
        self.observation_space = first.observation_space
        self.action_space = gym.spaces.Discrete(first.action_space.n)
        self._count = 0  # episodes or steps since the schedule (re)started
        self._slot = 0
        self._t = 0
        self._pending_seeds: dict[str, int] = {}
        self._started = False

    @property
    def game(self) -> str:
        """The game being played now."""
        return self.schedule[self._slot]

    def _slot_for(self, count: int) -> int:
        return (count // self.switch_every) % len(self.schedule)

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        out = dict(info)
        out["game"] = self.game
        out["domain"] = self.games.index(self.game)
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None or not self._started:
            self._count = 0
            self._pending_seeds = {g: int(self.np_random.integers(0, 2**31 - 1)) for g in self.games}
            self._started = True
        if self.switch_unit == "episodes":
            self._slot = self._slot_for(self._count)
            self._count += 1
        else:
            self._slot = self._slot_for(self._count)
        self._t = 0
        obs, info = self._envs[self.game].reset(seed=self._pending_seeds.pop(self.game, None))
        return obs, self._info(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self._envs[self.game].step(action)
        self._t += 1
        info = self._info(info)
        if self.max_episode_steps is not None and self._t >= self.max_episode_steps:
            truncated = True
        if self.switch_unit == "steps":
            self._count += 1
            if self._slot_for(self._count) != self._slot:
                truncated = True
                info["game_switch"] = True
        return obs, float(reward), bool(terminated), bool(truncated), info

    def render(self):
        return self._envs[self.game].render()

    def close(self):
        for env in getattr(self, "_envs", {}).values():
            env.close()


def make_minigrid(
    env_id: str = "MiniGrid-Empty-8x8-v0",
    tile_size: int = 8,
    image_only: bool = True,
    keys: Sequence[str] | None = ("image", "direction"),
    **kwargs: Any,
) -> gym.Env:
    """A MiniGrid env whose observation is the full grid rendered as RGB pixels
    (grid side x ``tile_size``: 64x64x3 for 8x8 grids at tile 8). ``image_only=True`` gives a
    Box; ``False`` keeps MiniGrid's Dict (use ``image_key="image"`` with the VASE wrappers; the
    other entries pass through beside the latents) restricted to ``keys`` (default: the image
    and the agent's direction; MiniGrid's ``mission`` text is left out because SB3's vector envs
    and policies cannot hold text; ``keys=None`` keeps every entry)."""
    try:
        import minigrid  # noqa: F401  (registers the MiniGrid-* ids)
        from minigrid.wrappers import ImgObsWrapper, RGBImgObsWrapper
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError("MiniGrid environments need minigrid and pygame-ce: pip install 'vase-rl[minigrid]'") from err
    env = RGBImgObsWrapper(gym.make(env_id, **kwargs), tile_size=tile_size)
    if image_only:
        return ImgObsWrapper(env)
    if keys is not None:
        from gymnasium.wrappers import FilterObservation

        env = FilterObservation(env, list(keys))
    return env


# ------------------------------------------------------------------------------------------ recipes
@dataclasses.dataclass(frozen=True)
class EnvRecipe:
    """What to choose for one real environment: the learner's input and the wrapper options.

    ``config(preset)`` gives the preset at ``image_shape``; ``make_env()`` one environment;
    ``vec_env(n_envs, seed)`` the ``VecVASE`` over ``n_envs`` of them. Frame stacking, if the
    agent needs motion, goes on the latents: ``VecFrameStack(recipe.vec_env(...), 4)``.
    """

    name: str
    summary: str
    image_shape: tuple[int, int, int]
    factory: Callable[..., gym.Env]
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    wrapper_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def config(self, preset: str = "cpu32", **overrides: Any):
        """``VASEConfig.preset(preset)`` with this recipe's ``image_shape`` (``overrides`` win)."""
        from vase_rl.config import VASEConfig

        return VASEConfig.preset(preset, **{"image_shape": self.image_shape, **overrides})

    def make_env(self, **overrides: Any) -> gym.Env:
        return self.factory(**{**self.env_kwargs, **overrides})

    def env_factory(self, **overrides: Any) -> Callable[[], gym.Env]:
        """A picklable zero-argument factory (for ``make_vec_env``/``SubprocVecEnv``)."""
        return _Factory(self.factory, {**self.env_kwargs, **overrides})

    def vec_env(self, n_envs: int = 8, seed: int | None = None, config: Any = None, **vase_kwargs: Any):
        """``make_vase_vec_env`` over ``n_envs`` environments with this recipe's config and
        wrapper options (``vase_kwargs`` win, e.g. ``device=``, ``vec_env_cls="subproc"``)."""
        from vase_rl.wrappers import make_vase_vec_env

        options = {**self.wrapper_options, **vase_kwargs}
        return make_vase_vec_env(self.env_factory(), n_envs, config or self.config(), seed=seed, **options)


class _Factory:
    def __init__(self, factory: Callable[..., gym.Env], kwargs: dict[str, Any]) -> None:
        self.factory, self.kwargs = factory, kwargs

    def __call__(self) -> gym.Env:
        return self.factory(**self.kwargs)


RECIPES: dict[str, EnvRecipe] = {
    "atari-grey64": EnvRecipe(
        "atari-grey64",
        "ALE game (default Pong), raw 210x160 grey frames, learner input 64x64 grey: small objects such as "
        "Pong's ball stay visible; for games where colour tells objects apart use atari-rgb64",
        (1, 64, 64),
        make_atari,
        {"game": "Pong", "obs_type": "grayscale"},
    ),
    "atari-rgb64": EnvRecipe(
        "atari-rgb64",
        "ALE game (default Pong), raw 210x160x3 RGB frames, learner input 64x64 RGB (3x the input of grey)",
        (3, 64, 64),
        make_atari,
        {"game": "Pong", "obs_type": "rgb"},
    ),
    "minigrid-rgb64": EnvRecipe(
        "minigrid-rgb64",
        "MiniGrid full grid rendered in colour (8x8 grid at tile 8 = 64x64x3), learner input 64x64 RGB: "
        "MiniGrid tells objects apart by colour (red and purple are almost the same grey)",
        (3, 64, 64),
        make_minigrid,
        {"env_id": "MiniGrid-Empty-8x8-v0", "tile_size": 8, "image_only": True},
    ),
    "minigrid-rgb64-dict": EnvRecipe(
        "minigrid-rgb64-dict",
        "as minigrid-rgb64, keeping the agent's direction beside the latents (Dict observation; "
        "ppo_on_latents then uses MultiInputPolicy)",
        (3, 64, 64),
        make_minigrid,
        {"env_id": "MiniGrid-Empty-8x8-v0", "tile_size": 8, "image_only": False, "keys": ("image", "direction")},
        {"image_key": "image"},
    ),
}


def recipe(name: str) -> EnvRecipe:
    """The :class:`EnvRecipe` called ``name`` (see :data:`RECIPES`)."""
    if name not in RECIPES:
        raise KeyError(f"no recipe {name!r}; recipes: {sorted(RECIPES)}")
    return RECIPES[name]
