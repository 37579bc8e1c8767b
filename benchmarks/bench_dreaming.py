"""Choosing the dreaming weights (spec §7) by measurement.

The appendix of the paper is inconsistent about the encoder/decoder proximity weights (text:
alpha = 1000, beta = 20; search ranges: alpha in {10, 20, 40}, beta in {500, 1000, 2000}). This
script trains ``cpu32`` on moving shapes -> digits (both domains inferred by the learner) for
several (alpha, beta) pairs with the project's ``"mean"`` reduction, and measures how much the
first domain is forgotten: the reconstruction NLL of held-out moving-shapes images decoded as
their domain, at the end of the first segment vs. at the end of the second, and the current
domain's reconstruction at the end (the price paid for remembering).

    python benchmarks/bench_dreaming.py                # writes benchmarks/results/dreaming.json
    python benchmarks/bench_dreaming.py --steps 200    # smaller
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

GRID = [
    ("no dreaming", {"dreaming": False}),
    ("alpha=10, beta=500", {"dream_encoder_weight": 10.0, "dream_decoder_weight": 500.0}),
    ("alpha=20, beta=1000 (default)", {"dream_encoder_weight": 20.0, "dream_decoder_weight": 1000.0}),
    ("alpha=40, beta=2000", {"dream_encoder_weight": 40.0, "dream_decoder_weight": 2000.0}),
    ("alpha=1000, beta=20 (appendix text)", {"dream_encoder_weight": 1000.0, "dream_decoder_weight": 20.0}),
]


def _nll(learner, images, domain: int) -> float:
    import torch

    from vase_rl.objectives import reconstruction_nll

    x = learner._prep(images)
    with torch.no_grad():
        z = learner.encode_tensor(x, domain)
        params = learner._decode_net(learner.decoder, z, domain)
        return float(reconstruction_nll(params, x, learner.config.likelihood, learner.config.gaussian_std).mean())


def run_one(args: tuple) -> dict:
    name, overrides, steps, seed = args
    import torch

    torch.set_num_threads(1)
    from vase_rl.envs import make_stream

    from vase_rl import VASE, VASEConfig

    learner = VASE(VASEConfig.preset("cpu32", **overrides), seed=seed, device="cpu")
    stream = make_stream(["moving_shapes", "digits"], batch_size=64, seed=seed, steps_per_domain=steps)
    held_out = make_stream(["moving_shapes", "digits"], batch_size=256, seed=seed + 1000, steps_per_domain=1)
    shapes_test, digits_test = held_out[0].images, held_out[1].images
    t0 = time.perf_counter()
    first_domain, before = None, None
    for item in stream:
        stats = learner.update(item.images)
        if item.step == steps - 1:
            first_domain = stats["domain"]
            before = _nll(learner, shapes_test, first_domain)
    after = _nll(learner, shapes_test, first_domain)
    return {
        "name": name,
        "overrides": overrides,
        "seed": seed,
        "num_domains": learner.num_domains,
        "shapes_nll_before": before,
        "shapes_nll_after": after,
        "forgetting_nats": after - before,
        "digits_nll_end": _nll(learner, digits_test, learner.current_domain),
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600, help="updates per domain")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dreaming.json"))
    args = parser.parse_args(argv)
    jobs = [(name, ov, args.steps, seed) for name, ov in GRID for seed in args.seeds]
    started = time.time()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(run_one, jobs))
    summary = {}
    for name, _ in GRID:
        mine = [r for r in rows if r["name"] == name]
        summary[name] = {
            k: float(np.mean([r[k] for r in mine]))
            for k in ("forgetting_nats", "shapes_nll_before", "shapes_nll_after", "digits_nll_end")
        }
        summary[name]["num_domains"] = [r["num_domains"] for r in mine]
        # dreaming only acts once the digits have their own domain: forgetting over those seeds
        found = [r["forgetting_nats"] for r in mine if r["num_domains"] >= 2]
        summary[name]["forgetting_nats_switch_found"] = float(np.mean(found)) if found else None
        summary[name]["seeds_switch_found"] = len(found)
    out = {
        "command": "python benchmarks/bench_dreaming.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": platform.platform(),
        "steps_per_domain": args.steps,
        "seeds": args.seeds,
        "runs": rows,
        "summary": summary,
    }
    from vase_rl.provenance import write_json

    write_json(
        args.out,
        out,
        command=out["command"],
        seeds=args.seeds,
        started=started,
        code_paths=["core", "envs", "benchmarks/bench_dreaming.py"],
    )
    print(
        "| weights | forgetting of shapes (nats), all seeds | same, seeds whose switch was found | "
        "shapes NLL before → after | digits NLL at end | domains |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for name, s in summary.items():
        found = s["forgetting_nats_switch_found"]
        found_text = "–" if found is None else f"{found:.1f} ({s['seeds_switch_found']} seeds)"
        print(
            f"| {name} | {s['forgetting_nats']:.1f} | {found_text} | {s['shapes_nll_before']:.1f} → "
            f"{s['shapes_nll_after']:.1f} | {s['digits_nll_end']:.1f} | {s['num_domains']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
