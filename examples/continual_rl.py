"""Continual RL: PPO keeps its skill while the look of its task changes A -> B -> A.

The sprite task (bring the sprite to its class's goal) switches its appearance from shapes to
digits and back without telling the agent (three classes; class i has the same goal in every
look). One agent learns on VASE latents — VASE first learns from the env's own frames under a
random policy, then keeps learning with its updates at rollout boundaries — and, for
comparison, one on raw pixels (``--arms vase,pixels,factors`` adds the ground-truth ceiling).
The plot shows return vs environment steps with the switches marked and, below, the domain
VASE's learner infers at every rollout end.

    python examples/continual_rl.py --quick            # about a minute: 3 phases of 8k steps, short PPO rollouts
    python examples/continual_rl.py                    # 3 phases of 60k steps (an hour or more on 2 cores)
    python examples/continual_rl.py --phases 5         # A B A C A (letters as C)

Outputs in ``--out`` (default ``runs/continual_rl``): ``continual_rl.json`` (curves, per-phase
metrics, the learner's timeline) and ``continual_rl.png``. The full benchmark with seeds and
CCI-VAE is ``benchmarks/bench_continual_rl.py`` (docs/CONTINUAL_RL.md).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import torch
from vase_rl.agents.continual import (
    CODE,
    VASE_DEFAULTS,
    ContinualSettings,
    markdown,
    plot_curves,
    quick_settings,
    run_arm,
    summarise,
)

from vase_rl.provenance import collect, write_json

#: --quick: phases long enough for the learner to notice a switch, a quarter-width learner
QUICK_PHASE_STEPS = 8192
QUICK_VASE = {"pretrain_frames": 2048, "pretrain_updates": 300, "train_every": 64, "update_at": "auto"}


def quick_example_settings(task: str, phases: int, phase_steps: int) -> ContinualSettings:
    """The benchmark's CI size (4 envs, short PPO rollouts) with the full learner and longer phases."""
    settings = quick_settings(task, QUICK_VASE)
    settings.config_overrides = {}  # the full cpu32 learner: the quarter-width one notices no switch
    settings.phases = phases
    settings.phase_steps = phase_steps
    settings.early_steps = settings.recover_window = max(256, phase_steps // 8)
    settings.bin_steps = max(64, phase_steps // 32)
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short phases and PPO rollouts (about a minute of CPU)")
    parser.add_argument("--arms", default="vase,pixels", help="comma list: vase, vase_domain, cci_vae, pixels, factors")
    parser.add_argument("--task", default="sprites", choices=["sprites", "moving"])
    parser.add_argument("--phases", type=int, default=3, help="3: A B A, 5: A B A C A")
    parser.add_argument(
        "--phase-steps", type=int, default=None, help=f"default 60,000 ({QUICK_PHASE_STEPS:,} with --quick)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/continual_rl")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        settings = quick_example_settings(args.task, args.phases, args.phase_steps or QUICK_PHASE_STEPS)
    else:
        settings = ContinualSettings(
            task=args.task, phases=args.phases, phase_steps=args.phase_steps or 60_000, vase_kwargs=dict(VASE_DEFAULTS)
        )
    print(f"task: {' -> '.join(settings.domains)}, {settings.phase_steps:,} environment steps each")
    started = time.time()
    results = [run_arm(arm.strip(), settings, args.seed) for arm in args.arms.split(",") if arm.strip()]
    report = {"settings": settings.to_dict(), "results": results, "summary": summarise(results, settings)}
    report["provenance"] = collect(seeds=[args.seed], started=started, code_paths=CODE)
    os.makedirs(args.out, exist_ok=True)
    report["json"] = str(write_json(os.path.join(args.out, "continual_rl.json"), report))
    print(markdown(report))
    for result in results:
        if "representation" in result:
            view = result["representation"]["per_phase"]
            text = "; ".join(
                f"{row['domain']}: domain {row['domain_at_end']}"
                + (f" (switch after {row['switch_delay']:,} steps)" if row.get("switch_delay") is not None else "")
                for row in view
            )
            print(f"{result['arm']}: what VASE inferred: {text}")
    figure = os.path.join(args.out, "continual_rl.png")
    if plot_curves(report, figure):
        print(f"plot: {figure}")


if __name__ == "__main__":
    main()
