"""Execution options resolved per device (vase_rl/precision.py): capability-aware bf16,
measured layouts, the record on the learner, in checkpoints and in get_vase_stats().

The device is mocked both ways (a CPU reported with native bf16 and one without), so no test
depends on the CPU it runs on; the probe is replaced by a stub that counts its calls."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import squares

import vase_rl.precision as precision
from vase_rl import VASE, VASEConfig
from vase_rl.masking import apply_mask

CPU = torch.device("cpu")
NO_BF16 = {
    "device": "cpu",
    "kind": "cpu:avx2",
    "native_bf16": False,
    "torch_capability": "AVX2",
    "emulated": False,
    "detail": "a test CPU without native bf16",
}
NATIVE = dict(NO_BF16, kind="cpu:avx512_bf16", native_bf16=True, torch_capability="AVX512", detail="a bf16 CPU")


class Device:
    """Stands in for the capability query and the timing probe; counts probes."""

    def __init__(self, monkeypatch, capability: dict, speedup: float = 1.6) -> None:
        self.capability, self.speedup, self.probes = dict(capability), speedup, 0
        monkeypatch.setattr(precision, "device_capability", lambda device: dict(self.capability))
        monkeypatch.setattr(precision, "probe_bf16", self.probe)

    def probe(self, device):
        self.probes += 1
        return {"fp32_ms": 1.0, "bf16_ms": 1.0 / self.speedup, "speedup": self.speedup, "probe_seconds": 0.01}


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv(precision.ENV_EXECUTION, raising=False)  # conftest pins "plain" for the other tests
    precision.clear_caches()
    yield
    precision.clear_caches()


def hidden_dtype(learner: VASE, rng) -> torch.dtype:
    """The dtype the encoder's hidden layer is computed in: what the networks really run in."""
    _, _, hidden = learner._encode_net(learner.encoder, learner._prep(squares(rng, 4)))
    return hidden.dtype


# --- precision="auto" ---------------------------------------------------------------------------
def test_auto_picks_fp32_on_a_cpu_without_native_bf16_without_timing_anything(monkeypatch, tiny_config, rng):
    device = Device(monkeypatch, NO_BF16, speedup=5.0)  # even a (bogus) fast probe must not be consulted
    learner = VASE(tiny_config, seed=0, device="cpu")
    assert tiny_config.precision == "auto"
    assert learner.execution["precision"] == "fp32" and not learner._amp_enabled
    assert device.probes == 0 and learner.execution["bf16_speedup"] is None
    assert hidden_dtype(learner, rng) == torch.float32


def test_auto_picks_bf16_on_a_cpu_with_native_bf16_that_the_probe_confirms(monkeypatch, tiny_config, rng):
    device = Device(monkeypatch, NATIVE, speedup=1.6)
    learner = VASE(tiny_config, seed=0, device="cpu")
    assert learner.execution["precision"] == "bf16" and learner._amp_enabled
    assert learner.execution["bf16_speedup"] == pytest.approx(1.6)
    assert device.probes == 1
    assert hidden_dtype(learner, rng) == torch.bfloat16
    assert np.isfinite(learner.update(squares(rng, 16))["loss"])


@pytest.mark.parametrize(
    "speedup, chosen",
    [(0.03, "fp32"), (0.4, "fp32"), (0.99, "fp32"), (1.0, "bf16"), (1.2, "bf16"), (1.6, "bf16"), (4.0, "bf16")],
)
def test_auto_needs_native_bf16_and_a_probe_not_slower_than_fp32(monkeypatch, tiny_config, speedup, chosen):
    Device(monkeypatch, NATIVE, speedup=speedup)
    assert precision.BF16_MIN_SPEEDUP == 1.0
    assert precision.resolve_execution(tiny_config, CPU)["precision"] == chosen


# --- an explicit precision ------------------------------------------------------------------------
def test_explicit_bf16_without_native_bf16_warns_once_with_the_cost_and_runs_fp32(monkeypatch, tiny_config, rng):
    device = Device(monkeypatch, NO_BF16, speedup=0.025)
    cfg = tiny_config.replace(precision="bf16")
    with pytest.warns(RuntimeWarning, match=r"40\.0x slower than fp32.*bf16-force"):
        learner = VASE(cfg, seed=0, device="cpu")
    assert learner.execution["precision"] == "fp32" and not learner._amp_enabled
    assert hidden_dtype(learner, rng) == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second learner on the same device: no second warning
        again = VASE(cfg, seed=0, device="cpu")
    assert again.execution["precision"] == "fp32"
    assert device.probes == 2  # the stub is not cached; the real probe is (test_probe_is_cached...)
    # and the fallback is the exact fp32 path: same numbers as a plain fp32 learner
    x = squares(rng, 16)
    plain = VASE(tiny_config.replace(precision="fp32"), seed=0, device="cpu")
    assert learner.update(x)["loss"] == plain.update(x)["loss"]


def test_bf16_force_runs_bf16_without_native_bf16_and_without_a_warning(monkeypatch, tiny_config, rng):
    device = Device(monkeypatch, NO_BF16, speedup=0.025)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner = VASE(tiny_config.replace(precision="bf16-force"), seed=0, device="cpu")
    assert learner.execution["precision"] == "bf16" and device.probes == 0
    assert hidden_dtype(learner, rng) == torch.bfloat16


def test_explicit_bf16_with_native_bf16_is_honoured_and_fp32_always_is(monkeypatch, tiny_config):
    device = Device(monkeypatch, NATIVE, speedup=0.5)  # a slow probe does not override an explicit request
    assert precision.resolve_execution(tiny_config.replace(precision="bf16"), CPU)["precision"] == "bf16"
    assert precision.resolve_execution(tiny_config.replace(precision="fp32"), CPU)["precision"] == "fp32"
    assert device.probes == 0


def test_unrunnable_bf16_autocast_falls_back_with_a_warning(monkeypatch, tiny_config):
    Device(monkeypatch, NATIVE)

    def broken(*args, **kwargs):
        raise RuntimeError("no bf16 here")

    monkeypatch.setattr(precision.torch, "autocast", broken)
    with pytest.warns(RuntimeWarning, match="unavailable.*falling back to fp32"):
        learner = VASE(tiny_config.replace(precision="bf16-force"), seed=0, device="cpu")
    assert learner.execution["precision"] == "fp32"
    # "auto" falls back silently: nothing was asked for that could not be given
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert VASE(tiny_config, seed=0, device="cpu").execution["precision"] == "fp32"


# --- layouts and the plain switch -----------------------------------------------------------------
def test_layout_auto_follows_the_measured_table_and_explicit_values_win(monkeypatch, tiny_config):
    Device(monkeypatch, NATIVE)
    monkeypatch.setattr(
        precision,
        "MEASURED_LAYOUT",
        {"cpu:avx512_bf16": {"channels_last": True, "compile_inference": False}},
    )
    auto = precision.resolve_execution(tiny_config, CPU)
    assert auto["channels_last"] is True and auto["compile_inference"] is False
    explicit = precision.resolve_execution(tiny_config.replace(channels_last=False, compile_inference=True), CPU)
    assert explicit["channels_last"] is False and explicit["compile_inference"] is True
    Device(monkeypatch, dict(NATIVE, kind="cpu:never_measured"))
    unknown = precision.resolve_execution(tiny_config, CPU)
    assert unknown["channels_last"] is False and unknown["compile_inference"] is False
    assert "not measured" in unknown["channels_last_reason"]


def test_plain_environment_switch_makes_auto_exact_without_probing(monkeypatch, tiny_config):
    device = Device(monkeypatch, NATIVE, speedup=2.0)
    monkeypatch.setattr(precision, "MEASURED_LAYOUT", {"cpu:avx512_bf16": {"channels_last": True}})
    monkeypatch.setenv(precision.ENV_EXECUTION, "plain")
    out = precision.resolve_execution(tiny_config, CPU)
    assert (out["precision"], out["channels_last"], out["compile_inference"]) == ("fp32", False, False)
    assert device.probes == 0 and out["auto_mode"] == "plain"
    # explicit settings are never overridden by the switch
    forced = precision.resolve_execution(tiny_config.replace(precision="bf16", channels_last=True), CPU)
    assert forced["precision"] == "bf16" and forced["channels_last"] is True
    monkeypatch.setenv(precision.ENV_EXECUTION, "plian")
    with pytest.raises(ValueError, match="VASE_RL_EXECUTION.*'plain'"):
        precision.resolve_execution(tiny_config, CPU)


# --- the record: checkpoints and wrapper statistics -----------------------------------------------
def conv_weights_channels_last(learner: VASE) -> bool:
    weights = [p for m in (learner.encoder, learner.decoder) for p in m.parameters() if p.ndim == 4]
    return all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)


def test_the_choice_survives_save_and_load(monkeypatch, tiny_config, rng, tmp_path):
    device = Device(monkeypatch, NATIVE, speedup=1.6)
    monkeypatch.setattr(precision, "MEASURED_LAYOUT", {"cpu:avx512_bf16": {"channels_last": True}})
    learner = VASE(tiny_config, seed=0, device="cpu")
    for _ in range(3):
        learner.update(squares(rng, 16))
    path = learner.save(tmp_path / "vase.pt")
    assert VASE._read_checkpoint(path)["execution"]["precision"] == "bf16"

    assert learner.execution["channels_last"] and conv_weights_channels_last(learner)

    # a fresh resolution would now say fp32 and contiguous; the checkpoint's choice is kept
    device.speedup = 1.0
    monkeypatch.setattr(precision, "MEASURED_LAYOUT", {})
    loaded = VASE.load(path, device="cpu")
    assert loaded.execution["precision"] == "bf16" and loaded.execution["restored"] and loaded._amp_enabled
    assert loaded.execution["channels_last"] and conv_weights_channels_last(loaded)
    x = squares(rng, 16)
    assert loaded.update(x)["loss"] == learner.update(x)["loss"]  # continues exactly as the original

    device.capability = dict(NO_BF16)  # the same checkpoint on another kind of CPU: resolved afresh
    moved = VASE.load(path, device="cpu")
    assert moved.execution["precision"] == "fp32" and not moved._amp_enabled
    assert not moved.execution["channels_last"] and not conv_weights_channels_last(moved)
    assert moved.execution["saved_precision"] == "bf16" and moved.execution["saved_device_kind"] == "cpu:avx512_bf16"


def test_restore_keeps_a_well_formed_record_of_the_same_kind_only():
    fresh = {"device_kind": "k", "auto_mode": "measured", "precision": "fp32", "channels_last": False}
    fresh.update(precision_requested="auto", channels_last_requested="auto", compile_inference_requested="auto")
    fresh.update(compile_inference=False, restored=False)
    saved = dict(fresh, channels_last=True, precision="bf16")
    restored = precision.restore_execution(saved, fresh)
    assert restored["channels_last"] is True and restored["precision"] == "bf16" and restored["restored"]
    malformed = precision.restore_execution(dict(saved, precision="float8"), fresh)
    assert malformed["precision"] == "fp32" and not malformed["restored"]
    other = precision.restore_execution(dict(saved, device_kind="other"), fresh)
    assert other["precision"] == "fp32" and other["saved_precision"] == "bf16"


def test_get_vase_stats_reports_the_resolved_execution(monkeypatch, tiny_config):
    from vase_rl.wrappers import VASEWrapper

    Device(monkeypatch, NATIVE, speedup=1.6)
    env = VASEWrapper(gym.make("vase_rl/SpriteTask-v0", image_size=32), tiny_config, device="cpu", seed=0)
    env.reset(seed=0)
    stats = env.get_vase_stats()
    assert stats["execution"] == env.learner.execution
    assert stats["execution"]["precision"] == "bf16" and stats["execution"]["precision_requested"] == "auto"
    stats["execution"]["precision"] = "changed"  # a copy: the learner's record is not exposed
    assert env.learner.execution["precision"] == "bf16"


# --- exactness of each path (real computation) ----------------------------------------------------
def test_each_path_stays_within_its_stated_tolerance_of_fp32(tiny_config, rng):
    x = squares(rng, 32)
    plain = VASE(tiny_config.replace(precision="fp32", channels_last=False), seed=0, device="cpu")
    for _ in range(5):
        plain.update(x)
    state = plain.state_dict()
    reference = plain.encode(x)

    def variant(**options):
        cfg = tiny_config.replace(**options)
        learner = VASE(cfg, seed=0, device="cpu")
        for name in ("encoder", "decoder", "classifier"):
            getattr(learner, name).load_state_dict(state[name])
        learner._mask = plain._mask.clone()
        return learner

    channels_last = variant(precision="fp32", channels_last=True)
    np.testing.assert_allclose(channels_last.encode(x), reference, atol=precision.TOLERANCE["fp32"])
    bf16 = variant(precision="bf16-force", channels_last=False)
    deviation = np.abs(bf16.encode(x) - reference).max()
    assert 0 < deviation <= precision.TOLERANCE["bf16"]  # bf16 really ran, within the documented tolerance


@pytest.mark.parametrize("options", [{"precision": "fp32", "channels_last": True}, {"precision": "bf16-force"}])
def test_wrapper_lean_path_gives_encode_tensors_numbers(tiny_config, options):
    from vase_rl.wrappers import VASEWrapper

    env = VASEWrapper(
        gym.make("vase_rl/SpriteTask-v0", image_size=32),
        tiny_config.replace(**options),
        device="cpu",
        seed=0,
        learning=False,
    )
    frame, _ = env.env.reset(seed=0)
    x = env.feed.prepare(np.stack([frame, env.env.step(0)[0]]))
    lean, hidden = env.feed.latents(x)
    assert hidden is not None and hidden.shape[0] == 2
    np.testing.assert_allclose(lean.numpy(), env.learner.encode_tensor(x).numpy(), rtol=0, atol=1e-6)


def test_bf16_encode_uses_synced_bf16_weights_with_autocasts_exact_numbers(tiny_config, rng):
    learner = VASE(tiny_config.replace(precision="bf16-force", channels_last=False), seed=0, device="cpu")
    x = learner._prep(squares(rng, 8))

    def autocast_on_live_weights():
        learner.encoder.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return apply_mask(learner.encoder(x)[0].float(), learner._mask, None)

    assert torch.equal(learner.encode_tensor(x), autocast_on_live_weights())
    learner.update(squares(rng, 16))  # the optimiser changes the weights in place
    assert torch.equal(learner.encode_tensor(x), autocast_on_live_weights())
    other = VASE(tiny_config.replace(precision="fp32"), seed=1, device="cpu")
    learner.encoder.load_state_dict(other.encoder.state_dict())  # so does loading weights
    assert torch.equal(learner.encode_tensor(x), autocast_on_live_weights())
    assert learner._compiled().copy is not None  # the bf16 copy, not the live module, served these


# --- the probe itself -----------------------------------------------------------------------------
def test_probe_is_cached_per_device_and_leaves_the_global_rng_alone(monkeypatch):
    calls = []
    real_conv = torch.nn.functional.conv2d

    def counting_conv(*args, **kwargs):
        calls.append(1)
        return real_conv(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv2d", counting_conv)
    rng_state = torch.get_rng_state()
    first = precision.probe_bf16(CPU)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert 4 <= len(calls) <= 20  # at most 3 warm-up and 7 timed pairs: a bounded cost
    assert first["speedup"] == pytest.approx(first["fp32_ms"] / first["bf16_ms"])
    n = len(calls)
    assert precision.probe_bf16(CPU) == first and len(calls) == n  # cached: nothing re-timed


def test_probe_takes_the_best_of_several_pairs_so_one_disturbed_sample_cannot_decide(monkeypatch, tiny_config):
    # durations, in call order: three warm-up pairs, then seven (fp32, bf16) pairs; the first bf16
    # sample was disturbed (10x), the others show native bf16 (fp32 1.0, bf16 0.6)
    durations = iter([1.0] * 6 + [1.0, 10.0] + [1.0, 0.6] * 6)
    now = [0.0]

    def fake_clock():
        now[0] += next(durations) if fake_clock.started else 0.0
        fake_clock.started = not fake_clock.started
        return now[0]

    fake_clock.started = False
    monkeypatch.setattr(precision, "_cpu_clock", fake_clock)
    threads = torch.get_num_threads()
    result = precision.probe_bf16(CPU)
    assert result["speedup"] == pytest.approx(1 / 0.6) and result["bf16_ms"] == pytest.approx(600)
    assert torch.get_num_threads() == threads  # the probe's single thread is undone
    monkeypatch.setattr(precision, "device_capability", lambda device: dict(NATIVE))
    assert precision.resolve_execution(tiny_config, CPU)["precision"] == "bf16"


def test_cpu_kinds_from_flags_capability_and_onednn_limits(monkeypatch):
    import vase_rl.provenance as provenance

    def classify(flags, capability, isa=None):
        precision.clear_caches()
        monkeypatch.setattr(provenance, "cpu_info", lambda: {"model": "test", "flags": flags})
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        if isa is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
        cap = precision.device_capability(CPU)
        return cap["kind"], cap["native_bf16"]

    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    bf16_flags = ["avx2", "avx512f", "avx512_bf16"]
    assert classify(bf16_flags, "AVX512") == ("cpu:avx512_bf16", True)
    assert classify(bf16_flags + ["amx_bf16"], "AVX512") == ("cpu:amx_bf16", True)
    assert classify(bf16_flags, "AVX512", isa="AVX512_CORE") == ("cpu:avx512", False)
    assert classify(bf16_flags, "AVX512", isa="AVX2") == ("cpu:avx2", False)
    assert classify(bf16_flags, "AVX2") == ("cpu:avx2", False)  # ATEN_CPU_CAPABILITY=avx2
    assert classify(["avx2", "avx512f"], "AVX512") == ("cpu:avx512", False)
    assert classify(["avx2"], "AVX2") == ("cpu:avx2", False)
    assert classify([], "DEFAULT") == ("cpu:default", False)


# --- configuration --------------------------------------------------------------------------------
def test_config_accepts_auto_and_explains_bad_values(tmp_path):
    cfg = VASEConfig.preset("cpu32")
    assert (cfg.precision, cfg.channels_last, cfg.compile_inference) == ("auto", "auto", "auto")
    mixed = cfg.replace(precision="bf16-force", channels_last=True)
    assert VASEConfig.from_json(mixed.to_json()) == mixed
    with pytest.raises(ValueError, match=r"channels_last.*True, False or 'auto'"):
        cfg.replace(channels_last="yes")
    with pytest.raises(ValueError, match=r"compile_inference.*True, False or 'auto'"):
        cfg.replace(compile_inference=1)
    with pytest.raises(ValueError, match="precision.*bf16-force"):
        cfg.replace(precision="bf32")
