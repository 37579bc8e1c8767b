"""Continual RL on a task whose look changes without warning (issue 11).

The sprite task with three classes whose goals are the same in every look, its appearance
switching A -> B -> A (-> C -> A with ``--phases 5``) every ``--phase-steps`` environment steps;
PPO with identical settings on VASE latents (with the drift controls), CCI-VAE latents (the same
learner with S, D and A off), raw pixels (CnnPolicy) and the ground-truth factors (the ceiling).
The arms, runs and metrics live in :mod:`vase_rl.agents.continual`; this script is its command
line (also ``vase-rl continual-rl``).

    python benchmarks/bench_continual_rl.py --quick                 # CI size, about a minute
    python benchmarks/bench_continual_rl.py --seeds 0 1 2 --jobs 2  # task "sprites": shapes/digits
    python benchmarks/bench_continual_rl.py --task moving --seeds 0 1 2 --jobs 2
    python benchmarks/bench_continual_rl.py --resume ...            # continue an interrupted run

Writes ``benchmarks/results/continual_rl_<task>.json`` (provenance included; every finished run is
also appended to ``<json>.partial.jsonl``, which ``--resume`` reads) and
``docs/figures/continual_rl_<task>.png``; prints the tables of docs/CONTINUAL_RL.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    os.chdir(ROOT)  # the default output paths are relative to the repository
    from vase_rl.agents.continual import main

    sys.exit(main(prog="benchmarks/bench_continual_rl.py"))
