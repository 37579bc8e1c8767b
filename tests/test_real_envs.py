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
