"""The whole stack an agent was trained with (VecVASE + VecNormalize + agent) saved and restored
in one call each (vase_rl.agents.stack): exact round trips, moved folders, refused encoders."""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecNormalize, VecTransposeImage
from vase_rl.agents import VASECallback, load_stack, ppo_on_latents, save_stack
from vase_rl.agents.stack import STACK_MANIFEST

from vase_rl import VASE, VASEConfig
from vase_rl.wrappers import VecVASE, freeze

CFG = VASEConfig.preset("cpu32", image_shape=(1, 16, 16), width=0.25, latent_dim=8)
SMALL = dict(batch_size=8, train_every=2)


def sprite_venv(n=2):
    return DummyVecEnv([lambda: gym.make("vase_rl/SpriteTask-v0", image_size=32, max_steps=12) for _ in range(n)])


def trained_model(steps=128):
    model = ppo_on_latents(
        sprite_venv(),
        config=CFG,
        seed=0,
        device="cpu",
        vase_kwargs=SMALL,
        ppo_kwargs=dict(n_steps=32, batch_size=32, n_epochs=1),
    )
    model.learn(steps, callback=VASECallback())
    return model


def rollout(model, env, steps=40, seed=11):
    """Actions, observations and action probabilities of ``steps`` steps from a seeded reset
    (actions sampled with torch seeded the same way, so any difference in the policy shows)."""
    env.seed(seed)
    torch.manual_seed(seed)
    obs = env.reset()
    actions, observations, probs = [], [], []
    for _ in range(steps):
        with torch.no_grad():
            dist = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0])
        probs.append(dist.distribution.probs.numpy().copy())
        action, _ = model.predict(obs, deterministic=False)
        actions.append(action.copy())
        observations.append(obs.copy())
        obs, *_ = env.step(action)
    return np.array(actions), np.array(observations), np.array(probs)


def test_save_restore_round_trip_reproduces_actions_exactly(tmp_path):
    model = trained_model()
    env = model.get_env()
    assert model.get_env().venv.learner.num_updates > 0
    folder = save_stack(tmp_path / "stack", model)
    manifest = json.loads((folder / STACK_MANIFEST).read_text())
    assert [layer["type"] for layer in manifest["layers"]] == ["VecNormalize"]
    restored, restored_env = load_stack(folder, sprite_venv())
    assert not restored_env.training and not restored_env.venv.training

    freeze(env)  # the original, frozen, against the restored one, from the same seeded start
    a1, o1, p1 = rollout(model, env)
    a2, o2, p2 = rollout(restored, restored_env)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(a1, a2)
    assert len(np.unique(a1)) > 1 and np.ptp(p1[:, 0, 0]) > 1e-4  # actions and probabilities that could differ


def test_restored_stack_resumes_training_in_every_layer(tmp_path):
    model = trained_model(64)
    folder = save_stack(tmp_path / "stack", model)
    restored, env = load_stack(folder, sprite_venv(), training=True)
    vase = env.venv
    updates, mean = vase.learner.num_updates, env.obs_rms.mean.copy()
    restored.learn(64, reset_num_timesteps=False, callback=VASECallback())
    assert vase.learner.num_updates > updates and not np.array_equal(mean, env.obs_rms.mean)
    assert restored.num_timesteps >= 128


def test_a_moved_stack_folder_still_loads(tmp_path):
    model = trained_model(64)
    save_stack(tmp_path / "run" / "stack", model)
    shutil.move(str(tmp_path / "run"), str(tmp_path / "moved"))
    restored, env = load_stack(tmp_path / "moved" / "stack", sprite_venv())
    raw = model.get_env().venv.get_original_obs()
    np.testing.assert_array_equal(env.venv.encode(raw), model.get_env().venv.encode(raw))


def test_a_wrong_encoder_is_refused(tmp_path):
    model = trained_model(64)
    folder = save_stack(tmp_path / "stack", model)
    other = VASE(CFG, seed=123, device="cpu")  # another learner put where the stack's was
    other.save(folder / "vase.pt", extra=VASE.read_extra(folder / "vase.pt"))
    with pytest.raises(ValueError, match=r"another learner \(seed 0 when the agent was saved, 123 now\)"):
        load_stack(folder, sprite_venv())
    with pytest.warns(RuntimeWarning, match="another representation"):
        restored, _ = load_stack(folder, sprite_venv(), strict=False)
    assert restored is not None
    # another configuration is named field by field
    wide = VASE(CFG.replace(latent_dim=6), seed=0, device="cpu")
    wide.save(folder / "vase.pt", extra=VASE.read_extra(folder / "vase.pt"))
    with pytest.raises(ValueError, match="latent_dim: 8 -> 6"):
        load_stack(folder, sprite_venv())
    # the same learner with different weights
    model2 = trained_model(64)
    folder2 = save_stack(tmp_path / "stack2", model2)
    vase = model2.get_env().venv
    with torch.no_grad():
        vase.learner.encoder.head.weight.add_(1e-3)
    vase.save(folder2 / "vase.pt")
    with pytest.raises(ValueError, match="other encoder weights"):
        load_stack(folder2, sprite_venv())


def test_stack_layers_and_errors(tmp_path):
    venv = VecVASE(sprite_venv(), CFG, device="cpu", seed=0, **SMALL)
    stacked = VecFrameStack(VecNormalize(venv, norm_reward=False), 3)
    model = A2C("MlpPolicy", stacked, n_steps=8, seed=0, device="cpu")
    model.learn(32)
    folder = save_stack(tmp_path / "a2c", model)
    restored, env = load_stack(folder, sprite_venv())
    assert isinstance(restored, A2C) and isinstance(env, VecFrameStack) and env.observation_space.shape == (24,)
    save_stack(tmp_path / "env_only", env=stacked)
    assert load_stack(tmp_path / "env_only", sprite_venv()).model is None
    with pytest.raises(ValueError, match="cannot save the layer VecTransposeImage"):
        save_stack(tmp_path / "bad", env=VecTransposeImage(DummyVecEnv([lambda: gym.make("vase_rl/SpriteTask-v0")])))
    with pytest.raises(FileNotFoundError, match=STACK_MANIFEST):
        load_stack(tmp_path / "nowhere", sprite_venv())
    with pytest.raises(ValueError, match="the model, the env"):
        save_stack(tmp_path / "x")
