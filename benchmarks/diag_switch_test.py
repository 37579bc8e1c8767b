"""Diagnostic: what VASE's switch test sees when a domain returns in the continual-RL schedule.

Runs the VASE arm's learner of ``benchmarks/bench_continual_rl.py`` (same env, preset, wrapper
options and rollout-boundary updates) under a uniformly random policy instead of PPO, so a run
takes minutes and isolates the representation from the agent. It records every value of the
switch test's paired advantage (``vase_rl.domains.paired_advantage``: how many standard errors a
stored domain's decoder explains the current images *better* than the current domain's decoder),
every update's verdict, and the learner's decision log, and writes them with provenance.

A positive advantage that persists (above the allowance k = 1) is what re-identifies a returning
domain; a negative one means the current domain's decoder is the better model of the returning
data, so staying is the likelihood-correct decision.

    python benchmarks/diag_switch_test.py --seed 0 --phase-steps 60000 --out runs/diag_switch_test_s0.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phase-steps", type=int, default=60_000)
    parser.add_argument("--phases", type=int, default=3)
    parser.add_argument("--out", default="runs/diag_switch_test.json")
    args = parser.parse_args(argv)

    import torch
    from agentless import run_without_agent

    import vase_rl.domains as domains
    from agents import continual
    from vase_rl.provenance import code_state, write_json

    code = code_state(
        ("core", "wrappers", "agents", "envs", "benchmarks/agentless.py", "benchmarks/diag_switch_test.py")
    )
    started = time.time()
    settings = continual.ContinualSettings(phases=args.phases, phase_steps=args.phase_steps)
    advantages: list[dict[str, float]] = []
    verdicts: list[dict[str, object]] = []
    keys = ("step", "domain", "event", "statistic", "evidence", "held", "capacity", "kl", "recon")
    original = domains.paired_advantage
    held: dict[str, object] = {}

    def record(vec) -> None:
        learner = held["learner"] = vec.learner

        def recording(better: torch.Tensor, worse: torch.Tensor, floor: float) -> float:
            value = original(better, worse, floor)
            gap = float((better - worse).mean())
            advantages.append({"update": learner.num_updates, "advantage": value, "fraction_gap": gap})
            return value

        domains.paired_advantage = recording  # the switch test looks it up in its module at call time
        update = learner.update

        def recording_update(batch=None):
            stats = update(batch)
            verdicts.append({k: stats.get(k) for k in keys})
            return stats

        learner.update = recording_update

    try:
        schedule = run_without_agent("vase", settings, args.seed, on_ready=record)
    finally:
        domains.paired_advantage = original
    learner = held["learner"]
    pretrain_updates = schedule["pretrain_updates"]
    phase_ends = schedule["phase_ends"]
    payload = {
        "settings": settings.to_dict(),
        "seed": args.seed,
        "phase_ends": phase_ends,
        "advantages": advantages,
        # the pretraining updates' verdicts are all "stay" on the first domain: keep the online ones
        "verdicts": [v for v in verdicts if int(v["step"] or 0) >= pretrain_updates],
        "decisions": learner.domain_log,
        "domains": learner.domains,
    }
    write_json(args.out, payload, seeds=[args.seed], started=started, code_state=code)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
