"""How the learner's networks run on a device: precision, memory layout, compilation.

Three options of :class:`vase_rl.VASEConfig` choose the execution path, and each accepts
``"auto"`` (the default), which this module resolves once per learner into a plain-data record,
``VASE.execution``:

- ``precision``: ``"fp32"`` (exact), ``"bf16"`` (``torch.autocast`` in bfloat16 around the
  networks; losses and statistics stay fp32), ``"bf16-force"`` (bf16 even where it is slow) or
  ``"auto"``. bf16 pays only where the device runs it natively: on a CPU with AVX-512 BF16 it makes
  a paper64 update ~1.6x faster, on an AVX2-only CPU the same request was measured 17-28x *slower*
  (issue 15). So ``"auto"`` picks bf16 only where the device reports native bf16 **and** a short
  probe (:func:`probe_bf16`: one small convolution timed both ways) measures bf16 at least as
  fast as fp32 (:data:`BF16_MIN_SPEEDUP`); an explicit ``"bf16"`` on a device without native bf16
  warns once, with the measured cost, and runs fp32; ``"bf16-force"`` runs bf16 regardless.
- ``channels_last`` / ``compile_inference``: ``True``, ``False`` or ``"auto"``. There is no
  run-time probe for these (their gains are 0-30 %, too close to timing noise for a sub-second
  probe to call reliably); ``"auto"`` looks the device kind up in :data:`MEASURED_LAYOUT`, filled
  from ``benchmarks/bench_update.py`` / ``bench_encode.py`` runs, and adopts an option only where it
  measured faster. Kinds never measured get the plain path.

Decisions never hinge on a close call: without native bf16 the answer comes from the capability
alone (no timing at all); with it, the probe only has to tell native bf16 from emulated bf16, and
its threshold (bf16 at least as fast as fp32) sits far from both: on the machines measured,
native bf16 probed 1.5-1.7x (once 1.2x under a load of 7 on 2 cores), emulated or missing bf16
0.03-0.4x. The probe reads thread CPU time, so other processes cannot inflate it. Capability and
probe are cached per process and device, so only the first learner on a device pays for the probe
(~0.1 s with native bf16, ~0.2-0.5 s without).

``VASE_RL_EXECUTION=plain`` in the environment makes every ``"auto"`` take the plain exact path
(fp32, contiguous, eager) without probing: for runs that must give the same numbers on every
machine, and for the test suite. Explicit settings are never overridden.

``encode()`` runs the encoder through :class:`InferenceEncoder`: under bf16 it keeps a bf16 copy of
the encoder's weights, refreshed whenever a weight changes, instead of letting autocast recast
every weight on every call (the same numbers, and what makes bf16 pay at RL batch sizes).

Tolerances (:data:`TOLERANCE`): the plain fp32 layouts (``channels_last``, ``torch.compile``)
change only the order of float operations (latents within 1e-5 of the plain path); bf16 latents
are within 1e-2 of fp32 (measured 1e-3 to 2.2e-3 on briefly trained networks,
``benchmarks/results/encode_*.json``), the accuracy bf16 buys its speed with. See
docs/PERFORMANCE.md for the figures behind every choice.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "PRECISIONS",
    "BF16_MIN_SPEEDUP",
    "MEASURED_LAYOUT",
    "ENV_EXECUTION",
    "device_capability",
    "probe_bf16",
    "resolve_execution",
    "restore_execution",
    "InferenceEncoder",
    "TOLERANCE",
    "clear_caches",
]

PRECISIONS = ("auto", "fp32", "bf16", "bf16-force")
ENV_EXECUTION = "VASE_RL_EXECUTION"  # "plain": every "auto" option takes the plain exact path

# "exact enough" for the encoder's latents: max |z - z_fp32| per precision of the path. The fp32
# layouts only reorder float operations; bf16 keeps 8 bits of mantissa, and latents are O(1)
# (unit prior), so 1e-2 is 1 % of the prior's spread (measured 1e-3 to 2.2e-3, docs/PERFORMANCE.md).
TOLERANCE = {"fp32": 1e-5, "bf16": 1e-2}

# bf16 is adopted by "auto" (on a device reporting native bf16) only when the probe measures it at
# least this fast relative to fp32: the line between native (1.5-1.7x) and emulated (<= 0.4x) bf16.
BF16_MIN_SPEEDUP = 1.0

# channels_last / torch.compile per device kind, adopted by "auto" only where measured faster
# (docs/PERFORMANCE.md; benchmarks/results/{update,encode}_cpu-avx512_bf16.json and, on the same
# machine with AVX2 emulated, *_cpu-avx2-emulated.json). channels_last: update with dreaming
# 1.11-1.19x, frozen encoder 1.04-2.0x faster on both kinds. torch.compile: encoder 0.79-1.08x
# (no gain), and NaN latents under the AVX2 emulation. Kinds absent here were never measured and
# get the plain path.
MEASURED_LAYOUT: dict[str, dict[str, bool]] = {
    "cpu:avx512_bf16": {"channels_last": True, "compile_inference": False},
    "cpu:avx2": {"channels_last": True, "compile_inference": False},
}

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) under which bf16 matrix work is emulated, not native
_ISA_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"}
_AVX2_FAMILY = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2"}

_CAPABILITIES: dict[str, dict[str, Any]] = {}
_PROBES: dict[str, dict[str, Any]] = {}
_WARNED: set[tuple[str, ...]] = set()


def clear_caches() -> None:
    """Forget cached capabilities, probe results and which warnings were given (for tests)."""
    _CAPABILITIES.clear()
    _PROBES.clear()
    _WARNED.clear()


def _plain() -> bool:
    value = os.environ.get(ENV_EXECUTION, "").strip().lower()
    if value not in ("", "auto", "plain"):
        raise ValueError(
            f"environment variable {ENV_EXECUTION}={os.environ[ENV_EXECUTION]!r} is not understood; "
            "set it to 'plain' (every 'auto' execution option takes fp32/contiguous/eager) or unset it"
        )
    return value == "plain"


def _key(device: torch.device) -> str:
    return device.type if device.index is None else f"{device.type}:{device.index}"


def _onednn_isa_cap() -> str | None:
    value = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    value = (value or "").strip().upper()
    return None if value in ("", "ALL", "DEFAULT") else value


def device_capability(device: torch.device) -> dict[str, Any]:
    """What ``device`` offers, as plain data: ``kind`` (e.g. ``"cpu:avx512_bf16"``, ``"cpu:avx2"``,
    ``"cuda:sm_90"``), ``native_bf16``, ``torch_capability`` and a ``detail`` line. Cached."""
    key = _key(device)
    if key not in _CAPABILITIES:
        _CAPABILITIES[key] = _cuda_capability(device) if device.type == "cuda" else _cpu_capability(device)
    return dict(_CAPABILITIES[key])


def _cpu_capability(device: torch.device) -> dict[str, Any]:
    from vase_rl.provenance import cpu_info

    info = cpu_info()
    flags = set(info.get("flags") or ())
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # pragma: no cover - very old torch
        capability = "unknown"
    isa_cap = _onednn_isa_cap()
    hw_bf16 = bool({"avx512_bf16", "amx_bf16"} & flags)
    native = hw_bf16 and capability == "AVX512" and isa_cap not in _ISA_WITHOUT_BF16
    if native:
        kind = "cpu:amx_bf16" if "amx_bf16" in flags else "cpu:avx512_bf16"
    elif capability == "AVX512" and isa_cap not in _AVX2_FAMILY:
        kind = "cpu:avx512"
    elif capability in ("AVX2", "AVX512"):
        kind = "cpu:avx2"
    else:
        kind = f"cpu:{capability.lower()}"
    limits = [f"{v}={os.environ[v]}" for v in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if os.environ.get(v)]
    detail = f"{info.get('model')}, torch capability {capability}, flags {','.join(sorted(flags)) or 'none'}"
    if limits:
        detail += f" (limited by {' '.join(limits)})"
    return {
        "device": _key(device),
        "kind": kind,
        "native_bf16": bool(native),
        "torch_capability": capability,
        "emulated": bool(limits),
        "detail": detail,
    }


def _cuda_capability(device: torch.device) -> dict[str, Any]:  # pragma: no cover - no GPU in CI
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    try:
        native = bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch has no including_emulation argument
        native = bool(torch.cuda.is_bf16_supported()) and major >= 8
    return {
        "device": _key(device),
        "kind": f"cuda:sm_{major}{minor}",
        "native_bf16": native,
        "torch_capability": f"sm_{major}{minor}",
        "emulated": False,
        "detail": f"{torch.cuda.get_device_name(index)}, compute capability {major}.{minor}",
    }


# the probe's clock on CPU: CPU time of the calling thread, so that being descheduled by other
# processes (a shared machine) does not count; the probe runs with one torch thread, inline
_cpu_clock = time.thread_time


def probe_bf16(device: torch.device) -> dict[str, Any]:
    """Time one 4x4 stride-2 convolution (16 x 64 x 16 x 16, the networks' typical layer) in fp32
    and under bf16 autocast, interleaved, best of up to 7 pairs after up to 3 warm-up pairs. Returns ``fp32_ms``, ``bf16_ms``,
    ``speedup`` (fp32 / bf16 time) and ``probe_seconds``, or ``error`` when bf16 autocast does not
    run at all. Cached per process and device; the global torch RNG is not touched.

    On CPU it runs with one torch thread (restored after) and reads the thread's CPU time, which
    other processes cannot inflate; the best of several pairs also discards cache disturbances.
    It stops after two pairs once bf16 is clearly slow (3x slower than fp32): on a CPU without
    native bf16 a single bf16 call can cost tens of milliseconds."""
    key = _key(device)
    if key in _PROBES:
        return dict(_PROBES[key])
    start = time.perf_counter()
    on_cpu = device.type == "cpu"
    clock = _cpu_clock if on_cpu else time.perf_counter
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 64, 16, 16, generator=gen).to(device)
    w = (torch.rand(64, 64, 4, 4, generator=gen) - 0.5).to(device) / 32

    def run(bf16: bool) -> float:
        if not on_cpu:  # pragma: no cover - no GPU in CI
            torch.cuda.synchronize(device)
        t0 = clock()
        if bf16:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                torch.nn.functional.conv2d(x, w, stride=2, padding=1)
        else:
            torch.nn.functional.conv2d(x, w, stride=2, padding=1)
        if not on_cpu:  # pragma: no cover
            torch.cuda.synchronize(device)
        return clock() - t0

    threads = torch.get_num_threads()
    try:
        if on_cpu:
            torch.set_num_threads(1)
        with torch.no_grad():
            for _ in range(3):  # warm up: kernel selection, weight packing, the allocator's thresholds
                if run(True) > 10 * run(False):
                    break  # bf16 is emulated: no need to warm it up further
            best32 = best16 = float("inf")
            for i in range(7):
                best32 = min(best32, run(False))
                best16 = min(best16, run(True))
                if i >= 1 and (best16 > 3 * best32 or time.perf_counter() - start > 0.5):
                    break
        result: dict[str, Any] = {
            "fp32_ms": best32 * 1e3,
            "bf16_ms": best16 * 1e3,
            "speedup": best32 / max(best16, 1e-9),
            "clock": "thread CPU time, 1 thread" if on_cpu else "wall time",
        }
    except Exception as err:  # bf16 autocast unavailable on this device/build
        result = {"error": f"{type(err).__name__}: {err}"}
    finally:
        if on_cpu:
            torch.set_num_threads(threads)
    result["probe_seconds"] = time.perf_counter() - start
    _PROBES[key] = result
    return dict(result)


def _warn_once(key: tuple[str, ...], message: str, stacklevel: int) -> None:
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)


def _autocast_runs(device: torch.device) -> str | None:
    """None when bf16 autocast runs one tiny op on ``device``; else the error text."""
    try:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            torch.nn.functional.linear(torch.ones(2, 2, device=device), torch.ones(2, 2, device=device))
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


def _resolve_precision(requested: str, device: torch.device, cap: dict[str, Any], stacklevel: int) -> dict[str, Any]:
    out: dict[str, Any] = {"precision": "fp32", "bf16_speedup": None}
    if requested == "fp32":
        out["precision_reason"] = "requested"
        return out
    if requested == "auto" and _plain():
        out["precision_reason"] = f"auto, {ENV_EXECUTION}=plain"
        return out
    if requested == "auto" and not cap["native_bf16"]:
        out["precision_reason"] = f"auto: no native bf16 on {cap['kind']}"
        return out
    broken = _autocast_runs(device)
    if broken is not None:
        out["precision_reason"] = f"bf16 autocast unavailable ({broken})"
        if requested != "auto":
            _warn_once(
                (_key(device), "unavailable"),
                f"bfloat16 autocast unavailable on {device} ({broken}); falling back to fp32",
                stacklevel,
            )
        return out
    if requested == "bf16-force":
        out.update(precision="bf16", precision_reason="bf16-force")
        return out
    if requested == "bf16" and cap["native_bf16"]:
        out.update(precision="bf16", precision_reason=f"requested; native bf16 on {cap['kind']}")
        return out
    probe = probe_bf16(device)
    speedup = probe.get("speedup")
    out["bf16_speedup"] = None if speedup is None else round(float(speedup), 3)
    if speedup is None:
        out["precision_reason"] = f"bf16 probe failed ({probe.get('error')})"
        return out
    if requested == "auto":
        if speedup >= BF16_MIN_SPEEDUP:
            out.update(precision="bf16", precision_reason=f"auto: native bf16, probe {speedup:.2f}x fp32 speed")
        else:
            out["precision_reason"] = (
                f"auto: native bf16 reported but the probe measured {speedup:.2f}x (< {BF16_MIN_SPEEDUP}x)"
            )
        return out
    # an explicit "bf16" on a device without native bf16: one warning with the measured cost, then fp32
    cost = f"{1 / speedup:.1f}x slower" if speedup < 1 else f"{speedup:.2f}x the fp32 speed"
    out["precision_reason"] = f"bf16 requested, no native bf16 on {cap['kind']} (bf16 conv {cost}); fp32 used"
    _warn_once(
        (_key(device), "not-native"),
        f"precision='bf16' was requested, but this device has no native bfloat16 ({cap['detail']}): a bf16 "
        f"convolution measured {cost} than fp32 here ({probe['bf16_ms']:.2f} vs {probe['fp32_ms']:.2f} ms). "
        "Running fp32 instead (exact, and no slowdown). Use precision='bf16-force' to run bf16 anyway, or "
        "precision='auto' to let vase_rl choose per device.",
        stacklevel,
    )
    return out


def _resolve_layout(name: str, requested: Any, cap: dict[str, Any]) -> tuple[bool, str]:
    if isinstance(requested, bool):
        return requested, "requested"
    if _plain():
        return False, f"auto, {ENV_EXECUTION}=plain"
    measured = MEASURED_LAYOUT.get(cap["kind"])
    if measured is None:
        return False, f"auto: {cap['kind']} not measured"
    chosen = bool(measured.get(name, False))
    return chosen, f"auto: measured {'faster' if chosen else 'not faster'} on {cap['kind']}"


def resolve_execution(config: Any, device: torch.device, stacklevel: int = 2) -> dict[str, Any]:
    """The execution path for ``config`` (its ``precision``, ``channels_last``, ``compile_inference``)
    on ``device``, as a flat dict of plain data: the resolved ``precision`` (``"fp32"``/``"bf16"``),
    ``channels_last`` and ``compile_inference`` (bools), what was requested, why, and the device's
    ``device_kind`` / ``native_bf16`` / ``torch_capability`` / ``bf16_speedup`` (probe, if run)."""
    cap = device_capability(device)
    out: dict[str, Any] = {
        "device": cap["device"],
        "device_kind": cap["kind"],
        "native_bf16": cap["native_bf16"],
        "torch_capability": cap["torch_capability"],
        "emulated": cap["emulated"],
        "auto_mode": "plain" if _plain() else "measured",
        "precision_requested": config.precision,
        "channels_last_requested": config.channels_last,
        "compile_inference_requested": config.compile_inference,
        "restored": False,
    }
    out.update(_resolve_precision(config.precision, device, cap, stacklevel + 1))
    for name in ("channels_last", "compile_inference"):
        out[name], out[f"{name}_reason"] = _resolve_layout(name, getattr(config, name), cap)
    return out


def restore_execution(saved: Any, fresh: dict[str, Any]) -> dict[str, Any]:
    """The execution record a loaded learner should use: the checkpoint's own (``saved``) when it
    was resolved for the same device kind from the same requests, so a resumed run keeps exactly
    the numerics it was trained with; otherwise ``fresh`` (resolved for this device), which notes
    the checkpoint's choice under ``saved_precision`` / ``saved_device_kind``."""
    keys = ("device_kind", "auto_mode", "precision_requested", "channels_last_requested", "compile_inference_requested")
    same = isinstance(saved, dict) and all(saved.get(k) == fresh.get(k) for k in keys)
    if same and saved.get("precision") in ("fp32", "bf16"):
        out = dict(fresh)
        for name in ("precision", "channels_last", "compile_inference"):
            out[name] = saved.get(name, fresh[name])
            out[f"{name}_reason"] = saved.get(f"{name}_reason", fresh.get(f"{name}_reason"))
        out["bf16_speedup"] = saved.get("bf16_speedup", fresh.get("bf16_speedup"))
        out["restored"] = True
        return out
    out = dict(fresh)
    if isinstance(saved, dict):
        out["saved_precision"] = saved.get("precision")
        out["saved_device_kind"] = saved.get("device_kind")
    return out


class InferenceEncoder:
    """The encoder as ``encode()`` runs it: the learner's own module (fp32), or under bf16 a copy
    whose weights are already bf16, so autocast does not recast every weight on every call (at a
    batch of 8 frames that cast is ~10 % of the call); optionally through ``torch.compile``.

    The copy is refreshed in place whenever a parameter of the learner's encoder changed (tracked
    by tensor versions, which every optimiser step and ``load_state_dict`` bump), so it never
    serves stale weights. Under autocast the results are identical to autocast on the fp32
    weights: autocast would cast the same weights to bf16 before the same kernels."""

    def __init__(self, encoder: torch.nn.Module, bf16: bool, compile: bool) -> None:
        self.encoder = encoder
        self.copy: torch.nn.Module | None = None
        if bf16:
            self.copy = copy.deepcopy(encoder).to(torch.bfloat16).eval().requires_grad_(False)
            for p in self.copy.parameters():
                p.grad = None
        self._versions: tuple[tuple[int, int], ...] | None = None
        module = self.copy if self.copy is not None else encoder
        self._run: Callable = module
        if compile:
            try:
                self._run = torch.compile(module)
            except Exception as err:  # pragma: no cover - platform dependent
                warnings.warn(f"torch.compile failed ({err}); using the eager encoder", RuntimeWarning, stacklevel=3)

    def _sync(self) -> None:
        params = list(self.encoder.parameters())
        versions = tuple((id(p), p._version) for p in params)
        if versions != self._versions:
            with torch.no_grad():
                for mine, theirs in zip(self.copy.parameters(), params):
                    mine.copy_(theirs)
            self._versions = tuple((id(p), p._version) for p in params)

    def __call__(self, x: torch.Tensor) -> Any:
        if self.copy is not None:
            self._sync()
            self.copy.eval()
        return self._run(x)
