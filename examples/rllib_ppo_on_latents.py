"""RLlib PPO (new API stack) on VASE latents of vase_rl/SpriteTask-v0.

Each EnvRunner encodes its observations with a synced, frozen copy of the VASE encoder (an
env-to-module connector, vase_rl.distributed.rllib.VASEEncoderConnector) and sends every
``--frame-every``-th raw frame to the VASE learner, a named Ray actor; at the end of each training
iteration the learner runs its due updates and the new weights go to every EnvRunner.

Needs Ray with RLlib's dependencies. RLlib's own extra (``pip install "ray[rllib]"``) pins
gymnasium==1.2.2, below what vase_rl is tested with (1.4); docs/SCALING.md says how it was run
here (RLlib's dependencies without that pin).

    python examples/rllib_ppo_on_latents.py --iterations 3
"""

from __future__ import annotations

import argparse
import os


def make_sprite_env(env_config: dict):
    import gymnasium as gym

    import vase_rl  # noqa: F401  (registers the env ids in the EnvRunner process)

    return gym.make("vase_rl/SpriteTask-v0", **env_config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--env-runners", type=int, default=1)
    parser.add_argument("--envs-per-runner", type=int, default=4)
    parser.add_argument("--batch", type=int, default=512, help="train_batch_size_per_learner (env steps)")
    parser.add_argument("--frame-every", type=int, default=2)
    parser.add_argument("--train-every", type=int, default=64, help="frames per VASE update round")
    parser.add_argument("--learner-device", default="cpu", help="'cuda' puts the VASE learner on a GPU")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import ray
    import torch
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    from vase_rl import VASE, VASEConfig
    from vase_rl.distributed.payload import encoder_payload
    from vase_rl.distributed.rllib import VASEBoundaryCallback, connector_factory, start_learner

    torch.set_num_threads(1)
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    register_env("vase_sprite", make_sprite_env)
    observation_space = make_sprite_env({}).observation_space

    vase = VASE(VASEConfig.preset("cpu32"), seed=args.seed, device="cpu")
    name = "vase_learner"
    gpu = {"num_gpus": 1} if args.learner_device.startswith("cuda") else {}
    learner = start_learner(
        vase, observation_space, name, {"train_every": args.train_every}, device=args.learner_device, resources=gpu
    )
    payload_ref = ray.put(encoder_payload(vase))

    config = (
        PPOConfig()
        .environment("vase_sprite", env_config={})
        .env_runners(
            num_env_runners=args.env_runners,
            num_envs_per_env_runner=args.envs_per_runner,
            num_cpus_per_env_runner=0.5,
            env_to_module_connector=connector_factory(
                payload_ref, learner_name=name, frame_every=args.frame_every, send_every=128
            ),
        )
        .training(train_batch_size_per_learner=args.batch, minibatch_size=128, num_epochs=2, lr=3e-4)
        .learners(num_learners=0)
        .callbacks(VASEBoundaryCallback)
        .debugging(seed=args.seed)
    )
    algo = config.build_algo()
    for i in range(args.iterations):
        result = algo.train()
        runners = result.get("env_runners", {})
        vase_summary = result.get("vase", {})
        print(
            f"iteration {i + 1}: env steps {runners.get('num_env_steps_sampled_lifetime')}, "
            f"return {runners.get('episode_return_mean', float('nan')):.3f}, "
            f"VASE updates {vase_summary.get('num_updates')} (loss {vase_summary.get('loss', float('nan')):.1f}), "
            f"frames to the learner {vase_summary.get('frames_ingested')}"
        )
    versions = algo.env_runner_group.foreach_env_runner(
        lambda runner: runner.get_state()["env_to_module_connector"]["VASEEncoderConnector"]["version"],
        local_env_runner=False,
    )
    print("encoder version on each EnvRunner:", versions, "learner:", ray.get(learner.summary.remote())["num_updates"])
    algo.stop()
    ray.shutdown()


if __name__ == "__main__":
    main()
