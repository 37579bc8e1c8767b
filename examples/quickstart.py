"""vase_rl in three minutes: the main demo (`make demo`).

1. A VASE learner trains on a data stream whose distribution shifts without warning —
   moving shapes -> digits -> moving shapes again — and infers the domains itself: it allocates
   a new domain when the digits arrive and re-identifies the shapes when they return. We score
   its guesses against the truth and draw what it learnt.
2. The same learner becomes the observation of a Gymnasium environment through ``VecVASE``
   (an SB3 VecEnv wrapper in the style of ``VecNormalize``), and PPO trains on its latents while
   VASE keeps learning.

    python examples/quickstart.py            # ~3 minutes on 2 CPU cores
    python examples/quickstart.py --quick    # ~1 minute
Outputs land in ``out/quickstart/``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np
import torch


def part1_stream(steps: int, out: Path, seed: int):
    from vase_rl.envs import make_stream

    from vase_rl import VASE, VASEConfig
    from vase_rl.evaluation import boundary_scores, domain_agreement, reidentification

    print(f"\n[1/2] VASE on a shifting stream: moving_shapes -> digits -> moving_shapes ({steps} updates each)")
    stream = make_stream(["moving_shapes", "digits", "moving_shapes"], batch_size=64, seed=seed, steps_per_domain=steps)
    learner = VASE(VASEConfig.preset("cpu32"), seed=seed, device="cpu")
    true, pred = [], []
    at_switch = []  # the model's state when the data change: does it hold real information yet?
    last, previous = None, None

    t0 = time.perf_counter()
    for item in stream:
        if true and item.domain != true[-1]:
            at_switch.append(_state_at_switch(learner, item, last, previous))
        true.append(item.domain)
        last, previous = learner.update(item.images), item.images
        pred.append(last["domain"])
        if at_switch and at_switch[-1]["found_after"] is None and pred[-1] != pred[-2]:
            at_switch[-1]["found_after"] = item.step - at_switch[-1]["update"] + 1
            at_switch[-1]["decided"] = f"{last['event']} -> domain {pred[-1]}"
        if item.step % max(1, steps // 4) == 0:
            print(
                f"  update {item.step:5d}  true={item.domain_name:14s} inferred domain={pred[-1]}  "
                f"domains={learner.num_domains}  active latents={int(learner.latent_mask.sum())}"
            )
    seconds = time.perf_counter() - t0
    bounds = boundary_scores(np.array(pred), np.array(true), tolerance=10)
    agree = domain_agreement(np.array(pred), np.array(true))
    reid = reidentification(np.array(pred), np.array(true))
    summary = {
        "updates": len(true),
        "seconds": round(seconds, 1),
        "domains_allocated": learner.num_domains,
        "boundary_f1": bounds["f1"],
        "mean_detection_delay": bounds["mean_delay"],
        "adjusted_rand_index": agree["ari"],
        "reidentification_rate": reid["rate"],
        "at_switches": at_switch,
    }
    for sw in at_switch:
        print(
            f"  switch at update {sw['update']} to {sw['to']}: capacity C={sw['capacity']:.1f} nats, "
            f"KL={sw['kl']:.1f} nats, the current domain explained {sw['explained_fraction_before']:.2f} of its own "
            f"images and {sw['explained_fraction_new']:.2f} of the new ones; "
            + (
                f"found after {sw['found_after']} update(s) ({sw['decided']})"
                if sw["found_after"] is not None
                else "no change of domain"
            )
        )
    print("  " + json.dumps({k: v for k, v in summary.items() if k != "at_switches"}))
    learner.save(out / "vase_stream.pt")
    _figure(learner, stream, out / "quickstart_stream.png")
    return learner, summary


def _state_at_switch(learner, item, last: dict, previous_images) -> dict:
    """C, KL and how much of its own data and of the new data the current domain explains
    (explained fraction: 1 = perfect, 0 = no better than the mean intensity), just before the
    first batch of a new domain reaches the learner."""
    domain = int(last["domain"])
    return {
        "update": int(item.step),
        "to": item.domain_name,
        "capacity": float(last["capacity"]),
        "kl": float(last["kl"]),
        "explained_fraction_before": learner.explained_fraction(previous_images, domain=domain),
        "explained_fraction_new": learner.explained_fraction(item.images, domain=domain),
        "found_after": None,
        "decided": None,
    }


def _figure(learner, stream, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib not installed: no figure)")
        return
    first = {f"{seg.name} ({i + 1})": stream[seg.start].images[:8] for i, seg in enumerate(stream.segments)}
    fig, axes = plt.subplots(2 * len(first), 8, figsize=(8, 2.1 * len(first)))
    for r, (name, images) in enumerate(first.items()):
        domain = int(learner.predict_domain(images).mean().round())
        recon = learner.reconstruct(images, domain=min(domain, learner.num_domains - 1))
        for c in range(8):
            axes[2 * r, c].imshow(images[c, ..., 0], cmap="gray", vmin=0, vmax=255)
            axes[2 * r + 1, c].imshow(recon[c, 0], cmap="gray", vmin=0, vmax=1)
            for ax in (axes[2 * r, c], axes[2 * r + 1, c]):
                ax.set_xticks([])
                ax.set_yticks([])
        axes[2 * r, 0].set_ylabel(name, fontsize=7)
        axes[2 * r + 1, 0].set_ylabel(f"recon (dom {domain})", fontsize=7)
    fig.suptitle("inputs and VASE reconstructions per domain")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"  figure: {path}")


def part2_ppo(learner, timesteps: int, out: Path, seed: int) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from vase_rl.agents import VASECallback
    from vase_rl.envs import evaluate_policy_returns

    from vase_rl.wrappers import VecVASE

    print(f"\n[2/2] PPO on VASE latents for vase_rl/SpriteTask-v0 ({timesteps} env steps, VASE keeps learning)")
    venv = make_vec_env("vase_rl/SpriteTask-v0", n_envs=8, seed=seed)
    env = VecVASE(venv, learner=learner)  # the stream learner meets the sprite task: a new domain
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=256, seed=seed, verbose=0, device="cpu")
    t0 = time.perf_counter()
    model.learn(timesteps, callback=VASECallback())
    seconds = time.perf_counter() - t0
    env.save(out / "vecvase.pt")
    model.save(out / "ppo_on_latents")
    returns = [ep["r"] for ep in model.ep_info_buffer]
    import gymnasium as gym

    reference = gym.make("vase_rl/SpriteTask-v0")
    random_return = evaluate_policy_returns(reference, "random", episodes=50, seed=seed)["mean_return"]
    oracle_return = evaluate_policy_returns(reference, "oracle", episodes=50, seed=seed)["mean_return"]
    summary = {
        "timesteps": timesteps,
        "seconds": round(seconds, 1),
        "steps_per_second": round(timesteps / seconds),
        "recent_mean_return": float(np.mean(returns)) if returns else None,
        "random_return": random_return,
        "oracle_return": oracle_return,
        "vase_domains": env.learner.num_domains,
        "vase_updates": env.learner.num_updates,
    }
    print("  " + json.dumps(summary))
    env.close()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter run (about a minute)")
    parser.add_argument("--out", default="out/quickstart")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    learner, s1 = part1_stream(250 if args.quick else 600, out, args.seed)
    s2 = part2_ppo(learner, 4_096 if args.quick else 20_480, out, args.seed)
    (out / "summary.json").write_text(json.dumps({"stream": s1, "ppo": s2}, indent=2))
    print(f"\nDone. Summary in {out / 'summary.json'}")


if __name__ == "__main__":
    main()
