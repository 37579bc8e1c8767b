"""Costs of acting and learning on Ray, on a local Ray cluster (docs/SCALING.md).

Measures, side by side in one run (timings under load are compared as ratios):
  * overhead per env step of RayVecEnv (1, 2 and 4 actors) against DummyVecEnv and
    SubprocVecEnv, 8 envs of vase_rl/SpriteTask-v0, raw frames, random actions;
  * bytes per env step crossing the wire: raw frames (VecVASE in the driver) against encoding on
    the actors (latents + one frame in ``--frame-every`` for the learner + weight broadcasts);
  * per-step costs for the paper estimate: env step, encode (per frame, actor batch), VASE update,
    payload size and rebuild time, the driver's round trip per actor;
  * a scale test: N = 1, 2, 4 actors of 4 envs each, encoding on the actors, the VASE learner as
    a Ray actor overlapping the next rollout; env steps/s and learner updates/s, against the
    single-process VecVASE on the same number of envs with the same updates per frame.

Writes ``benchmarks/results/ray.json`` (with provenance) and ``docs/figures/ray_scale.png``.
Run:  python benchmarks/bench_ray.py [--quick]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import vase_rl  # noqa: F401
from vase_rl import VASE, VASEConfig
from vase_rl.distributed.payload import encoder_payload, learner_from_payload, payload_bytes
from vase_rl.provenance import Timer, write_json
from vase_rl.wrappers import VecVASE

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ray.json"
FIGURE = ROOT / "docs" / "figures" / "ray_scale.png"
ENV_ID = "vase_rl/SpriteTask-v0"
make_env = functools.partial(gym.make, ENV_ID)
SMALL = {"num_cpus": 0.25}


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def run_steps(venv, steps: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 5, (steps, venv.num_envs))
    venv.reset()
    start = time.perf_counter()
    for a in actions:
        venv.step(a)
    return time.perf_counter() - start


def overhead(steps: int, repeats: int) -> dict:
    from vase_rl.distributed import RayVecEnv

    n = 8
    backends = {
        "DummyVecEnv": lambda: DummyVecEnv([make_env] * n),
        "SubprocVecEnv": lambda: SubprocVecEnv([make_env] * n, start_method="forkserver"),
        "RayVecEnv_1x8": lambda: RayVecEnv([make_env] * n, 8, actor_options=SMALL),
        "RayVecEnv_2x4": lambda: RayVecEnv([make_env] * n, 4, actor_options=SMALL),
        "RayVecEnv_4x2": lambda: RayVecEnv([make_env] * n, 2, actor_options=SMALL),
    }
    envs = {name: build() for name, build in backends.items()}
    times: dict[str, list[float]] = {name: [] for name in envs}
    for r in range(repeats):  # interleaved: every backend sees the same load
        for name, venv in envs.items():
            times[name].append(run_steps(venv, steps, seed=r))
    out = {"n_envs": n, "steps": steps, "repeats": repeats, "backends": {}}
    base = statistics.median(times["DummyVecEnv"]) / (steps * n)
    for name, venv in envs.items():
        per_env_step = statistics.median(times[name]) / (steps * n)
        out["backends"][name] = {
            "seconds": times[name],
            "us_per_env_step": per_env_step * 1e6,
            "env_steps_per_s": 1.0 / per_env_step,
            "overhead_us_per_env_step_vs_dummy": (per_env_step - base) * 1e6,
            "ratio_to_dummy": per_env_step / base,
        }
        if name.startswith("Ray"):
            out["backends"][name]["transfer"] = venv.transfer_stats()
        venv.close()
    return out


def bandwidth(steps_per_rollout: int, rollouts: int, frame_every: int) -> dict:
    from vase_rl.distributed import RayVecEnv

    out = {"steps_per_rollout": steps_per_rollout, "rollouts": rollouts, "frame_every": frame_every}
    raw = RayVecEnv([make_env] * 8, 4, actor_options=SMALL)
    run_steps(raw, steps_per_rollout * rollouts)
    out["raw_frames"] = raw.transfer_stats()
    raw.close()
    enc = RayVecEnv(
        [make_env] * 8,
        4,
        vase="cpu32",
        seed=0,
        frame_every=frame_every,
        learner_on="driver",
        actor_options=SMALL,
    )
    enc.reset()
    rng = np.random.default_rng(0)
    for _ in range(rollouts):
        for _ in range(steps_per_rollout):
            enc.step(rng.integers(0, 5, 8))
        enc.rollout_boundary()
    stats = enc.transfer_stats()
    out["encode_on_actors"] = stats
    payload = encoder_payload(enc.get_learner())
    out["payload_bytes"] = payload_bytes(payload)
    out["full_state_bytes"] = payload_bytes(enc.get_learner().state_dict())
    # per env step for a PPO-sized rollout (n_steps=2048 per env): broadcasts go to every actor once per rollout
    for n_steps in (128, 2048):
        out[f"broadcast_bytes_per_env_step_rollout_{n_steps}"] = out["payload_bytes"] / (4 * n_steps)
    enc.close()
    return out


def costs(repeats: int) -> dict:
    """In-process per-step costs that the paper estimate combines."""
    cfg = VASEConfig.preset("cpu32")
    venv = DummyVecEnv([make_env] * 4)
    t_env = statistics.median(run_steps(venv, 200, seed=r) for r in range(repeats)) / (200 * 4)
    learner = VASE(cfg, seed=0, device="cpu")
    wrapped = VecVASE(DummyVecEnv([make_env] * 4), learner=learner, training=False)
    obs = wrapped.venv.reset()
    x = wrapped.feed.prepare(obs)
    wrapped.feed.encode(x)
    enc = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(100):
            wrapped.feed.encode(wrapped.feed.prepare(obs))
        enc.append((time.perf_counter() - start) / (100 * 4))
    frames = np.concatenate([venv.step(np.zeros(4, np.int64))[0] for _ in range(32)])
    learner.observe(frames)
    upd = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(5):
            learner.update()
        upd.append((time.perf_counter() - start) / 5)
    payload = encoder_payload(learner)
    template = learner.state_dict()
    start = time.perf_counter()
    for _ in range(5):
        learner_from_payload(payload, template=template)
    rebuild = (time.perf_counter() - start) / 5
    return {
        "env_step_s": t_env,
        "encode_per_frame_s_batch4": statistics.median(enc),
        "vase_update_s_batch64": statistics.median(upd),
        "payload_rebuild_s": rebuild,
        "payload_bytes": payload_bytes(payload),
        "torch_threads": torch.get_num_threads(),
    }


def round_trip(repeats: int) -> dict:
    """Driver time for one no-op call to N actors (submit + get), the RPC floor of a vector step."""
    import ray

    @ray.remote(num_cpus=0.25)
    class Echo:
        def step(self, x):
            return x

    out: dict = {"submit_s_per_call": None, "get_ready_s_per_result": None}
    x = np.zeros(4, np.int64)
    for n in (1, 2, 4):
        actors = [Echo.remote() for _ in range(n)]
        ray.get([a.step.remote(0) for a in actors])
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(200):
                ray.get([a.step.remote(x) for a in actors])
            samples.append((time.perf_counter() - start) / 200)
        out[str(n)] = statistics.median(samples)
        if n == 4:  # the driver's own CPU per call: submitting, and fetching a result that is ready
            submit, fetch = [], []
            for _ in range(50):
                t0 = time.perf_counter()
                refs = [a.step.remote(x) for a in actors]
                submit.append((time.perf_counter() - t0) / n)
                ray.wait(refs, num_returns=n)
                t0 = time.perf_counter()
                ray.get(refs)
                fetch.append((time.perf_counter() - t0) / n)
            out["submit_s_per_call"] = statistics.median(submit)
            out["get_ready_s_per_result"] = statistics.median(fetch)
        for a in actors:
            ray.kill(a)
    return out


def scale(actors_list: list[int], envs_per_actor: int, rollouts: int, steps: int, frame_every: int) -> dict:
    from vase_rl.distributed import RayVecEnv

    train_every = 64
    out = {
        "envs_per_actor": envs_per_actor,
        "rollouts": rollouts,
        "steps_per_rollout": steps,
        "frame_every": frame_every,
        "train_every_frames": train_every,
        "runs": [],
    }
    for n in actors_list:
        n_envs = n * envs_per_actor
        venv = RayVecEnv(
            [make_env] * n_envs,
            envs_per_actor,
            vase="cpu32",
            seed=0,
            frame_every=frame_every,
            train_every=train_every,
            learner_on="actor",
            overlap=True,
            actor_options=SMALL,
            learner_resources={"num_cpus": 0.5},
        )
        venv.reset()
        rng = np.random.default_rng(n)
        load_before = loadavg()
        start = time.perf_counter()
        acting = 0.0
        for _ in range(rollouts):
            t0 = time.perf_counter()
            for _ in range(steps):
                venv.step(rng.integers(0, 5, n_envs))
            acting += time.perf_counter() - t0
            venv.rollout_boundary()
        wall = time.perf_counter() - start
        learner = venv.get_learner()  # waits for the last overlapped update
        wall_with_last = time.perf_counter() - start
        summary = venv.last_learner_summary
        run = {
            "actors": n,
            "envs": n_envs,
            "env_steps": n_envs * rollouts * steps,
            "wall_s": wall,
            "acting_s": acting,
            "boundary_s": venv.boundary_seconds,
            "env_steps_per_s": n_envs * rollouts * steps / wall,
            "learner_updates": int(learner.num_updates),
            "learner_updates_per_s": learner.num_updates / wall_with_last,
            "learner_update_seconds": summary.get("update_seconds"),
            "learner_busy_fraction": (summary.get("update_seconds") or 0.0) / wall_with_last,
            "transfer": venv.transfer_stats(),
            "load_before": load_before,
            "load_after": loadavg(),
        }
        venv.close()
        # the single-process path on the same envs, the same updates per frame (update_at step)
        local = VecVASE(DummyVecEnv([make_env] * n_envs), "cpu32", seed=0, train_every=max(1, train_every // n_envs))
        local.reset()
        t0 = time.perf_counter()
        for _ in range(rollouts * steps):
            local.step(rng.integers(0, 5, n_envs))
        local_wall = time.perf_counter() - t0
        run["single_process"] = {
            "wall_s": local_wall,
            "env_steps_per_s": n_envs * rollouts * steps / local_wall,
            "learner_updates": int(local.learner.num_updates),
            "learner_updates_per_s": local.learner.num_updates / local_wall,
        }
        out["runs"].append(run)
        print(
            f"N={n}: ray {run['env_steps_per_s']:.0f} env steps/s, {run['learner_updates_per_s']:.2f} updates/s "
            f"(busy {run['learner_busy_fraction']:.0%}); single process {run['single_process']['env_steps_per_s']:.0f} "
            f"env steps/s, {run['single_process']['learner_updates_per_s']:.2f} updates/s",
            flush=True,
        )
    return out


def estimate(results: dict, actors: int = 64, envs_per_actor: int = 4, n_steps: int = 2048) -> dict:
    """Paper estimate for ``actors`` actors and one learner, from the measured per-step costs."""
    c = results["costs"]
    rtt = results["round_trip_s"]
    # driver CPU per vector step: submit one call and fetch one result per actor (measured), plus one
    # actor round trip (the slowest actor's call); the pessimistic variant extrapolates the round trip
    # measured at N = 1, 2, 4 here, where actors share 2 cores (contention included)
    per_actor = rtt["submit_s_per_call"] + rtt["get_ready_s_per_result"]
    actor_call = envs_per_actor * (c["env_step_s"] + c["encode_per_frame_s_batch4"])
    step_time = actor_call + rtt["1"] + per_actor * actors
    env_steps_per_s = actors * envs_per_actor / step_time
    ns = np.array([1, 2, 4], float)
    b, a = np.polyfit(ns, np.array([rtt[str(int(n))] for n in ns]), 1)
    pessimistic = actors * envs_per_actor / (actor_call + a + b * actors)
    frames_per_s = env_steps_per_s  # + terminal frames (1 in max_steps = 50 more)
    updates_needed = frames_per_s / results["scale"]["train_every_frames"]
    cpu_update_rate = 1.0 / c["vase_update_s_batch64"]
    return {
        "actors": actors,
        "envs_per_actor": envs_per_actor,
        "driver_s_per_actor_per_step": per_actor,
        "vector_step_s": step_time,
        "actor_call_s": actor_call,
        "env_steps_per_s": env_steps_per_s,
        "env_steps_per_s_pessimistic_fit": pessimistic,
        "round_trip_fit_here": {"a": a, "b_per_actor": b},
        "frames_to_learner_per_s": frames_per_s / results["bandwidth"]["frame_every"],
        "updates_per_s_needed_at_train_every": updates_needed,
        "cpu_learner_updates_per_s_measured_1_thread": cpu_update_rate,
        "gpu_speedup_needed_over_1_cpu_thread": updates_needed / cpu_update_rate,
        "bytes_per_s_into_driver": env_steps_per_s
        * results["bandwidth"]["encode_on_actors"]["step_bytes_per_env_step"],
        "bytes_per_s_into_learner": env_steps_per_s
        * results["bandwidth"]["encode_on_actors"]["frame_bytes_per_env_step"],
        "broadcast_bytes_per_rollout": results["bandwidth"]["payload_bytes"] * actors,
        "rollout_n_steps": n_steps,
        "note": "PPO's own forward pass and update in the driver are not included; no GPU was measured",
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["scale"]["runs"]
    n = [r["actors"] for r in runs]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(n, [r["env_steps_per_s"] for r in runs], "o-", label="RayVecEnv, encode on actors")
    axes[0].plot(n, [r["single_process"]["env_steps_per_s"] for r in runs], "s--", label="VecVASE, one process")
    axes[0].set_xlabel("actors (4 envs each)")
    axes[0].set_ylabel("env steps / s")
    axes[0].legend(fontsize=8)
    axes[1].plot(n, [r["learner_updates_per_s"] for r in runs], "o-", label="learner actor (overlapped)")
    axes[1].plot(n, [r["single_process"]["learner_updates_per_s"] for r in runs], "s--", label="VecVASE, one process")
    axes[1].set_xlabel("actors (4 envs each)")
    axes[1].set_ylabel("VASE updates / s")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xticks(n)
    load = runs[-1]["load_before"]
    fig.suptitle(f"local Ray cluster on 2 cores (load {load[0] if load else '?'}); bench_ray.py", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--figure", type=Path, default=FIGURE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import ray

    quick = args.quick
    with Timer() as timer:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        results: dict = {"load_start": loadavg(), "quick": quick}
        results["costs"] = costs(repeats=3)
        print("costs", results["costs"], flush=True)
        results["round_trip_s"] = round_trip(repeats=3)
        print("round trip", results["round_trip_s"], flush=True)
        results["overhead"] = overhead(steps=100 if quick else 300, repeats=3)
        for name, b in results["overhead"]["backends"].items():
            print(
                f"{name}: {b['us_per_env_step']:.0f} us/env step (x{b['ratio_to_dummy']:.2f} DummyVecEnv)", flush=True
            )
        results["bandwidth"] = bandwidth(steps_per_rollout=64 if quick else 128, rollouts=2, frame_every=4)
        print(
            "bytes/env step: raw",
            round(results["bandwidth"]["raw_frames"]["bytes_per_env_step"]),
            "encode on actors",
            round(results["bandwidth"]["encode_on_actors"]["step_bytes_per_env_step"]),
            "+ frames",
            round(results["bandwidth"]["encode_on_actors"]["frame_bytes_per_env_step"]),
            flush=True,
        )
        results["scale"] = scale(
            [1, 2, 4], envs_per_actor=4, rollouts=3 if quick else 4, steps=32 if quick else 64, frame_every=4
        )
        results["estimate_64_actors"] = estimate(results)
        print("estimate", results["estimate_64_actors"], flush=True)
        results["load_end"] = loadavg()
        ray.shutdown()
    write_json(
        args.out,
        results,
        seeds=[0],
        started=timer.started,
        code_paths=["core", "wrappers", "envs", "benchmarks/bench_ray.py"],
    )
    plot(results, args.figure)
    print(f"wrote {args.out} and {args.figure} in {timer.seconds:.0f} s")


if __name__ == "__main__":
    main()
