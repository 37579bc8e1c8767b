"""Shared test set-up: deterministic, single-threaded torch (the suite runs on 2 shared cores),
no SDL window, and small synthetic image domains for the core learner tests."""

from __future__ import annotations

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
# execution options left at "auto" take the plain fp32 path, so results do not depend on the CPU
# running the suite (vase_rl/precision.py; tests/test_precision.py mocks both kinds of CPU)
os.environ.setdefault("VASE_RL_EXECUTION", "plain")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def squares(rng: np.random.Generator, n: int, size: int = 16) -> np.ndarray:
    """Domain A: filled white squares at random positions on black, uint8 (n, H, W, 1)."""
    img = np.zeros((n, size, size, 1), np.uint8)
    side = rng.integers(size // 6, size // 3, n)
    x = rng.integers(0, size - size // 3, n)
    y = rng.integers(0, size - size // 3, n)
    for i in range(n):
        img[i, y[i] : y[i] + side[i], x[i] : x[i] + side[i]] = 255
    return img


def rings(rng: np.random.Generator, n: int, size: int = 16) -> np.ndarray:
    """Domain B: thin bright rings of random radius near the centre, uint8 (n, H, W, 1)."""
    yy, xx = np.mgrid[:size, :size]
    r = rng.uniform(size / 8, size / 3.5, n)[:, None, None]
    cx = rng.uniform(size / 3, size - size / 3, n)[:, None, None]
    cy = rng.uniform(size / 3, size - size / 3, n)[:, None, None]
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    return ((np.abs(d - r) < 1.5) * 255).astype(np.uint8)[..., None]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def tiny_config():
    from vase_rl import VASEConfig

    return VASEConfig.preset(
        "cpu32",
        image_shape=(1, 16, 16),
        width=0.25,
        latent_dim=8,
        batch_size=16,
        snapshot_every=20,
        used_refresh_every=20,
        domain_warmup=10,
    )


def import_benchmark(name: str):
    """A script of ``benchmarks/`` as a module (the diagnostics import their helper modules by
    name, as they do when run from the command line, so ``benchmarks/`` goes on ``sys.path``)."""
    import importlib
    import sys
    from pathlib import Path

    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)
