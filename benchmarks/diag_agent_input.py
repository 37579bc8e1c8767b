"""Diagnostic: which part of its input does the agent on VASE latents learn from?

The continual benchmark's VASE arm (``benchmarks/bench_continual_rl.py``) learns its first,
single-domain phase far more slowly than the pixel agent. Two hypotheses about the agent's input
can be told apart by changing only that input, everything else as the benchmark runs it (learner,
drift controls, PPO settings, seeds), on phase A alone:

* ``vase``: the benchmark's arm, unchanged (the side-by-side baseline);
* ``no_normalisation``: ``VecNormalize`` does not scale the observations. If scaling every latent
  to unit spread amplified the noise of the latents the decoder does not use, this would help;
* ``used_latents_only``: the latents the current domain's decoder does not use are set to 0
  before ``VecNormalize`` (a constant, which it maps to 0). If those latents were noise to the
  agent, this would help; if the agent reads something from them, it hurts.

    python benchmarks/diag_agent_input.py --task sprites --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CODE = ("core", "wrappers", "agents", "envs", "benchmarks/diag_agent_input.py")
VARIANTS = ("vase", "no_normalisation", "used_latents_only")


def _patched_env_factory(variant: str, make_arm_env: Any) -> Any:
    """``agents.continual.make_arm_env`` with the agent's input changed as ``variant`` says."""
    from stable_baselines3.common.vec_env import VecNormalize

    def make(arm: str, settings: Any, seed: int) -> tuple[Any, str]:
        env, policy = make_arm_env(arm, settings, seed)
        if variant == "vase":
            return env, policy
        vec = env.venv  # VecNormalize(VecVASE(...))
        if variant == "no_normalisation":
            return VecNormalize(vec, norm_obs=False, norm_reward=False), policy
        feed = vec.feed
        encode = feed.encode

        def used_only(x: Any) -> np.ndarray:
            z = encode(x)
            used = feed.learner.used_latents
            if used is not None:
                z[:, : len(used)] *= np.asarray(used, dtype=z.dtype)
            return z

        feed.encode = used_only  # every encoding of the agent's input goes through it, replays included
        return env, policy

    return make


@contextlib.contextmanager
def agent_input(variant: str) -> Iterator[None]:
    """``agents.continual.make_arm_env`` changed as ``variant`` says, for the ``with`` block only: a
    worker process runs several jobs, and a patch left in place would stack under the next one."""
    from agents import continual

    original = continual.make_arm_env
    continual.make_arm_env = _patched_env_factory(variant, original)
    try:
        yield
    finally:
        continual.make_arm_env = original


def run_one(job: tuple[str, dict[str, Any], int]) -> dict[str, Any]:
    variant, settings_dict, seed = job
    from agents import continual

    settings = continual.ContinualSettings.from_dict(settings_dict)
    with agent_input(variant):
        out = continual.run_arm("vase", settings, seed, verbose=False)
    phase = out["phases"]["per_phase"][0]
    row = {
        "variant": variant,
        "seed": seed,
        "final_return": phase["final_return"],
        "steps_per_second": out["steps_per_second"],
        "curve": out["curve"],
        "active_latents_end": out["timeline"][-1].get("active_latents") if out.get("timeline") else None,
    }
    print(f"  {variant} seed {seed}: final return {row['final_return']}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sprites", choices=("sprites", "moving"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--phase-steps", type=int, default=60_000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="CI size: the continual benchmark's --quick settings")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/diag_agent_input_<task>.json")
    args = parser.parse_args(argv)

    from agents import continual
    from vase_rl.provenance import code_state, write_json

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    code = code_state(CODE)
    started = time.time()
    if args.quick:
        settings = continual.ContinualSettings.from_dict(
            dict(continual.quick_settings(args.task, {}).to_dict(), phases=1)
        )
    else:
        settings = continual.ContinualSettings(task=args.task, phases=1, phase_steps=args.phase_steps)
    jobs = [(v, settings.to_dict(), s) for v in variants for s in args.seeds]
    if args.jobs > 1:
        import multiprocessing

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(run_one, jobs))
    else:
        results = [run_one(job) for job in jobs]
    summary = {}
    for v in variants:
        finals = [r["final_return"] for r in results if r["variant"] == v and r["final_return"] is not None]
        summary[v] = {
            "final_return_mean": float(np.mean(finals)) if finals else None,
            "final_return_sd": float(np.std(finals)) if finals else None,
            "per_seed": {r["seed"]: r["final_return"] for r in results if r["variant"] == v},
        }
        print(f"{v:>18}: final return {summary[v]['final_return_mean']:.2f} ± {summary[v]['final_return_sd']:.2f}")
    out = args.out or str(
        ROOT / "benchmarks" / "results" / f"diag_agent_input_{args.task}{'_quick' if args.quick else ''}.json"
    )
    payload = {"settings": settings.to_dict(), "task": args.task, "variants": variants, "results": results}
    payload["summary"] = summary
    write_json(out, payload, seeds=args.seeds, started=started, code_state=code)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
