"""PPO on VASE latents with the environments in Ray actors (docs/SCALING.md).

Two set-ups, both with Stable-Baselines3's PPO unchanged:

* ``--mode driver``: ``VecVASE(RayVecEnv(...))``. The actors step the envs and send raw frames;
  VecVASE encodes and learns in the driver, exactly as over ``SubprocVecEnv`` (same numbers).
* ``--mode actors`` (default): ``RayVecEnv(..., vase="cpu32")``. Each actor encodes with a frozen
  copy of the encoder and sends latents plus one raw frame in ``--frame-every`` per env; the VASE
  learner is a Ray actor (``--learner-device cuda`` with a GPU) that trains while the next rollout
  is collected; ``RolloutBoundarySync`` broadcasts its weights at every rollout end.

On a cluster, start Ray on each machine (``ray start --head`` / ``ray start --address=...``) and
pass ``--address auto``; the actors spread over the machines' CPUs.

    python examples/ray_ppo_on_latents.py --timesteps 4096
"""

from __future__ import annotations

import argparse
import functools
import os


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["actors", "driver"], default="actors")
    parser.add_argument("--timesteps", type=int, default=4096)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--envs-per-actor", type=int, default=4)
    parser.add_argument("--frame-every", type=int, default=4)
    parser.add_argument("--learner-device", default="cpu")
    parser.add_argument("--address", default=None, help="Ray cluster address ('auto' to join a running cluster)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of a local cluster (ignored with --address)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="folder for agent.zip and vase.pt")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import gymnasium as gym
    import ray
    import torch
    from stable_baselines3 import PPO

    import vase_rl  # noqa: F401
    from vase_rl.distributed import RayVecEnv, RolloutBoundarySync
    from vase_rl.wrappers import VecVASE

    torch.set_num_threads(1)
    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    make_env = functools.partial(gym.make, "vase_rl/SpriteTask-v0")
    env_fns = [make_env] * (args.actors * args.envs_per_actor)
    small = None if args.address else {"num_cpus": args.num_cpus / (args.actors + 2)}
    callback = None
    if args.mode == "driver":
        venv = VecVASE(RayVecEnv(env_fns, args.envs_per_actor, actor_options=small), "cpu32")
    else:
        gpu = {"num_gpus": 1} if args.learner_device.startswith("cuda") else {}
        venv = RayVecEnv(
            env_fns,
            args.envs_per_actor,
            vase="cpu32",
            frame_every=args.frame_every,
            learner_on="actor",
            overlap=True,
            learner_device=args.learner_device,
            learner_resources={**(small or {}), **gpu},
            actor_options=small,
        )
        callback = RolloutBoundarySync(log_transfer=True, verbose=1)
    model = PPO("MlpPolicy", venv, n_steps=128, batch_size=128, seed=args.seed, device="cpu", verbose=0)
    model.learn(args.timesteps, callback=callback)
    learner = venv.get_learner() if args.mode == "actors" else venv.learner
    print(f"trained {model.num_timesteps} env steps; VASE learner: {learner}")
    if args.mode == "actors":
        stats = venv.transfer_stats()
        print(
            f"bytes per env step: {stats['step_bytes_per_env_step']:.0f} (latents + infos) + "
            f"{stats['frame_bytes_per_env_step']:.0f} (frames for the learner) + "
            f"{stats['broadcast_bytes_per_env_step']:.0f} (weight broadcasts)"
        )
    if args.save:
        os.makedirs(args.save, exist_ok=True)
        model.save(os.path.join(args.save, "agent.zip"))
        learner.save(os.path.join(args.save, "vase.pt"))
    venv.close()
    ray.shutdown()


if __name__ == "__main__":
    main()
