"""Diagnostic: after a domain switch, is the capacity paid with information or with marginal shift?

The capacity penalty gamma (KL - C)^2 (eq. 3) asks the batch's KL to reach C. Per latent the KL
splits exactly into I + M (``vase_rl.objectives.marginal_information_split``): I the information
the latent carries about the image, M the mismatch of the batch's aggregate posterior with the
prior, which is what atypicality (eq. 4) measures. A new domain starts with less KL than C asks;
if the deficit is paid with M (shifted, shrunk or widened marginals), every latent turns atypical,
the mask (eq. 5) switches latents off and on from batch to batch, and the new domain learns
little. ``capacity_measure="information"`` budgets only I, so M keeps its ELBO weight and gains
nothing from C.

This runs the table-1 analogue's full VASE learner (moving shapes -> digits, the reproduction
config ``benchmarks/results/ablation_config.json``: the learner ``vase-rl ablate`` runs) once per
capacity measure on the same stream and seed, and records after every update from the switch on:
information, marginal mismatch, KL, C, active latents, the largest atypicality and the
reconstruction; the summary counts the changes of the active count. (The continual-RL
benchmark measures the same churn with ``--set capacity_measure=information``.)

    python benchmarks/diag_capacity_measure.py --seeds 1 7
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
from diag_mask_churn import churn as changes  # noqa: E402  (how many times a sequence changes value)

RECORDED = ("recon", "kl", "information", "marginal_kl", "capacity", "capacity_target", "active_latents")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 7])
    parser.add_argument("--steps-per-domain", type=int, default=600)
    parser.add_argument("--updates-after", type=int, default=200, help="updates recorded after the switch")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "diag_capacity_measure_table1.json"))
    args = parser.parse_args(argv)

    import torch

    from vase_rl.provenance import code_state, write_json

    torch.set_num_threads(1)
    code = code_state(
        (
            "core",
            "envs",
            "evaluation",
            str(TABLE1_CONFIG.relative_to(ROOT)),
            "benchmarks/diag_capacity_measure.py",
            "benchmarks/diag_mask_churn.py",
        )
    )
    started = time.time()
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        for measure in MEASURES:
            t0 = time.time()
            result = run_table1(measure, seed, args.updates_after, args.steps_per_domain)
            runs.append({"seed": seed, "capacity_measure": measure, "seconds": time.time() - t0, **result})
            print(seed, measure, result["summary"], flush=True)
    out = args.out
    payload = {
        "stream": "moving_shapes -> digits (table-1 analogue)",
        "config": str(TABLE1_CONFIG.relative_to(ROOT)),
        "seeds": args.seeds,
        "what": "per update from the first switch on: information, marginal mismatch, KL, C, active latents",
        "runs": runs,
    }
    write_json(out, payload, seeds=args.seeds, started=started, code_state=code)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
