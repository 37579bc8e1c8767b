"""The latent read-out diagnostic of the continual benchmark (benchmarks/probe_continual_latents.py):
its probes on known cases, its standardisation, and its CI-size run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import import_benchmark


@pytest.fixture(scope="module")
def probe_script():
    return import_benchmark("probe_continual_latents")


def test_read_out_recovers_class_and_position_when_the_latents_hold_them(probe_script):
    rng = np.random.default_rng(0)
    n = 600
    classes = rng.integers(0, 3, n)
    positions = rng.uniform(0, 1, (n, 2)).astype(np.float32)
    noise = rng.normal(0, 0.01, (n, 4))
    # latents: the class as a scalar code, the position, and two pure-noise latents
    latents = np.column_stack([classes * 1.0, positions, noise[:, :2]]).astype(np.float32)
    scores = probe_script.read_out(latents, classes, positions, 3, steps=400, seed=0)
    assert scores["class_accuracy"] >= 0.95
    assert scores["position_r2"] >= 0.9


def test_read_out_is_at_chance_on_latents_that_hold_nothing(probe_script):
    rng = np.random.default_rng(1)
    n = 800
    classes = rng.integers(0, 3, n)
    positions = rng.uniform(0, 1, (n, 2)).astype(np.float32)
    latents = rng.normal(0, 1, (n, 6)).astype(np.float32)  # independent of class and position
    scores = probe_script.read_out(latents, classes, positions, 3, steps=300, seed=0)
    # 200 held-out frames: chance 1/3, standard error ~0.033
    assert scores["class_accuracy"] < 0.47
    assert scores["position_r2"] < 0.1


def test_standardise_scales_like_vec_normalize_and_keeps_constant_latents_finite(probe_script):
    train = np.array([[0.0, 5.0, 1.0], [2.0, 5.0, 3.0], [4.0, 5.0, 5.0]], dtype=np.float32)
    test = np.array([[2.0, 5.0, 100.0]], dtype=np.float32)
    a, b = probe_script.standardise(train, test, clip=10.0)
    np.testing.assert_allclose(a[:, 0], [-1.2247449, 0.0, 1.2247449], rtol=1e-5)  # (x - 2) / sqrt(8/3)
    assert np.all(a[:, 1] == 0.0) and b[0, 1] == 0.0  # a constant latent carries nothing, and no NaN
    assert b[0, 2] == 10.0  # far outside the training spread: clipped as VecNormalize clips


def test_quick_run_reads_out_every_look_at_every_checkpoint(probe_script, tmp_path):
    out = tmp_path / "probe.json"
    assert probe_script.main(["--quick", "--arms", "vase", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["arms"] == ["vase"] and report["policy"] == "uniform random"
    assert report["provenance"]["code_digest"]
    (run,) = report["results"]
    labels = [cp["label"] for cp in run["checkpoints"]]
    assert labels == ["pretrained", "end of phase 1 (shapes)", "end of phase 2 (digits)", "end of phase 3 (shapes)"]
    for cp in run["checkpoints"]:
        assert set(cp["looks"]) == {"shapes", "digits"}
        for scores in cp["looks"].values():
            assert 0.0 <= scores["class_accuracy"] <= 1.0
            assert np.isfinite(scores["position_r2"])
    assert {(r["checkpoint"], r["look"]) for r in report["summary"]} == {
        (label, look) for label in labels for look in ("shapes", "digits")
    }


def test_a_non_vase_arm_is_refused_with_the_choices(probe_script, capsys):
    with pytest.raises(SystemExit):
        probe_script.main(["--quick", "--arms", "pixels"])
    assert "choose from ['cci_vae', 'vase', 'vase_domain', 'vase_mask']" in capsys.readouterr().err
