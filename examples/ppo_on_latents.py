"""PPO on VASE latents on the sprite task, with a plot of return vs environment steps.

VASE learns its representation online from the frames of 8 environments (VecVASE, batched in
the main process) while PPO (MlpPolicy) learns on the latents. The VASE callback logs
``vase/*`` scalars next to PPO's; at the end the whole stack (learner, VecNormalize statistics,
agent) is saved in one call and restored, frozen, in one call for the evaluation. The latents
are normalised for PPO by SB3's ``VecNormalize`` (``ppo_on_latents(normalize=True)``, the default).

    python examples/ppo_on_latents.py --quick          # well under a minute
    python examples/ppo_on_latents.py                  # 150k steps (a few minutes on 2 cores)
    python examples/ppo_on_latents.py --subproc        # environments in worker processes
    python examples/ppo_on_latents.py --pretrain-frames 16384 --freeze-after-pretraining

Outputs in ``--out`` (default ``runs/ppo_on_latents``): ``returns.csv``, ``returns.png``
(needs matplotlib), ``stack/`` (``vase.pt``, ``vecnormalize.pkl``, ``agent.zip``, ``stack.json``),
``progress.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import time

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np
import torch
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from vase_rl.agents import EpisodeReturns, VASECallback, load_stack, ppo_on_latents, save_stack

from vase_rl import VASEConfig
from vase_rl.wrappers import VecVASE, unwrap_vase


def smoothed(records: list[tuple[int, float]], bins: int = 30) -> tuple[np.ndarray, np.ndarray]:
    steps = np.array([s for s, _ in records], dtype=float)
    returns = np.array([r for _, r in records], dtype=float)
    edges = np.linspace(0, steps.max(), bins + 1)
    idx = np.clip(np.digitize(steps, edges) - 1, 0, bins - 1)
    centres = [(edges[i] + edges[i + 1]) / 2 for i in range(bins) if np.any(idx == i)]
    means = [returns[idx == i].mean() for i in range(bins) if np.any(idx == i)]
    return np.array(centres), np.array(means)


def plot(records: list[tuple[int, float]], path: str, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install 'vase-rl[plots]')")
        return False
    x, y = smoothed(records)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s for s, _ in records], [r for _, r in records], ".", alpha=0.15, ms=2, label="episodes")
    ax.plot(x, y, "-", lw=2, label="mean per bin")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (well under a minute)")
    parser.add_argument("--steps", type=int, default=None, help="environment steps (default 150000, quick 3072)")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--env-id", default="vase_rl/SpriteTask-v0")
    parser.add_argument("--image-size", type=int, default=64, help="environment frame size (VASE resizes)")
    parser.add_argument("--preset", default="cpu32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subproc", action="store_true", help="run environments in SubprocVecEnv workers")
    parser.add_argument("--device", default="auto", help="VASE learner device")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    parser.add_argument("--out", default="runs/ppo_on_latents")
    parser.add_argument(
        "--pretrain-frames", type=int, default=0, help="VASE learns from this many random-policy frames first"
    )
    parser.add_argument(
        "--freeze-after-pretraining", action="store_true", help="and then stays frozen (docs/RL.md: drift control)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps or (3072 if args.quick else 150_000)
    os.makedirs(args.out, exist_ok=True)

    config = VASEConfig.preset(args.preset)
    ppo_kwargs = {}
    if args.quick:
        config = config.replace(width=0.25, latent_dim=8)
        ppo_kwargs = dict(n_steps=64, batch_size=128, n_epochs=2)
    vase_kwargs = {}
    if args.pretrain_frames:  # VASE learns from random-policy frames before PPO's first step
        vase_kwargs = dict(pretrain_frames=args.pretrain_frames, pretrain_updates=3 * args.pretrain_frames // 16)
        if args.freeze_after_pretraining:
            vase_kwargs["freeze_after"] = args.pretrain_frames
    model = ppo_on_latents(
        args.env_id,
        n_envs=args.n_envs,
        config=config,
        seed=args.seed,
        env_kwargs=dict(image_size=args.image_size),
        vec_env_cls="subproc" if args.subproc else "dummy",
        device=args.device,
        ppo_kwargs=ppo_kwargs,
        vase_kwargs=vase_kwargs,
    )
    model.set_logger(configure(args.out, ["stdout", "csv"] if not args.quick else ["csv"]))
    env = model.get_env()  # VecNormalize(VecVASE(...)): the latents are normalised for PPO
    vase: VecVASE = unwrap_vase(env)
    print(f"VASE {vase.learner} -> observations {vase.observation_space}")
    returns = EpisodeReturns()
    start = time.perf_counter()
    # the callback also schedules VASE's updates between PPO's rollouts and measures the drift
    vase_callback = VASECallback(measure_drift=True)
    model.learn(steps, callback=CallbackList([vase_callback, returns]))
    elapsed = time.perf_counter() - start
    drift = vase_callback.drift_meter.summary()
    if drift["rollouts"]:
        print(
            f"drift per rollout (medians): action-distribution KL from the encoder alone "
            f"{drift['encoder_kl_median']:.2g}, from PPO's own update {drift['policy_kl_median']:.2g}"
        )
    stats = vase.get_vase_stats()
    print(
        f"{steps} steps in {elapsed:.1f} s ({steps / elapsed:.0f} steps/s); VASE: {stats['num_updates']} updates, "
        f"{stats['num_domains']} domain(s), {stats['active_latents']} active latents"
    )

    with open(os.path.join(args.out, "returns.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timesteps", "return"])
        writer.writerows(returns.records)
    if returns.records and plot(
        returns.records, os.path.join(args.out, "returns.png"), f"PPO on VASE latents, {args.env_id}"
    ):
        print(f"plot: {os.path.join(args.out, 'returns.png')}")

    # the representation, the latent statistics and the agent: one folder, one call
    folder = save_stack(os.path.join(args.out, "stack"), model)
    env.close()

    # restore all three, frozen, on a fresh raw env for the evaluation (the agent's fingerprint
    # of the representation is checked against the restored learner)
    raw_env = make_vec_env(args.env_id, 1, seed=args.seed + 1000, env_kwargs=dict(image_size=args.image_size))
    agent, eval_env = load_stack(folder, raw_env, device=args.device)
    episodes = 10 if args.quick else 100
    total, done_episodes = [], 0
    obs = eval_env.reset()
    episode_return = 0.0
    while done_episodes < episodes:
        action, _ = agent.predict(obs, deterministic=True)
        obs, reward, done, _ = eval_env.step(action)
        episode_return += float(reward[0])
        if done[0]:
            total.append(episode_return)
            episode_return, done_episodes = 0.0, done_episodes + 1
    print(
        f"frozen evaluation over {episodes} episodes: mean return {np.mean(total):.3f} "
        f"(oracle about 1.43, random about 0.0)"
    )
    eval_env.close()


if __name__ == "__main__":
    main()
