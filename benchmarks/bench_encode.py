"""The frozen encoder's cost per frame, per CPU kind: the hot path of every RL step.

A wrapper with learning frozen encodes one batch per vector step (8 frames for 8 envs) through
``LatentFeed.latents`` (vase_rl/wrappers.py), so its per-frame cost at small batches is what VASE
adds to PPO. This times that call, interleaved round by round, for each execution path, on
learners with the same (briefly trained) weights:

- ``fp32``: the plain exact path (contiguous, eager); the reference;
- ``channels_last`` / ``compiled``: the same fp32 maths in NHWC layout / through ``torch.compile``;
- ``bf16``: an explicit ``precision="bf16"`` request (runs fp32, after one warning, where the CPU
  has no native bf16); ``bf16_channels_last``: the same with channels_last;
- ``auto``: every option at ``"auto"`` (what a new user gets; vase_rl/precision.py);
- with ``--force-bf16``: ``bf16_force`` (bf16 regardless; very slow without native bf16).

and the largest deviation of each path's latents from ``fp32``. A path is *exact enough* when
that deviation is within ``vase_rl.precision.TOLERANCE`` of its class: 1e-5 for the fp32 layouts
(only the order of float operations changes), 1e-2 for bf16 (its rounding; latents are O(1)).

    python benchmarks/bench_encode.py                            # cpu32 and paper64, batches 8 and 64
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_encode.py   # AVX2, emulated

Writes ``benchmarks/results/encode_<kind>.json`` (with provenance) and the table for that CPU
kind between its markers in docs/PERFORMANCE.md (``--no-doc`` to skip).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_update import bench_clock, kind_label, path_label, replace_section, synthetic_batch  # noqa: E402

from vase_rl.precision import TOLERANCE  # noqa: E402  max |z - z_fp32| for "exact enough", per precision

PLAIN = {"precision": "fp32", "channels_last": False, "compile_inference": False}
VARIANTS = {
    "fp32": PLAIN,
    "channels_last": dict(PLAIN, channels_last=True),
    "compiled": dict(PLAIN, compile_inference=True),
    "bf16": dict(PLAIN, precision="bf16"),
    "bf16_channels_last": dict(PLAIN, precision="bf16", channels_last=True),
    "auto": {"precision": "auto", "channels_last": "auto", "compile_inference": "auto"},
}


def build(preset: str, variants: dict, seed: int = 0):
    """One frozen learner per variant, all with the weights of a plain learner trained briefly."""
    from vase_rl import VASE, VASEConfig
    from vase_rl.wrappers import LatentFeed

    base = VASEConfig.preset(preset)
    trained = VASE(base.replace(**PLAIN), seed=seed, device="cpu")
    rng = np.random.default_rng(seed)
    for _ in range(10):
        trained.update(synthetic_batch(rng, base.batch_size, base.image_shape[1]))
    state = trained.state_dict()
    c, h, w = base.image_shape
    space = spaces.Box(0, 255, (h, w, c), np.uint8)
    feeds = {}
    for name, options in variants.items():
        learner = VASE(base.replace(**options), seed=seed, device="cpu")
        for part in ("encoder", "decoder", "classifier"):
            getattr(learner, part).load_state_dict(state[part])
        learner._mask = trained._mask.clone()
        feeds[name] = LatentFeed(space, learner)
    return base, feeds


def measure(feeds: dict, batch: int, shape: tuple, rounds: int, clock=time.perf_counter) -> dict:
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(batch))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for feed in feeds.values():  # compile and warm up
            for _ in range(3):
                feed.latents(x)
    reference = feeds["fp32"].latents(x)[0]
    # repetitions per sample: about 50 ms of the plain path
    t0 = clock()
    feeds["fp32"].latents(x)
    reps = max(2, min(200, int(0.05 / max(clock() - t0, 1e-6))))
    samples: dict[str, list[float]] = {name: [] for name in feeds}
    for r in range(rounds):
        order = list(feeds) if r % 2 == 0 else list(reversed(feeds))
        for name in order:
            feed = feeds[name]
            n = reps if not name.endswith("force") else max(1, reps // 20)
            start = clock()
            for _ in range(n):
                feed.latents(x)
            samples[name].append((clock() - start) / n / batch * 1e6)
    out = {}
    plain = min(samples["fp32"])
    for name, feed in feeds.items():
        execution = feed.learner.execution
        deviation = float((feed.latents(x)[0] - reference).abs().max())
        out[name] = {
            "us_per_frame": min(samples[name]),  # best round: the least disturbed by other processes
            "median_us_per_frame": statistics.median(samples[name]),
            "samples_us_per_frame": samples[name],
            "speedup_vs_fp32": plain / min(samples[name]),
            "max_abs_diff_vs_fp32": deviation,
            "ran_as": path_label(execution),
            "exact_enough": deviation <= TOLERANCE[execution["precision"]],
        }
    exact = [n for n in out if out[n]["exact_enough"]]
    fastest = min(exact, key=lambda n: out[n]["us_per_frame"])
    return {
        "reps": reps,
        "paths": out,
        "fastest_exact_enough": fastest,
        "auto_vs_fastest": out["auto"]["us_per_frame"] / out[fastest]["us_per_frame"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["cpu32", "paper64"])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--force-bf16", action="store_true", help="also time precision='bf16-force'")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/encode_<kind>.json)")
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "PERFORMANCE.md"))
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/PERFORMANCE.md")
    args = parser.parse_args(argv)

    from vase_rl.precision import device_capability
    from vase_rl.provenance import machine_summary, write_json

    started = time.time()
    torch.set_num_threads(args.threads)
    clock, clock_name = bench_clock(args.threads)
    capability = device_capability(torch.device("cpu"))
    label = kind_label(capability)
    variants = dict(VARIANTS)
    if args.force_bf16:
        variants["bf16_force"] = dict(PLAIN, precision="bf16-force")
    results: dict = {
        "cpu_kind": label,
        "capability": capability,
        "tolerance": TOLERANCE,
        "clock": clock_name,
        "rounds": args.rounds,
        "threads": args.threads,
        "load_before": list(os.getloadavg()),
        "presets": {},
    }
    for preset in args.presets:
        cfg, feeds = build(preset, variants)
        results["presets"][preset] = {}
        for batch in args.batches:
            entry = measure(feeds, batch, cfg.image_shape, args.rounds, clock)
            results["presets"][preset][str(batch)] = entry
            row = ", ".join(f"{n}={v['us_per_frame']:.1f}" for n, v in entry["paths"].items())
            print(
                f"[{label} {preset}, batch {batch}] us per frame: {row}; fastest exact-enough: "
                f"{entry['fastest_exact_enough']}, auto at {entry['auto_vs_fastest']:.2f}x its time",
                flush=True,
            )
        results["presets"][preset]["auto_execution"] = dict(feeds["auto"].learner.execution)
    results["load_after"] = list(os.getloadavg())
    results["command"] = " ".join(
        [f"{v}={os.environ[v]}" for v in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if os.environ.get(v)]
        + ["python benchmarks/bench_encode.py", *(sys.argv[1:] if argv is None else argv)]
    )
    results["machine"] = machine_summary()
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"encode_{label}.json")
    write_json(
        out,
        results,
        command=results["command"],
        seeds=[0],
        started=started,
        code_paths=["core", "benchmarks/bench_encode.py"],
    )
    print(f"wrote {out}")
    if not args.no_doc:
        write_markdown(results, Path(args.markdown), out)
    return results


def write_markdown(results: dict, path: Path, json_path: Path) -> None:
    label = results["cpu_kind"]
    shown = json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path
    lines = [
        f"<!-- generated by benchmarks/bench_encode.py for {label}; edit the text around the table freely -->",
        f"Command: `{results['command']}`  ",
        f"CPU: {results['machine']}; {results['capability']['detail']}  ",
        f"Load average (1 min) before / after: {results['load_before'][0]:.1f} / {results['load_after'][0]:.1f} "
        f"on {os.cpu_count()} CPUs; JSON: `{shown}`",
        "",
        f"µs per frame through `LatentFeed.latents` ({results['clock']}, best of {results['rounds']} rounds, "
        f"{results['threads']} torch thread(s); × = speed-up over fp32; max |Δz| vs fp32).",
        "",
    ]
    for preset, batches in results["presets"].items():
        sizes = [b for b in batches if b.isdigit()]
        names = list(batches[sizes[0]]["paths"])
        lines.append(f"| {preset} | ran as | " + " | ".join(f"batch {b}" for b in sizes) + " | max abs Δz |")
        lines.append("|---|---|" + "---:|" * (len(sizes) + 1))
        for name in names:
            cells = []
            for b in sizes:
                p = batches[b]["paths"][name]
                mark = "" if p["exact_enough"] else " (outside tolerance)"
                cells.append(f"{p['us_per_frame']:.1f} ({p['speedup_vs_fp32']:.2f}×){mark}")
            diffs = [batches[b]["paths"][name]["max_abs_diff_vs_fp32"] for b in sizes]
            diff = "NaN latents" if any(d != d for d in diffs) else f"{max(diffs):.1e}"
            ran = batches[sizes[0]]["paths"][name]["ran_as"]
            lines.append(f"| {name} | {ran} | " + " | ".join(cells) + f" | {diff} |")
        best = ", ".join(
            f"batch {b}: {batches[b]['fastest_exact_enough']} (auto at {batches[b]['auto_vs_fastest']:.2f}× its time)"
            for b in sizes
        )
        lines += ["", f"Fastest exact-enough path, {preset}: {best}.", ""]
    replace_section(path, f"bench_encode:{label}", "\n".join(lines), title=f"### Frozen encoder, {label}")


if __name__ == "__main__":
    main()
