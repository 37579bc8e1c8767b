"""PPO on VASE latents vs PPO on raw pixels vs PPO on ground-truth factors (sprite task).

One run, same environment (``vase_rl/SpriteTask-v0``, 64x64 grey frames), same PPO settings
(``vase_rl.agents.DEFAULT_PPO_KWARGS``), same seeds, 8 environments (DummyVecEnv):

* ``vase``    — VecVASE (learning on, ``cpu32`` preset: frames resized to 32x32, default
  schedule) + VecNormalize on the latents + PPO MlpPolicy (what ``ppo_on_latents`` builds),
  trained with ``VASECallback`` (updates at rollout boundaries, drift measured per rollout);
* named VASE variants (``--variant NAME:key=value,...``): the same arm with other ``VecVASE``
  options (``pretrain_frames``, ``pretrain_updates``, ``train_every``, ``slow_encoder_rate``,
  ``update_at``, ``freeze_after``, ...). Pretraining frames count as environment steps: the
  agent then gets ``--steps`` minus them, and its curve starts after them;
* ``pixels``  — PPO CnnPolicy (NatureCNN) on the raw 64x64 frames;
* ``factors`` — PPO MlpPolicy on the true state (class one-hot, x, y) read from ``info``.

Measured: return vs environment steps (every finished episode; bins of steps/20), the final
return (episodes in the last 10 % of steps), the steps at which each arm first reaches the
pixel baseline's final return, environment steps per second, and a time breakdown
(environment / VASE / PPO itself). A separate short run with learning frozen measures the
wrapper's overhead against PPO's own per-step cost at 8 envs.

    python benchmarks/bench_rl.py --seeds 0 1           # full (about 20-30 min on 2 loaded cores)
    python benchmarks/bench_rl.py --quick               # smoke run, under a minute
    python benchmarks/bench_rl.py --steps 200000 --seeds 0 1
    python benchmarks/bench_rl.py --arms pixels,pre \
        --variant pre:pretrain_frames=16384,pretrain_updates=3000,train_every=256

Writes ``benchmarks/results/rl.json`` (with a provenance block: commit, versions, CPU, threads,
command, seeds, wall time, digest of the code measured; each finished run is also appended to
``<out>.partial.jsonl``, and ``--resume`` skips the runs found there) and the table between the
BENCH markers of docs/RL.md, headed by the command and the commit (``--no-doc`` to skip).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from vase_rl.agents import DEFAULT_PPO_KWARGS, EpisodeReturns, VASECallback
from vase_rl.agents.continual import GroundTruthObservation  # the ground-truth arm, one definition

import vase_rl
from vase_rl import VASEConfig, provenance
from vase_rl.wrappers import VecVASE

ROOT = Path(__file__).resolve().parents[1]
ENV_ID = "vase_rl/SpriteTask-v0"
#: The code these numbers measure (see vase_rl.provenance.CODE_PATHS).
CODE = ("core", "wrappers", "agents", "envs", "benchmarks/bench_rl.py")


# ------------------------------------------------------------------------------------------ arms
class TimedVecVASE(VecVASE):
    """VecVASE that accounts the time spent in the environments and in VASE."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.env_time = 0.0
        self.vase_time = 0.0

    def step_async(self, actions: np.ndarray) -> None:
        t = time.perf_counter()
        self.venv.step_async(actions)
        self.env_time += time.perf_counter() - t

    def reset(self):
        if self.feed.schedule.pretrain_due:  # pretraining: env and VASE time, counted apart too
            t = time.perf_counter()
            self.pretrain_report = self.pretrain()
            self.pretrain_time = time.perf_counter() - t
        t = time.perf_counter()
        obs = self.venv.reset()
        t1 = time.perf_counter()
        self.old_obs = obs
        out = self._process(obs, [], [], run=False)
        self.env_time += t1 - t
        self.vase_time += time.perf_counter() - t1
        return out

    def end_rollout(self) -> int:  # the updates run at rollout boundaries are VASE time too
        t = time.perf_counter()
        ran = super().end_rollout()
        self.vase_time += time.perf_counter() - t
        return ran

    def step_wait(self):
        t = time.perf_counter()
        obs, rewards, dones, infos = self.venv.step_wait()
        t1 = time.perf_counter()
        self.old_obs = obs
        idx = [i for i, d in enumerate(dones) if d and infos[i].get("terminal_observation") is not None]
        terminal = [self.feed.adapter.select(infos[i]["terminal_observation"]) for i in idx]
        latents = self._process(obs, terminal, idx, infos)
        self.env_time += t1 - t
        self.vase_time += time.perf_counter() - t1
        return latents, rewards, dones, infos


class TimedVecEnv(VecEnv):
    """Transparent timer around a VecEnv (for the baselines' environment time)."""

    def __init__(self, venv: VecEnv) -> None:
        self.venv = venv
        super().__init__(venv.num_envs, venv.observation_space, venv.action_space)
        self.env_time = 0.0

    def reset(self):
        t = time.perf_counter()
        out = self.venv.reset()
        self.env_time += time.perf_counter() - t
        return out

    def step_async(self, actions):
        t = time.perf_counter()
        self.venv.step_async(actions)
        self.env_time += time.perf_counter() - t

    def step_wait(self):
        t = time.perf_counter()
        out = self.venv.step_wait()
        self.env_time += time.perf_counter() - t
        return out

    def close(self):
        self.venv.close()

    def get_attr(self, name, indices=None):
        return self.venv.get_attr(name, indices)

    def set_attr(self, name, value, indices=None):
        return self.venv.set_attr(name, value, indices)

    def env_method(self, name, *args, indices=None, **kwargs):
        return self.venv.env_method(name, *args, indices=indices, **kwargs)

    def env_is_wrapped(self, wrapper_class, indices=None):
        return self.venv.env_is_wrapped(wrapper_class, indices)

    def seed(self, seed=None):
        return self.venv.seed(seed)

    def get_images(self):
        return self.venv.get_images()


def vase_config(args: argparse.Namespace) -> VASEConfig:
    overrides: dict[str, Any] = {}
    if args.quick:
        overrides.update(width=0.25, latent_dim=8)
    if args.width is not None:
        overrides["width"] = args.width
    if args.capacity_updates:
        overrides["capacity_increment"] = 1.0 / args.capacity_updates
    for item in args.set:
        field, _, value = item.partition("=")
        overrides[field] = json.loads(value)
    return VASEConfig.preset(args.preset, **overrides)


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME:key=value,key=value`` -> (NAME, VecVASE keyword arguments; values read as JSON)."""
    name, _, body = text.partition(":")
    if not name or name in ("pixels", "factors"):
        raise ValueError(f"--variant needs a new arm name before ':', got {text!r}")
    kwargs: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        try:
            kwargs[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key.strip()] = value
    return name, kwargs


def vase_kwargs(arm: str, args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"train_every": args.train_every}
    kwargs.update(dict(args.variant).get(arm, {}))
    return kwargs


def make_arm_env(arm: str, args: argparse.Namespace, seed: int, training: bool = True, normalize: bool | None = None):
    env_kwargs = dict(image_size=args.image_size)
    if arm == "factors":
        venv = make_vec_env(ENV_ID, args.n_envs, seed=seed, env_kwargs=env_kwargs, wrapper_class=GroundTruthObservation)
        return TimedVecEnv(venv), "MlpPolicy"
    venv = make_vec_env(ENV_ID, args.n_envs, seed=seed, env_kwargs=env_kwargs)
    if arm == "pixels":
        return TimedVecEnv(venv), "CnnPolicy"
    kwargs = vase_kwargs(arm, args)
    if not training:
        kwargs.pop("pretrain_frames", None)
    wrapped = TimedVecVASE(venv, vase_config(args), training=training, seed=seed, device="cpu", **kwargs)
    if args.normalize if normalize is None else normalize:
        return VecNormalize(wrapped, norm_obs=True, norm_reward=False, clip_obs=10.0), "MlpPolicy"
    return wrapped, "MlpPolicy"


def find_timer(venv: Any) -> Any:
    while venv is not None and "env_time" not in vars(venv):  # not hasattr: VecEnvWrappers forward it
        venv = getattr(venv, "venv", None)
    return venv


# ------------------------------------------------------------------------------------------ metrics
def curve(records: list[tuple[int, float]], total: int, bins: int = 20) -> list[dict[str, float]]:
    width = total / bins
    out = []
    for b in range(bins):
        values = [r for s, r in records if b * width < s <= (b + 1) * width]
        if values:
            out.append({"steps": int((b + 1) * width), "mean_return": float(np.mean(values)), "episodes": len(values)})
    return out


def final_return(records: list[tuple[int, float]], total: int) -> float:
    values = [r for s, r in records if s > 0.9 * total]
    return float(np.mean(values)) if values else float("nan")


def steps_to_reach(points: list[dict[str, float]], threshold: float, window_bins: int = 2) -> int | None:
    """First bin end at which the mean return of the episodes ending in the trailing
    ``window_bins`` bins (10 % of the steps with 20 bins — the window of :func:`final_return`)
    reaches ``threshold``; computed from the curve, so a stored report can be re-summarised."""
    for i in range(len(points)):
        window = [p for p in points[: i + 1] if p["steps"] > points[i]["steps"] - window_bins * _bin_width(points)]
        episodes = sum(p["episodes"] for p in window)
        if episodes and sum(p["mean_return"] * p["episodes"] for p in window) / episodes >= threshold:
            return int(points[i]["steps"])
    return None


def _bin_width(points: list[dict[str, float]]) -> float:
    steps = sorted(p["steps"] for p in points)
    return float(min(b - a for a, b in zip(steps, steps[1:]))) if len(steps) > 1 else float(steps[0])


REACH_FRACTIONS = (1.0, 0.95)  # of the pixel baseline's final return


def ppo_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs = dict(DEFAULT_PPO_KWARGS)
    if args.quick:
        kwargs.update(n_steps=64, batch_size=128, n_epochs=2)
    return kwargs


def run_arm(arm: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    venv, policy = make_arm_env(arm, args, seed)
    pretrain = int(vase_kwargs(arm, args).get("pretrain_frames", 0)) if arm not in ("pixels", "factors") else 0
    pretrain_steps = -(-pretrain // args.n_envs) * args.n_envs  # whole vector steps
    model = PPO(policy, venv, seed=seed, device="cpu", **ppo_kwargs(args))
    returns = EpisodeReturns()
    vase_cb = VASECallback(measure_drift=True) if pretrain_steps or arm not in ("pixels", "factors") else None
    callback = CallbackList([returns, vase_cb]) if vase_cb is not None else returns
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(max(args.steps - pretrain_steps, 1), callback=callback)
    elapsed = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start  # this process alone (robust to a busy machine)
    timer = find_timer(venv)
    env_time = float(getattr(timer, "env_time", 0.0))
    vase_time = float(getattr(timer, "vase_time", 0.0))
    pretrain_time = float(getattr(timer, "pretrain_time", 0.0))
    # the env-step axis counts the pretraining frames first
    records = [(s + pretrain_steps, r) for s, r in returns.records]
    total = int(model.num_timesteps) + pretrain_steps
    out = {
        "arm": arm,
        "seed": seed,
        "vase_kwargs": vase_kwargs(arm, args) if arm not in ("pixels", "factors") else None,
        "steps": total,
        "agent_steps": int(model.num_timesteps),
        "pretrain_steps": pretrain_steps,
        "seconds": elapsed,
        "steps_per_second": total / elapsed,
        "cpu_seconds": cpu_seconds,
        "steps_per_cpu_second": total / cpu_seconds,
        "env_seconds": env_time,
        "vase_seconds": vase_time,
        "pretrain_seconds": pretrain_time,
        "ppo_seconds": elapsed - env_time - vase_time - pretrain_time,
        "final_return": final_return(records, args.steps),
        "curve": curve(records, args.steps),
        "episodes": len(records),
    }
    vase = vase_rl.wrappers.find_vec_vase_in(venv)
    if vase is not None:
        stats = vase.get_vase_stats()
        out["vase"] = {
            k: stats[k]
            for k in ("num_updates", "num_domains", "active_latents", "used_latents", "capacity", "frames_seen")
        }
        out["vase"]["pretrain"] = getattr(timer, "pretrain_report", None)
    if vase_cb is not None and vase_cb.drift_meter is not None:
        out["drift"] = vase_cb.drift_meter.summary()
        out["drift_history"] = vase_cb.drift_meter.history
    venv.close()
    drift = out.get("drift", {})
    print(
        f"  {arm:>8} seed {seed}: {out['steps_per_second']:.0f} steps/s, final return {out['final_return']:.3f} "
        f"(pretrain {pretrain_time:.0f} s, env {env_time:.0f} s, vase {vase_time:.0f} s, ppo {out['ppo_seconds']:.0f} s "
        f"of {elapsed:.0f} s); drift KL encoder {drift.get('encoder_kl_median', float('nan')):.2g} vs policy "
        f"{drift.get('policy_kl_median', float('nan')):.2g} (medians)",
        flush=True,
    )
    return out


def _run_job(job: tuple[str, argparse.Namespace, int]) -> dict[str, Any]:
    arm, args, seed = job
    torch.set_num_threads(args.threads)
    return run_arm(arm, args, seed)


def overhead(args: argparse.Namespace, steps: int) -> dict[str, float]:
    """Wrapper cost with learning frozen vs PPO's own cost per environment step (8 envs)."""
    venv, _ = make_arm_env("vase", args, seed=123, training=False, normalize=False)
    model = PPO("MlpPolicy", venv, seed=123, device="cpu", **ppo_kwargs(args))
    model.learn(min(2048, steps))  # warm-up (allocations, sprite banks)
    timer = find_timer(venv)
    timer.env_time = timer.vase_time = 0.0
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=True)
    elapsed = time.perf_counter() - start
    ppo = elapsed - timer.env_time - timer.vase_time
    venv.close()
    return {
        "steps": steps,
        "seconds": elapsed,
        "n_envs": args.n_envs,
        "vase_us_per_step": 1e6 * timer.vase_time / steps,
        "env_us_per_step": 1e6 * timer.env_time / steps,
        "ppo_us_per_step": 1e6 * ppo / steps,
        "overhead_fraction": timer.vase_time / ppo,
    }


# ------------------------------------------------------------------------------------------ report
def arm_order(arms: set[str]) -> list[str]:
    """VASE arms first (the default ``vase`` leading), then pixels, then factors."""
    fixed = {"vase": -1, "pixels": 1, "factors": 2}
    return sorted(arms, key=lambda a: (fixed.get(a, 0), a))


def _mean_of_recorded(values: list[Any]) -> float | None:
    """Mean of the values that runs recorded (results from before a field existed have None)."""
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def summarise(results: list[dict[str, Any]], over: dict[str, float], args: argparse.Namespace) -> dict[str, Any]:
    arms = arm_order({r["arm"] for r in results})
    summary: dict[str, Any] = {}
    for arm in arms:
        rows = [r for r in results if r["arm"] == arm]
        summary[arm] = {
            "final_return": float(np.mean([r["final_return"] for r in rows])),
            "steps_per_second": float(np.mean([r["steps_per_second"] for r in rows])),
            "steps_per_cpu_second": _mean_of_recorded([r.get("steps_per_cpu_second") for r in rows]),
            "seconds": float(np.mean([r["seconds"] for r in rows])),
            "env_fraction": float(np.mean([r["env_seconds"] / r["seconds"] for r in rows])),
            "vase_fraction": float(
                np.mean([(r["vase_seconds"] + r.get("pretrain_seconds", 0.0)) / r["seconds"] for r in rows])
            ),
            "ppo_fraction": float(np.mean([r["ppo_seconds"] / r["seconds"] for r in rows])),
            "pretrain_steps": int(rows[0].get("pretrain_steps", 0)),
        }
        drifts = [r["drift"] for r in rows if r.get("drift", {}).get("rollouts")]
        if drifts:
            for key in ("encoder_kl_median", "policy_kl_median", "encoder_value_shift_median", "normaliser_kl_median"):
                summary[arm][f"drift_{key}"] = float(np.mean([d[key] for d in drifts]))
    goals: dict[str, Any] = {}
    if over:
        goals.update(
            overhead_fraction=over["overhead_fraction"],
            overhead_goal=0.15,
            overhead_met=over["overhead_fraction"] <= 0.15,
        )
    if "pixels" in summary:
        target = summary["pixels"]["final_return"]
        for arm in arms:
            for fraction in REACH_FRACTIONS:
                summary[arm][f"steps_to_{fraction:g}x_pixels_final"] = [
                    steps_to_reach(r["curve"], fraction * target) for r in results if r["arm"] == arm
                ]
        pixel_steps = summary["pixels"]["steps_to_1x_pixels_final"]
        pixel_reach = float(np.mean([s if s is not None else args.steps for s in pixel_steps]))
        goals["pixels_steps_to_final"] = pixel_reach
        goals["arms"] = {}
        for arm in arms:
            if arm in ("pixels", "factors"):
                continue
            row: dict[str, Any] = {}
            for fraction in REACH_FRACTIONS:
                key = f"steps_to_{fraction:g}x_pixels_final"
                pairs = zip(summary[arm][key], summary["pixels"][key])
                row[f"sample_efficiency_{fraction:g}x_met"] = all(
                    v is not None and (p is None or v <= p) for v, p in pairs
                )
            reach = summary[arm]["steps_to_1x_pixels_final"]
            row["steps_to_pixels_final"] = reach
            # issue 11: reach the pixels' final return in <= 0.5x the pixels' steps (pretraining counted)
            row["half_steps_met"] = all(v is not None and v <= 0.5 * pixel_reach for v in reach)
            row["steps_ratio_to_pixels"] = [None if v is None else v / pixel_reach for v in reach]
            row["speed_ratio"] = summary[arm]["steps_per_second"] / summary["pixels"]["steps_per_second"]
            cpu_mine, cpu_pixels = summary[arm]["steps_per_cpu_second"], summary["pixels"]["steps_per_cpu_second"]
            row["speed_ratio_cpu"] = cpu_mine / cpu_pixels if cpu_mine and cpu_pixels else None
            # per CPU second of each run's process when recorded (robust to other processes)
            row["speed_met"] = (row["speed_ratio_cpu"] or row["speed_ratio"]) >= 2.0
            goals["arms"][arm] = row
        if "vase" in goals["arms"]:  # the keys earlier reports had
            vase = goals["arms"]["vase"]
            goals["sample_efficiency_1x_met"] = vase["sample_efficiency_1x_met"]
            goals["sample_efficiency_0.95x_met"] = vase["sample_efficiency_0.95x_met"]
            goals["sample_efficiency_met"] = vase["sample_efficiency_1x_met"]
            goals["speed_ratio"] = vase["speed_ratio"]
            goals["speed_met"] = vase["speed_ratio"] >= 0.5
    return {"arms": summary, "goals": goals}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__} with {torch.get_num_threads()} thread(s), "
        f"Python {platform.python_version()}; load average {load:.1f} at the end of the run"
    )


def markdown(report: dict[str, Any], json_path: str = "benchmarks/results/rl.json") -> str:
    args = report["args"]
    s, g, over = report["summary"]["arms"], report["summary"]["goals"], report["overhead"]
    prov = report.get("provenance")
    commit = provenance.short_commit(prov) if prov else "commit unknown (no provenance recorded)"
    lines = [
        f"Measured with `{report['command']}` at {commit} on {report['machine']} "
        f"(JSON: `{json_path}`). "
        f"{args['steps']:,} environment steps per arm, {args['n_envs']} envs (DummyVecEnv), seeds {args['seeds']}, "
        f"PPO settings `{report['ppo_kwargs']}`.",
        "",
        "| arm | final return | steps to reach the pixels' final return (per seed) | steps to reach 95 % of it | "
        "env steps/s | time: env / VASE / PPO |",
        "|---|---:|---:|---:|---:|---|",
    ]
    names = {
        "vase": "PPO on VASE latents (learning on)",
        "pixels": "PPO CnnPolicy on raw pixels",
        "factors": "PPO on ground-truth factors",
    }
    for arm in s:
        if arm not in names:
            options = dict(args.get("variant", [])).get(arm, {})
            names[arm] = f"VASE `{arm}` ({', '.join(f'{k}={v}' for k, v in options.items())})"

    def reach_text(values: list[int | None] | None) -> str:
        if not values:
            return "–"
        return ", ".join("not reached" if v is None else f"{v:,}" for v in values)

    for arm, row in s.items():
        lines.append(
            f"| {names[arm]} | {row['final_return']:.3f} | {reach_text(row.get('steps_to_1x_pixels_final'))} | "
            f"{reach_text(row.get('steps_to_0.95x_pixels_final'))} | {row['steps_per_second']:,.0f} | "
            f"{row['env_fraction']:.0%} / {row['vase_fraction']:.0%} / {row['ppo_fraction']:.0%} |"
        )
    lines += [
        "",
        "Return vs environment steps (mean return of the episodes ending in each bin, first seed):",
        "",
        "| steps | " + " | ".join(s) + " |",
        "|---:|" + "---:|" * len(s),
    ]
    curves = {
        arm: {p["steps"]: p["mean_return"] for p in next(r for r in report["results"] if r["arm"] == arm)["curve"]}
        for arm in s
    }
    all_steps = sorted(set().union(*[c.keys() for c in curves.values()]))
    for step in all_steps[1::2] if len(all_steps) > 10 else all_steps:
        lines.append(
            f"| {step:,} | " + " | ".join(f"{curves[a][step]:.3f}" if step in curves[a] else "–" for a in s) + " |"
        )
    drift_rows = [(arm, row) for arm, row in s.items() if "drift_encoder_kl_median" in row]
    if drift_rows:
        lines += [
            "",
            "Drift per rollout (medians over rollouts, mean over seeds; `VASECallback(measure_drift=True)`): the change "
            "of the agent's action distribution caused by the encoder alone vs PPO's own update, and the change of the "
            "value estimate caused by the encoder alone:",
            "",
            "| arm | encoder KL | PPO update KL | encoder / PPO | value shift |",
            "|---|---:|---:|---:|---:|",
        ]
        for arm, row in drift_rows:
            enc, ppo = row["drift_encoder_kl_median"], row["drift_policy_kl_median"]
            lines.append(
                f"| {arm} | {enc:.2g} | {ppo:.2g} | {enc / ppo if ppo else float('nan'):.2f} | "
                f"{row['drift_encoder_value_shift_median']:.3f} |"
            )
    lines.append("")
    if over:
        lines.append(
            f"Wrapper overhead with learning frozen (8 envs, {over['steps']:,} steps, MlpPolicy): VASE adapter + "
            f"encode {over['vase_us_per_step']:.0f} µs per env step vs PPO's own {over['ppo_us_per_step']:.0f} µs "
            f"(environment {over['env_us_per_step']:.0f} µs) = **{over['overhead_fraction']:.0%}** (goal ≤ 15 %: "
            f"{'met' if g['overhead_met'] else 'missed'})."
        )
    for arm, row in g.get("arms", {}).items():
        ratios = ", ".join("not reached" if r is None else f"{r:.2f}x" for r in row["steps_ratio_to_pixels"])
        lines.append(
            f"`{arm}`: reaches the pixels' final return in {ratios} the pixels' steps (issue-11 goal ≤ 0.5x, "
            f"pretraining counted: {'met' if row['half_steps_met'] else 'missed'}); env steps/s "
            f"{row['speed_ratio']:.2f}x the pixels' per wall-clock second"
            + (
                f", {row['speed_ratio_cpu']:.2f}x per CPU second of its process"
                if row.get("speed_ratio_cpu") is not None
                else ""
            )
            + f" (goal ≥ 2x: {'met' if row['speed_met'] else 'missed'})."
        )
    lines.append(
        "Returns are the training episodes' (stochastic policy); final = episodes in the last 10 % of steps; "
        '"reach" = the same 10 % trailing window first at or above the threshold; steps count pretraining frames.'
    )
    return "\n".join(lines)


def _shown(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (as docs cite it), else as given."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def write_doc(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else ""
    block = f"<!-- BENCH:START -->\n{text}\n<!-- BENCH:END -->"
    if "<!-- BENCH:START -->" in doc:
        doc = re.sub(r"<!-- BENCH:START -->.*<!-- BENCH:END -->", lambda _: block, doc, flags=re.S)
    else:
        doc = doc + "\n" + block + "\n"
    path.write_text(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="env steps per arm (default 150000, quick 4096)")
    parser.add_argument("--arms", default="vase,pixels,factors")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--preset", default="cpu32")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="VASEConfig override, VALUE as JSON (e.g. capacity_per_active=true); repeatable",
    )
    parser.add_argument("--width", type=float, default=None, help="VASE network width (default: the preset's)")
    parser.add_argument(
        "--capacity-updates",
        type=int,
        default=None,
        help="updates for the capacity to reach C_max (default: the preset's)",
    )
    parser.add_argument("--train-every", type=int, default=64, help="VecVASE train_every (frames per update)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        type=parse_variant,
        metavar="NAME:KEY=VALUE,...",
        help="a VASE arm NAME with VecVASE options (VALUE as JSON), e.g. "
        "pre:pretrain_frames=16384,pretrain_updates=3000,train_every=256; name it in --arms; repeatable",
    )
    parser.add_argument("--no-overhead", action="store_true", help="skip the frozen-wrapper overhead run")
    parser.add_argument("--resume", action="store_true", help="skip the runs already in <out>.partial.jsonl")
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs in parallel (spawned processes, --threads torch threads each)"
    )
    parser.add_argument(
        "--no-normalize",
        dest="normalize",
        action="store_false",
        help="no VecNormalize on the latents (default: normalised, as ppo_on_latents does)",
    )
    parser.add_argument("--overhead-steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rl.json"))
    parser.add_argument("--doc", default=str(ROOT / "docs" / "RL.md"))
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="re-summarise the stored --out JSON and rewrite the doc table (no runs)",
    )
    args = parser.parse_args()
    if args.report_only:
        report = json.loads(Path(args.out).read_text())
        args.steps = report["args"]["steps"]
        report["summary"] = summarise(report["results"], report["overhead"], args)
        provenance.write_json(args.out, report)  # keeps the measurement's own provenance block
        text = markdown(report, _shown(args.out))
        print(text)
        if not args.no_doc:
            write_doc(Path(args.doc), text)
        return
    torch.set_num_threads(args.threads)
    args.steps = args.steps or (4096 if args.quick else 150_000)
    over_steps = args.overhead_steps or (2048 if args.quick else 16_384)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = set(arms) - {"vase", "pixels", "factors"} - {name for name, _ in args.variant}
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)} (name VASE variants with --variant NAME:...)")

    print(f"bench_rl: {arms}, {args.steps} steps, seeds {args.seeds}", flush=True)
    code = provenance.code_state(CODE)  # the code as it was when the measurement started
    started = time.time()
    partial = Path(args.out + ".partial.jsonl")
    done: dict[tuple[str, int], dict[str, Any]] = {}
    if args.resume and partial.exists():
        for line in partial.read_text().splitlines():
            row = json.loads(line)
            done[(row["arm"], row["seed"])] = row
    elif partial.exists():
        partial.unlink()
    results = [done[(arm, seed)] for seed in args.seeds for arm in arms if (arm, seed) in done]
    jobs = [(arm, args, seed) for seed in args.seeds for arm in arms if (arm, seed) not in done]

    def keep(row: dict[str, Any]) -> None:
        results.append(row)
        with partial.open("a") as handle:
            handle.write(json.dumps(row) + "\n")

    if args.jobs > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(args.jobs, len(jobs)), maxtasksperchild=1) as pool:
            for row in pool.imap_unordered(_run_job, jobs):
                keep(row)
    else:
        for job in jobs:
            keep(_run_job(job))
    order = {arm: i for i, arm in enumerate(arms)}
    results.sort(key=lambda r: (r["seed"], order.get(r["arm"], 99)))
    over: dict[str, Any] = {}
    if not args.no_overhead:
        over = overhead(args, over_steps)
        print(f"  overhead (frozen): {over['overhead_fraction']:.1%} of PPO's own per-step cost", flush=True)
    command = "python benchmarks/bench_rl.py " + " ".join(sys.argv[1:])
    report = {
        "command": command.strip(),
        "machine": machine(),
        "args": vars(args),
        "ppo_kwargs": ppo_kwargs(args),
        "results": results,
        "overhead": over,
    }
    report["summary"] = summarise(results, over, args)
    report["provenance"] = provenance.collect(
        command=command.strip(), seeds=args.seeds, started=started, code_state=code
    )
    provenance.write_json(args.out, report)
    text = markdown(report, _shown(args.out))
    print(text)
    if not args.no_doc:
        write_doc(Path(args.doc), text)


if __name__ == "__main__":
    main()
