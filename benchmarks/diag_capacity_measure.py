"""Diagnostic: after a domain switch, is the capacity paid with information or with marginal shift?

The capacity penalty gamma (KL - C)^2 (eq. 3) asks the batch's KL to reach C. Per latent the KL
splits exactly into I + M (``vase_rl.objectives.marginal_information_split``): I the information
the latent carries about the image, M the mismatch of the batch's aggregate posterior with the
prior, which is what atypicality (eq. 4) measures. A new domain starts with less KL than C asks;
if the deficit is paid with M (shifted, shrunk or widened marginals), every latent turns atypical,
the mask (eq. 5) switches latents off and on from batch to batch, and the new domain learns
little. ``capacity_measure="information"`` budgets only I, so M keeps its ELBO weight and gains
nothing from C.

This runs one learner per capacity measure on the same stream and seed and records, after every
update from the first switch on: information, marginal mismatch, KL, C, active latents, the
largest atypicality and the reconstruction; the summary counts the changes of the active count.
Two setups:

* ``--setup table1``: the table-1 analogue (moving shapes -> digits, the reproduction config
  ``benchmarks/results/ablation_config.json``, full VASE: the learner ``vase-rl ablate`` runs);
* ``--setup continual``: the continual-RL benchmark's VASE-arm learner under a random policy
  (``benchmarks/agentless.py``) on ``--task``, phases A and B.

    python benchmarks/diag_capacity_measure.py --setup table1 --seeds 1 7
    python benchmarks/diag_capacity_measure.py --setup continual --task moving --seeds 0
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MEASURES = ("kl", "information")
TABLE1_CONFIG = ROOT / "benchmarks" / "results" / "ablation_config.json"
RECORDED = ("recon", "kl", "information", "marginal_kl", "capacity", "capacity_target", "active_latents")


def changes(values: list[int]) -> int:
    """How many times a sequence changes value."""
    return sum(1 for a, b in zip(values, values[1:]) if a != b)


def summarise(rows: list[dict[str, Any]], last: int = 50) -> dict[str, Any]:
    """Active-count churn over all rows, and means of the last ``last`` rows."""
    if not rows:
        return {"updates": 0}
    active = [int(r["active_latents"]) for r in rows]
    tail = rows[-last:]

    def mean(key: str) -> float:
        return sum(float(r[key]) for r in tail) / len(tail)

    return {
        "updates": len(rows),
        "changes_of_active_count": changes(active),
        "min_active": min(active),
        "mean_active": sum(active) / len(active),
        "median_alpha_max": sorted(float(r["atypicality_max"]) for r in rows)[len(rows) // 2],
        **{f"last{last}_{key}": mean(key) for key in ("information", "marginal_kl", "kl", "capacity", "recon")},
    }


def _row(stats: dict[str, Any]) -> dict[str, Any]:
    row = {key: stats.get(key) for key in RECORDED}
    row.update(
        update=int(stats["step"]),
        domain=stats.get("domain"),
        event=stats.get("event"),
        held=bool(stats.get("held")),
        atypicality_max=stats.get("atypicality_max"),
    )
    return row


def run_table1(measure: str, seed: int, updates_after: int, steps_per_domain: int) -> dict[str, Any]:
    """The table-1 analogue's VASE learner up to ``updates_after`` updates past the first switch."""
    from vase_rl.config import VASEConfig
    from vase_rl.evaluation.experiment import TABLE1_SEQUENCE, run_experiment

    config = VASEConfig.load(TABLE1_CONFIG).replace(capacity_measure=measure)
    stop = steps_per_domain + updates_after
    rows: list[dict[str, Any]] = []

    def record(step: int, stats: dict[str, Any]) -> bool:
        if int(stats["step"]) > steps_per_domain and not stats.get("skipped"):
            rows.append(_row(stats))
        return step < stop

    with tempfile.TemporaryDirectory() as tmp:
        run_experiment(
            config,
            list(TABLE1_SEQUENCE[:2]),
            steps_per_domain,
            seed,
            tmp,
            disentanglement=False,
            refit=False,
            resume=False,
            step_callback=record,
        )
    return {"rows": rows, "summary": summarise(rows)}


def run_continual(measure: str, seed: int, task: str, phase_steps: int) -> dict[str, Any]:
    """The continual benchmark's VASE-arm learner, random policy, phases A and B."""
    from agentless import run_without_agent

    from agents import continual

    settings = continual.ContinualSettings(
        task=task, phases=2, phase_steps=phase_steps, config_overrides={"capacity_measure": measure}
    )
    rows: list[dict[str, Any]] = []
    held: dict[str, Any] = {}

    def record_updates(vec) -> None:
        learner = held["learner"] = vec.learner
        update = learner.update

        def recording_update(batch=None):
            stats = update(batch)
            if held.get("switched") and not stats.get("skipped"):
                rows.append(_row(stats))
            return stats

        learner.update = recording_update

    def mark(vec, row) -> None:
        held["switched"] = True

    schedule = run_without_agent("vase", settings, seed, on_ready=record_updates, on_phase_end=mark)
    learner = held["learner"]
    return {
        "rows": rows,
        "summary": {**summarise(rows), "num_domains": int(learner.num_domains)},
        "phase_ends": schedule["phase_ends"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", choices=("table1", "continual"), default="table1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 7])
    parser.add_argument("--task", default="moving", choices=("sprites", "moving"), help="continual setup only")
    parser.add_argument("--phase-steps", type=int, default=60_000, help="continual setup only")
    parser.add_argument("--steps-per-domain", type=int, default=600, help="table1 setup only")
    parser.add_argument("--updates-after", type=int, default=200, help="table1 setup: updates after the switch")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/diag_capacity_measure_<setup>.json")
    args = parser.parse_args(argv)

    import torch

    from vase_rl.provenance import code_state, write_json

    torch.set_num_threads(1)
    paths = ["core", "envs", "benchmarks/diag_capacity_measure.py"]
    if args.setup == "table1":
        paths += ["evaluation", str(TABLE1_CONFIG.relative_to(ROOT))]
    else:
        paths += ["wrappers", "agents", "benchmarks/agentless.py"]
    code = code_state(paths)
    started = time.time()
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        for measure in MEASURES:
            t0 = time.time()
            if args.setup == "table1":
                result = run_table1(measure, seed, args.updates_after, args.steps_per_domain)
            else:
                result = run_continual(measure, seed, args.task, args.phase_steps)
            runs.append({"seed": seed, "capacity_measure": measure, "seconds": time.time() - t0, **result})
            print(seed, measure, result["summary"], flush=True)
    suffix = args.setup if args.setup == "table1" else f"{args.setup}_{args.task}"
    out = args.out or str(ROOT / "benchmarks" / "results" / f"diag_capacity_measure_{suffix}.json")
    payload = {
        "setup": args.setup,
        "task": args.task if args.setup == "continual" else "moving_shapes -> digits",
        "seeds": args.seeds,
        "what": "per update from the first switch on: information, marginal mismatch, KL, C, active latents",
        "runs": runs,
    }
    write_json(out, payload, seeds=args.seeds, started=started, code_state=code)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
