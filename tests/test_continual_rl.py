"""Drift-controlled online learning (issue 11): rollout-boundary updates, the slow (EMA) encoder,
pretraining, freeze windows, train_every in frames, drift measurement."""

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
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper, VecNormalize
from vase_rl.agents import VASECallback
from vase_rl.agents.drift import mean_kl

from vase_rl import VASE, VASEConfig
from vase_rl.wrappers import LatentFeed, LearningSchedule, SlowEncoder, VASEWrapper, VecVASE, sync_vase

CFG = VASEConfig.preset("cpu32", image_shape=(1, 16, 16), width=0.25, latent_dim=8)
SMALL = dict(batch_size=8, train_every=8)


def sprite_venv(n=2, max_steps=10):
    return DummyVecEnv(
        [lambda: gym.make("vase_rl/SpriteTask-v0", image_size=32, max_steps=max_steps) for _ in range(n)]
    )


def encoder_vector(learner):
    return torch.cat([p.detach().reshape(-1) for p in learner.encoder.parameters()]).clone()


class NeverEnds(gym.Env):
    """Random 16x16 frames, episodes that never end (frame counts are then exact)."""

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = spaces.Box(0, 255, (16, 16, 1), np.uint8)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.integers(0, 256, (16, 16, 1), dtype=np.uint8), {}

    def step(self, action):
        return self.np_random.integers(0, 256, (16, 16, 1), dtype=np.uint8), 0.0, False, False, {}


class CountSteps(VecEnvWrapper):
    """Counts the vector steps that pass below VecVASE."""

    def __init__(self, venv):
        super().__init__(venv)
        self.steps = 0

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        self.steps += 1
        return self.venv.step_wait()


class Recorder(BaseCallback):
    """Per rollout: the encoder weights at every agent step; at each rollout start, whether the
    agent's pending observation is the current encoder's (through VecNormalize)."""

    def __init__(self, vec, norm=None):
        super().__init__()
        self.vec, self.norm = vec, norm
        self.rollouts: list[list[torch.Tensor]] = []
        self.first_obs_fresh: list[bool] = []

    def _on_rollout_start(self):
        self.rollouts.append([])
        if self.norm is not None and self.vec.old_obs is not None:
            expected = self.norm.normalize_obs(self.vec.encode(self.vec.old_obs))
            self.first_obs_fresh.append(bool(np.allclose(self.model._last_obs, expected, atol=1e-6)))

    def _on_step(self):
        self.rollouts[-1].append(encoder_vector(self.vec.learner))
        return True


# ------------------------------------------------------------------------------------------
# rollout-boundary scheduling
# ------------------------------------------------------------------------------------------
def run_ppo(update_at, steps=96):
    vec = VecVASE(sprite_venv(), CFG, device="cpu", seed=0, update_at=update_at, **SMALL)
    norm = VecNormalize(vec, norm_obs=True, norm_reward=False)
    model = PPO("MlpPolicy", norm, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu")
    recorder = Recorder(vec, norm)
    vase_cb = VASECallback()
    model.learn(steps, callback=CallbackList([recorder, vase_cb]))
    return vec, recorder, vase_cb


def test_no_encoder_change_inside_a_rollout_and_the_first_observation_is_fresh():
    vec, recorder, vase_cb = run_ppo("auto")
    assert vec.feed.schedule.mode == "step"  # released at the end of learn()
    rollouts = recorder.rollouts
    assert len(rollouts) == 3
    for weights in rollouts:  # one encoder per rollout
        assert all(torch.equal(weights[0], w) for w in weights[1:])
    for before, after in zip(rollouts, rollouts[1:]):  # ... and it did learn between them
        assert not torch.equal(before[0], after[0])
    # 16 steps x 2 envs = 32 frames (+ terminal frames) per rollout, one update per 8 frames
    ran = [n for _, n in vase_cb.boundary_updates]
    assert all(n >= 4 for n in ran) and sum(ran) == vec.learner.num_updates
    assert recorder.first_obs_fresh and all(recorder.first_obs_fresh)


def test_step_mode_changes_the_encoder_inside_rollouts():
    vec, recorder, vase_cb = run_ppo("step")
    changed = [any(not torch.equal(w[0], x) for x in w[1:]) for w in recorder.rollouts]
    assert all(changed) and all(n == 0 for _, n in vase_cb.boundary_updates)


def test_end_rollout_is_the_public_boundary_hook():
    vec = VecVASE(sprite_venv(), CFG, device="cpu", seed=0, update_at="rollout", **SMALL)
    vec.reset()
    before = encoder_vector(vec.learner)
    for _ in range(12):  # 24 frames (+ terminal ones): 3 rounds due, none run
        vec.step(np.array([0, 0]))
    assert torch.equal(before, encoder_vector(vec.learner)) and vec.learner.num_updates == 0
    assert vec.get_vase_stats()["pending_updates"] >= 3
    ran = vec.end_rollout()
    assert ran >= 3 and vec.learner.num_updates == ran and vec.end_rollout() == 0
    assert not torch.equal(before, encoder_vector(vec.learner))


def test_rollout_mode_without_boundaries_warns_and_still_learns():
    vec = VecVASE(sprite_venv(), CFG, device="cpu", seed=0, update_at="rollout", window_size=16, **SMALL)
    vec.reset()
    with pytest.warns(RuntimeWarning, match="end_rollout"):
        for _ in range(40):  # > 4 windows of frames without a boundary
            vec.step(np.array([0, 0]))
    assert vec.learner.num_updates > 0


def test_updates_due_at_a_reset_wait_for_the_next_step():
    env = VASEWrapper(NeverEnds(), CFG, device="cpu", seed=0, batch_size=2, train_every=1, learning_starts=0)
    env.reset(seed=0)
    assert env.learner.num_updates == 0 and env.feed.schedule.pending == 1
    env.step(0)
    assert env.learner.num_updates == 2


# ------------------------------------------------------------------------------------------
# train_every in frames
# ------------------------------------------------------------------------------------------
def test_train_every_in_frames_gives_the_same_updates_for_1_and_8_envs():
    single = VASEWrapper(NeverEnds(), CFG, device="cpu", seed=0, batch_size=8, train_every=16, learning_starts=16)
    single.reset(seed=0)
    for _ in range(103):
        single.step(0)
    vector = VecVASE(
        DummyVecEnv([NeverEnds for _ in range(8)]), CFG, device="cpu", seed=0, batch_size=8, train_every=16
    )
    vector.reset()
    for _ in range(12):
        vector.step(np.zeros(8, dtype=int))
    for env in (single, vector):
        assert env.get_vase_stats()["frames_seen"] == 104
    assert single.learner.num_updates == vector.learner.num_updates == 104 // 16


@pytest.mark.parametrize("chunk", [1, 3, 8, 40])
def test_update_rounds_do_not_depend_on_how_frames_arrive(chunk):
    schedule = LearningSchedule(train_every=10, learning_starts=25)
    due, seen = 0, 0
    while seen < 200:
        n = min(chunk, 200 - seen)
        due += schedule.record(n)
        seen += n
    assert due == 200 // 10 - 2  # multiples 30, 40, ..., 200 (the first at or after 25 frames)


def test_steps_unit_keeps_the_old_rule_and_old_checkpoints_load_with_it(tmp_path):
    vec = VecVASE(sprite_venv(), CFG, device="cpu", seed=0, train_every=1, train_every_unit="steps", batch_size=8)
    vec.reset()
    for _ in range(10):
        vec.step(np.array([0, 0]))
    assert vec.learner.num_updates == 10 - 2  # one per step once 8 frames were seen (reset + 3 steps)
    old = vec.save(tmp_path / "vase.pt")
    state = torch.load(old, weights_only=False)
    settings = state["extra"]["vase_rl_wrapper"]["settings"]
    del settings["train_every_unit"]  # as written before train_every counted frames
    torch.save(state, old)
    loaded = VecVASE.load(old, sprite_venv(), device="cpu")
    assert loaded.feed.schedule.train_every_unit == "steps" and loaded.feed.train_every == 1


# ------------------------------------------------------------------------------------------
# the slow encoder
# ------------------------------------------------------------------------------------------
def test_slow_encoder_moves_by_its_rate_and_is_what_the_agent_reads():
    learner = VASE(CFG, seed=0, device="cpu")
    feed = LatentFeed(
        spaces.Box(0, 255, (16, 16, 1), np.uint8),
        learner,
        batch_size=4,
        train_every=4,
        learning_starts=0,
        slow_encoder_rate=0.25,
    )
    rng = np.random.default_rng(0)
    frames = feed.prepare(rng.integers(0, 256, (4, 16, 16, 1), dtype=np.uint8))
    slow_before = [p.detach().clone() for p in feed.slow.encoder.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(slow_before, learner.encoder.parameters()))
    feed.learn_from(frames)  # one update
    assert learner.num_updates == 1 and feed.slow.updates == 1
    for old, slow, fast in zip(slow_before, feed.slow.encoder.parameters(), learner.encoder.parameters()):
        torch.testing.assert_close(slow, old + 0.25 * (fast - old), rtol=0, atol=1e-6)
        assert not torch.equal(slow, fast)
    mu, _, _ = feed.slow.encoder(frames)
    expected = (mu * torch.as_tensor(learner.latent_mask, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(feed.encode(frames), expected, atol=1e-6)
    with pytest.raises(ValueError, match="slow_encoder_rate"):
        SlowEncoder(learner, 0.0)


def test_slow_encoder_is_saved_shared_for_evaluation_and_fingerprinted(tmp_path):
    vec = VecVASE(sprite_venv(), CFG, device="cpu", seed=0, slow_encoder_rate=0.1, **SMALL)
    vec.reset()
    for _ in range(20):
        vec.step(np.array([1, 2]))
    raw = vec.get_original_obs()
    evaluation = vec.for_evaluation(sprite_venv())
    assert evaluation.feed.slow is vec.feed.slow
    np.testing.assert_array_equal(evaluation.encode(raw), vec.encode(raw))
    fast = VecVASE(sprite_venv(), learner=vec.learner, device="cpu", training=False)
    assert not np.allclose(fast.encode(raw), vec.encode(raw))  # the slow copy lags the fast one
    assert fast.representation_fingerprint()["weights_sha256"] != vec.representation_fingerprint()["weights_sha256"]
    loaded = VecVASE.load(vec.save(tmp_path / "vase.pt"), sprite_venv(), device="cpu")
    np.testing.assert_array_equal(loaded.encode(raw), vec.encode(raw))
    assert loaded.feed.schedule.frames_seen == vec.feed.schedule.frames_seen
    assert loaded.representation_fingerprint() == vec.representation_fingerprint()


def test_slow_mask_fades_a_masked_latent_at_the_slow_encoders_rate():
    learner = VASE(CFG, seed=0, device="cpu")
    slow = SlowEncoder(learner, 0.25, smooth_mask=True)
    ones = torch.ones(CFG.latent_dim)
    torch.testing.assert_close(slow.mask, ones, rtol=0, atol=0)
    for _ in range(50):  # an unchanged mask stays exactly as it is
        slow.follow(learner)
    assert torch.equal(slow.mask, ones)
    # the learner masks latents 1 and 3: each step moves the agent's mask 1/4 of the way to 0
    learner._mask = torch.tensor([True, False, True, False] + [True] * (CFG.latent_dim - 4))
    slow.follow(learner)
    slow.follow(learner)
    expected = ones.clone()
    expected[[1, 3]] = 0.75 * 0.75  # 1 -> 0.75 -> 0.5625
    torch.testing.assert_close(slow.mask, expected, rtol=0, atol=1e-7)
    # and the latents the agent reads are the slow encoder's means times that mask
    feed = LatentFeed(spaces.Box(0, 255, (16, 16, 1), np.uint8), learner, slow_encoder_rate=0.25, slow_mask=True)
    feed.slow = slow
    frames = feed.prepare(np.random.default_rng(0).integers(0, 256, (4, 16, 16, 1), dtype=np.uint8))
    mu, _, _ = slow.encoder(frames)
    np.testing.assert_allclose(feed.encode(frames), (mu * expected).numpy(), atol=1e-6)
    # saved with the wrapper's state; a re-sync takes the learner's mask as it is
    copy = SlowEncoder(learner, 0.25, smooth_mask=True)
    copy.load_state_dict(slow.state_dict())
    assert torch.equal(copy.mask, slow.mask)
    copy.sync(learner)
    assert torch.equal(copy.mask, learner._mask.float())
    # without smoothing the mask in force is the learner's, unchanged
    assert SlowEncoder(learner, 0.25).mask is None
    with pytest.raises(ValueError, match="slow_encoder_rate"):
        LatentFeed(spaces.Box(0, 255, (16, 16, 1), np.uint8), learner, slow_mask=True)


def test_slow_mask_survives_save_load_and_is_shared_for_evaluation(tmp_path):
    vec = VecVASE(sprite_venv(), CFG, device="cpu", seed=0, slow_encoder_rate=0.1, slow_mask=True, **SMALL)
    vec.reset()
    for _ in range(20):
        vec.step(np.array([1, 2]))
    raw = vec.get_original_obs()
    before = vec.encode(raw)
    vec.feed.slow.mask[0] = 0.5  # as if the learner had masked latent 0 a few updates ago
    after = vec.encode(raw)
    assert np.abs(before[:, 0]).max() > 0
    np.testing.assert_allclose(after[:, 0], 0.5 * before[:, 0], rtol=1e-6)
    np.testing.assert_array_equal(after[:, 1:], before[:, 1:])
    assert vec.for_evaluation(sprite_venv()).feed.slow is vec.feed.slow
    fingerprint = vec.representation_fingerprint()
    assert fingerprint["output"]["slow_mask"] is True
    path = vec.save(tmp_path / "vase.pt")
    loaded = VecVASE.load(path, sprite_venv(), device="cpu")
    assert loaded.feed.slow.smooth_mask and float(loaded.feed.slow.mask[0]) == 0.5
    np.testing.assert_array_equal(loaded.encode(raw), vec.encode(raw))
    assert loaded.representation_fingerprint() == fingerprint
    # the smoothed mask is part of what the agent sees: the fingerprint's digest follows it
    loaded.feed.slow.mask[0] = 0.25
    assert loaded.representation_fingerprint()["weights_sha256"] != fingerprint["weights_sha256"]
    # a pickled wrapper (SubprocVecEnv, Ray) and a frozen copy for evaluation keep it
    pickled = pickle.loads(pickle.dumps(vec))
    assert pickled.feed.slow.smooth_mask and float(pickled.feed.slow.mask[0]) == 0.5
    frozen = VecVASE(sprite_venv(), CFG, device="cpu", seed=1, slow_encoder_rate=0.1, slow_mask=True, **SMALL)
    sync_vase(vec, frozen, share=False)
    assert frozen.feed.slow is not vec.feed.slow and torch.equal(frozen.feed.slow.mask, vec.feed.slow.mask)
    # reading the fast encoder instead (slow_encoder_rate=None) drops the smoothing with it
    fast = VecVASE.load(path, sprite_venv(), device="cpu", slow_encoder_rate=None)
    assert fast.feed.slow is None and "slow_mask" not in fast.feed.settings()
    assert vec.for_evaluation(sprite_venv(), slow_encoder_rate=None).feed.slow is None
    with pytest.raises(ValueError, match="slow_encoder_rate"):
        VecVASE.load(path, sprite_venv(), device="cpu", slow_encoder_rate=None, slow_mask=True)


def test_slow_mask_is_kept_when_the_first_reset_reseeds_the_learner():
    # no seed given: the first reset(seed=...) rebuilds the untouched learner with the env's seed
    env = gym.make("vase_rl/SpriteTask-v0", image_size=32)
    wrapper = VASEWrapper(env, CFG, device="cpu", slow_encoder_rate=0.1, slow_mask=True, **SMALL)
    old = wrapper.learner
    wrapper.reset(seed=3)
    assert wrapper.learner is not old and wrapper.learner.seed == 3
    assert wrapper.feed.slow.smooth_mask and wrapper.feed.settings()["slow_mask"] is True


# ------------------------------------------------------------------------------------------
# pretraining and freezing
# ------------------------------------------------------------------------------------------
class FirstStep(BaseCallback):
    def __init__(self, counter, vec):
        super().__init__()
        self.counter, self.vec, self.seen = counter, vec, None

    def _on_step(self):
        if self.seen is None:
            self.seen = (self.counter.steps, self.vec.learner.num_updates, self.vec.feed.schedule.pretrained_frames)
        return True


def test_pretraining_consumes_its_frames_before_the_agents_first_step():
    counter = CountSteps(sprite_venv())
    vec = VecVASE(
        counter, CFG, device="cpu", seed=0, batch_size=8, train_every=1000, pretrain_frames=64, pretrain_updates=5
    )
    model = PPO("MlpPolicy", vec, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu")
    first = FirstStep(counter, vec)
    model.learn(32, callback=first)
    # 64 frames from 2 envs = 32 vector steps of pretraining, then the agent's first step
    assert first.seen == (32 + 1, 5, 64)
    assert counter.steps == 32 + 16 and model.num_timesteps == 32
    # a frozen wrapper does not pretrain, and a loaded one does not pretrain again
    frozen = VecVASE(sprite_venv(), CFG, device="cpu", seed=0, training=False, pretrain_frames=64)
    frozen.reset()
    assert frozen.learner.num_updates == 0 and frozen.feed.schedule.pretrain_due is False


def test_pretraining_with_a_given_policy_on_a_single_env():
    actions = []

    def policy(observation):
        actions.append(observation.shape)
        return 0

    env = VASEWrapper(NeverEnds(), CFG, device="cpu", seed=0, batch_size=4, window_size=6)
    report = env.pretrain(frames=10, policy=policy, updates=3)
    assert env.learner.window.capacity == 6  # every pretraining frame was kept, then the window shrank back
    assert report == {"frames": 10, "steps": 10, "updates": 3, "num_domains": 1, "window": "all frames"}
    assert actions == [(16, 16, 1)] * 10 and env.feed.frames_seen == 11  # 1 reset + 10 steps


def test_freeze_after_counts_frames_but_stops_learning():
    env = VASEWrapper(
        NeverEnds(), CFG, device="cpu", seed=0, batch_size=4, train_every=4, learning_starts=4, freeze_after=20
    )
    env.reset(seed=0)
    for _ in range(40):
        env.step(0)
    # frames 0..19 learn (updates at 4, 8, ..., 20: the batch that crosses 20 started at frame 19)
    assert env.learner.num_updates == 5 and env.feed.frames_seen == 41
    assert env.get_vase_stats()["learning_active"] is False and len(env.learner.window) == 20


def test_learning_windows_are_validated():
    with pytest.raises(ValueError, match="not both"):
        LearningSchedule(freeze_after=10, learning_windows=[(0, 5)])
    with pytest.raises(ValueError, match="empty"):
        LearningSchedule(learning_windows=[(10, 5)])
    with pytest.raises(ValueError, match="overlap"):
        LearningSchedule(learning_windows=[(0, 10), (5, 20)])
    with pytest.raises(ValueError, match="update_at"):
        LearningSchedule(update_at="episode")
    schedule = LearningSchedule(learning_windows=[(0, 10), (30, None)])
    assert [schedule.learns_at(f) for f in (0, 9, 10, 29, 30, 10**9)] == [True, True, False, False, True, True]


# ------------------------------------------------------------------------------------------
# drift measurement
# ------------------------------------------------------------------------------------------
def test_mean_kl_matches_torch_distributions():
    p_logits = torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, -1.0]])
    q_logits = torch.tensor([[0.5, 0.5, 0.0], [2.0, 0.0, 0.0]])
    p = CategoricalDistribution(3).proba_distribution(p_logits)
    p_copy = CategoricalDistribution(3).proba_distribution(p_logits)
    q = CategoricalDistribution(3).proba_distribution(q_logits)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=p_logits), torch.distributions.Categorical(logits=q_logits)
    ).mean()
    assert mean_kl(p, q) == pytest.approx(float(expected), rel=1e-6)
    assert mean_kl(p, p_copy) == pytest.approx(0.0, abs=1e-7)


def test_drift_is_zero_when_nothing_changes_and_separates_the_encoder_otherwise():
    def run(training):
        vec = VecVASE(sprite_venv(), CFG, device="cpu", seed=0, training=training, **SMALL)
        norm = VecNormalize(vec, norm_obs=True, norm_reward=False)
        norm.training = False  # frozen statistics
        model = PPO(
            "MlpPolicy",
            norm,
            n_steps=16,
            batch_size=32,
            n_epochs=1,
            learning_rate=0.0,
            seed=0,
            device="cpu",
            policy_kwargs=dict(ortho_init=False),  # an action head that depends on its input from the start
        )
        callback = VASECallback(measure_drift=True, drift_sample=32)
        model.learn(128, callback=callback)  # 4 rollouts of 16 steps x 2 envs: 3 measurements
        return callback.drift_meter.history

    frozen = run(False)
    assert len(frozen) == 3
    for row in frozen:  # frozen encoder and statistics, learning rate 0: nothing moves
        assert row["encoder_kl"] == 0.0 and row["latent_change"] == 0.0 and row["encoder_value_shift"] == 0.0
        assert row["policy_kl"] == pytest.approx(0.0, abs=1e-9) and row["normaliser_kl"] == 0.0
    learning = run(True)
    assert all(row["encoder_kl"] > 1e-7 and row["latent_change"] > 0 for row in learning)
    assert all(row["policy_kl"] == pytest.approx(0.0, abs=1e-9) for row in learning)  # lr 0: only the encoder


# ------------------------------------------------------------------------------------------
# the continual-RL benchmark
# ------------------------------------------------------------------------------------------
def test_phase_metrics_on_a_known_curve():
    from vase_rl.agents.continual import ContinualSettings, phase_metrics

    settings = ContinualSettings(phases=3, phase_steps=100, n_envs=1, early_steps=20, recover_window=10, bin_steps=10)
    # A: returns climb to 1.0; B: start at 0 and reach 0.95 from step 150; A again: start at 0.5.
    # Step 100 is the switching step: it already shows B (phase 1), as step 200 shows A again.
    records = [(s, 1.0 if s >= 50 else 0.2, 0, 0) for s in range(0, 100, 2)]
    records += [(s, 0.95 if s >= 150 else 0.0, 1, 1) for s in range(100, 200, 2)]
    records += [(s, 0.5 if s < 230 else 1.0, 0, 2) for s in range(200, 301, 2)]
    out = phase_metrics(records, settings)
    a1, b, a2 = out["per_phase"]
    assert a1["final_return"] == 1.0 and a1["early_return"] == pytest.approx(0.2)
    assert b["early_return"] == 0.0 and b["true_domains"] == [1] and a2["true_domains"] == [0]
    # recovery: the episodes of the trailing 10 steps average >= 0.9 x 1.0, checked every 10 steps
    assert b["steps_to_recover"] == 60 and a2["steps_to_recover"] == 40 and a1["steps_to_recover"] == 60
    back = out["returns_to_a"][0]
    assert back["phase"] == 2 and back["forgetting"] == pytest.approx(0.5) and back["retention"] == pytest.approx(0.5)


def test_steps_to_a_return_need_a_full_window_of_the_agents_own_episodes():
    from vase_rl.agents.continual import curve_steps_to

    # the first bin after the agent starts holds only the episodes that ended early (successes)
    curve = [[10, 2.0, 5], [20, 0.0, 5], [30, 0.0, 5], [40, 1.6, 5], [50, 1.6, 5]]
    assert curve_steps_to(curve, 0, 100, 1.5, window=10) == 10  # a window of one bin: no protection
    # window 20: bin 10 alone is no full window; (0, 20] averages 1.0, (20, 40] 0.8, (30, 50] 1.6
    assert curve_steps_to(curve, 0, 100, 1.5, window=20) == 50
    # after pretraining the agent starts at 30: windows must start there
    late = [[c[0] + 30, *c[1:]] for c in curve]
    assert curve_steps_to(late, 0, 100, 1.5, window=20) == 40  # fooled: (20, 40] holds one bin, 2.0
    assert curve_steps_to(late, 0, 100, 1.5, window=20, data_start=30) == 80  # (60, 80]: 1.6
    assert curve_steps_to(late, 0, 100, 0.5, window=20, data_start=30) == 50  # (30, 50]: 1.0


def test_single_domain_target_counts_steps_to_the_pixels_final_return():
    from vase_rl.agents.continual import ContinualSettings, binned_curve, phase_metrics, summarise

    settings = ContinualSettings(phases=1, phase_steps=100, n_envs=1, early_steps=20, recover_window=10, bin_steps=10)

    def result(arm, seed, good_from, good=1.0):
        records = [(s, good if s >= good_from else 0.0, 0, 0) for s in range(0, 100, 2)]
        curve = binned_curve(records, settings.total_steps, settings.bin_steps)
        phases = phase_metrics(records, settings)
        return {"arm": arm, "seed": seed, "curve": curve, "phases": phases, "steps_per_second": 1.0}

    # pixels end at 1.0 and first fill a 10-step bin with it at step 70; VASE at 30 and 50
    results = [result("pixels", 0, 60), result("vase", 0, 20), result("vase", 1, 40)]
    single = summarise(results, settings)["targets"]["single_domain"]
    assert single["bar"] == 1.0 and single["pixels"] == [70] and single["vase"] == [30, 50]
    assert single["ratio"] == pytest.approx(40 / 70) and single["met"] is False  # 0.57x > 0.5x
    # a seed that never reaches the bar counts as the whole phase and the target is missed
    results = [result("pixels", 0, 60), result("vase", 0, 20), result("vase", 1, 0, good=0.5)]
    single = summarise(results, settings)["targets"]["single_domain"]
    assert single["vase"] == [30, None] and single["ratio"] == pytest.approx(65 / 70) and not single["met"]
    results = [result("pixels", 0, 60), result("vase", 0, 20), result("vase", 1, 30)]
    single = summarise(results, settings)["targets"]["single_domain"]
    assert single["ratio"] == pytest.approx(35 / 70) and single["met"] is True


@pytest.mark.slow
def test_benchmark_quick_mode_writes_every_field(tmp_path):
    import json

    from vase_rl.agents.continual import main

    out, figure = tmp_path / "c_{task}.json", tmp_path / "c_{task}.png"
    assert main(["--quick", "--out", str(out), "--figure", str(figure)]) == 0
    report = json.loads((tmp_path / "c_sprites_quick.json").read_text())
    assert (tmp_path / "c_sprites_quick.png").stat().st_size > 0
    for key in ("settings", "arms", "seeds", "results", "summary", "provenance", "json", "figure"):
        assert key in report, key
    assert report["provenance"]["command"] and report["provenance"]["seeds"] == [0]
    assert [r["arm"] for r in report["results"]] == ["vase", "cci_vae", "pixels", "factors"]
    for result in report["results"]:
        for key in ("steps", "agent_steps", "pretrain_steps", "steps_per_second", "curve", "phases", "episodes"):
            assert key in result, key
        assert result["cpu_seconds"] > 0 and result["steps_per_cpu_second"] == pytest.approx(
            result["steps"] / result["cpu_seconds"]
        )
        assert result["steps"] == 3 * 1024
        rows = result["phases"]["per_phase"]
        assert [r["domain"] for r in rows] == ["shapes", "digits", "shapes"]
        for row in rows:
            assert set(row) >= {"final_return", "early_return", "steps_to_recover", "true_domains"}
        assert rows[1]["true_domains"] == [1] and result["phases"]["returns_to_a"][0]["phase"] == 2
        if result["arm"] in ("vase", "cci_vae"):
            assert result["pretrain_steps"] == 256 and result["agent_steps"] == 3 * 1024 - 256
            assert set(result["drift"]) >= {"encoder_kl_median", "policy_kl_median", "encoder_value_shift_median"}
            view = result["representation"]["per_phase"]
            assert set(view[1]) >= {"inferred", "domain_at_end", "switch_delay", "switch_detected", "latents"}
            assert "recognised_as_a" in view[2]
    view = report["summary"]["arms"]["vase"]["representation"]
    assert [v["domain"] for v in view] == ["shapes", "digits", "shapes"] and len(view[1]["switch_delay"]) == 1
    targets = report["summary"]["targets"]
    assert set(targets["single_domain"]) >= {"bar", "vase", "pixels", "ratio", "met"}
    for key in (
        "retention",
        "retention_met",
        "forgetting_vs_pixels",
        "forgetting_vs_cci_vae",
        "recover_b",
        "speed_met",
    ):
        assert key in targets, key


def test_cli_passes_every_argument_to_the_benchmark():
    from vase_rl.cli import build_parser

    args = build_parser().parse_args(["continual-rl", "--quick", "--arms", "vase,pixels", "--seeds", "3"])
    assert args.args == ["--quick", "--arms", "vase,pixels", "--seeds", "3"]
    assert args.func.__name__ == "_cmd_continual_rl"


def test_full_settings_smooth_the_mask_unless_the_slow_encoder_is_turned_off(tmp_path):
    """The VASE arms read a slowly moving mask by default; `--vase slow_encoder_rate=null` (read the
    fast encoder) takes the mask smoothing with it instead of failing, and an explicit
    `--vase slow_mask=false` is kept."""
    import json

    from vase_rl.agents.continual import VASE_DEFAULTS, main

    assert VASE_DEFAULTS["slow_mask"] is True and VASE_DEFAULTS["slow_encoder_rate"] > 0
    base = ["--arms", "factors", "--phase-steps", "2048", "--n-envs", "2", "--seeds", "0"]
    for extra, expected in (
        ([], {"slow_encoder_rate": VASE_DEFAULTS["slow_encoder_rate"], "slow_mask": True}),
        (["--vase", "slow_encoder_rate=null"], {"slow_encoder_rate": None, "slow_mask": None}),
        (["--vase", "slow_mask=false"], {"slow_encoder_rate": VASE_DEFAULTS["slow_encoder_rate"], "slow_mask": False}),
    ):
        out = tmp_path / f"r{len(extra)}{extra[-1][-5:] if extra else ''}.json"
        assert main([*base, *extra, "--out", str(out), "--figure", str(out.with_suffix(".png"))]) == 0
        vase = json.loads(out.read_text())["settings"]["vase_kwargs"]
        assert {key: vase.get(key) for key in expected} == expected
