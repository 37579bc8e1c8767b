"""VASE wrappers on real pixel environments: ALE Atari (incl. a game-switching sequence) and
MiniGrid. Optional extras: skipped when ale-py / minigrid are not installed."""

from __future__ import annotations

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from vase_rl import VASEConfig
from vase_rl.wrappers import VASEWrapper, VecVASE, make_vase_vec_env

CFG = VASEConfig.preset("cpu32", image_shape=(1, 16, 16), width=0.25, latent_dim=8)


# ------------------------------------------------------------------------------------------ Atari
def test_atari_rgb_frames_of_210x160_are_encoded():
    pytest.importorskip("ale_py")
    from vase_rl.agents.real_envs import make_atari

    env = VASEWrapper(make_atari("Pong", obs_type="rgb"), CFG, device="cpu", seed=0, batch_size=4, train_every=2)
    assert env.env.observation_space.shape == (210, 160, 3)
    obs, _ = env.reset(seed=0)
    for action in range(8):
        obs, *_ = env.step(action)
    assert obs.shape == (8,) and np.isfinite(obs).all()
    assert env.action_space.n == 18 and env.learner.num_updates >= 2
    env.close()


def test_atari_game_sequence_switches_games_on_schedule():
    pytest.importorskip("ale_py")
    from vase_rl.agents.real_envs import AtariGameSequence, ale_game_name

    assert ale_game_name("SpaceInvaders") == ale_game_name("ALE/SpaceInvaders-v5") == "space_invaders"
    env = AtariGameSequence(("Pong", "Breakout", "Pong"), switch_every=5, switch_unit="steps")
    assert env.action_space.n == 18 and env.observation_space.shape == (210, 160)
    obs, info = env.reset(seed=3)
    games, domains, switches = [info["game"]], [info["domain"]], 0
    for _ in range(3):
        while True:
            obs, reward, terminated, truncated, info = env.step(0)
            assert obs.shape == (210, 160)
            if terminated or truncated:
                switches += bool(info.get("game_switch"))
                break
        obs, info = env.reset()
        games.append(info["game"])
        domains.append(info["domain"])
    assert games == ["pong", "breakout", "pong", "pong"] and domains == [0, 1, 0, 0]
    assert switches == 3
    # a seeded reset restarts the schedule and reproduces frames exactly
    first, _ = env.reset(seed=3)
    again = AtariGameSequence(("Pong", "Breakout", "Pong"), switch_every=5, switch_unit="steps")
    np.testing.assert_array_equal(again.reset(seed=3)[0], first)
    assert env.game == "pong"
    with pytest.raises(ValueError, match="switch_unit"):
        AtariGameSequence(("Pong",), switch_unit="hours")
    env.close()
    again.close()


def test_atari_sequence_under_vecvase_and_ppo():
    pytest.importorskip("ale_py")
    from vase_rl.agents.real_envs import AtariGameSequence

    venv = VecVASE(
        DummyVecEnv([lambda: AtariGameSequence(("Pong", "Breakout"), switch_every=40, switch_unit="steps")] * 2),
        CFG,
        device="cpu",
        seed=0,
        batch_size=16,
        train_every=4,
    )
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(128)
    assert model.num_timesteps >= 128 and venv.learner.num_updates >= 10
    venv.close()


# ------------------------------------------------------------------------------------------ MiniGrid
@pytest.mark.filterwarnings("ignore:.*different from the unwrapped")
def test_minigrid_dict_observations_need_and_accept_an_image_key():
    pytest.importorskip("minigrid")
    from gymnasium.utils.env_checker import check_env
    from vase_rl.agents.real_envs import make_minigrid

    with pytest.raises(TypeError, match="image_key"):
        VASEWrapper(make_minigrid(image_only=False), CFG, device="cpu")
    env = VASEWrapper(make_minigrid(image_only=False), CFG, device="cpu", image_key="image", learning=False)
    # MiniGrid's RGBImgObsWrapper cannot be re-made from a spec, which the close check needs
    check_env(env, skip_render_check=True, skip_close_check=True)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"latents", "direction"} and obs["latents"].shape == (8,)  # direction passes through
    assert obs["direction"] == env.unwrapped.agent_dir


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_minigrid_pixels_through_vecvase_and_ppo():
    pytest.importorskip("minigrid")
    from vase_rl.agents.real_envs import make_minigrid

    venv = make_vase_vec_env(make_minigrid, 2, CFG, seed=0, device="cpu", batch_size=16, train_every=4)
    assert venv.venv.observation_space.shape == (64, 64, 3)
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(128)
    assert model.num_timesteps >= 128 and venv.learner.num_updates >= 10
    venv.close()


# ------------------------------------------------------------------------------------------ issue 12
def _pong_frame_with_ball():
    """A raw RGB Pong frame with the ball in play, and the same frame with the ball painted over."""
    from vase_rl.agents.real_envs import make_atari

    env = make_atari("Pong", obs_type="rgb", repeat_action_probability=0.0)
    obs, _ = env.reset(seed=0)
    ball = np.all(obs[34:194] == (236, 236, 236), axis=-1)
    while not ball.any():
        obs, *_ = env.step(0)
        ball = np.all(obs[34:194] == (236, 236, 236), axis=-1)
    env.close()
    ys, xs = np.nonzero(ball)
    without = obs.copy()
    without[ys + 34, xs] = obs[34 + ys.min(), (xs.max() + 3) % 160]  # the field's colour beside it
    return obs, without


def _contrast(space, shape, a, b):
    from vase_rl.observations import ImageObservationAdapter

    adapter = ImageObservationAdapter(space, shape)
    return float((adapter.to_tensor(a[None]) - adapter.to_tensor(b[None])).abs().max())


def test_finding10_atari_recipes_keep_pongs_ball_visible():
    pytest.importorskip("ale_py")
    from gymnasium import spaces
    from vase_rl.agents.real_envs import RECIPES, recipe

    grey, colour = recipe("atari-grey64"), recipe("atari-rgb64")
    assert grey.config().image_shape == (1, 64, 64) and colour.config().image_shape == (3, 64, 64)
    assert grey.config("cpu32", latent_dim=8).latent_dim == 8
    with_ball, without = _pong_frame_with_ball()
    space = spaces.Box(0, 255, with_ball.shape, np.uint8)
    raw = float(np.abs(with_ball @ np.array([0.299, 0.587, 0.114]) - without @ np.array([0.299, 0.587, 0.114])).max())
    small = _contrast(space, (1, 32, 32), with_ball, without)  # the cpu32 preset's input
    assert raw / 255.0 == pytest.approx(0.58, abs=0.01) and small < 0.1  # the ball nearly vanishes at 32x32
    assert _contrast(space, grey.image_shape, with_ball, without) > 3 * small
    assert _contrast(space, colour.image_shape, with_ball, without) > 4 * small
    env = colour.make_env(max_episode_steps=10)
    assert env.observation_space.shape == (210, 160, 3)
    env.close()
    with pytest.raises(KeyError, match="atari-grey64"):
        recipe("atari")
    assert set(RECIPES) >= {"atari-grey64", "atari-rgb64", "minigrid-rgb64", "minigrid-rgb64-dict"}


def test_finding10_minigrid_recipe_keeps_red_and_purple_apart():
    pytest.importorskip("minigrid")
    from gymnasium import spaces
    from minigrid.core.constants import COLORS
    from vase_rl.agents.real_envs import recipe

    space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
    red = np.broadcast_to(COLORS["red"], (64, 64, 3)).astype(np.uint8)
    purple = np.broadcast_to(COLORS["purple"], (64, 64, 3)).astype(np.uint8)
    assert _contrast(space, (1, 32, 32), red, purple) < 0.02  # the same grey
    rgb = recipe("minigrid-rgb64")
    assert rgb.image_shape == (3, 64, 64) and _contrast(space, rgb.image_shape, red, purple) > 0.5
    config = rgb.config(width=0.25, latent_dim=8)
    venv = rgb.vec_env(2, seed=0, config=config, device="cpu", batch_size=8, train_every=2)
    assert venv.learner.config.image_shape == (3, 64, 64) and venv.reset().shape == (2, 8)
    venv.close()
    dict_venv = recipe("minigrid-rgb64-dict").vec_env(2, seed=0, config=config, device="cpu")
    obs = dict_venv.reset()
    assert set(obs) == {"latents", "direction"} and obs["latents"].shape == (2, 8)
    dict_venv.close()


def test_finding2_minigrid_symbolic_grids_are_refused_with_the_fix():
    pytest.importorskip("minigrid")
    import gymnasium as gym
    from minigrid.wrappers import FullyObsWrapper, ImgObsWrapper

    with pytest.raises(TypeError, match="symbolic grid") as info:
        VASEWrapper(gym.make("MiniGrid-Empty-8x8-v0"), CFG, device="cpu", image_key="image")
    assert "RGBImgObsWrapper" in str(info.value)
    # a fully observed 16x16 grid is 16x16x3: big enough to pass for a picture, recognised as MiniGrid's grid
    full = ImgObsWrapper(FullyObsWrapper(gym.make("MiniGrid-Empty-16x16-v0")))
    assert full.observation_space.shape == (16, 16, 3)
    with pytest.raises(TypeError, match="symbolic grid"):
        VASEWrapper(full, CFG, device="cpu")
    with pytest.raises(TypeError, match="symbolic grid"):
        VecVASE(DummyVecEnv([lambda: ImgObsWrapper(FullyObsWrapper(gym.make("MiniGrid-Empty-16x16-v0")))]), CFG)
    on_purpose = VASEWrapper(full, CFG, device="cpu", value_range=(0, 10), learning=False)  # said explicitly
    assert on_purpose.reset(seed=0)[0].shape == (8,)


def test_finding10_the_atari_extra_installs_what_sb3s_atari_wrappers_need():
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    atari = pyproject["project"]["optional-dependencies"]["atari"]
    assert any(req.startswith("opencv-python-headless") for req in atari)
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    venv = VecVASE(make_atari_env("ALE/Pong-v5", n_envs=2, seed=0), CFG, device="cpu", batch_size=8, train_every=2)
    assert venv.venv.observation_space.shape == (84, 84, 1)
    venv.reset()
    for _ in range(4):
        obs, *_ = venv.step(np.zeros(2, dtype=np.int64))
    assert obs.shape == (2, 8) and venv.learner.num_updates >= 1
    venv.close()
    with pytest.raises(TypeError, match="frame_stack=4"):  # SB3's recipe stacks pixels: refused with the fix
        VecVASE(VecFrameStack(make_atari_env("ALE/Pong-v5", n_envs=1, seed=0), 4), CFG, device="cpu")
