"""Gymnasium environments: checkers, seeding, ground truth in info, oracle vs random, schedules."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import vase_rl.envs as E
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import vase_rl  # noqa: F401  (registers the ids)

OUR_IDS = sorted(
    env_id
    for env_id, spec in gym.registry.items()
    if env_id.startswith("vase_rl/") and str(spec.entry_point).startswith("vase_rl.envs")
)


def test_ids_registered_on_import():
    assert set(E.ENV_IDS) <= set(OUR_IDS)
    for env_id in ("vase_rl/SpriteTask-v0", "vase_rl/SpriteTaskContinuous-v0", "vase_rl/DomainSequence-v0"):
        assert env_id in gym.registry
        assert gym.spec(env_id).namespace == "vase_rl"


@pytest.mark.parametrize("env_id", OUR_IDS)
def test_checkers_pass(env_id):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*minimal resolution.*")  # SB3: 32 px < NatureCNN's 36
        gym_check_env(gym.make(env_id).unwrapped)
        sb3_check_env(gym.make(env_id).unwrapped, warn=True)
        gym_check_env(gym.make(env_id, image_size=64, channels=3).unwrapped)


@pytest.mark.parametrize(
    "env_id", ["vase_rl/SpriteTask-v0", "vase_rl/SpriteTaskContinuous-v0", "vase_rl/DomainSequence-v0"]
)
@pytest.mark.parametrize("size,channels", [(32, 1), (64, 1), (64, 3)])
def test_observation_format(env_id, size, channels):
    env = gym.make(env_id, image_size=size, channels=channels)
    obs, info = env.reset(seed=0)
    assert obs.shape == (size, size, channels) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    obs2, *_ = env.step(env.action_space.sample())
    assert obs2.shape == (size, size, channels) and obs2.dtype == np.uint8


def _rollout(env, seed, actions):
    obs, info = env.reset(seed=seed)
    out = [(obs, 0.0, info["factors"])]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, r, info["factors"]))
        if term or trunc:
            obs, info = env.reset()
            out.append((obs, 0.0, info["factors"]))
    return out


@pytest.mark.parametrize(
    "env_id", ["vase_rl/SpriteTask-v0", "vase_rl/SpriteTaskContinuous-v0", "vase_rl/DomainSequence-v0"]
)
def test_reset_seed_reproduces_episodes(env_id):
    kwargs = {"switch_every": 2} if "Sequence" in env_id else {}
    env_a, env_b = gym.make(env_id, **kwargs), gym.make(env_id, **kwargs)
    env_a.action_space.seed(0)
    actions = [env_a.action_space.sample() for _ in range(150)]
    a = _rollout(env_a, 11, actions)
    b = _rollout(env_b, 11, actions)
    again = _rollout(env_a, 11, actions)  # same env object, reseeded
    other = _rollout(env_b, 12, actions)
    for x, y, z in zip(a, b, again):
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[0], z[0])
        assert x[1] == y[1] == z[1]
        np.testing.assert_array_equal(x[2], y[2])
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, other))


def test_info_carries_ground_truth_consistent_with_the_image():
    env = gym.make("vase_rl/DigitTask-v0")
    obs, info = env.reset(seed=3)
    for key in ("domain", "domain_name", "factors", "class", "position", "goal", "distance", "is_success"):
        assert key in info
    assert info["domain"] == 0 and info["domain_name"] == "digits"
    assert info["factors"].shape == (7,) and info["class"] == int(info["factors"][0])
    fam = E.make_domain("digits")
    for _ in range(5):
        np.testing.assert_array_equal(fam.render(info["factors"][None])[0], obs)
        np.testing.assert_allclose(info["factors"][4:6], info["position"], atol=1e-6)
        obs, _, _, _, info = env.step(4)


def test_actions_translate_the_sprite():
    env = gym.make("vase_rl/SpriteTask-v0").unwrapped
    env.reset(seed=0)
    env._pos[:] = 0.5
    x0 = env.position[0]
    _, _, _, _, info = env.step(4)  # right
    assert info["position"][0] == pytest.approx(x0 + env.step_size)
    _, _, _, _, info = env.step(1)  # up
    assert info["position"][1] == pytest.approx(0.5 - env.step_size)
    cont = gym.make("vase_rl/SpriteTaskContinuous-v0").unwrapped
    cont.reset(seed=0)
    cont._pos[:] = 0.5
    _, _, _, _, info = cont.step(np.array([5.0, -1.0], dtype=np.float32))  # clipped to the box
    np.testing.assert_allclose(info["position"], [0.5 + cont.max_shift, 0.5 - cont.max_shift], atol=1e-6)


def test_action_scale_in_pixels():
    env = gym.make("vase_rl/SpriteTaskContinuous-v0", image_size=64).unwrapped
    env.reset(seed=0)
    env._pos[:] = 0.3
    before = env._observe()[..., 0].astype(float)
    after = env.step(np.array([1.0, 0.0], dtype=np.float32))[0][..., 0].astype(float)
    cols = np.arange(64)
    shift = (after.sum(0) * cols).sum() / after.sum() - (before.sum(0) * cols).sum() / before.sum()
    assert env.movement_range_pixels == 64 - env.family.patch_size
    assert abs(shift - env.action_scale_pixels) <= 1.0


@pytest.mark.parametrize(
    "env_id",
    ["vase_rl/SpriteTask-v0", "vase_rl/SpriteTaskContinuous-v0", "vase_rl/DigitTask-v0", "vase_rl/DomainSequence-v0"],
)
def test_oracle_beats_random_by_a_wide_margin(env_id):
    oracle = E.evaluate_policy_returns(env_id, "oracle", episodes=40, seed=0)
    random = E.evaluate_policy_returns(env_id, "random", episodes=40, seed=0)
    assert oracle["success_rate"] == 1.0
    assert oracle["mean_return"] > random["mean_return"] + 0.7
    assert random["success_rate"] < 0.7


def test_reward_needs_identity():
    """Ignoring the sprite's class (always heading for goal 0) fails for most classes."""

    def class_blind(obs, env):
        base = env.unwrapped
        d = E.goal_layout(base.family.num_classes)[0][0] - base.position
        if np.all(np.abs(d) <= base.step_size / 2):
            return 0
        return (4 if d[0] > 0 else 3) if abs(d[0]) >= abs(d[1]) else (2 if d[1] > 0 else 1)

    blind = E.evaluate_policy_returns("vase_rl/DigitTask-v0", class_blind, episodes=60, seed=0)
    assert blind["success_rate"] < 0.35
    centres, radius = E.goal_layout(10)
    dists = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(10)
    assert dists.min() > 2 * radius  # goal regions are disjoint


def test_oracle_helpers_and_render():
    env = gym.make("vase_rl/SpriteTaskContinuous-v0", render_mode="rgb_array")
    env.reset(seed=1)
    oracle = E.SpriteTaskOracle(env)
    a, _ = oracle.predict(None)
    assert env.action_space.contains(a)
    assert np.array_equal(a, E.oracle_action(env))
    frame = env.render()
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
    with pytest.raises(TypeError):
        E.oracle_action(gym.make("CartPole-v1"))


def test_domain_sequence_episode_schedule_with_returns():
    env = gym.make(
        "vase_rl/DomainSequence-v0", domains=["moving_shapes", "moving_digits", "moving_shapes"], switch_every=2
    )
    names, ids = [], []
    for ep in range(8):
        _, info = env.reset(seed=0 if ep == 0 else None)
        names.append(info["domain_name"])
        ids.append(info["domain"])
        classes = E.make_domain(info["domain_name"]).num_classes
        assert 0 <= info["class"] < classes
    assert names == ["moving_shapes"] * 2 + ["moving_digits"] * 2 + ["moving_shapes"] * 4
    assert ids == [0, 0, 1, 1, 0, 0, 0, 0]
    # a seeded reset restarts the schedule
    _, info = env.reset(seed=5)
    assert info["domain_name"] == "moving_shapes"


def test_domain_sequence_step_schedule_switches_mid_episode():
    env = gym.make(
        "vase_rl/DomainSequence-v0",
        domains=["moving_shapes", "moving_letters"],
        switch_every=5,
        switch_unit="steps",
        max_steps=200,
    )
    env.reset(seed=0)
    seen = []
    for _t in range(1, 16):
        obs, _, term, trunc, info = env.step(0)  # stay: the episode continues
        seen.append(info["domain"])
        assert not term
    assert seen == [0] * 4 + [1] * 5 + [0] * 5 + [1]


def test_domain_sequence_blocks_of_given_lengths():
    env = gym.make(
        "vase_rl/DomainSequence-v0",
        domains=["shapes", "digits", "shapes"],
        switch_every=[3, 2, 4],
        switch_unit="steps",
        max_steps=500,
    )
    _, info = env.reset(seed=0)
    seen, blocks = [info["domain"]], [info["block"]]
    for _ in range(12):
        _, _, _, _, info = env.step(0)
        seen.append(info["domain"])
        blocks.append(info["block"])
    # step counts 0..12: blocks of 3, 2 and 4 steps, then the cycle starts over (3 more)
    assert blocks == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4]
    assert seen == [0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert env.unwrapped.block_at(9) == 3 and env.unwrapped.block_at(18) == 6


def test_num_classes_gives_every_look_the_same_goals():
    env = E.DomainSequenceEnv(domains=["shapes", "digits"], switch_every=1, num_classes=3, image_size=32)
    goals = {}
    for ep in range(60):
        _, info = env.reset(seed=ep if ep == 0 else None)
        assert 0 <= info["class"] < 3
        goals.setdefault((info["domain"], info["class"]), tuple(np.round(info["goal"], 6)))
    assert {d for d, _ in goals} == {0, 1} and {c for _, c in goals} == {0, 1, 2}
    for c in range(3):  # class c of the shapes and class c of the digits share one goal
        assert goals[(0, c)] == goals[(1, c)]
    assert len({goals[(0, c)] for c in range(3)}) == 3
    # without it, the digits keep their ten goals (and classes)
    plain = E.SpriteTaskEnv(domain="digits")
    assert plain.num_classes is None and len(plain._goals[0][0]) == 10


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 4}, "has only 3 classes"),
        ({"switch_every": [2, 0]}, "switch_every"),
    ],
)
def test_appearance_switch_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        E.DomainSequenceEnv(domains=["shapes", "digits"], **kwargs)


def test_domain_sequence_random_order():
    def blocks(seed):
        env = gym.make(
            "vase_rl/DomainSequence-v0",
            domains=["moving_shapes", "moving_digits", "moving_letters"],
            switch_every=1,
            order="random",
        )
        out = [env.reset(seed=seed)[1]["domain"]]
        out += [env.reset()[1]["domain"] for _ in range(30)]
        return out

    a, b = blocks(0), blocks(0)
    assert a == b and blocks(1) != a
    assert set(a) == {0, 1, 2}
    assert all(x != y for x, y in zip(a, a[1:]))  # random order never repeats a domain back to back


def test_sb3_vec_env_smoke():
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("vase_rl/MovingSprites-v0", n_envs=2, seed=0)
    obs = venv.reset()
    assert obs.shape == (2, 32, 32, 1) and obs.dtype == np.uint8
    for _ in range(60):
        obs, rew, done, infos = venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
    assert "domain" in infos[0] and "factors" in infos[0]
    venv.close()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"image_size": 0}, "image_size"),
        ({"domain": "moving_zebras"}, "unknown sprite family"),
        ({"max_steps": 0}, "max_steps"),
        ({"step_size": -1.0}, "step_size"),
        ({"render_mode": "human"}, "render_mode"),  # gym.make would wrap HumanRendering instead
    ],
)
def test_task_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        E.SpriteTaskEnv(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"domains": []}, "empty"),
        ({"switch_every": 0}, "switch_every"),
        ({"switch_unit": "hours"}, "switch_unit"),
        ({"order": "sorted"}, "order"),
    ],
)
def test_sequence_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gym.make("vase_rl/DomainSequence-v0", **kwargs)


def test_bad_actions_and_step_before_reset():
    env = E.SpriteTaskEnv()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="discrete actions"):
        env.step(7)
    with pytest.raises(ValueError, match="discrete actions"):
        env.step(1.5)
    cont = E.SpriteTaskEnv(continuous=True)
    cont.reset(seed=0)
    with pytest.raises(ValueError, match="continuous actions"):
        cont.step(np.array([np.nan, 0.0]))
