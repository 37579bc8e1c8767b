"""RayVecEnv on a local Ray cluster (ray.init(num_cpus=2), one per test session): SB3's VecEnv
contract, equality with the single-process path, weight broadcast, PPO through it, dead actors.

Skipped when the optional ``ray`` extra is absent; ``make test`` installs it."""

from __future__ import annotations

import copy
import functools
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

import vase_rl  # noqa: F401  (registers the envs)
from vase_rl import VASE
from vase_rl.wrappers import VecVASE

ray = pytest.importorskip(
    "ray", reason="the optional ray extra is not installed (pip install 'vase-rl[ray]'; make test installs it)"
)

from vase_rl.distributed import RayVecEnv, RolloutBoundarySync, WorkerDiedError  # noqa: E402
from vase_rl.distributed.payload import payload_bytes  # noqa: E402

ENV_ID = "vase_rl/SpriteTask-v0"
make_env = functools.partial(gym.make, ENV_ID, image_size=16, max_steps=6)
SMALL = {"num_cpus": 0.25}  # several actors share the 2 CPUs of the test cluster


@pytest.fixture(scope="session")
def ray_cluster():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's env classes, by value
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def raw_env(ray_cluster):
    venv = RayVecEnv([make_env] * 3, envs_per_actor=2, actor_options=SMALL)  # actors of 2 and 1 envs
    yield venv
    venv.close()


def assert_same_latents(got, want):
    """Equal to float rounding: a convolution's last bits depend on the batch it runs in."""
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_reset_and_step_follow_the_vecenv_contract_and_match_dummy_vec_env(raw_env):
    ref = DummyVecEnv([make_env] * 3)
    assert raw_env.num_envs == 3 and raw_env.num_actors == 2
    assert raw_env.observation_space == ref.observation_space and raw_env.action_space == ref.action_space
    raw_env.seed(11), ref.seed(11)
    obs = raw_env.reset()
    assert obs.shape == (3, 16, 16, 1) and obs.dtype == np.uint8
    np.testing.assert_array_equal(obs, ref.reset())
    assert [i["class"] for i in raw_env.reset_infos] == [i["class"] for i in ref.reset_infos]
    rng = np.random.default_rng(0)
    terminal = 0
    for _ in range(15):
        actions = rng.integers(0, 5, 3)
        obs, rewards, dones, infos = raw_env.step(actions)
        want = ref.step(actions)
        assert rewards.shape == (3,) and rewards.dtype == np.float32 and dones.shape == (3,) and dones.dtype == bool
        assert isinstance(infos, list) and len(infos) == 3
        for got, expected in zip((obs, rewards, dones), want[:3]):
            np.testing.assert_array_equal(got, expected)
        for i, (gi, wi) in enumerate(zip(infos, want[3])):
            assert gi.keys() == wi.keys()
            assert gi["TimeLimit.truncated"] == wi["TimeLimit.truncated"]
            if dones[i]:  # the final frame of the episode, the returned obs is the next episode's first
                terminal += 1
                np.testing.assert_array_equal(gi["terminal_observation"], wi["terminal_observation"])
                assert not np.array_equal(gi["terminal_observation"], obs[i]) or gi["is_success"]
    assert terminal >= 3


def test_seeding_reproduces_episodes_and_seeds_are_per_env(raw_env):
    assert raw_env.seed(5) == [5, 6, 7]
    first = raw_env.reset()
    raw_env.step(np.zeros(3, np.int64))
    raw_env.seed(5)
    np.testing.assert_array_equal(raw_env.reset(), first)
    raw_env.seed(6)
    again = raw_env.reset()
    np.testing.assert_array_equal(again[:2], first[1:])  # env i with seed 6 + i is env i + 1 with seed 5 + i + 1
    assert not np.array_equal(again, first)


def test_bad_arguments_are_refused_before_any_actor_starts(ray_cluster):
    with pytest.raises(ValueError, match="envs_per_actor"):
        RayVecEnv([make_env], 0)
    with pytest.raises(ValueError, match="learner_on"):
        RayVecEnv([make_env], 1, vase="cpu32", learner_on="gpu")
    with pytest.raises(TypeError, match="only apply with vase"):
        RayVecEnv([make_env], 1, clip=5.0)
    with pytest.raises(TypeError, match="unknown option"):
        RayVecEnv([make_env], 1, vase="cpu32", train_evry=8)


def _broken_env():
    raise RuntimeError("this env cannot be built")


def test_an_env_that_cannot_be_built_names_the_actor(ray_cluster):
    with pytest.raises(WorkerDiedError, match=r"during start, 1 actor\(s\) died: actor 0 \(envs 0..0\)"):
        RayVecEnv([_broken_env], 1, actor_options=SMALL)


def test_per_env_access_is_routed_to_the_right_actor(raw_env):
    for i in range(3):
        raw_env.set_attr("tag", 10 * i, indices=[i])
    assert raw_env.get_attr("tag") == [0, 10, 20]
    assert raw_env.get_attr("tag", indices=[2, 0]) == [20, 0]
    assert raw_env.env_method("get_wrapper_attr", "tag", indices=[1, 2]) == [10, 20]
    ref = DummyVecEnv([make_env])
    assert raw_env.env_is_wrapped(gym.wrappers.OrderEnforcing) == ref.env_is_wrapped(gym.wrappers.OrderEnforcing) * 3
    with pytest.raises(IndexError):
        raw_env.get_attr("tag", indices=[3])


def test_vecvase_over_ray_is_the_single_process_run(raw_env, tiny_config):
    """Raw frames cross the wire, VecVASE encodes and learns in the driver: bit-identical."""
    runs = []
    for venv in (raw_env, DummyVecEnv([make_env] * 3)):
        wrapped = VecVASE(venv, learner=VASE(tiny_config, seed=3), train_every=2)
        wrapped.seed(21)
        latents = [wrapped.reset()]
        rng = np.random.default_rng(1)
        for _ in range(12):
            latents.append(wrapped.step(rng.integers(0, 5, 3))[0])
        runs.append((np.stack(latents), wrapped.learner))
    (lat_ray, learner_ray), (lat_ref, learner_ref) = runs
    assert learner_ray.num_updates == learner_ref.num_updates > 0
    np.testing.assert_array_equal(lat_ray, lat_ref)
    for key, tensor in learner_ref.encoder.state_dict().items():
        torch.testing.assert_close(learner_ray.encoder.state_dict()[key], tensor, rtol=0, atol=0)


def _reference_run(tiny_config, rollouts, steps, actions, frame_every, train_every, lag):
    """The single-process path with the core API only: DummyVecEnv; one learner that observes the
    kept frames (observations, then terminal observations, of env i at step t when
    (t + i) % frame_every == 0) and, at each rollout end, runs one update per multiple of
    train_every frames seen (from batch_size frames on); the agent-facing copy of the learner is
    refreshed at the rollout ends, ``lag`` rollouts behind."""
    learner = VASE(tiny_config, seed=0)
    acting = VecVASE(DummyVecEnv([make_env]), learner=VASE.from_state_dict(learner.state_dict()), training=False)
    venv = DummyVecEnv([make_env] * 4)
    venv.seed(9)
    obs = venv.reset()
    latents, versions = [acting.encode(obs)], []
    kept, seen, last_seen = [obs[i] for i in range(4) if i % frame_every == 0], 4, 0
    states = [copy.deepcopy(learner.state_dict())]  # state_dict() shares storage with the live weights
    first_round = -(-tiny_config.batch_size // train_every)
    t = 0
    for r in range(rollouts):
        for s in range(steps):
            t += 1
            obs, _, dones, infos = venv.step(actions[r * steps + s])
            latents.append(acting.encode(obs))
            kept += [obs[i] for i in range(4) if (t + i) % frame_every == 0]
            kept += [infos[i]["terminal_observation"] for i in range(4) if dones[i] and (t + i) % frame_every == 0]
            seen += 4 + int(dones.sum())
        learner.observe(acting.feed.prepare(np.stack(kept)))
        rounds = max(0, seen // train_every - max(last_seen // train_every, first_round - 1))
        for _ in range(rounds):
            learner.update()
        kept, last_seen = [], seen
        states.append(copy.deepcopy(learner.state_dict()))
        if r + 1 - lag >= 1:
            acting.set_learner(VASE.from_state_dict(states[r + 1 - lag]))
        versions.append(acting.learner.num_updates)
    return np.stack(latents), learner, versions


def test_learner_actor_with_overlap_makes_the_updates_of_the_single_process_run(ray_cluster, tiny_config):
    rollouts, steps, frame_every, train_every = 3, 8, 2, 16
    actions = np.random.default_rng(2).integers(0, 5, (rollouts * steps, 4))
    want_latents, want_learner, want_versions = _reference_run(
        tiny_config, rollouts, steps, actions, frame_every, train_every, lag=1
    )
    venv = RayVecEnv(
        [make_env] * 4,
        envs_per_actor=2,
        vase=tiny_config,
        seed=0,
        frame_every=frame_every,
        train_every=train_every,
        learner_on="actor",
        overlap=True,
        actor_options=SMALL,
        learner_resources=SMALL,
    )
    try:
        venv.seed(9)
        latents, versions = [venv.reset()], []
        for r in range(rollouts):
            for s in range(steps):
                latents.append(venv.step(actions[r * steps + s])[0])
            venv.rollout_boundary()
            actor_versions = venv.actor_weights_versions()
            assert len(set(actor_versions)) == 1  # every actor got the broadcast
            versions.append(actor_versions[0][0])
        assert versions == want_versions and versions[-1] > 0  # the one-rollout lag of the overlap
        assert_same_latents(np.stack(latents), want_latents)
        learner = venv.get_learner()  # waits for the overlapped update of the last rollout
        assert learner.num_updates == want_learner.num_updates
        for key, tensor in want_learner.encoder.state_dict().items():
            torch.testing.assert_close(learner.encoder.state_dict()[key], tensor, rtol=0, atol=0)
        # the broadcast weights encode on every actor as the learner they came from
        venv.rollout_boundary()  # applies the last rollout's update
        raw = np.stack([make_env().reset(seed=s)[0] for s in range(5)])
        for latents_of_actor in venv.actor_encode(raw):
            assert_same_latents(latents_of_actor, VecVASE(DummyVecEnv([make_env]), learner=learner).encode(raw))
        stats = venv.transfer_stats()
        # one uint8 frame (256 bytes) + its step, slot and env tags (3 x 8 bytes) in frame_every: 2 at reset +
        # 2 per step over 24 steps + terminal frames, in 8 packets (2 actors x 4 boundaries) of < 1 kB overhead each
        frames = len(venv.get_learner().window)  # every frame sent is in the window (it holds 1,024)
        assert frames >= 2 + 2 * rollouts * steps
        assert frames * 280 <= stats["frame_bytes"] <= frames * 280 + 8 * 1000
        dummy = DummyVecEnv([make_env] * 4)
        dummy.reset()
        raw_step_bytes = payload_bytes(dummy.step(actions[0])) / 4  # frames + rewards + infos, per env
        # latents (8 float32) instead of frames (256 bytes) cross at every step, beside rewards and infos
        assert 8 * 4 < stats["step_bytes_per_env_step"] < raw_step_bytes
    finally:
        venv.close()


def test_every_frame_to_the_learner_equals_vecvase_with_rollout_boundary_updates(ray_cluster, tiny_config):
    """frame_every=1: the learner gets exactly the frames a single-process VecVASE adds to its
    window, in its order, and runs the rounds its frame schedule defers to the rollout end."""
    if not hasattr(VecVASE, "end_rollout"):
        pytest.skip("needs the wrappers' rollout-boundary schedule (VecVASE(update_at='rollout'), end_rollout)")
    rollouts, steps = 3, 8
    actions = np.random.default_rng(5).integers(0, 5, (rollouts * steps, 4))
    runs = []
    ref = VecVASE(DummyVecEnv([make_env] * 4), learner=VASE(tiny_config, seed=0), update_at="rollout", train_every=16)
    venv = RayVecEnv([make_env] * 4, 2, vase=tiny_config, seed=0, frame_every=1, train_every=16, actor_options=SMALL)
    try:
        for env in (ref, venv):
            env.seed(9)
            latents, updates = [env.reset()], []
            for r in range(rollouts):
                for s in range(steps):
                    latents.append(env.step(actions[r * steps + s])[0])
                updates.append(env.end_rollout())
            runs.append((np.stack(latents), updates))
        assert runs[1][1] == runs[0][1] and sum(runs[0][1]) > 0
        assert_same_latents(runs[1][0], runs[0][0])
        learner = venv.get_learner()
        assert learner.num_updates == ref.learner.num_updates
        for key, tensor in ref.learner.encoder.state_dict().items():
            torch.testing.assert_close(learner.encoder.state_dict()[key], tensor, rtol=0, atol=0)
    finally:
        venv.close()


def test_ppo_trains_through_ray_actors_with_the_boundary_callback(ray_cluster, tiny_config):
    venv = RayVecEnv(
        [make_env] * 4, 2, vase=tiny_config, frame_every=2, train_every=16, actor_options=SMALL, learner_on="driver"
    )
    try:
        model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=4, device="cpu")
        assert venv.get_learner().seed == 4  # PPO(seed=4) seeded the untouched learner, as with VecVASE
        before = [p.detach().clone() for p in model.policy.parameters()]
        sync = RolloutBoundarySync()
        model.learn(384, callback=sync)
        assert model.num_timesteps == 384 and len(sync.summaries) == 3
        # 128 frames a rollout (+ terminal frames, 4 at reset) / train_every 16: 8 or 9 rounds a rollout
        assert all(8 <= s["updates"] <= 10 for s in sync.summaries)
        seen = sync.summaries[-1]["frames_seen"]
        assert seen > 4 + 384 and sum(s["updates"] for s in sync.summaries) == seen // 16
        n = venv.get_learner().num_updates
        assert set(venv.actor_weights_versions()) == {(n, 0)}
        assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters()))
        assert np.isfinite(sync.summaries[-1]["loss"])
    finally:
        venv.close()


def _failing_env():
    class FailsOnAction4(gym.Wrapper):
        def step(self, action):
            if int(action) == 4:
                raise RuntimeError("this env refuses action 4")
            return self.env.step(action)

    return FailsOnAction4(make_env())


def _kill_and_wait(handle, timeout=30.0):
    """ray.kill returns before the actor is gone: wait until a call to it fails."""
    import time

    ray.kill(handle, no_restart=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(handle.ping.remote(), timeout=timeout)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError("the killed actor still answers")


def test_env_errors_name_the_actor_and_dead_actors_are_reported_not_dropped(ray_cluster):
    venv = RayVecEnv([make_env, _failing_env], envs_per_actor=1, actor_options=SMALL)
    try:
        venv.reset()
        with pytest.raises(RuntimeError, match="refuses action 4") as err:
            venv.step(np.array([0, 4]))
        assert "actor 1 (envs 1..1)" in "".join(getattr(err.value, "__notes__", []))
        venv.step(np.array([0, 0]))  # an env error leaves the actors alive
        _kill_and_wait(venv._workers[0])
        with pytest.raises(WorkerDiedError, match=r"actor 0 \(envs 0..0\)"):
            venv.step(np.array([0, 0]))
        with pytest.raises(WorkerDiedError, match="actor 0"):  # and every later call, no silent drop
            venv.reset()
        assert [p.split(":")[0] for p in venv.check_workers(timeout=20)] == ["actor 0 (envs 0..0)"]
    finally:
        venv.close()


# ---------------------------------------------------------------------------------------------
# RLlib: the env-to-module connector (skipped when RLlib's dependencies are missing)
# ---------------------------------------------------------------------------------------------
def _rllib():
    try:
        from ray.rllib.env.single_agent_episode import SingleAgentEpisode

        from vase_rl.distributed import rllib
    except ImportError as err:  # pragma: no cover - depends on the install
        pytest.skip(f"RLlib cannot be imported ({err}); the ray extra installs its dependencies")
    return rllib, SingleAgentEpisode


def test_rllib_connector_replaces_the_newest_observation_with_latents(tiny_config):
    rllib, SingleAgentEpisode = _rllib()
    from vase_rl.distributed.payload import encoder_payload

    learner = VASE(tiny_config, seed=1)
    learner.update(np.random.default_rng(0).integers(0, 256, (16, 16, 16, 1), dtype=np.uint8))
    env = make_env()
    connector = rllib.VASEEncoderConnector(env.observation_space, env.action_space, payload=encoder_payload(learner))
    assert connector.observation_space == gym.spaces.Box(-10.0, 10.0, (8,), np.float32)
    episodes, raws = [], []
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        episode = SingleAgentEpisode(observation_space=env.observation_space, action_space=env.action_space)
        episode.add_env_reset(observation=obs, infos=info)
        episodes.append(episode)
        raws.append(obs)
    out = connector(rl_module=None, batch={}, episodes=episodes)
    assert out == {}  # the default connectors fill the batch from the episodes
    want = VecVASE(DummyVecEnv([make_env]), learner=learner, training=False).encode(np.stack(raws))
    got = np.stack([ep.get_observations(-1) for ep in episodes])
    assert_same_latents(got, want)
    connector(rl_module=None, batch={}, episodes=episodes)  # a second pass leaves latents alone
    np.testing.assert_array_equal(np.stack([ep.get_observations(-1) for ep in episodes]), got)
    assert episodes[0].observation_space == connector.observation_space

    newer = VASE(tiny_config, seed=1)
    for _ in range(3):
        newer.update(np.random.default_rng(1).integers(0, 256, (16, 16, 16, 1), dtype=np.uint8))
    connector.set_state({"payload": encoder_payload(newer)})  # what VASEBoundaryCallback sends
    assert connector.get_state()["version"] == [3, 0]
    assert connector.merge_states([{"version": [1, 0]}, {"version": [3, 0]}]) == {"version": [3, 0]}
    fresh = SingleAgentEpisode(observation_space=env.observation_space, action_space=env.action_space)
    fresh.add_env_reset(observation=raws[0], infos={})
    connector(rl_module=None, batch={}, episodes=[fresh])
    assert_same_latents(fresh.get_observations(-1)[None], newer.encode(raws[0][None]))


@pytest.mark.slow
def test_rllib_ppo_trains_on_latents_and_every_env_runner_gets_the_new_weights(ray_cluster, tiny_config):
    rllib, _ = _rllib()
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    from vase_rl.distributed.payload import encoder_payload

    register_env("vase_sprite_test", lambda cfg: make_env())
    vase = VASE(tiny_config, seed=0)
    learner = rllib.start_learner(
        vase, make_env().observation_space, "vase_test_learner", {"train_every": 32}, resources=SMALL
    )
    config = (
        PPOConfig()
        .environment("vase_sprite_test")
        .env_runners(
            num_env_runners=1,
            num_envs_per_env_runner=2,
            num_cpus_per_env_runner=0.25,
            env_to_module_connector=rllib.connector_factory(
                ray.put(encoder_payload(vase)), learner_name="vase_test_learner", frame_every=2, send_every=16
            ),
        )
        .training(train_batch_size_per_learner=128, minibatch_size=64, num_epochs=1)
        .learners(num_learners=0)
        .callbacks(rllib.VASEBoundaryCallback)
        .debugging(seed=0)
    )
    config.update_from_dict({"vase_learner_name": "vase_test_learner"})
    algo = config.build_algo()
    try:
        result = algo.train()
        assert result["vase"]["num_updates"] > 0 and result["vase"]["frames_ingested"] > 0
        versions = algo.env_runner_group.foreach_env_runner(
            lambda runner: runner.get_state()["env_to_module_connector"]["VASEEncoderConnector"]["version"],
            local_env_runner=False,
        )
        assert versions == [[result["vase"]["num_updates"], result["vase"]["skipped_updates"]]]
    finally:
        algo.stop()
        ray.kill(learner)
