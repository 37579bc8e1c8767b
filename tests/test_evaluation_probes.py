"""Latent probes and the probe tracker (vase_rl.evaluation.probes)."""

import numpy as np
import pytest
import torch

from vase_rl.evaluation import LatentProbe, ProbeTracker, Segment, chaudhry_forgetting


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny MLPs gain nothing from intra-op threads; one thread avoids contention stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CENTERS = np.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0], [0.0, -3.0]])


def blobs(n, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(scale=0.5, size=(n, dim)).astype(np.float32)
    x[:, :2] += CENTERS[y]
    return x, y


def test_probe_architecture_matches_paper():
    probe = LatentProbe(8, 4)
    layers = [m for m in probe.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in layers] == [(8, 256), (256, 256), (256, 4)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in probe.net) == 2
    assert probe.optimizer.param_groups[0]["lr"] == pytest.approx(6e-4)
    assert probe.config["batch_size"] == 64


def test_probe_learns_linearly_separable_classes():
    x, y = blobs(1000, seed=0)
    xt, yt = blobs(500, seed=1)
    probe = LatentProbe(8, 4, seed=0)
    before = probe.accuracy(xt, yt)
    losses = probe.fit(x, y, steps=150)
    assert probe.accuracy(xt, yt) > 0.97
    assert before < 0.6
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:10])


def test_regression_probe_reduces_mse():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1000, 6)).astype(np.float32)
    w = rng.normal(size=(6, 2)).astype(np.float32)
    t = x @ w * 0.3
    probe = LatentProbe(6, regression_dim=2, seed=1)
    start = probe.mse(x, t)
    probe.fit(x, t, steps=200)
    assert probe.mse(x, t) < 0.1 * start


def test_training_never_touches_the_producer():
    torch.manual_seed(0)
    producer = torch.nn.Linear(5, 8)
    params_before = [p.detach().clone() for p in producer.parameters()]
    z = producer(torch.randn(64, 5))
    z_before = z.detach().clone()
    labels = torch.randint(0, 3, (64,))
    probe = LatentProbe(8, 3, seed=0)
    for _ in range(5):
        probe.train_step(z, labels)
    assert all(p.grad is None for p in producer.parameters())
    assert all(torch.equal(a, b) for a, b in zip(params_before, producer.parameters()))
    assert torch.equal(z, z_before) and z.requires_grad and z.grad_fn is not None
    z.sum().backward()  # the producer's graph is intact and still usable by its owner
    assert producer.weight.grad is not None
    arr = z_before.numpy().copy()
    probe.train_step(arr, labels.numpy())
    np.testing.assert_array_equal(arr, z_before.numpy())


def test_seeding_is_deterministic_and_private():
    x, y = blobs(256)
    a = LatentProbe(8, 4, seed=3).fit(x, y, steps=5)
    b = LatentProbe(8, 4, seed=3).fit(x, y, steps=5)
    assert a == b
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    LatentProbe(8, 4, seed=3)
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG stream is untouched


def test_state_dict_round_trip():
    x, y = blobs(256)
    probe = LatentProbe(8, 4, seed=0)
    probe.fit(x, y, steps=20)
    clone = LatentProbe.from_state_dict(probe.state_dict())
    torch.testing.assert_close(clone.predict(x), probe.predict(x))
    # optimiser state travels too: the next update is identical
    probe.train_step(x[:64], y[:64])
    clone.train_step(x[:64], y[:64])
    for p, q in zip(probe.net.parameters(), clone.net.parameters()):
        assert torch.equal(p, q)
    other = LatentProbe(8, 5)
    with pytest.raises(ValueError, match="num_classes"):
        other.load_state_dict(probe.state_dict())


def test_probe_input_errors():
    with pytest.raises(ValueError, match="exactly one"):
        LatentProbe(4, 3, regression_dim=2)
    with pytest.raises(ValueError, match="exactly one"):
        LatentProbe(4)
    probe = LatentProbe(4, 3)
    with pytest.raises(ValueError, match="shape"):
        probe.train_step(np.zeros((2, 5)), [0, 1])
    with pytest.raises(ValueError, match="class ids"):
        probe.train_step(np.zeros((2, 4)), [0, 3])
    with pytest.raises(ValueError, match="targets"):
        probe.train_step(np.zeros((2, 4)), [0, 1, 2])
    with pytest.raises(ValueError, match="NaN"):
        probe.train_step(np.full((2, 4), np.nan), [0, 1])
    with pytest.raises(TypeError):
        probe.mse(np.zeros((2, 4)), [0, 1])


# ------------------------------------------------------------------------------ tracker


def encode(domain, labels, pos, forgotten, rng):
    """A toy representation: domain 0 codes its class in z[0:2] and its position in z[4:6],
    domain 1 its class in z[2:4]; 'forgotten' replaces domain 0's code by noise."""
    z = rng.normal(scale=0.3, size=(labels.size, 6)).astype(np.float32)
    if domain == 1:
        z[:, 2:4] += CENTERS[labels]
    elif not forgotten:
        z[:, 0:2] += CENTERS[labels]
        z[:, 4:6] += pos
    return z


def run_stream(forgetful, refit_at_end=True):
    rng = np.random.default_rng(0)
    tracker = ProbeTracker(6, seed=0, eval_every=10, refit_steps=80)
    tracker.add_probe("object_id", 0, num_classes=4)
    tracker.add_probe("object_id", 1, num_classes=4)
    tracker.add_probe("position", 0, regression_dim=2)
    ev = {d: (rng.integers(0, 4, 256), rng.uniform(-1, 1, (256, 2)).astype(np.float32)) for d in (0, 1)}

    def batch(domain, labels, pos, step):
        forgotten = forgetful and step >= 60
        return (encode(domain, labels, pos, forgotten, rng), {"object_id": labels, "position": pos})

    for step in range(120):
        train = {}
        for d in (0, 1):
            y = rng.integers(0, 4, 64)
            p = rng.uniform(-1, 1, (64, 2)).astype(np.float32)
            train[d] = batch(d, y, p, step)
        evald = {d: batch(d, *ev[d], step) for d in (0, 1)}
        tracker.update(step, train, evald)
    final = {d: batch(d, *ev[d], 120) for d in (0, 1)}
    tracker.evaluate(120, final)
    if refit_at_end:
        tracker.evaluate(120, final, refit=True)
    return tracker


# the final evaluation at step 120 belongs to the last segment, so nothing comes "after" it
SEGMENTS = [Segment(0, 0, 60), Segment(1, 60, 121)]


@pytest.fixture(scope="module")
def forgetful():
    return run_stream(forgetful=True)


@pytest.fixture(scope="module")
def retained():
    return run_stream(forgetful=False)


def test_tracker_curves(retained):
    steps, curves = retained.curves("object_id")
    np.testing.assert_array_equal(steps, list(range(0, 121, 10)))
    assert set(curves) == {0, 1}
    assert curves[0][-1] > 0.95 and curves[1][-1] > 0.95
    r_steps, r_curves = retained.curves("object_id", refit=True)
    assert list(r_steps) == [120] and r_curves[0][0] > 0.95


def test_tracker_forgetting_separates_forgetful_from_retained(forgetful, retained):
    assert retained.forgetting("object_id", SEGMENTS) < 0.05
    assert forgetful.forgetting("object_id", SEGMENTS) > 0.5
    assert retained.max_score("object_id", SEGMENTS) > 0.95
    # position MSE rises (positive "forgetting") only when the code is lost
    assert forgetful.forgetting("position", SEGMENTS) > 0.1
    assert retained.forgetting("position", SEGMENTS) < 0.05
    # a fresh probe on the final representation sees the loss too: not just probe drift
    assert forgetful.curves("object_id", refit=True)[1][0][0] < 0.5


def test_tracker_accuracy_matrix(forgetful):
    r = forgetful.accuracy_matrix("object_id", SEGMENTS)
    assert r.shape == (2, 2)
    assert r[0, 0] > 0.95 and r[1, 0] < 0.5 and r[1, 1] > 0.95
    assert chaudhry_forgetting(r) == pytest.approx(r[0, 0] - r[1, 0])


def test_tracker_state_round_trip(retained):
    fresh = ProbeTracker(6, seed=0)
    fresh.load_state_dict(retained.state_dict())
    assert fresh.records == retained.records
    x = np.random.default_rng(5).normal(size=(10, 6))
    for key, probe in retained.probes.items():
        torch.testing.assert_close(fresh.probes[key].predict(x), probe.predict(x))


def test_tracker_errors():
    tracker = ProbeTracker(4)
    tracker.add_probe("object_id", 0, num_classes=3)
    with pytest.raises(ValueError, match="already exists"):
        tracker.add_probe("object_id", 0, num_classes=3)
    with pytest.raises(ValueError, match="mixes"):
        tracker.add_probe("object_id", 1, regression_dim=2)
    with pytest.raises(KeyError):
        tracker.curves("position")


def test_tracker_task_without_probe_for_some_domains(forgetful):
    r = forgetful.accuracy_matrix("position", SEGMENTS)
    assert np.isnan(r[:, 1]).all()
    assert r[1, 0] > r[0, 0] + 0.1  # the position error of domain 0 rose after the switch
