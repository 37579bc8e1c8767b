"""Figures: every plot function writes a non-empty PNG of the expected layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vase_rl import VASE, VASEConfig
from vase_rl.evaluation.experiment import run_experiment
from vase_rl.evaluation.plots import (
    FIGURES,
    USAGE_COLOURS,
    latent_order,
    plot_ablation,
    plot_atypicality,
    plot_cross_domain_reconstructions,
    plot_domain_inference,
    plot_probe_curves,
    plot_run,
    plot_traversals,
)

mpl_image = pytest.importorskip("matplotlib.image")

TINY = dict(
    image_shape=(1, 16, 16),
    latent_dim=4,
    width=0.25,
    batch_size=8,
    domain_warmup=5,
    patience=1,
    snapshot_every=5,
    used_refresh_every=5,
    used_estimation_steps=5,
    capacity_max=5.0,
    capacity_increment=1 / 50,
)


def _png(path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 1000
    img = mpl_image.imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert img[..., :3].std() > 0.01  # not a blank canvas
    return img


@pytest.fixture(scope="module")
def learner():
    torch.set_num_threads(1)
    lrn = VASE(VASEConfig.preset("cpu32", **TINY), seed=0, device="cpu")
    rng = np.random.default_rng(0)
    for _ in range(12):
        lrn.update(rng.integers(0, 255, (8, 16, 16, 1), dtype=np.uint8))
    return lrn


@pytest.fixture(scope="module")
def images():
    from vase_rl.envs import make_domain

    return {n: make_domain(n, 16, 1).sample(4, np.random.default_rng(1))[0] for n in ("moving_shapes", "digits")}


def test_latent_order_groups_used_latents_first():
    labels = {0: ["unused", "added", "unused", "added"], 1: ["added", "reused", "unused", "frozen"]}
    assert latent_order(labels, 4) == [1, 3, 0, 2]


def test_traversals(tmp_path, learner, images):
    img = _png(plot_traversals(learner, images, tmp_path / "t.png", values=(-2, 0, 2), title="x"))
    assert img.shape[0] > img.shape[1] * 0.3  # rows = latents
    with pytest.raises(ValueError):
        plot_traversals(learner, {}, tmp_path / "none.png")


def test_cross_domain_reconstructions(tmp_path, learner, images):
    _png(plot_cross_domain_reconstructions(learner, images, tmp_path / "r.png", num_images=3))


def test_atypicality_profile(tmp_path):
    rng = np.random.default_rng(0)
    a = np.abs(rng.normal(size=(60, 4))).tolist()
    a[0] = None  # a skipped update
    segs = [["a", 0, 30], ["b", 30, 60]]
    _png(
        plot_atypicality(
            a,
            tmp_path / "a.png",
            threshold=0.6,
            low=0.48,
            high=0.72,
            segments=segs,
            inferred=[0] * 33 + [1] * 27,
            true=[0] * 30 + [1] * 30,
        )
    )
    _png(plot_atypicality(a, tmp_path / "b.png"))
    with pytest.raises(ValueError):
        plot_atypicality([None, None], tmp_path / "c.png")


def test_probe_curves_and_domains(tmp_path):
    recs = [
        {"step": s, "task": t, "domain": d, "metric": m, "value": v, "refit": r}
        for s in range(0, 40, 5)
        for d in ("a", "b")
        for t, m, v in (("object_id", "accuracy", 0.5 + s / 100), ("position", "mse", 0.01))
        for r in (False,)
    ]
    recs.append({"step": 39, "task": "object_id", "domain": "a", "metric": "accuracy", "value": 0.7, "refit": True})
    _png(plot_probe_curves(recs, tmp_path / "p.png", segments=[["a", 0, 20], ["b", 20, 40]], title="t"))
    _png(
        plot_domain_inference(
            [0] * 22 + [1] * 18, [0] * 20 + [1] * 20, tmp_path / "d.png", segments=[["a", 0, 20], ["b", 20, 40]]
        )
    )
    with pytest.raises(ValueError):
        plot_probe_curves([], tmp_path / "e.png")


def test_ablation_bars(tmp_path):
    summary = {
        "variants": [
            {
                "name": "VASE (SDA)",
                "switches": {"S": True, "D": True, "A": True},
                "metrics": {"object_id_change": {"mean": -0.05, "std": 0.01}},
            },
            {
                "name": "CCI-VAE (-)",
                "switches": {"S": False, "D": False, "A": False},
                "metrics": {"object_id_change": {"mean": -0.15, "std": None}},
            },
        ]
    }
    _png(plot_ablation(summary, tmp_path / "ab.png", title="t"))
    with pytest.raises(ValueError):
        plot_ablation({"variants": []}, tmp_path / "none.png")


def test_plot_run_writes_every_figure(tmp_path):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    run_experiment(
        VASEConfig.preset("cpu32", **TINY),
        "moving_shapes,digits",
        6,
        0,
        run,
        eval_every=3,
        eval_size=16,
        refit_steps=3,
        refit_size=16,
        probe_batch_size=8,
        disentanglement=False,
    )
    paths = plot_run(run)
    assert set(paths) == set(FIGURES)
    for p in paths.values():
        assert p.parent == run / "figures"
        _png(p)
    with pytest.raises(ValueError, match="unknown figure"):
        plot_run(run, which=["nope"])


def test_usage_colours_cover_labels():
    from vase_rl.evaluation import USAGE_LABELS

    assert set(USAGE_COLOURS) == set(USAGE_LABELS)
