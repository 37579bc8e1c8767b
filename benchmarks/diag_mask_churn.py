"""Diagnostic: does a young domain's atypicality mask churn without a learning agent?

In the continual-RL benchmark the VASE arm's mask churns after the switch (its active count
changes dozens of times, down to 0–4 latents) in 1 of 3 sprite seeds and 3 of 3 moving seeds
(docs/CONTINUAL_RL.md). This runs the same learner (same env, preset, wrapper options and
rollout-boundary updates as ``benchmarks/bench_continual_rl.py``'s VASE arm) under a uniformly
random policy instead of PPO, so the frames no longer depend on an agent, and records after
every update the mask in force, the batch's atypicality per latent (eq. 4), the KL per latent
and the capacity target. If the churn is there without the agent, its cause is in the learner
(the objective and the mask rule), not in the frames a changing policy shows.

    python benchmarks/diag_mask_churn.py --task moving --seed 0 --out benchmarks/results/diag_mask_churn_moving_seed0.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def churn(active: list[int]) -> int:
    """How many times a sequence of active-latent counts changes value."""
    return sum(1 for a, b in zip(active, active[1:]) if a != b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sprites", choices=("sprites", "moving"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phase-steps", type=int, default=60_000)
    parser.add_argument("--phases", type=int, default=3)
    parser.add_argument("--out", default="runs/diag_mask_churn.json")
    args = parser.parse_args(argv)

    from agentless import run_without_agent

    from agents import continual
    from vase_rl.provenance import code_state, write_json

    code = code_state(
        ("core", "wrappers", "agents", "envs", "benchmarks/agentless.py", "benchmarks/diag_mask_churn.py")
    )
    started = time.time()
    settings = continual.ContinualSettings(task=args.task, phases=args.phases, phase_steps=args.phase_steps)
    rows: list[dict[str, object]] = []
    held: dict[str, object] = {}

    def record_updates(vec) -> None:
        learner = held["learner"] = vec.learner
        update = learner.update

        def recording_update(batch=None):
            stats = update(batch)
            alpha = learner.last_atypicality
            kl = learner.last_kl_per_latent
            rows.append(
                {
                    "update": int(stats.get("step", learner.num_updates)),
                    "domain": stats.get("domain"),
                    "event": stats.get("event"),
                    "held": bool(stats.get("held")),
                    "active_latents": stats.get("active_latents"),
                    "mask": [bool(v) for v in learner._mask.tolist()],
                    "alpha": None if alpha is None else [round(float(v), 4) for v in alpha],
                    "kl_per_latent": None if kl is None else [round(float(v), 4) for v in kl],
                    "kl": stats.get("kl"),
                    "capacity": stats.get("capacity"),
                    "capacity_target": stats.get("capacity_target"),
                }
            )
            return stats

        learner.update = recording_update

    schedule = run_without_agent("vase", settings, args.seed, on_ready=record_updates)
    learner = held["learner"]
    pretrain_updates = schedule["pretrain_updates"]
    phase_ends = schedule["phase_ends"]
    online = [r for r in rows if int(r["update"]) >= pretrain_updates]
    first_end = phase_ends[0]["update"] if phase_ends else None
    after = [int(r["active_latents"]) for r in online if first_end is not None and int(r["update"]) >= first_end]
    before = [int(r["active_latents"]) for r in online if first_end is None or int(r["update"]) < first_end]
    summary = {
        "changes_of_active_count_before_first_switch": churn(before),
        "changes_of_active_count_after_first_switch": churn(after),
        "min_active_after_first_switch": min(after) if after else None,
        "num_domains": learner.num_domains,
        "used_latents": {
            d["domain_id"]: [i for i, u in enumerate(d["used_latents"] or []) if u] for d in learner.domains
        },
    }
    print(summary, flush=True)
    payload = {
        "settings": settings.to_dict(),
        "task": args.task,
        "seed": args.seed,
        "policy": "uniform random",
        "pretrain_updates": pretrain_updates,
        "phase_ends": phase_ends,
        "summary": summary,
        "updates": online,
        "decisions": learner.domain_log,
        "domains": learner.domains,
    }
    write_json(args.out, payload, seeds=[args.seed], started=started, code_state=code)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
