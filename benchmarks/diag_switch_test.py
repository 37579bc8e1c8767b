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

import numpy as np

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

    import vase_rl.domains as domains
    from agents import continual
    from vase_rl.provenance import code_state, write_json
    from vase_rl.wrappers import find_vec_vase_in

    code = code_state(("core", "wrappers", "agents", "envs", "benchmarks/diag_switch_test.py"))
    started = time.time()
    torch.set_num_threads(1)
    settings = continual.ContinualSettings(phases=args.phases, phase_steps=args.phase_steps)
    env, _ = continual.make_arm_env("vase", settings, args.seed)
    vec = find_vec_vase_in(env)
    learner = vec.learner

    advantages: list[dict[str, float]] = []
    original = domains.paired_advantage

    def recording(better: torch.Tensor, worse: torch.Tensor, floor: float) -> float:
        value = original(better, worse, floor)
        gap = float((better - worse).mean())
        advantages.append({"update": learner.num_updates, "advantage": value, "fraction_gap": gap})
        return value

    domains.paired_advantage = recording  # the switch test looks it up in its module at call time
    verdicts: list[dict[str, object]] = []
    keys = ("step", "domain", "event", "statistic", "evidence", "held", "capacity", "kl", "recon")
    update = learner.update

    def recording_update(batch=None):
        stats = update(batch)
        verdicts.append({k: stats.get(k) for k in keys})
        return stats

    learner.update = recording_update
    n = settings.n_envs
    vec.drive_rollouts(True)  # what VASECallback does for PPO: updates wait for rollout ends
    vec.feed.fit_window_to_rollout(settings.ppo_kwargs.get("n_steps", 128) * n)
    rng = np.random.default_rng(args.seed)
    env.reset()  # pretrains on the first reset
    pretrain = int(vec.feed.schedule.pretrain_frames)
    pretrain_updates = learner.num_updates
    phase_ends = []
    for i in range((settings.total_steps - pretrain) // n):
        env.step(rng.integers(0, env.action_space.n, size=n))
        if (i + 1) % settings.ppo_kwargs.get("n_steps", 128) == 0:
            vec.end_rollout()
        frames = (i + 1) * n + pretrain
        if frames % settings.phase_steps == 0:
            phase_ends.append(
                {
                    "frames": frames,
                    "update": learner.num_updates,
                    "domain": learner.current_domain,
                    "num_domains": learner.num_domains,
                }
            )
            print(phase_ends[-1], flush=True)
    env.close()
    domains.paired_advantage = original
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
