"""Tests of vase_rl.wrappers: VASEWrapper, VecVASE, VASEVectorWrapper and their helpers."""

from __future__ import annotations

import os
import pickle

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper

import vase_rl
from vase_rl import VASE, VASEConfig
from vase_rl.wrappers import (
    VASEVectorWrapper,
    VASEWrapper,
    VecVASE,
    load_checkpoint,
    make_vase_vec_env,
    sync_vase,
    unwrap_vase,
)

CFG = VASEConfig.preset("cpu32", image_shape=(1, 16, 16), width=0.25, latent_dim=8)
SMALL = dict(batch_size=8, train_every=4)


def sprite_env(**kwargs):
    kwargs.setdefault("image_size", 32)
    return gym.make("vase_rl/SpriteTask-v0", **kwargs)


def vase_env(learning=True, **kwargs):
    opts = dict(SMALL, device="cpu", seed=0)
    opts.update(kwargs)
    return VASEWrapper(sprite_env(), CFG, learning=learning, **opts)


def params(learner):
    return [p.detach().clone() for m in (learner.encoder, learner.decoder, learner.classifier) for p in m.parameters()]


def same_params(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


class OddImageEnv(gym.Env):
    """Random uint8 frames of any shape (e.g. Atari's 210x160x3), seeded by reset."""

    metadata = {"render_modes": []}

    def __init__(self, shape=(210, 160, 3), max_steps=5, as_dict=False):
        image = spaces.Box(0, 255, shape, np.uint8)
        self.as_dict = as_dict
        self.observation_space = (
            spaces.Dict({"image": image, "step": spaces.Discrete(max_steps + 1)}) if as_dict else image
        )
        self.action_space = spaces.Discrete(2)
        self.max_steps = max_steps
        self._t = 0

    def _obs(self):
        frame = self.np_random.integers(
            0,
            256,
            self.observation_space["image"].shape if self.as_dict else self.observation_space.shape,
            dtype=np.uint8,
        )
        return {"image": frame, "step": self._t} if self.as_dict else frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        return self._obs(), 0.0, False, self._t >= self.max_steps, {}


class RecordTerminal(VecEnvWrapper):
    """Keeps a copy of the raw terminal observations passing below VecVASE."""

    def __init__(self, venv):
        super().__init__(venv)
        self.raw_terminal = {}

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.raw_terminal = {
            i: info["terminal_observation"].copy()
            for i, info in enumerate(infos)
            if dones[i] and "terminal_observation" in info
        }
        return obs, rewards, dones, infos


# ------------------------------------------------------------------------------------------
# VASEWrapper
# ------------------------------------------------------------------------------------------
def test_observations_are_fresh_clipped_float32_latents():
    env = vase_env()
    assert env.observation_space == spaces.Box(-10.0, 10.0, (8,), np.float32)
    obs, _ = env.reset(seed=0)
    obs2, *_ = env.step(0)
    for o in (obs, obs2):
        assert o.dtype == np.float32 and o.shape == (8,) and env.observation_space.contains(o)
    assert not np.shares_memory(obs, obs2)


def test_domain_one_hot_and_mask_can_be_appended():
    env = vase_env(append_domain=True, append_mask=True, clip=5.0)
    dim = CFG.latent_dim + CFG.max_domains + CFG.latent_dim
    assert env.observation_space.shape == (dim,) and env.observation_space.high[0] == 5.0
    obs, _ = env.reset(seed=0)
    onehot = obs[8 : 8 + CFG.max_domains]
    assert onehot.sum() == 1.0 and onehot[0] == 1.0
    np.testing.assert_array_equal(obs[8 + CFG.max_domains :], env.learner.latent_mask.astype(np.float32))


def test_update_schedule_counts_frames_and_steps():
    env = vase_env(learning_starts=8)
    env.reset(seed=0)
    for _ in range(19):  # 20 observations: updates at the 8th, 12th, 16th and 20th
        _, _, terminated, truncated, _ = env.step(0)
        if terminated or truncated:
            break
    stats = env.get_vase_stats()
    assert stats["frames_seen"] == 20
    assert env.learner.num_updates == 4 == stats["wrapper_updates"]
    assert stats["window_frames"] == 20  # the default window holds 16 batches
    assert np.isfinite(stats["loss"]) and "kl_minus_capacity" in stats


def test_window_is_a_fifo_of_the_most_recent_frames_only():
    from vase_rl.wrappers import LatentFeed

    learner = VASE(CFG, seed=0, device="cpu")
    feed = LatentFeed(
        spaces.Box(0, 255, (16, 16, 1), np.uint8), learner, batch_size=4, window_size=6, learning_starts=100
    )
    for i in range(5):  # batches of 2 frames with values 10*i and 10*i + 1
        frames = np.stack([np.full((16, 16, 1), 10 * i + k, np.uint8) for k in range(2)])
        feed.learn_from(feed.prepare(frames))
    kept = [round(float(v) * 255) for v in learner.window.frames()[:, 0, 0, 0]]
    assert kept == [20, 21, 30, 31, 40, 41] and learner.num_updates == 0  # before learning_starts, oldest first
    batch = learner.sample_window(4)
    assert batch.shape[0] == 4 and len({float(v) for v in batch[:, 0, 0, 0]}) == 4  # without replacement


def test_frozen_means_no_parameter_changes():
    env = vase_env(learning=False)
    before = params(env.learner)
    env.reset(seed=1)
    for _ in range(30):
        env.step(0)
    assert same_params(before, params(env.learner))
    assert env.learner.num_updates == 0 and env.get_vase_stats()["frames_seen"] == 0
    env.set_learning(True)
    for _ in range(12):
        env.step(0)
    assert env.learner.num_updates > 0 and not same_params(before, params(env.learner))
    env.learning = False
    frozen = params(env.learner)
    for _ in range(12):
        env.step(0)
    assert same_params(frozen, params(env.learner))


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped")
def test_gymnasium_check_env_passes_when_frozen():
    from gymnasium.utils.env_checker import check_env

    check_env(vase_env(learning=False), skip_render_check=True)
    check_env(VASEWrapper(OddImageEnv(), CFG, learning=False, device="cpu"), skip_render_check=True)


def test_sb3_check_env_passes_while_learning():
    env = vase_env(learning_starts=2)
    sb3_check_env(env, warn=True)
    assert env.learner.num_updates > 0


def test_odd_image_size_210x160x3():
    env = VASEWrapper(OddImageEnv((210, 160, 3)), CFG, device="cpu", seed=0, batch_size=4, train_every=2)
    obs, _ = env.reset(seed=0)
    for _ in range(6):
        obs, *_ = env.step(0)
    assert obs.shape == (8,) and np.isfinite(obs).all()
    assert env.learner.num_updates >= 1


def test_shared_learner_is_one_object():
    learner = VASE(CFG, seed=0, device="cpu")
    a = VASEWrapper(sprite_env(), learner=learner, **SMALL)
    b = VASEWrapper(sprite_env(), learner=learner, **SMALL)
    assert a.learner is learner and b.learner is learner
    a.reset(seed=0)
    b.reset(seed=1)
    for _ in range(11):
        a.step(0)
        b.step(0)
    # 12 observations each: updates at the 8th and 12th of each wrapper, all into the one learner
    assert a.get_vase_stats()["wrapper_updates"] == b.get_vase_stats()["wrapper_updates"] == 2
    assert learner.num_updates == 4
    assert a.get_vase_stats()["num_updates"] == b.get_vase_stats()["num_updates"] == 4


def test_spec_records_only_json_and_can_be_remade():
    learner = VASE(CFG, seed=0, device="cpu")
    env = VASEWrapper(sprite_env(), learner=learner, append_mask=True, **SMALL)
    text = env.spec.to_json()  # fails on any non-JSON kwarg
    assert "learner" in text and "VASE(" not in text
    remade = gym.make(env.spec)
    assert isinstance(remade, VASEWrapper) and remade.learner is not learner
    assert remade.observation_space == env.observation_space
    assert remade.learner.config == CFG


def test_save_load_reproduces_encodings_exactly(tmp_path):
    env = vase_env(append_domain=True)
    env.reset(seed=0)
    for _ in range(16):
        env.step(0)
    path = env.save(tmp_path / "vase.pt")
    frames = np.stack([env.unwrapped.reset(seed=s)[0] for s in range(5)])
    loaded = VASEWrapper.load(path, sprite_env(), device="cpu")
    assert loaded.feed.settings() == env.feed.settings() and loaded.learning
    np.testing.assert_array_equal(loaded.encode(frames, batched=True), env.encode(frames, batched=True))
    plain = VASE.load(path, device="cpu")  # the same file is a plain learner checkpoint
    np.testing.assert_array_equal(plain.encode(loaded.feed.prepare(frames)), env.encode(frames, batched=True)[:, :8])
    assert gym.make(loaded.spec).learner.num_updates == env.learner.num_updates  # re-made from learner_path


def test_nan_never_reaches_the_agent():
    env = vase_env(learning=False)
    with torch.no_grad():
        env.learner.encoder.head.weight.fill_(float("nan"))
    obs, _ = env.reset(seed=0)
    assert np.isfinite(obs).all() and env.observation_space.contains(obs)


def test_bad_spaces_and_arguments_raise_documented_errors():
    with pytest.raises(TypeError, match="image"):
        VASEWrapper(gym.make("CartPole-v1"), CFG, device="cpu")
    with pytest.raises(TypeError, match="image_key"):
        VASEWrapper(OddImageEnv((16, 16, 1), as_dict=True), CFG, device="cpu")
    env = VASEWrapper(
        OddImageEnv((16, 16, 1), as_dict=True), CFG, device="cpu", image_key="image", learning=False, latents_only=True
    )
    assert env.reset(seed=0)[0].shape == (8,)
    with pytest.raises(TypeError, match="unknown option"):
        vase_env(train_evry=2)
    with pytest.raises(ValueError, match="train_every"):
        vase_env(train_every=0)
    with pytest.raises(ValueError, match="clip"):
        vase_env(clip=-1.0)
    with pytest.raises(TypeError, match="VASEConfig"):
        VASEWrapper(sprite_env(), config=3.5, device="cpu")
    with pytest.raises(TypeError, match="VecEnv"):
        VecVASE(sprite_env(), CFG, device="cpu")


def test_ppo_trains_through_vase_wrapper():
    env = vase_env()
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(192)
    assert model.num_timesteps >= 192 and env.learner.num_updates > 20


# ------------------------------------------------------------------------------------------
# VecVASE
# ------------------------------------------------------------------------------------------
def small_venv(n=2, max_steps=3, **kwargs):
    return DummyVecEnv([lambda: sprite_env(max_steps=max_steps, **kwargs) for _ in range(n)])


def test_vecvase_encodes_terminal_observations():
    recorder = RecordTerminal(small_venv(2, max_steps=3))
    venv = VecVASE(recorder, CFG, device="cpu", seed=0, **SMALL)
    venv.seed(0)
    obs = venv.reset()
    assert obs.shape == (2, 8) and obs.dtype == np.float32
    seen = 0
    for _ in range(7):
        obs, rewards, dones, infos = venv.step(np.zeros(2, dtype=np.int64))
        for i in recorder.raw_terminal:
            latent = infos[i]["terminal_observation"]
            assert latent.shape == (8,) and latent.dtype == np.float32
            # same encoder; only the batch composition differs (float summation order)
            np.testing.assert_allclose(latent, venv.encode(recorder.raw_terminal[i][None])[0], atol=1e-6)
            seen += 1
    assert seen >= 4
    stats = venv.get_vase_stats()
    assert stats["frames_seen"] == 2 * 8 + seen  # every observation and terminal frame was fed
    assert venv.learner.num_updates >= 1
    raw = venv.get_original_obs()
    assert raw.shape == (2, 32, 32, 1) and raw.dtype == np.uint8
    encoded = venv.encode(raw)  # encode is side-effect free
    assert venv.get_vase_stats()["frames_seen"] == stats["frames_seen"]
    assert venv.learner.num_updates == stats["num_updates"]
    np.testing.assert_array_equal(venv.encode(raw), encoded)


def test_vecvase_training_flag_freezes():
    venv = VecVASE(small_venv(2), CFG, device="cpu", training=False, **SMALL)
    before = params(venv.learner)
    venv.reset()
    for _ in range(10):
        venv.step(np.zeros(2, dtype=np.int64))
    assert same_params(before, params(venv.learner)) and venv.learner.num_updates == 0


def test_vecvase_over_subprocvecenv_trains_ppo_in_the_main_process():
    venv = make_vase_vec_env(
        "vase_rl/SpriteTask-v0",
        2,
        CFG,
        seed=0,
        vec_env_cls="subproc",
        device="cpu",
        env_kwargs=dict(image_size=32),
        batch_size=16,
        train_every=4,
    )
    try:
        model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
        model.learn(256)
        assert model.num_timesteps >= 256
        assert venv.learner.num_updates >= 10  # the main-process learner learnt
        assert venv.env_method("get_wrapper_attr", "spec")[0].id == "vase_rl/SpriteTask-v0"
    finally:
        venv.close()


def test_vecvase_save_load_and_ppo_resume(tmp_path):
    venv = VecVASE(small_venv(2, max_steps=10), CFG, device="cpu", seed=0, append_mask=True, **SMALL)
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    venv.save(tmp_path / "vase.pt")
    model.save(tmp_path / "ppo.zip")
    raw = venv.get_original_obs()

    loaded = VecVASE.load(tmp_path / "vase.pt", small_venv(2, max_steps=10), device="cpu")
    assert loaded.feed.settings() == venv.feed.settings() and loaded.training
    np.testing.assert_array_equal(loaded.encode(raw), venv.encode(raw))
    resumed = PPO.load(tmp_path / "ppo.zip", env=loaded, device="cpu")
    updates = loaded.learner.num_updates
    resumed.learn(64, reset_num_timesteps=False)
    assert resumed.num_timesteps >= 128 and loaded.learner.num_updates > updates

    frozen = VecVASE.load(tmp_path / "vase.pt", small_venv(2), device="cpu", training=False)
    assert not frozen.training
    with pytest.raises(FileNotFoundError):
        VecVASE.load(tmp_path / "missing.pt", small_venv(2))


def test_vecvase_pickles_without_its_venv():
    venv = VecVASE(small_venv(2), CFG, device="cpu", seed=0, **SMALL)
    venv.reset()
    for _ in range(6):
        venv.step(np.zeros(2, dtype=np.int64))
    raw = venv.get_original_obs()
    clone = pickle.loads(pickle.dumps(venv))
    assert clone.venv is None
    clone.set_venv(small_venv(2))
    np.testing.assert_array_equal(clone.encode(raw), venv.encode(raw))
    assert clone.learner is not venv.learner


def test_evaluation_env_shares_a_frozen_learner():
    train = VecVASE(small_venv(2), CFG, device="cpu", seed=0, **SMALL)
    evaluation = train.for_evaluation(small_venv(2))
    assert evaluation.learner is train.learner and not evaluation.training
    before = params(train.learner)
    evaluation.reset()
    for _ in range(10):
        evaluation.step(np.zeros(2, dtype=np.int64))
    assert same_params(before, params(train.learner))

    other = VecVASE(small_venv(2), CFG, device="cpu", seed=1)
    sync_vase(train, other)
    assert other.learner is train.learner and not other.training
    copy_env = VASEWrapper(sprite_env(), CFG, device="cpu")
    sync_vase(train, copy_env, share=False)
    assert copy_env.learner is not train.learner and not copy_env.learning
    assert unwrap_vase(DummyVecEnv([lambda: copy_env])) is None  # DummyVecEnv is not a wrapper stack
    assert unwrap_vase(copy_env) is copy_env


def test_vecvase_with_a_dict_observation_space_and_latents_only():
    venv = VecVASE(
        DummyVecEnv([lambda: OddImageEnv((20, 24, 3), as_dict=True)] * 2),
        CFG,
        device="cpu",
        image_key="image",
        latents_only=True,
        **SMALL,
    )
    obs = venv.reset()
    obs, _, dones, infos = venv.step(np.zeros(2, dtype=np.int64))
    assert obs.shape == (2, 8) and venv.observation_space == spaces.Box(-10.0, 10.0, (8,), np.float32)


# ------------------------------------------------------------------------------------------
# Gymnasium vector twin
# ------------------------------------------------------------------------------------------
def test_gymnasium_vector_wrapper():
    envs = gym.vector.SyncVectorEnv([lambda: sprite_env(max_steps=4) for _ in range(3)])
    wrapped = VASEVectorWrapper(envs, CFG, device="cpu", seed=0, **SMALL)
    assert wrapped.single_observation_space.shape == (8,) and wrapped.observation_space.shape == (3, 8)
    obs, _ = wrapped.reset(seed=0)
    for _ in range(8):
        obs, *_ = wrapped.step(np.zeros(3, dtype=np.int64))
    assert obs.shape == (3, 8) and obs.dtype == np.float32
    assert wrapped.learner.num_updates >= 1
    same_step = gym.vector.SyncVectorEnv([lambda: sprite_env()], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    with pytest.raises(ValueError, match="NEXT_STEP"):
        VASEVectorWrapper(same_step, CFG, device="cpu")


def test_package_exports_wrappers_lazily():
    assert vase_rl.VecVASE is VecVASE and vase_rl.VASEWrapper is VASEWrapper
    assert vase_rl.unwrap_vase is unwrap_vase and vase_rl.sync_vase is sync_vase
    assert vase_rl.agents.VASECallback.__name__ == "VASECallback"
    with pytest.raises(AttributeError):
        vase_rl.NoSuchThing  # noqa: B018


def test_wrapper_checkpoints_are_plain_learner_checkpoints_too(tmp_path):
    learner = VASE(CFG, seed=0, device="cpu")
    plain = learner.save(tmp_path / "plain.pt")
    loaded, settings = load_checkpoint(plain, device="cpu")
    assert settings == {} and loaded.config == CFG
    env = VASEWrapper.load(plain, sprite_env(), device="cpu", batch_size=8)  # defaults for the rest
    assert env.feed.batch_size == 8 and env.feed.train_every == 64  # the default, in frames


def test_wrappers_sharing_a_learner_share_its_window_and_never_shrink_it():
    learner = VASE(CFG.replace(window_size=300), seed=0, device="cpu")
    train = VASEWrapper(sprite_env(), learner=learner, **SMALL)
    frozen = VASEWrapper(sprite_env(), learner=learner, learning=False)  # default window_size
    assert learner.window.capacity == 300 and train.feed.window_size == frozen.feed.window_size == 300
    train.reset(seed=0)
    for _ in range(5):
        train.step(0)
    assert frozen.get_vase_stats()["window_frames"] == 6  # one window, seen through both wrappers
    VASEWrapper(sprite_env(), learner=learner, window_size=64)  # an explicit size resizes it
    assert learner.window.capacity == 64 and len(learner.window) == 6


# ------------------------------------------------------------------------------------------
# issue 12: one test per finding
# ------------------------------------------------------------------------------------------
def grey_venv(n=2, **kwargs):
    return DummyVecEnv([lambda: OddImageEnv((20, 20, 1), **kwargs) for _ in range(n)])


def test_finding1_frame_stacks_below_the_wrapper_are_refused_or_encoded_per_frame():
    from gymnasium.wrappers import FrameStackObservation
    from stable_baselines3.common.vec_env import VecFrameStack

    with pytest.raises(TypeError, match=r"VecFrameStack.*frame_stack=3"):
        VecVASE(VecFrameStack(grey_venv(), 3), CFG, device="cpu")
    with pytest.raises(TypeError, match="FrameStackObservation"):
        VASEWrapper(FrameStackObservation(OddImageEnv((20, 20)), 3), CFG, device="cpu")
    venv = VecVASE(VecFrameStack(grey_venv(), 3), CFG, device="cpu", seed=0, frame_stack=3, **SMALL)
    assert venv.observation_space.shape == (3 * 8,)
    obs = venv.reset()
    for _ in range(3):
        obs, *_ = venv.step(np.zeros(2, dtype=np.int64))
    raw = venv.get_original_obs()  # (2, 20, 20, 3): three grey frames per env
    single = VecVASE(grey_venv(), learner=venv.learner, training=False)
    expected = np.concatenate([single.encode(raw[..., j : j + 1]) for j in range(3)], axis=1)
    np.testing.assert_allclose(obs, expected, atol=1e-6)  # each frame encoded alone, oldest first
    # only the newest frame of each stack goes to the learner: 2 frames per step
    assert venv.get_vase_stats()["frames_seen"] == 2 * 4


def test_finding4_dict_entries_pass_through_beside_the_latents():
    env = VASEWrapper(OddImageEnv((16, 16, 1), as_dict=True), CFG, device="cpu", seed=0, image_key="image", **SMALL)
    assert isinstance(env.observation_space, spaces.Dict)
    assert set(env.observation_space.spaces) == {"latents", "step"}
    assert env.observation_space["step"] == spaces.Discrete(6)
    obs, _ = env.reset(seed=0)
    for t in range(1, 4):
        obs, *_ = env.step(0)
        assert obs["step"] == t and obs["latents"].shape == (8,) and env.observation_space.contains(obs)
    only = VASEWrapper(
        OddImageEnv((16, 16, 1), as_dict=True), CFG, device="cpu", image_key="image", keep_keys=[], learning=False
    )
    assert set(only.observation_space.spaces) == {"latents"}
    with pytest.raises(ValueError, match="keep_keys"):
        VASEWrapper(OddImageEnv((16, 16, 1), as_dict=True), CFG, device="cpu", image_key="image", keep_keys=["nope"])
    with pytest.raises(ValueError, match="Dict"):
        vase_env(latents_only=True)

    recorder = RecordTerminal(DummyVecEnv([lambda: OddImageEnv((16, 16, 1), max_steps=2, as_dict=True)] * 2))
    venv = VecVASE(recorder, CFG, device="cpu", seed=0, image_key="image", **SMALL)
    obs = venv.reset()
    assert set(obs) == {"latents", "step"} and obs["latents"].shape == (2, 8)
    np.testing.assert_array_equal(obs["step"], [0, 0])
    _, _, dones, infos = venv.step(np.zeros(2, dtype=np.int64))
    obs, _, dones, infos = venv.step(np.zeros(2, dtype=np.int64))
    assert dones.all()
    for i in range(2):
        terminal = infos[i]["terminal_observation"]
        assert terminal["step"] == 2 and terminal["latents"].shape == (8,)
        np.testing.assert_allclose(
            terminal["latents"], venv.encode({"image": recorder.raw_terminal[i]["image"][None]})[0], atol=1e-6
        )
    model = PPO("MultiInputPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(32)
    assert model.num_timesteps >= 32

    vector = VASEVectorWrapper(
        gym.vector.SyncVectorEnv([lambda: OddImageEnv((16, 16, 1), as_dict=True)] * 3),
        CFG,
        device="cpu",
        image_key="image",
    )
    obs, _ = vector.reset(seed=0)
    obs, *_ = vector.step(np.zeros(3, dtype=np.int64))
    assert obs["latents"].shape == (3, 8) and list(obs["step"]) == [1, 1, 1]
    assert vector.observation_space.contains(obs)


def test_finding7_a_learning_setter_on_every_wrapper_and_a_freeze_of_the_whole_stack():
    from gymnasium.wrappers import NormalizeObservation
    from stable_baselines3.common.vec_env import VecNormalize

    from vase_rl.wrappers import freeze, set_stack_training

    venv = VecVASE(small_venv(2), CFG, device="cpu", seed=0, **SMALL)
    venv.learning = False  # the setter exists (it raised AttributeError before)
    assert not venv.training and not venv.learning
    venv.learning = True
    stack = VecNormalize(venv, norm_reward=False)
    reached = freeze(stack)
    assert reached == ["VecNormalize.training", "VecVASE.training"]
    assert not stack.training and not venv.training
    before, rms = params(venv.learner), stack.obs_rms.mean.copy()
    stack.reset()
    for _ in range(10):
        stack.step(np.zeros(2, dtype=np.int64))
    assert same_params(before, params(venv.learner)) and np.array_equal(rms, stack.obs_rms.mean)
    assert set_stack_training(stack, True) == reached and venv.training

    # VASEWrapper sub-envs and Gymnasium's normaliser inside an SB3 VecEnv
    learner = VASE(CFG, seed=0, device="cpu")
    sub = DummyVecEnv([lambda: NormalizeObservation(VASEWrapper(sprite_env(), learner=learner, **SMALL))] * 2)
    reached = freeze(sub)
    assert "VASEWrapper.learning (2 sub-envs)" in reached and any("NormalizeObservation" in r for r in reached)
    assert not any(sub.env_method("get_wrapper_attr", "learning"))
    # the Gymnasium vector twin
    vector = VASEVectorWrapper(gym.vector.SyncVectorEnv([lambda: sprite_env()] * 2), CFG, device="cpu")
    vector.learning = False
    assert not vector.learning and freeze(vector) == ["VASEVectorWrapper.learning"]


def test_finding8_set_venv_checks_the_frames_and_original_obs_is_a_copy():
    venv = VecVASE(small_venv(2), CFG, device="cpu", seed=0, **SMALL)
    venv.reset()
    clone = pickle.loads(pickle.dumps(venv))
    with pytest.raises(ValueError, match="set_venv"):
        clone.set_venv(small_venv(2, image_size=64))  # other frame size: refused now, not at reset
    clone.set_venv(small_venv(2))
    raw = venv.get_original_obs()
    raw[...] = 0
    assert venv.get_original_obs().any() and not np.shares_memory(raw, venv.get_original_obs())


def test_finding8_a_loaded_learner_refuses_frames_of_another_size(tmp_path):
    venv = VecVASE(small_venv(2), CFG, device="cpu", seed=0, **SMALL)
    venv.save(tmp_path / "vase.pt")
    with pytest.raises(ValueError, match="trained on raw images of shape"):
        VecVASE.load(tmp_path / "vase.pt", small_venv(2, image_size=64), device="cpu")


def test_finding9_the_learner_seed_comes_from_the_agent_seed():
    def run(seed):
        venv = VecVASE(small_venv(2, max_steps=10), CFG, device="cpu", **SMALL)  # no seed=
        model = PPO("MlpPolicy", venv, n_steps=16, batch_size=16, n_epochs=1, seed=seed, device="cpu")
        assert venv.learner.seed == seed
        model.learn(32)
        return venv

    a, b, c = run(7), run(7), run(8)
    assert a.learner.num_updates > 0 and same_params(params(a.learner), params(b.learner))
    assert not same_params(params(a.learner), params(c.learner))
    # an explicit seed, a shared or a loaded learner are never re-seeded; nor one that has learnt
    explicit = VecVASE(small_venv(2), CFG, device="cpu", seed=3)
    explicit.seed(11)
    assert explicit.learner.seed == 3
    a.seed(99)
    assert a.learner.seed == 7
    # a single env: the first seeded reset
    env = VASEWrapper(sprite_env(), CFG, device="cpu", **SMALL)
    env.reset(seed=5)
    assert env.learner.seed == 5
    env.reset(seed=6)  # it has seen a frame: kept
    assert env.learner.seed == 5
    vector = VASEVectorWrapper(gym.vector.SyncVectorEnv([lambda: sprite_env()] * 2), CFG, device="cpu")
    vector.reset(seed=[4, 5])
    assert vector.learner.seed == 4
