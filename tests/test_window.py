"""The learner's window of recent frames: FIFO order, sampling, resizing, persistence."""

import numpy as np
import pytest
import torch
from conftest import squares

from vase_rl import VASE
from vase_rl.window import FrameWindow


def _frames(values):
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()


def _values(t):
    return [int(v) for v in t[:, 0, 0, 0]]


def test_fifo_keeps_the_most_recent_frames_oldest_first():
    w = FrameWindow(5)
    w.append(_frames([0, 1, 2]))
    assert len(w) == 3 and _values(w.frames()) == [0, 1, 2]
    w.append(_frames([3, 4, 5, 6]))  # wraps around
    assert len(w) == 5 and _values(w.frames()) == [2, 3, 4, 5, 6]
    w.append(_frames(list(range(10, 17))))  # more than the capacity at once
    assert _values(w.frames()) == [12, 13, 14, 15, 16]


def test_resize_keeps_the_most_recent_frames():
    w = FrameWindow(6)
    w.append(_frames(list(range(8))))
    w.resize(3)
    assert _values(w.frames()) == [5, 6, 7]
    w.resize(10)
    w.append(_frames([8]))
    assert _values(w.frames()) == [5, 6, 7, 8]


def test_sampling_is_without_replacement_and_seeded():
    w = FrameWindow(50)
    w.append(_frames(list(range(50))))
    a = w.sample(20, torch.Generator().manual_seed(3))
    b = w.sample(20, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and len(set(_values(a))) == 20
    assert w.sample(80, torch.Generator()).shape[0] == 50  # all of them when fewer are held
    with pytest.raises(RuntimeError, match="observe"):
        FrameWindow(4).sample(2, torch.Generator())


@pytest.mark.parametrize("bad", [1, 0, 2.5, True, "8"])
def test_capacity_must_be_an_int_of_at_least_two(bad):
    with pytest.raises(ValueError, match="window capacity"):
        FrameWindow(bad)


def test_learner_observe_then_update_without_a_batch(tiny_config, rng):
    learner = VASE(tiny_config.replace(window_size=64), seed=0, device="cpu")
    with pytest.raises(RuntimeError, match="observe"):
        learner.update()
    assert learner.observe(squares(rng, 40)) == 40
    stats = learner.update()
    assert learner.num_updates == 1 and np.isfinite(stats["loss"])
    assert learner.observe(squares(rng, 40)) == 64  # capacity reached


def test_the_window_is_saved_and_a_loaded_learner_draws_the_same_batches(tiny_config, rng, tmp_path):
    learner = VASE(tiny_config.replace(window_size=64), seed=0, device="cpu")
    for _ in range(3):
        learner.observe(squares(rng, 16))
        learner.update()
    loaded = VASE.load(learner.save(tmp_path / "v.pt"), device="cpu")
    assert torch.equal(loaded.window.frames(), learner.window.frames())
    assert loaded.update()["loss"] == learner.update()["loss"]
