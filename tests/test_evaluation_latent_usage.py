"""Latent usage labels (vase_rl.evaluation.latent_usage) on a hand-made three-domain case."""

import numpy as np
import pytest

from vase_rl.evaluation import latent_usage_table

MASKS = {
    "moving_fashion": [1, 1, 1, 0, 0, 0],
    "mnist": [0, 1, 1, 1, 0, 1],
    "moving_mnist": [1, 1, 0, 0, 1, 0],
}
USED = {  # deliberately in another order than MASKS
    "mnist": [1, 1, 1, 1, 1, 0],
    "moving_mnist": [1, 1, 1, 1, 1, 1],
    "moving_fashion": [1, 1, 0, 0, 0, 0],
}
# in use = mask AND used:
#   moving_fashion [1 1 0 0 0 0], mnist [0 1 1 1 0 0], moving_mnist [1 1 0 0 1 0]


def test_labels_per_domain():
    t = latent_usage_table(MASKS, USED)
    assert t.domains == ["moving_fashion", "mnist", "moving_mnist"]
    assert t.labels["moving_fashion"] == ["added", "added", "unused", "unused", "unused", "unused"]
    assert t.labels["mnist"] == ["frozen", "reused", "added", "added", "unused", "unused"]
    assert t.labels["moving_mnist"] == ["reused", "reused", "frozen", "frozen", "added", "unused"]
    assert t.counts["mnist"] == {"added": 2, "reused": 1, "frozen": 1, "unused": 2}
    assert t.sharing == ["shared", "shared", "specific", "specific", "specific", "unused"]
    assert t.num_in_use == 5


def test_masks_only_and_array_input():
    t = latent_usage_table(np.array([[1, 0, 0], [1, 1, 0]]))
    assert t.domains == [0, 1]
    assert t.labels[1] == ["reused", "added", "unused"]
    assert t.num_in_use == 2


def test_text_and_rows():
    t = latent_usage_table(MASKS, USED)
    rows = t.rows()
    assert rows[2] == {
        "latent": 2,
        "moving_fashion": "unused",
        "mnist": "added",
        "moving_mnist": "frozen",
        "overall": "specific",
    }
    text = t.to_text()
    assert "domain mnist" in text and text.splitlines()[-1] == "5 of 6 latents in use"


def test_errors():
    with pytest.raises(ValueError, match="binary"):
        latent_usage_table({0: [0.5, 1.0]})
    with pytest.raises(ValueError, match="same number"):
        latent_usage_table({0: [1, 0], 1: [1]})
    with pytest.raises(ValueError, match="different domains"):
        latent_usage_table({0: [1, 0]}, {1: [1, 0]})
    with pytest.raises(ValueError, match="shape"):
        latent_usage_table([[1, 0]], [[1, 0, 1]])
