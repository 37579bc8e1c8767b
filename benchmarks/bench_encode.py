"""Inference benchmark: what ``VASE.encode_tensor`` costs per frame in the RL setting.

A ``VecVASE`` with learning frozen encodes one batch per vector step (8 frames for 8 envs), so
the per-frame cost at small batch sizes is what the wrapper adds to PPO. This measures it for
the exact fp32 path and each execution option (bf16 autocast, channels_last, torch.compile),
interleaved round by round, and the largest deviation of each option from fp32.

    python benchmarks/bench_encode.py                      # cpu32, batches 8 and 64, 1 thread
    python benchmarks/bench_encode.py --preset paper64 --threads 2

Writes benchmarks/results/encode.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "channels_last": {"channels_last": True},
    "compiled": {"compile_inference": True},
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu32")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=100, help="encode calls per variant per round")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "encode.json"))
    args = parser.parse_args(argv)

    from vase_rl import VASE, VASEConfig

    torch.set_num_threads(args.threads)
    learners = {
        name: VASE(VASEConfig.preset(args.preset, **opts), seed=0, device="cpu") for name, opts in VARIANTS.items()
    }
    shape = learners["fp32"].config.image_shape
    results: dict[str, dict] = {}
    for batch in args.batches:
        x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(batch))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for learner in learners.values():  # compile and warm up
                for _ in range(5):
                    learner.encode_tensor(x)
        samples: dict[str, list[float]] = {name: [] for name in learners}
        for _ in range(args.rounds):
            for name, learner in learners.items():
                start = time.perf_counter()
                for _ in range(args.reps):
                    learner.encode_tensor(x)
                samples[name].append((time.perf_counter() - start) / args.reps / batch * 1e6)
        reference = learners["fp32"].encode_tensor(x)
        results[str(batch)] = {
            name: {
                "us_per_frame": statistics.median(samples[name]),
                "speedup_vs_fp32": statistics.median(samples["fp32"]) / statistics.median(samples[name]),
                "max_abs_diff_vs_fp32": float((learners[name].encode_tensor(x) - reference).abs().max()),
            }
            for name in learners
        }
        row = ", ".join(f"{n}={v['us_per_frame']:.1f}" for n, v in results[str(batch)].items())
        print(f"[{args.preset}, batch {batch}] us per frame: {row}")
    out = {
        "command": "python benchmarks/bench_encode.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads},
        "preset": args.preset,
        "batches": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
