"""Tests of vase_rl.agents: VASECallback, VASEFeaturesExtractor and ppo_on_latents."""

from __future__ import annotations

import csv
import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from vase_rl.agents import VASECallback, VASEFeaturesExtractor, ppo_on_latents

from vase_rl import VASE, VASEConfig
from vase_rl.wrappers import VASEWrapper, VecVASE, unwrap_vase

CFG = VASEConfig.preset("cpu32", image_shape=(1, 16, 16), width=0.25, latent_dim=8)
SMALL = dict(batch_size=8, train_every=2)


def sprite_venv(n=2, image_size=32):
    return DummyVecEnv(
        [lambda: gym.make("vase_rl/SpriteTask-v0", image_size=image_size, max_steps=10) for _ in range(n)]
    )


def read_progress(folder):
    with open(os.path.join(folder, "progress.csv")) as handle:
        return list(csv.DictReader(handle))


def small_ppo(env, **kwargs):
    return PPO("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu", **kwargs)


def test_callback_logs_vase_scalars_through_the_sb3_logger(tmp_path):
    venv = VecVASE(sprite_venv(), CFG, device="cpu", seed=0, **SMALL)
    model = small_ppo(venv)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    callback = VASECallback()
    model.learn(192, callback=callback)
    rows = read_progress(tmp_path)
    assert len(rows) >= 2
    for key in (
        "vase/loss",
        "vase/recon",
        "vase/kl",
        "vase/capacity",
        "vase/kl_minus_capacity",
        "vase/domain",
        "vase/num_domains",
        "vase/active_latents",
        "vase/used_latents",
        "vase/events_new",
        "vase/events_switch",
        "vase/num_updates",
        "vase/frames_seen",
    ):
        assert key in rows[-1], key
    last = rows[-1]
    assert float(last["vase/num_updates"]) == venv.learner.num_updates > 0
    assert np.isfinite(float(last["vase/loss"])) and float(last["vase/num_domains"]) >= 1
    # loss terms are means over the updates of the latest rollout only: one rollout brings
    # 32 steps x 2 envs = 64 frames plus at most 8 terminal frames (episodes of 10 steps)
    assert 0 < callback.last_stats["updates_aggregated"] <= (64 + 8) // SMALL["train_every"] + 1


def test_callback_finds_per_env_wrappers_and_saves_checkpoints(tmp_path):
    learner = VASE(CFG, seed=0, device="cpu")
    venv = DummyVecEnv(
        [lambda: VASEWrapper(gym.make("vase_rl/SpriteTask-v0"), learner=learner, **SMALL) for _ in range(2)]
    )
    model = small_ppo(venv)
    model.set_logger(configure(str(tmp_path / "log"), ["csv"]))
    callback = VASECallback(save_freq=32, save_path=str(tmp_path / "ckpt"), name_prefix="run", save_model=True)
    model.learn(128, callback=callback)
    rows = read_progress(tmp_path / "log")
    assert float(rows[-1]["vase/num_updates"]) == learner.num_updates > 0
    folders = sorted(os.listdir(tmp_path / "ckpt"))
    assert folders == ["run_128_steps", "run_64_steps"]  # every 32 calls of 2 envs
    assert sorted(os.listdir(tmp_path / "ckpt" / "run_64_steps")) == [
        "agent.zip",
        "stack.json",
        "vase.pt",
        "vase.pt.config.json",
    ]
    restored = VASE.load(tmp_path / "ckpt" / "run_128_steps" / "vase.pt", device="cpu")
    assert restored.num_updates == learner.num_updates


def test_callback_checkpoint_of_vecvase_loads_back(tmp_path):
    venv = VecVASE(sprite_venv(), CFG, device="cpu", seed=0, append_domain=True, **SMALL)
    model = small_ppo(venv)
    model.learn(64, callback=VASECallback(save_freq=32, save_path=str(tmp_path)))
    loaded = VecVASE.load(tmp_path / "vase_64_steps" / "vase.pt", sprite_venv(), device="cpu")
    assert loaded.feed.append_domain and loaded.observation_space.shape == (8 + CFG.max_domains,)
    raw = venv.get_original_obs()
    np.testing.assert_array_equal(loaded.encode(raw), venv.encode(raw))


def test_callback_arguments_are_checked():
    with pytest.raises(ValueError, match="save_path"):
        VASECallback(save_freq=10)
    with pytest.raises(ValueError):
        VASECallback(log_freq=-1)


def test_features_extractor_is_frozen_and_matches_the_learner(tmp_path):
    learner = VASE(CFG, seed=0, device="cpu")
    frames = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 1), dtype=np.uint8)
    for _ in range(3):
        learner.update(frames[:, ::2, ::2])
    path = learner.save(tmp_path / "vase.pt")
    kwargs = dict(
        features_extractor_class=VASEFeaturesExtractor, features_extractor_kwargs=dict(learner_path=str(path))
    )
    model = PPO(
        "CnnPolicy", sprite_venv(), policy_kwargs=kwargs, n_steps=32, batch_size=32, n_epochs=2, seed=0, device="cpu"
    )
    extractor = model.policy.features_extractor
    assert isinstance(extractor, VASEFeaturesExtractor) and extractor.features_dim == 8
    before = [p.detach().clone() for p in extractor.encoder.parameters()]
    model.learn(64)
    assert all(torch.equal(a, b) for a, b in zip(before, extractor.encoder.parameters()))
    assert not extractor.encoder.training

    # SB3 transposes to CHW and divides by 255; the features equal the learner's encoding
    obs = torch.as_tensor(frames.transpose(0, 3, 1, 2)).float() / 255.0
    features = extractor(obs).numpy()
    expected = learner.encode(torch.nn.functional.avg_pool2d(obs, 2))
    np.testing.assert_allclose(features, expected, atol=1e-5)

    model.save(tmp_path / "ppo.zip")
    loaded = PPO.load(tmp_path / "ppo.zip", device="cpu")
    np.testing.assert_allclose(loaded.policy.features_extractor(obs).numpy(), features, atol=1e-6)


def test_features_extractor_can_append_the_domain(tmp_path):
    learner = VASE(CFG, seed=0, device="cpu")
    path = learner.save(tmp_path / "vase.pt")
    space = gym.spaces.Box(0, 255, (1, 32, 32), np.uint8)
    extractor = VASEFeaturesExtractor(space, str(path), append_domain=True)
    out = extractor(torch.rand(4, 1, 32, 32))
    assert out.shape == (4, 8 + CFG.max_domains)
    assert torch.equal(out[:, 8:].sum(1), torch.ones(4))


def test_ppo_on_latents_builds_a_working_agent_in_one_call():
    model = ppo_on_latents(
        "vase_rl/SpriteTask-v0",
        n_envs=2,
        config=CFG,
        seed=0,
        device="cpu",
        env_kwargs=dict(image_size=32),
        vase_kwargs=SMALL,
        ppo_kwargs=dict(n_steps=32, batch_size=32, n_epochs=1),
    )
    env = model.get_env()
    assert isinstance(env, VecNormalize) and not env.norm_reward  # latents normalised by default
    vase = unwrap_vase(env)
    assert isinstance(vase, VecVASE) and env.observation_space.shape == (8,)
    callback = VASECallback()
    model.learn(64, callback=callback)
    assert model.num_timesteps >= 64 and vase.learner.num_updates > 0
    assert callback.found and callback.last_stats["num_updates"] == vase.learner.num_updates  # found below VecNormalize
    again = ppo_on_latents(vase, normalize=False, ppo_kwargs=dict(n_steps=16, batch_size=16))
    assert again.get_env() is vase
    with pytest.raises(TypeError):
        ppo_on_latents(3.0)


# ------------------------------------------------------------------------------------------
# issue 12: one test per finding
# ------------------------------------------------------------------------------------------
def trained_learner_file(tmp_path, name="vase.pt", seed=0):
    learner = VASE(CFG, seed=seed, device="cpu")
    frames = np.random.default_rng(seed).integers(0, 256, (16, 16, 16, 1), dtype=np.uint8)
    for _ in range(3):
        learner.update(frames)
    return learner, learner.save(tmp_path / name)


def test_finding5_an_agent_with_the_extractor_loads_after_its_checkpoint_moved(tmp_path):
    learner, path = trained_learner_file(tmp_path)
    kwargs = VASEFeaturesExtractor.policy_kwargs(str(path))
    model = PPO("CnnPolicy", sprite_venv(), policy_kwargs=kwargs, n_steps=32, batch_size=32, n_epochs=1, seed=0)
    obs = torch.rand(4, 1, 32, 32)
    features = model.policy.features_extractor(obs).numpy()
    model.save(tmp_path / "ppo.zip")
    os.replace(path, tmp_path / "elsewhere.pt")  # the checkpoint moves away
    loaded = PPO.load(tmp_path / "ppo.zip", device="cpu")
    np.testing.assert_array_equal(loaded.policy.features_extractor(obs).numpy(), features)
    # a policy built from the stored config alone has no weights: it refuses to run
    shell = VASEFeaturesExtractor(gym.spaces.Box(0, 255, (1, 32, 32), np.uint8), **kwargs["features_extractor_kwargs"])
    with pytest.raises(RuntimeError, match="never loaded"):
        shell(obs)
    # plain learner_path kwargs and a missing file: the error names the fix
    with pytest.raises(FileNotFoundError, match="policy_kwargs"):
        VASEFeaturesExtractor(gym.spaces.Box(0, 255, (1, 32, 32), np.uint8), learner_path=str(path))


def test_finding5_an_agent_on_a_fresh_untrained_encoder_is_refused(tmp_path):
    from vase_rl.agents import check_representation, save_stack

    model = ppo_on_latents(
        sprite_venv(), config=CFG, seed=0, device="cpu", vase_kwargs=SMALL, ppo_kwargs=dict(n_steps=32, batch_size=32)
    )
    model.learn(64, callback=VASECallback())
    save_stack(tmp_path / "run", model)
    fresh = VecNormalize(VecVASE(sprite_venv(), CFG, device="cpu", seed=0, training=False))
    agent = PPO.load(tmp_path / "run" / "agent.zip", env=fresh, device="cpu")  # SB3 accepts it: the spaces match
    with pytest.raises(
        ValueError, match=r"another point of its training \(\d+ updates when the agent was saved, 0 now"
    ):
        check_representation(agent)
    with pytest.raises(ValueError, match="another representation"):
        agent.learn(32, callback=VASECallback())  # the callback checks before training on it
    assert check_representation(agent, strict=False, env=model.get_env()) == []


def test_finding6_callback_checkpoints_restore_vecnormalize_and_the_agent(tmp_path):
    from vase_rl.agents import load_stack

    model = ppo_on_latents(
        sprite_venv(), config=CFG, seed=0, device="cpu", vase_kwargs=SMALL, ppo_kwargs=dict(n_steps=32, batch_size=32)
    )
    callback = VASECallback(save_freq=32, save_path=str(tmp_path))
    model.learn(64, callback=callback)
    folder = tmp_path / "vase_64_steps"
    assert callback.checkpoint_path(64) == str(folder)
    assert {"agent.zip", "vase.pt", "vecnormalize.pkl", "stack.json"} <= set(os.listdir(folder))
    assert not any("vase_vase" in name for name in os.listdir(tmp_path))
    restored, env = load_stack(folder, sprite_venv())
    trained = model.get_env()
    np.testing.assert_array_equal(env.obs_rms.mean, trained.obs_rms.mean)  # the statistics it was trained with
    np.testing.assert_array_equal(env.obs_rms.var, trained.obs_rms.var)
    assert restored.num_timesteps == 64 and not env.training and not env.venv.training


def test_finding7_the_ppo_on_latents_env_freezes_every_layer():
    model = ppo_on_latents(
        sprite_venv(), config=CFG, seed=0, device="cpu", vase_kwargs=SMALL, ppo_kwargs=dict(n_steps=32, batch_size=32)
    )
    env = model.get_env()
    env.training = False  # what a VecNormalize user writes
    vase = unwrap_vase(env)
    assert not vase.training
    before = [p.detach().clone() for p in vase.learner.encoder.parameters()]
    env.reset()
    for _ in range(8):
        env.step(np.zeros(2, dtype=np.int64))
    assert all(torch.equal(a, b) for a, b in zip(before, vase.learner.encoder.parameters()))
    env.training = True
    assert vase.training
    frozen_first = ppo_on_latents(
        VecVASE(sprite_venv(), CFG, device="cpu", training=False), ppo_kwargs=dict(n_steps=16, batch_size=16)
    )
    assert not unwrap_vase(frozen_first.get_env()).training  # building the normaliser leaves a frozen VecVASE frozen


def test_ppo_on_latents_with_dict_observations_uses_multi_input_policy():
    pytest.importorskip("minigrid")
    from stable_baselines3.common.policies import MultiInputActorCriticPolicy
    from vase_rl.agents.real_envs import make_minigrid

    venv = DummyVecEnv([lambda: make_minigrid(image_only=False)] * 2)
    model = ppo_on_latents(
        venv,
        config=CFG,
        seed=0,
        device="cpu",
        vase_kwargs=dict(SMALL, image_key="image"),
        ppo_kwargs=dict(n_steps=16, batch_size=16, n_epochs=1),
    )
    assert isinstance(model.policy, MultiInputActorCriticPolicy)
    assert model.get_env().norm_obs_keys == ["latents"]
    model.learn(32)
    assert model.num_timesteps >= 32


def test_features_extractor_appends_the_other_dict_entries(tmp_path):
    learner, path = trained_learner_file(tmp_path)
    space = gym.spaces.Dict(
        {"image": gym.spaces.Box(0, 255, (1, 32, 32), np.uint8), "direction": gym.spaces.Discrete(4)}
    )
    extractor = VASEFeaturesExtractor(space, str(path), image_key="image")
    assert extractor.features_dim == 8 + 4
    frames = torch.rand(3, 1, 32, 32)
    direction = torch.nn.functional.one_hot(torch.tensor([0, 2, 3]), 4).float()  # as SB3 preprocesses Discrete
    out = extractor({"image": frames, "direction": direction})
    np.testing.assert_allclose(out[:, :8].numpy(), learner.encode(torch.nn.functional.avg_pool2d(frames, 2)), atol=1e-5)
    assert torch.equal(out[:, 8:], direction)
    only = VASEFeaturesExtractor(space, str(path), image_key="image", latents_only=True)
    assert only.features_dim == 8 and only({"image": frames, "direction": direction}).shape == (3, 8)
