"""The supervised reference of the latent read-out (benchmarks/diag_class_in_frames.py) on known cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import import_benchmark


@pytest.fixture(scope="module")
def diag():
    return import_benchmark("diag_class_in_frames")


def _images(classes: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """8x8 noise images with a bright 2x2 block in the quadrant named by the class."""
    x = rng.uniform(0, 0.2, (len(classes), 1, 8, 8)).astype(np.float32)
    for i, c in enumerate(classes):
        r, k = divmod(int(c), 2)
        x[i, 0, 4 * r + 1 : 4 * r + 3, 4 * k + 1 : 4 * k + 3] = 1.0
    return torch.from_numpy(x)


def test_the_cnn_reads_a_class_the_images_show(diag):
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, 400)
    assert diag.supervised_accuracy(_images(classes, rng), classes, 3, epochs=8, seed=0) >= 0.9


def test_the_cnn_is_at_chance_on_labels_the_images_do_not_show(diag):
    rng = np.random.default_rng(1)
    shown = rng.integers(0, 3, 800)
    labels = rng.integers(0, 3, 800)  # independent of what the images show
    # 200 held-out images: chance 1/3, standard error ~0.033
    assert diag.supervised_accuracy(_images(shown, rng), labels, 3, epochs=4, seed=0) < 0.47
