"""VASEConfig: presets, validation with clear errors, JSON round trip."""

import pytest

from vase_rl import VASEConfig
from vase_rl.config import PAPER, preset_names


def test_paper_preset_has_table2_values():
    c = VASEConfig.preset("paper64")
    assert c.image_shape == (1, 64, 64) and c.latent_dim == 24 and c.max_domains == 7
    assert (c.gamma, c.capacity_max, c.capacity_increment) == (100.0, 35.0, 6.3e-6)
    assert c.learning_rate == 6e-4 and c.batch_size == 64 and c.kappa == 1.5
    assert c.snapshot_every == 500 and c.num_convs == 4
    assert not (c.capacity_per_active or c.fallback_to_current) and c.patience == 1  # the paper's rules
    assert c.mask_threshold_low < PAPER["atypicality_threshold"] < c.mask_threshold_high


def test_paper_exact_preset_switches_off_every_addition():
    exact, robust = VASEConfig.preset("paper64_exact"), VASEConfig.preset("paper64")
    assert exact.domain_test == "ratio" and robust.domain_test == "evidence"
    assert exact.capacity_lead is None and exact.grad_clip is None and exact.masked_prior_weight == 0
    assert exact.used_estimator == "noise_fit" and not exact.hold_while_pending and exact.patience == 1
    # the network and table-2 values are the same; only the rules differ
    same = ("image_shape", "latent_dim", "gamma", "capacity_max", "capacity_increment", "kappa", "learning_rate")
    assert all(getattr(exact, f) == getattr(robust, f) for f in same)


def test_presets_and_overrides():
    assert {"paper64", "cpu32", "cci_vae", "entangled"} <= set(preset_names())
    cci = VASEConfig.preset("cci_vae", image_shape=(1, 32, 32))
    assert cci.image_shape == (1, 32, 32) and cci.num_convs == 3
    assert not (cci.domain_inference or cci.dreaming or cci.atypicality_mask)
    ent = VASEConfig.preset("entangled")
    assert ent.objective == "entangled" and ent.kappa == 1.1
    cpu = VASEConfig.preset("cpu32")
    assert cpu.image_shape == (1, 32, 32) and cpu.capacity_increment > PAPER["capacity_increment"]
    assert cpu.capacity_per_active and cpu.hold_while_pending


def test_json_roundtrip(tmp_path):
    c = VASEConfig.preset("cpu32", latent_dim=12, dreaming=False)
    assert VASEConfig.from_json(c.to_json()) == c
    path = c.save(tmp_path / "cfg.json")
    assert VASEConfig.load(path) == c


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"image_shape": (2, 32, 32)}, "channel count"),
        ({"image_shape": (1, 30, 30)}, "multiples"),
        ({"image_shape": (1, 4096, 4096)}, "conv_channels"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"gamma": -1.0}, "gamma"),
        ({"kappa": 0.5}, "kappa"),
        ({"likelihood": "laplace"}, "likelihood"),
        ({"mask_threshold_low": 0.9, "mask_threshold_high": 0.5}, "mask_threshold_low"),
        ({"dreaming": "yes"}, "dreaming"),
        ({"hold_while_pending": 1}, "hold_while_pending"),
    ],
)
def test_invalid_values_raise_clear_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        VASEConfig.preset("cpu32", **overrides)


def test_unknown_field_and_preset():
    with pytest.raises(ValueError, match="did you mean 'latent_dim'"):
        VASEConfig.preset("cpu32", latent_dims=3)
    with pytest.raises(ValueError, match="unknown VASE preset"):
        VASEConfig.preset("paper128")
    with pytest.raises(ValueError, match="malformed"):
        VASEConfig.from_json("{not json")
