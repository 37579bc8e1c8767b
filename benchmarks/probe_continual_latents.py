"""What the agent's input holds: class and position read out of the continual benchmark's latents.

The sprite task's reward depends on the sprite's class (which goal) and its position, so an agent
on latents can only do as well as the latents let it tell the class and the position. This
diagnostic drives a VASE arm of ``benchmarks/bench_continual_rl.py`` (its learner and drift
controls, built as the benchmark builds them) along the benchmark's schedule under a uniformly
random policy (no agent: ``benchmarks/agentless.py``) and, after the pretraining and at every
phase end, reads out of the latents *the agent is given* (slow encoder, slow mask, standardised as
``VecNormalize`` does) the class and the (x, y) position of fresh frames of every look of the
task, with the paper's probe (``vase_rl.evaluation.probes.LatentProbe``: an MLP with two hidden
layers of 256 units, refitted at each checkpoint; appendix A.5 of the VASE paper):

* class accuracy on held-out frames (chance: 1 / number of classes);
* position R² (1 - mean squared error / variance of the true x and y), held out;
* both again from the latents the current domain's decoder uses only (``*_used_only``): what the
  other, "unused" latents add.

Every look's frames are independent draws (one ``reset`` each, fixed seeds, the same frames at
every checkpoint), so checkpoints compare like with like.

    python benchmarks/probe_continual_latents.py --task sprites --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CODE = ("core", "wrappers", "agents", "envs", "benchmarks/agentless.py", "benchmarks/probe_continual_latents.py")
FRAME_SEED = 1_000_003  # probe frames: seeds FRAME_SEED + i, disjoint from the runs' env seeds


def look_frames(settings: Any, look: str, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` independent frames of one look: (raw frames, class ids, (x, y) positions)."""
    from vase_rl.envs import DomainSequenceEnv

    from agents import continual

    kwargs = dict(continual.env_kwargs(settings), domains=(look,))
    env = DomainSequenceEnv(**kwargs)
    frames, classes, positions = [], [], []
    for i in range(count):
        obs, info = env.reset(seed=FRAME_SEED + i)
        frames.append(obs)
        classes.append(int(info["class"]))
        positions.append(np.asarray(info["position"], dtype=np.float32))
    env.close()
    return np.stack(frames), np.asarray(classes), np.stack(positions)


def standardise(train: np.ndarray, test: np.ndarray, clip: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Scale every latent by the training split's mean and spread, as ``VecNormalize`` scales the
    agent's input (epsilon 1e-8, clipped at ``clip``)."""
    mean, var = train.mean(0), train.var(0)
    scale = np.sqrt(var + 1e-8)
    return (np.clip((train - mean) / scale, -clip, clip), np.clip((test - mean) / scale, -clip, clip))


def read_out(
    latents: np.ndarray, classes: np.ndarray, positions: np.ndarray, num_classes: int, steps: int, seed: int
) -> dict[str, float]:
    """Held-out class accuracy and position R² of refitted probes (the first 3/4 of the frames
    train, the rest test)."""
    import torch

    from vase_rl.evaluation.probes import LatentProbe

    cut = (3 * len(latents)) // 4
    x_train, x_test = standardise(latents[:cut], latents[cut:])
    dim = latents.shape[1]
    cls = LatentProbe(dim, num_classes=num_classes, seed=seed)
    cls.fit(x_train, classes[:cut], steps)
    accuracy = float((cls.predict(x_test).argmax(1).numpy() == classes[cut:]).mean())
    pos = LatentProbe(dim, regression_dim=2, seed=seed)
    pos.fit(x_train, positions[:cut], steps)
    with torch.no_grad():
        pred = pos.predict(x_test).numpy()
    truth = positions[cut:]
    r2 = 1.0 - float(((pred - truth) ** 2).mean()) / float(truth.var(0).mean())
    return {"class_accuracy": accuracy, "position_r2": r2}


def run_one(job: tuple[str, dict[str, Any], int, int, int]) -> dict[str, Any]:
    arm, settings_dict, seed, probe_frames, probe_steps = job
    from agentless import run_without_agent

    from agents import continual

    settings = continual.ContinualSettings.from_dict(settings_dict)
    looks = list(dict.fromkeys(settings.domains))
    data = {look: look_frames(settings, look, probe_frames) for look in looks}
    checkpoints: list[dict[str, Any]] = []
    started = time.perf_counter()

    def probe(vec: Any, row: dict[str, Any], label: str) -> None:
        learner = vec.learner
        out = dict(row, label=label, looks={})
        out["active_latents"] = int(np.asarray(learner.latent_mask).sum())
        used = learner.used_latents
        out["used_latents"] = None if used is None else int(np.asarray(used).sum())
        for look, (frames, classes, positions) in data.items():
            latents = np.concatenate([vec.encode(frames[i : i + 256]) for i in range(0, len(frames), 256)])
            scores = read_out(latents, classes, positions, settings.num_classes, probe_steps, seed)
            if used is not None and 0 < int(np.asarray(used).sum()) < latents.shape[1]:
                # the same read-out from the latents the domain's decoder uses only
                only = read_out(
                    latents[:, np.asarray(used, bool)], classes, positions, settings.num_classes, probe_steps, seed
                )
                scores.update({f"{k}_used_only": v for k, v in only.items()})
            out["looks"][look] = scores
        checkpoints.append(out)
        print(f"  {arm} seed {seed} {label}: {out['looks']}", flush=True)

    def on_pretrained(vec: Any, frames: int) -> None:
        learner = vec.learner
        row = {"frames": frames, "update": int(learner.num_updates), "domain": learner.current_domain}
        probe(vec, dict(row, num_domains=int(learner.num_domains)), "pretrained")

    def on_phase_end(vec: Any, row: dict[str, Any]) -> None:
        phase = row["frames"] // settings.phase_steps
        probe(vec, row, f"end of phase {phase} ({settings.domains[phase - 1]})")

    schedule = run_without_agent(arm, settings, seed, on_pretrained=on_pretrained, on_phase_end=on_phase_end)
    return {
        "arm": arm,
        "seed": seed,
        "seconds": time.perf_counter() - started,
        "pretrain_updates": schedule["pretrain_updates"],
        "checkpoints": checkpoints,
    }


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of every (arm, checkpoint, look) read-out."""
    rows: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for run in results:
        for cp in run["checkpoints"]:
            for look, scores in cp["looks"].items():
                cell = rows.setdefault((run["arm"], cp["label"], look), {})
                for key, value in scores.items():
                    cell.setdefault(key, []).append(value)
    out = []
    for (arm, label, look), cell in rows.items():
        row: dict[str, Any] = {"arm": arm, "checkpoint": label, "look": look, "seeds": len(cell["class_accuracy"])}
        # a *_used_only read-out exists only where some latents were unused: its own seed count
        for key, values in cell.items():
            row[key] = {
                "mean": float(np.mean(values)),
                "sd": float(np.std(values)),
                "n": len(values),
                "per_seed": values,
            }
        out.append(row)
    return out


def markdown(summary: list[dict[str, Any]], num_classes: int) -> str:
    lines = [
        f"| arm | checkpoint | look | class accuracy, all latents (used only); chance {1 / num_classes:.2f} "
        "| position R², all (used only) |",
        "|---|---|---|---:|---:|",
    ]

    def cell(r: dict[str, Any], key: str) -> str:
        return f"{r[key]['mean']:.2f} ± {r[key]['sd']:.2f}" if key in r else "–"

    for r in summary:
        lines.append(
            f"| {r['arm']} | {r['checkpoint']} | {r['look']} | {cell(r, 'class_accuracy')} "
            f"({cell(r, 'class_accuracy_used_only')}) | {cell(r, 'position_r2')} ({cell(r, 'position_r2_used_only')}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sprites", choices=("sprites", "moving"))
    parser.add_argument("--arms", default="vase,cci_vae", help="comma-separated VASE arms of the benchmark")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--phase-steps", type=int, default=60_000)
    parser.add_argument("--phases", type=int, default=3)
    parser.add_argument("--probe-frames", type=int, default=3000, help="frames per look (3/4 train the probes)")
    parser.add_argument("--probe-steps", type=int, default=1500, help="Adam steps per probe fit")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="CI size: the benchmark's --quick settings, small probes")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/probe_continual_<task>.json")
    args = parser.parse_args(argv)
    if args.probe_frames < 8:
        parser.error("--probe-frames must be at least 8 (a quarter of them test the probes)")

    from agents import continual
    from vase_rl.provenance import code_state, write_json

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    for arm in arms:
        if arm not in continual.ARMS or continual.ARMS[arm]["kind"] != "vase":
            vase_arms = sorted(a for a, s in continual.ARMS.items() if s["kind"] == "vase")
            parser.error(f"unknown or non-VASE arm {arm!r}; choose from {vase_arms}")
    code = code_state(CODE)
    started = time.time()
    if args.quick:
        settings = continual.quick_settings(args.task, {})
        args.probe_frames, args.probe_steps = min(args.probe_frames, 64), min(args.probe_steps, 20)
    else:
        settings = continual.ContinualSettings(task=args.task, phases=args.phases, phase_steps=args.phase_steps)
    jobs = [(arm, settings.to_dict(), seed, args.probe_frames, args.probe_steps) for arm in arms for seed in args.seeds]
    if args.jobs > 1:
        import multiprocessing

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(run_one, jobs))
    else:
        results = [run_one(job) for job in jobs]
    summary = summarise(results)
    out = args.out or str(
        ROOT / "benchmarks" / "results" / f"probe_continual_{args.task}{'_quick' if args.quick else ''}.json"
    )
    payload = {
        "settings": settings.to_dict(),
        "task": args.task,
        "arms": arms,
        "policy": "uniform random",
        "probe": {
            "model": "LatentProbe (2 x 256 ReLU, Adam 6e-4, batch 64), refitted at every checkpoint",
            "frames_per_look": args.probe_frames,
            "train_fraction": 0.75,
            "steps": args.probe_steps,
            "input": "the agent's latents (slow encoder and mask), standardised per latent as VecNormalize does",
        },
        "results": results,
        "summary": summary,
    }
    write_json(out, payload, seeds=args.seeds, started=started, code_state=code)
    print(markdown(summary, settings.num_classes))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
