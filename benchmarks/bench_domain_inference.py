"""Domain inference over streams x seeds: is every switch found, every return re-identified, and no
domain invented on a stationary stream?

For each (stream, seed) a fresh learner (``--preset``, default ``cpu32``) trains on the stream and
its inferred domain per update is scored against the truth with ``vase_rl.evaluation``. A run is
*exact* when every true switch is detected within ``--tolerance`` updates (no false alarm), the
learner allocates one domain per true domain and every returning domain gets its old id back.
Besides the verdicts, each run records the *margins* of the statistic at each decision, so a
result that a different CPU's rounding could flip shows up as a small margin:

- ``switch_margin``: at each true switch, the smaller standardised deficit t of the two batches
  after it, divided by the per-batch level k + h/2 at which two batches raise an alarm
  (>= 1: found within two updates; the issue's robustness aim is >= 2);
- ``stationary_margin``: the largest CUSUM value S reached inside stationary stretches (15 updates
  after each switch excluded), divided by the alarm level h (< 1: no false alarm; aim <= 0.5);
- for each return, the re-identified domain's mean deficit against its fit level.

Capacity C, the KL and the active latents at each switch are recorded (is there information in
the representation when the data change?).

    python benchmarks/bench_domain_inference.py                      # 5 switching streams + stationary, seeds 0-7
    python benchmarks/bench_domain_inference.py --streams inverted --seeds 0 1 --steps 300
    python benchmarks/bench_domain_inference.py --set domain_test='"ratio"'  # the paper's rule

Writes ``benchmarks/results/domain_inference.json`` (with provenance) and a table in
``docs/DOMAIN_INFERENCE.md`` (between the BENCH markers). Finished runs are cached under
``runs/bench_domain_inference/`` so an interrupted benchmark resumes (``--fresh`` to recompute).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> (sequence of (domain, updates) as multiples of --steps, image channels)
STREAMS: dict[str, tuple[list[tuple[str, float]], int]] = {
    "shapes_digits": ([("moving_shapes", 1), ("digits", 1), ("moving_shapes", 1)], 1),
    "digits_garments": ([("digits", 1), ("garments", 1), ("digits", 1)], 1),
    "shapes_letters": ([("shapes", 1), ("letters", 1), ("shapes", 1)], 1),
    "inverted": ([("digits", 1), ("inverted_digits", 1), ("digits", 1)], 1),
    "texture": ([("digits", 1), ("textured_digits", 1), ("digits", 1)], 1),
    "colour": ([("shapes", 1), ("coloured_shapes", 1), ("shapes", 1)], 3),
    "stationary": ([("moving_shapes", 5)], 1),
}
DEFAULT_STREAMS = ["shapes_digits", "digits_garments", "shapes_letters", "inverted", "texture", "stationary"]
#: what a run's result depends on (its cache key and the JSON's provenance)
CODE_PATHS = ["core", "envs", "!envs/sprite_task.py", "evaluation", "benchmarks/bench_domain_inference.py"]
NEAR_SWITCH = 15  # updates after a switch excluded from the stationary margin


def run(
    stream_name: str, seed: int, steps: int, preset: str, overrides: dict[str, Any], tolerance: int, cache: str | None
) -> dict[str, Any]:
    if cache and Path(cache).is_file():
        return json.loads(Path(cache).read_text())
    import torch
    from vase_rl.envs import make_stream

    from vase_rl import VASE, VASEConfig
    from vase_rl.evaluation import boundary_scores, domain_agreement, reidentification

    torch.set_num_threads(1)
    sequence, channels = STREAMS[stream_name]
    sequence = [(name, max(1, int(round(mult * steps)))) for name, mult in sequence]
    config = VASEConfig.preset(preset, **overrides)
    if channels != config.image_shape[0]:
        config = config.replace(image_shape=(channels, *config.image_shape[1:]))
    learner = VASE(config, seed=seed, device="cpu")
    stream = make_stream(
        sequence, batch_size=config.batch_size, seed=seed, image_size=config.image_shape[1], channels=channels
    )
    true, pred, stat, evid, events = [], [], [], [], []
    at_switch: list[dict[str, Any]] = []
    start = time.perf_counter()
    for item in stream:
        stats = learner.update(item.images)
        true.append(item.domain)
        pred.append(stats["domain"])
        stat.append(stats.get("statistic"))
        evid.append(stats.get("evidence"))
        events.append(stats["event"])
        if item.step + 1 in stream.boundaries:  # the representation just before the data change
            at_switch.append(
                {
                    "update": item.step + 1,
                    "capacity": stats["capacity"],
                    "kl": stats.get("kl"),
                    "information": stats.get("information"),
                    "recon": stats.get("recon"),
                    "active_latents": stats.get("active_latents"),
                    "domains": learner.num_domains,
                }
            )
    seconds = time.perf_counter() - start
    true_a, pred_a = np.array(true), np.array(pred)
    bounds = boundary_scores(pred_a, true_a, tolerance=tolerance)
    reid = reidentification(pred_a, true_a)
    n_true = len(set(true))
    switch_level = config.evidence_allowance + 0.5 * config.evidence_threshold
    switch_margins = []
    for b in stream.boundaries:
        ts = [stat[i] for i in (b, b + 1) if i < len(stat) and stat[i] is not None]
        switch_margins.append(min(ts) / switch_level if len(ts) == 2 else None)
    near = np.zeros(len(true), dtype=bool)
    for b in stream.boundaries:
        near[b : b + NEAR_SWITCH] = True
    inside = [e for e, n in zip(evid, near) if e is not None and not n]
    # where the evidence rose above the hold level inside stationary stretches (what nearly alarmed)
    peaks = [
        {"update": i, "statistic": stat[i], "evidence": e, "event": events[i]}
        for i, (e, n) in enumerate(zip(evid, near))
        if e is not None and not n and e > 0.25 * config.evidence_threshold
    ]
    decisions = [
        {
            k: d.get(k)
            for k in (
                "step",
                "current",
                "chosen",
                "event",
                "vote",
                "statistic",
                "evidence",
                "candidate_statistic",
                "episode",
            )
        }
        for d in learner.domain_log
        if d["event"] in ("new", "switch", "max_domains")
    ]
    returns = [r for r in reid["returns"]]
    result = {
        "stream": stream_name,
        "seed": seed,
        "sequence": sequence,
        "updates": len(true),
        "true_domains": n_true,
        "domains": learner.num_domains,
        "boundary_f1": bounds["f1"],
        "precision": bounds["precision"],
        "recall": bounds["recall"],
        "delays": [p - c for c, p in bounds["matches"]],
        "missed": bounds["missed"],
        "false_alarms": bounds["false_alarms"],
        "ari": domain_agreement(pred_a, true_a)["ari"],
        "returns": len(returns),
        "reidentified": sum(r["correct"] for r in returns),
        "held": int(sum(e == "held" for e in events)),
        "switch_margin": switch_margins,
        "stationary_margin": (max(inside) / config.evidence_threshold) if inside else None,
        "stationary_peaks": peaks[:20],
        "at_switch": at_switch,
        "decisions": decisions,
        "execution": getattr(learner, "execution", None),
        "seconds": round(seconds, 1),
    }
    new_events = sum(1 for d in decisions if d["event"] == "new")
    result["exact"] = bool(
        learner.num_domains == n_true
        and not bounds["missed"]
        and not bounds["false_alarms"]
        and all(r["correct"] for r in returns)
        and new_events == n_true - 1
    )
    if cache:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        Path(cache).write_text(json.dumps(result))
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    switching = [r for r in runs if r["stream"] != "stationary"]
    stationary = [r for r in runs if r["stream"] == "stationary"]
    delays = [d for r in switching for d in r["delays"]]
    n_switches = sum(len(r["switch_margin"]) for r in switching)
    detected = sum(len(r["delays"]) for r in switching)
    margins = [m for r in switching for m in r["switch_margin"] if m is not None]
    summary = {
        "runs": len(runs),
        "switching_runs": len(switching),
        "exact": sum(r["exact"] for r in switching),
        "exact_rate": (sum(r["exact"] for r in switching) / len(switching)) if switching else None,
        "switches": n_switches,
        "switches_detected_within_tolerance": detected,
        "mean_delay": float(np.mean(delays)) if delays else None,
        "max_delay": int(max(delays)) if delays else None,
        "false_alarms": sum(len(r["false_alarms"]) for r in switching),
        "returns": sum(r["returns"] for r in switching),
        "reidentified": sum(r["reidentified"] for r in switching),
        "min_switch_margin": float(min(margins)) if margins else None,
        "switches_below_margin_2": sum(m < 2 for m in margins),
        "max_stationary_margin": max((r["stationary_margin"] or 0.0) for r in runs) if runs else None,
        "stationary_runs": len(stationary),
        "stationary_new_domains": sum(r["domains"] - 1 for r in stationary),
        "stationary_updates": sum(r["updates"] for r in stationary),
    }
    per_stream = {}
    for name in dict.fromkeys(r["stream"] for r in runs):
        rs = [r for r in runs if r["stream"] == name]
        ds = [d for r in rs for d in r["delays"]]
        ms = [m for r in rs for m in r["switch_margin"] if m is not None]
        per_stream[name] = {
            "runs": len(rs),
            "exact": sum(r["exact"] for r in rs) if name != "stationary" else None,
            "domains": [r["domains"] for r in rs],
            "mean_delay": float(np.mean(ds)) if ds else None,
            "false_alarms": sum(len(r["false_alarms"]) for r in rs),
            "reidentified": f"{sum(r['reidentified'] for r in rs)}/{sum(r['returns'] for r in rs)}",
            "min_switch_margin": float(min(ms)) if ms else None,
            "max_stationary_margin": max((r["stationary_margin"] or 0.0) for r in rs),
            "capacity_at_first_switch": [r["at_switch"][0]["capacity"] for r in rs if r["at_switch"]],
            "kl_at_first_switch": [r["at_switch"][0].get("kl") for r in rs if r["at_switch"]],
        }
    summary["per_stream"] = per_stream
    return summary


def table(summary: dict[str, Any], header: str) -> str:
    lines = [
        header,
        "",
        "| stream | runs | exact | domains (per seed) | mean delay | false alarms | returns re-identified "
        "| min switch margin | max stationary margin |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary["per_stream"].items():
        delay = "—" if s["mean_delay"] is None else f"{s['mean_delay']:.1f}"
        margin = "—" if s["min_switch_margin"] is None else f"{s['min_switch_margin']:.1f}"
        exact = "—" if s["exact"] is None else f"{s['exact']}/{s['runs']}"
        lines.append(
            f"| {name} | {s['runs']} | {exact} | {', '.join(map(str, s['domains']))} | {delay} | "
            f"{s['false_alarms']} | {s['reidentified']} | {margin} | {s['max_stationary_margin']:.2f} |"
        )
    t = summary
    lines += [
        "",
        f"Switching runs exact: **{t['exact']}/{t['switching_runs']}**; switches detected within "
        f"tolerance {t['switches_detected_within_tolerance']}/{t['switches']}, mean delay "
        f"{t['mean_delay'] if t['mean_delay'] is None else round(t['mean_delay'], 2)} updates "
        f"(max {t['max_delay']}); returns re-identified {t['reidentified']}/{t['returns']}; "
        f"new domains on {t['stationary_updates']} stationary updates: {t['stationary_new_domains']}; "
        f"smallest switch margin {t['min_switch_margin'] if t['min_switch_margin'] is None else round(t['min_switch_margin'], 2)}"
        f" ({t['switches_below_margin_2']} switches below 2x); largest stationary margin "
        f"{t['max_stationary_margin'] if t['max_stationary_margin'] is None else round(t['max_stationary_margin'], 2)}.",
    ]
    return "\n".join(lines)


def write_doc(path: Path, block: str) -> None:
    text = path.read_text() if path.is_file() else "# Domain inference\n\n<!-- BENCH:START -->\n<!-- BENCH:END -->\n"
    start, end = "<!-- BENCH:START -->", "<!-- BENCH:END -->"
    if start not in text or end not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{block}\n{end}{tail}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", nargs="+", default=DEFAULT_STREAMS, choices=sorted(STREAMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument(
        "--stationary-seeds",
        type=int,
        nargs="+",
        default=None,
        help="seeds of the stationary stream (default: --seeds)",
    )
    parser.add_argument("--steps", type=int, default=600, help="updates per domain (the stationary stream has 5x)")
    parser.add_argument("--preset", default="cpu32")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="config override, VALUE as JSON (e.g. kappa=1.3); repeatable",
    )
    parser.add_argument("--tolerance", type=int, default=10, help="a switch must be found within this many updates")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="ignore cached runs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "domain_inference.json"))
    parser.add_argument("--doc", default=str(ROOT / "docs" / "DOMAIN_INFERENCE.md"))
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    from vase_rl.provenance import Timer, code_state, machine_summary, write_json

    # the code a run depends on, by content: committing docs or tests keeps the cache, any change
    # to the library, the envs or this script starts afresh (uncommitted code is cached too)
    code = code_state(CODE_PATHS)

    overrides: dict[str, Any] = {}
    for item in args.set:
        field, _, value = item.partition("=")
        if not value:
            parser.error(f"--set needs FIELD=VALUE, got {item!r}")
        overrides[field] = json.loads(value)
    key = hashlib.sha1(
        json.dumps(
            [
                code["code_digest"],
                args.preset,
                overrides,
                args.steps,
                args.tolerance,
                os.environ.get("VASE_RL_EXECUTION"),
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:12]
    cache_dir = ROOT / "runs" / "bench_domain_inference" / key
    stationary_seeds = args.seeds if args.stationary_seeds is None else args.stationary_seeds
    jobs = [(s, seed) for s in args.streams for seed in (stationary_seeds if s == "stationary" else args.seeds)]
    caches = [str(cache_dir / f"{s}_{seed}.json") for s, seed in jobs]
    if args.fresh:
        caches = [None] * len(jobs)
    with Timer() as timer, ProcessPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(run, s, seed, args.steps, args.preset, overrides, args.tolerance, c)
            for (s, seed), c in zip(jobs, caches)
        ]
        runs = []
        for f in futures:
            r = f.result()
            runs.append(r)
            margins = ", ".join("—" if m is None else f"{m:.1f}" for m in r["switch_margin"])
            print(
                f"{r['stream']:16s} seed {r['seed']}: domains {r['domains']}/{r['true_domains']}, delays {r['delays']}, "
                f"missed {r['missed']}, false {r['false_alarms']}, re-id {r['reidentified']}/{r['returns']}, "
                f"margins [{margins}], stationary {r['stationary_margin'] or 0:.2f}, exact {r['exact']}",
                flush=True,
            )
    summary = summarise(runs)
    print(json.dumps({k: v for k, v in summary.items() if k != "per_stream"}, indent=1))
    payload = {
        "preset": args.preset,
        "overrides": overrides,
        "steps_per_domain": args.steps,
        "tolerance": args.tolerance,
        "streams": {s: STREAMS[s] for s in args.streams},
        "summary": summary,
        "runs": runs,
    }
    out = write_json(
        args.out, payload, seeds=sorted(set(args.seeds) | set(stationary_seeds)), started=timer.started, code_state=code
    )
    print(f"wrote {out}")
    if not args.no_doc:
        prov = json.loads(Path(out).read_text())["provenance"]
        header = (
            f"Measured with `{prov['command']}` at commit `{(prov['commit'] or '?')[:10]}`"
            f"{' (dirty tree)' if prov['dirty'] else ''} on {machine_summary(prov)}; preset `{args.preset}`"
            f"{' with ' + json.dumps(overrides) if overrides else ''}, {args.steps} updates per domain, "
            f"seeds {args.seeds}, tolerance {args.tolerance} updates; source: "
            f"`{os.path.relpath(out, ROOT)}`."
        )
        write_doc(Path(args.doc), table(summary, header))
        print(f"updated {args.doc}")
    return payload


if __name__ == "__main__":
    main()
