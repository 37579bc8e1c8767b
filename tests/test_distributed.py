"""The ray-free pieces of vase_rl.distributed: payloads, the frame rule, the worker and the
boundary learner, in-process (the Ray-backed tests are in test_distributed_ray.py)."""

from __future__ import annotations

import builtins
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

import vase_rl  # noqa: F401  (registers the envs)
from vase_rl import VASE
from vase_rl.distributed import require_ray
from vase_rl.distributed.learner import BoundaryLearner, update_rounds_due
from vase_rl.distributed.payload import (
    FrameStride,
    encoder_payload,
    learner_from_payload,
    order_frame_packets,
    payload_bytes,
)
from vase_rl.distributed.worker import EnvWorker
from vase_rl.wrappers import VecVASE

ENV_ID = "vase_rl/SpriteTask-v0"


def make_env():
    return gym.make(ENV_ID, image_size=16, max_steps=6)


def assert_same_latents(got, want):
    """Latents of one frame agree to float rounding: a convolution's last bits depend on the batch
    it runs in (an actor encodes its own envs, a driver all of them)."""
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _trained(tiny_config, seed=0, updates=3):
    learner = VASE(tiny_config, seed=seed, device="cpu")
    rng = np.random.default_rng(seed)
    for _ in range(updates):
        learner.update(rng.integers(0, 256, (16, 16, 16, 1), dtype=np.uint8))
    return learner


def test_importing_the_package_does_not_import_ray():
    code = (
        "import sys, vase_rl, vase_rl.distributed, vase_rl.distributed.worker, vase_rl.distributed.learner; "
        "from vase_rl.distributed import EnvWorker, BoundaryLearner, FrameStride; "
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_require_ray_names_the_extra_when_ray_is_missing(monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r"vase-rl\[ray\]"):
        require_ray()


def test_frame_stride_keeps_one_frame_in_k_per_env_by_global_index():
    stride = FrameStride(3)
    # (t + i) % 3 == 0, by hand: step 0 keeps envs 0 and 3; step 1 keeps env 2; step 2 keeps env 1
    np.testing.assert_array_equal(stride.keep(0, [0, 1, 2, 3]), [True, False, False, True])
    np.testing.assert_array_equal(stride.keep(1, [0, 1, 2, 3]), [False, False, True, False])
    np.testing.assert_array_equal(stride.keep(2, [0, 1, 2, 3]), [False, True, False, False])
    # the rule depends on the global index only: envs 2..3 on another actor decide the same
    np.testing.assert_array_equal(stride.keep(1, [2, 3]), [True, False])
    assert not FrameStride(0).keep(0, [0, 1]).any()
    assert FrameStride(1).keep(5, [0, 1, 2]).all()
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="frame_every"):
            FrameStride(bad)


def test_frame_packets_are_merged_in_the_order_vecvase_feeds_its_window():
    img = lambda *v: np.array(v, np.uint8).reshape(-1, 1, 1, 1)
    # actor A holds envs 2..3, actor B envs 0..1; at step 2 env 1 ended (terminal frame, slot 1)
    a = {"steps": [0, 2], "slots": [0, 0], "envs": [2, 3], "images": img(20, 32), "frames_seen": 7}
    b = {
        "steps": [0, 1, 2, 2],
        "slots": [0, 0, 0, 1],
        "envs": [0, 1, 1, 1],
        "images": img(0, 11, 21, 99),
        "frames_seen": 8,
    }
    merged = order_frame_packets([a, b])  # arrival order must not matter
    np.testing.assert_array_equal(merged["steps"], [0, 0, 1, 2, 2, 2])
    np.testing.assert_array_equal(merged["envs"], [0, 2, 1, 1, 3, 1])
    # step 2: observations of envs 1 and 3, then env 1's terminal observation, as VecVASE concatenates them
    np.testing.assert_array_equal(merged["images"].ravel(), [0, 20, 11, 21, 32, 99])
    assert merged["frames_seen"] == 15
    np.testing.assert_array_equal(order_frame_packets([b, a])["images"], merged["images"])
    with pytest.raises(ValueError, match="same env at the same step"):
        order_frame_packets([a, a])


def test_update_rounds_are_the_multiples_of_train_every_crossed_after_learning_starts():
    # by hand: every=10, starts=25 -> rounds due at 30, 40, 50, ...
    assert update_rounds_due(0, 29, 10, 25) == 0
    assert update_rounds_due(0, 30, 10, 25) == 1
    assert update_rounds_due(29, 52, 10, 25) == 3  # 30, 40, 50
    assert update_rounds_due(52, 59, 10, 25) == 0
    assert update_rounds_due(0, 10, 10, 0) == 1 and update_rounds_due(0, 9, 10, 0) == 0  # never at 0 frames
    # counted at a boundary or step by step, the total is the same
    steps = np.cumsum(np.random.default_rng(0).integers(3, 9, 40))
    per_step = sum(update_rounds_due(a, b, 16, 40) for a, b in zip(np.r_[0, steps[:-1]], steps))
    assert per_step == update_rounds_due(0, int(steps[-1]), 16, 40)


def test_encoder_payload_round_trip_encodes_exactly_like_the_learner(tiny_config):
    learner = _trained(tiny_config)
    payload = encoder_payload(learner)
    assert "decoder" not in payload and "optimizer" not in payload and "window" not in payload
    copy = learner_from_payload(payload)
    frames = np.random.default_rng(1).integers(0, 256, (8, 16, 16, 1), dtype=np.uint8)
    np.testing.assert_array_equal(copy.encode(frames), learner.encode(frames))
    np.testing.assert_array_equal(copy.latent_mask, learner.latent_mask)
    assert copy.num_updates == learner.num_updates == 3
    # the payload is the encoder-side part of the state: clearly smaller than the whole state
    assert payload_bytes(payload) < 0.5 * payload_bytes(learner.state_dict())
    with pytest.raises(ValueError, match="not an encoder payload"):
        learner_from_payload({"encoder": {}})


def test_a_payload_is_a_copy_that_later_updates_do_not_change(tiny_config):
    learner = _trained(tiny_config, updates=1)
    payload = encoder_payload(learner)
    frames = np.random.default_rng(2).integers(0, 256, (8, 16, 16, 1), dtype=np.uint8)
    before = learner.encode(frames)
    learner.update(frames)
    learner.update(frames)
    assert not np.array_equal(learner.encode(frames), before)
    np.testing.assert_array_equal(learner_from_payload(payload).encode(frames), before)


def test_payload_bytes_counts_array_data():
    a = np.zeros(10_000, np.uint8)
    assert 10_000 <= payload_bytes(a) < 10_300
    assert 40_000 <= payload_bytes(torch.zeros(10_000)) < 41_000


def test_raw_worker_matches_dummy_vec_env_step_for_step():
    fns = [make_env for _ in range(3)]
    worker, ref = EnvWorker(fns[:3], first_index=0), DummyVecEnv(fns)
    worker.seed(7), ref.seed(7)
    obs, infos = worker.reset()
    np.testing.assert_array_equal(obs, ref.reset())
    assert [i["position"].tolist() for i in infos] == [i["position"].tolist() for i in ref.reset_infos]
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(14):
        a = rng.integers(0, 5, 3)
        got, want = worker.step(a), ref.step(a)
        for g, w in zip(got[:3], want[:3]):
            np.testing.assert_array_equal(g, w)
        for gi, wi in zip(got[3], want[3]):
            assert gi.keys() == wi.keys()
            if "terminal_observation" in wi:
                ends += 1
                np.testing.assert_array_equal(gi["terminal_observation"], wi["terminal_observation"])
    assert ends >= 3  # max_steps=6: every env ended at least once
    assert worker.bytes_out > 14 * 3 * 16 * 16  # at least the raw images crossed


def test_encoding_worker_gives_vecvase_latents_and_keeps_strided_frames(tiny_config):
    learner = _trained(tiny_config)
    fns = [make_env for _ in range(4)]
    # this worker holds envs 2..3 of a 4-env vector env
    worker = EnvWorker(fns[2:], first_index=2, payload=encoder_payload(learner), frame_every=2)
    ref = VecVASE(DummyVecEnv(fns), learner=learner, training=False)
    worker.seed(5 + 2), ref.seed(5)
    obs, _ = worker.reset()
    assert_same_latents(obs, ref.reset()[2:])
    raws, terminal = {0: ref.get_original_obs()[2:]}, {}
    raw_ref = DummyVecEnv(fns[2:])  # the same envs, raw, for the terminal frames
    raw_ref.seed(5 + 2), raw_ref.reset()
    rng = np.random.default_rng(1)
    for t in range(1, 9):
        a = rng.integers(0, 5, 4)
        got, want = worker.step(a[2:]), ref.step(a)
        raw_infos = raw_ref.step(a[2:])[3]
        assert_same_latents(got[0], want[0][2:])
        for i, (gi, wi) in enumerate(zip(got[3], want[3][2:])):
            if "terminal_observation" in wi:  # encoded on the worker as VecVASE does
                assert_same_latents(gi["terminal_observation"], wi["terminal_observation"])
                terminal[(t, i + 2)] = raw_infos[i]["terminal_observation"]
        raws[t] = ref.get_original_obs()[2:]
    packet = worker.take_frames()
    # (t + i) % 2 == 0 for i in {2, 3}: env 2 at even steps, env 3 at odd steps, 9 steps (0..8);
    # a kept env that ended also sends its raw terminal frame (slot 1) after the observations
    expected = [(t, 0, i) for t in range(9) for i in (2, 3) if (t + i) % 2 == 0]
    expected += [(t, 1, i) for t, i in terminal if (t + i) % 2 == 0]
    expected.sort()
    assert any(slot == 1 for _, slot, _ in expected)
    got = list(zip(packet["steps"].tolist(), packet["slots"].tolist(), packet["envs"].tolist()))
    assert got == [(t, k, i) for t, k, i in expected]
    for (t, slot, i), image in zip(expected, packet["images"]):
        np.testing.assert_array_equal(image, raws[t][i - 2] if slot == 0 else terminal[(t, i)])
    # every frame the envs produced is counted, kept or not: 9 x 2 observations + the terminal frames
    assert packet["frames_seen"] == 9 * 2 + len(terminal)
    assert worker.take_frames()["images"].shape == (0, 16, 16, 1)  # taken once


def test_worker_drops_the_oldest_frames_beyond_its_buffer_and_counts_them(tiny_config):
    worker = EnvWorker(
        [make_env, make_env], payload=encoder_payload(VASE(tiny_config, seed=0)), frame_every=1, max_buffered_frames=5
    )
    worker.reset()
    for _ in range(4):
        worker.step(np.zeros(2, np.int64))
    packet = worker.take_frames()  # 10 frames kept (no episode ends in 4 steps), 5 held: whole steps dropped
    assert packet["images"].shape[0] == 4 and worker.frames_dropped == 6
    assert packet["steps"].tolist() == [3, 3, 4, 4] and packet["frames_seen"] == 10


def test_worker_weight_swap_changes_the_latents_to_the_new_learners(tiny_config):
    old, new = VASE(tiny_config, seed=0), _trained(tiny_config, seed=0, updates=4)
    worker = EnvWorker([make_env], payload=encoder_payload(old))
    obs, _ = worker.reset()
    raw = worker.top.get_original_obs()
    assert_same_latents(worker.encode(raw), old.encode(raw))
    assert worker.set_weights(encoder_payload(new)) == (4, 0) == worker.weights_version()
    assert_same_latents(worker.encode(raw), new.encode(raw))
    assert not np.array_equal(new.encode(raw), old.encode(raw))


def test_boundary_learner_runs_the_rounds_due_for_the_frames_seen(tiny_config):
    space = make_env().observation_space
    boundary = BoundaryLearner(VASE(tiny_config, seed=0), space, {"train_every": 16, "gradient_steps": 2})
    assert boundary.learning_starts == 16  # batch_size frames, as VecVASE
    assert boundary.updates_due(40) == 0  # 2 rounds due (16, 32) but the window is empty
    images = np.zeros((20, 16, 16, 1), np.uint8)
    boundary.ingest({"steps": np.arange(20), "slots": np.zeros(20), "envs": np.zeros(20), "images": images})
    assert boundary.updates_due(10) == 2 * 1  # 40 -> 50 crosses 48
    assert boundary.updates_due(13) == 0 and boundary.updates_due(1) == 2  # 63 -> 64
    with pytest.raises(TypeError, match="unknown learner option"):
        BoundaryLearner(VASE(tiny_config, seed=0), space, {"train_evry": 4})


def test_boundary_learner_equals_observe_and_update_on_the_same_frames(tiny_config):
    space = make_env().observation_space
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (40, 16, 16, 1), dtype=np.uint8)
    steps, envs = np.repeat(np.arange(20), 2), np.tile([0, 1], 20)
    boundary = BoundaryLearner(VASE(tiny_config, seed=4), space, {"train_every": 8})
    # packets arrive per actor (env 1's first), the learner restores the single-process order
    payload, summary = boundary.boundary(
        {"steps": steps[envs == 1], "envs": envs[envs == 1], "images": images[envs == 1], "frames_seen": 20},
        {"steps": steps[envs == 0], "envs": envs[envs == 0], "images": images[envs == 0], "frames_seen": 20},
    )
    reference = VASE(tiny_config, seed=4)
    reference.observe(VecVASE(DummyVecEnv([make_env]), learner=reference, training=False).feed.prepare(images))
    for _ in range(4):  # 40 frames seen: rounds at 16 (learning_starts = batch_size), 24, 32, 40
        reference.update()
    assert summary["updates"] == 4 and summary["num_updates"] == 4 and summary["frames"] == 40
    for key, tensor in reference.encoder.state_dict().items():
        torch.testing.assert_close(boundary.learner.encoder.state_dict()[key], tensor, rtol=0, atol=0)
    np.testing.assert_array_equal(learner_from_payload(payload).encode(images[:4]), reference.encode(images[:4]))
    assert boundary.summary()["frames_ingested"] == 40


def test_the_boundary_callback_refuses_an_env_without_ray_actors():
    from stable_baselines3 import PPO

    from vase_rl.distributed import RolloutBoundarySync

    model = PPO("MlpPolicy", DummyVecEnv([make_env]), n_steps=8, batch_size=8, device="cpu")
    with pytest.raises(ValueError, match="needs a RayVecEnv"):
        model.learn(8, callback=RolloutBoundarySync())
