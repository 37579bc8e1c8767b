"""Imagination-driven exploration: moving shapes -> static digits (paper fig. 4C, appendix A.3.1).

What it shows. VASE first learns moving shapes, which gives it position latents, and (with
``config.imagination``) trains a translation policy g(z*, x) on L_agent = ||z* - z||^2,
z ~ q(z | g(z*, x) . x). Then the stream switches to *static* (centred) digits. With imagination
the learner keeps imagining "this digit, but over there" -- z* ~ N(0, I), x* = g(z*, x) . x --
and trains on those x* too. Throughout the static-digits stage a probe (the paper's read-out:
2 x 256 ReLU MLP, Adam 6e-4, batch 64, one step per learner update, never updating VASE) learns
to classify digits *at random positions* from the latents (posterior means). The claim: its
accuracy is clearly higher with imagination, although no real digit ever moved.

Conditions (same seeds, same data, same probe batches -> paired comparisons):

* ``imagination``   config.imagination=True (the learnt policy, spec §10);
* ``baseline``      config.imagination=False;
* ``random_shift``  control: the same hook, but x* = a uniformly random translation (no policy,
  no z*). It tells how much of the effect needs the *learnt* policy rather than any translation.
* ``real_moving``   reference: the second stage shows real *moving* digits,
  no imagination -- what the probe reaches when the learner actually sees digits move.

Also measured, for the imagination runs: the policy's offline latent error vs no translation,
and acting for real in ``SpriteTaskEnv(continuous=True)`` -- the explorer realises "this sprite,
but over there" goals (position latents redrawn from N(0, 1)); its final latent error is
compared with random actions, with not moving, and with the best any position could achieve.

Usage::

    python examples/imagination_exploration.py --quick            # < 1 minute, one seed, smoke
    python examples/imagination_exploration.py --jobs 2           # full: 5 seeds x 4 conditions (~35 min)
    python examples/imagination_exploration.py --jobs 2 --seeds 0 1 2 3 4

Full mode writes benchmarks/results/imagination_exploration.json and
docs/figures/imagination_exploration.png (quick mode writes *_quick.* next to them).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = ("imagination", "baseline", "random_shift", "real_moving")


# ------------------------------------------------------------------------------------------
# the control: translation augmentation without a policy
# ------------------------------------------------------------------------------------------
class RandomShiftAugmentation:
    """Stands in for ``learner.imagination``: imagined x* are uniform random translations."""

    def __init__(self, learner, max_shift: float) -> None:
        self.learner, self.max_shift = learner, max_shift

    def imagine(self, x: torch.Tensor) -> torch.Tensor:
        from vase_rl.imagination import random_translation

        with torch.no_grad():
            return random_translation(x, self.max_shift, self.learner.generator)[0].clamp_(0, 1)

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def posterior_means(learner, images: np.ndarray, batch: int = 512) -> np.ndarray:
    out = []
    for i in range(0, len(images), batch):
        out.append(learner.encoder(to_tensor(images[i : i + batch]))[0].float().numpy())
    return np.concatenate(out)


def refit_probe(learner, train: tuple, test: tuple, seed: int, steps: int) -> float:
    """A fresh probe fitted on the representation as it is now; held-out accuracy."""
    from vase_rl.evaluation import LatentProbe

    probe = LatentProbe(learner.config.latent_dim, 10, seed=seed)
    probe.fit(posterior_means(learner, train[0]), train[1], steps)
    return probe.accuracy(posterior_means(learner, test[0]), test[1])


def explorer_eval(learner, domain: str, episodes: int, steps: int, seed: int) -> dict[str, Any]:
    """Act for real: realise 'this sprite, but over there' goals in the continuous sprite env."""
    from vase_rl.envs import SpriteTaskEnv, make_family

    from vase_rl.imagination import ImaginationExplorer, latent_error, translation_sensitivity

    fam = make_family("moving_" + domain, image_size=32, channels=1, seed=0)
    sens = translation_sensitivity(learner, fam.sample(256, np.random.default_rng(seed + 7))[0])
    pos = np.sort(np.argsort(-sens)[:2])
    # goal_radius tiny: reaching the class goal must not end the episode here
    env = SpriteTaskEnv(domain=domain, continuous=True, goal_radius=1e-3, max_steps=steps + 1)
    explorer = ImaginationExplorer(learner)
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, 14)
    gx, gy = np.meshgrid(grid, grid)
    rows = {"explorer": [], "random": [], "start": [], "best_position": []}
    for ep in range(episodes):
        obs, info = env.reset(seed=seed * 1000 + ep)
        z_star = explorer.imagine_goal(obs, pos, rng)
        res = explorer.realise(env, z_star, obs=obs, steps=steps, mask=pos)
        rows["explorer"].append(res["final_error"])
        rows["start"].append(res["initial_error"])
        obs_r, _ = env.reset(seed=seed * 1000 + ep)  # same sprite and start, random actions
        for _ in range(steps):
            obs_r, *_ = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
        rows["random"].append(float(latent_error(explorer.encode(obs_r)[None], z_star[None], pos)[0]))
        # the best any position of this sprite could do (rendered on a 14 x 14 grid)
        f = np.repeat(np.asarray(info["factors"])[None], gx.size, 0)
        f[:, 4], f[:, 5] = gx.ravel(), gy.ravel()
        mu = posterior_means(learner, fam.render(f))
        rows["best_position"].append(float(latent_error(mu, np.repeat(z_star[None], len(mu), 0), pos).min()))
    summary = {k: float(np.mean(v)) for k, v in rows.items()}
    summary["position_latents"] = pos.tolist()
    summary["sensitivity"] = np.round(sens, 4).tolist()
    summary["episodes"], summary["steps"] = episodes, steps
    return summary


# ------------------------------------------------------------------------------------------
# one run
# ------------------------------------------------------------------------------------------
def run(seed: int, condition: str, args: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    from vase_rl.envs import make_family, make_stream

    from vase_rl import VASE, VASEConfig
    from vase_rl.evaluation import LatentProbe

    t0 = time.time()
    a_steps, b_steps = args["stage_a"], args["stage_b"]
    cfg = VASEConfig.preset(
        "cpu32",
        imagination=condition in ("imagination", "random_shift"),
        imagination_fraction=args["fraction"],
        imagination_max_shift=args["max_shift"],
        capacity_increment=1.0 / args["capacity_steps"],
    )
    learner = VASE(cfg, seed=seed, device="cpu")
    if condition == "random_shift":
        learner.imagination = RandomShiftAugmentation(learner, args["max_shift"])
    second = "moving_digits" if condition == "real_moving" else "digits"
    stream = make_stream([("moving_shapes", a_steps), (second, b_steps)], batch_size=64, seed=seed)

    moving = make_family("moving_digits", image_size=32, channels=1, seed=0)
    static = make_family("digits", image_size=32, channels=1, seed=0)
    drng = np.random.default_rng(10_000 + seed)  # probe data: identical across conditions

    def labelled(fam, n):
        x, f = fam.sample(n, drng)
        return x, f[:, 0].astype(np.int64)

    test_moving = labelled(moving, args["test_size"])
    probe = LatentProbe(cfg.latent_dim, 10, seed=seed)
    curve_steps, curve_acc = [], []
    imagination_log: list[dict[str, float]] = []
    out: dict[str, Any] = {"seed": seed, "condition": condition}

    for i, batch in enumerate(stream):
        if i == a_steps:  # end of moving shapes: the representation before any digit
            out["stage_a_refit_moving_digits"] = refit_probe(
                learner, labelled(moving, args["refit_train"]), test_moving, seed, args["refit_steps"]
            )
            if condition == "imagination":
                shapes = make_family("moving_shapes", image_size=32, channels=1, seed=0)
                xs = to_tensor(shapes.sample(512, np.random.default_rng(seed + 3))[0])
                zs = torch.randn(512, cfg.latent_dim, generator=torch.Generator().manual_seed(seed))
                out["explorer_shapes"] = explorer_eval(learner, "shapes", args["episodes"], args["explore_steps"], seed)
                out["policy_after_a"] = learner.imagination.evaluate(xs, zs, out["explorer_shapes"]["position_latents"])
        stats = learner.update(batch.images)
        if i % 25 == 0 or i == len(stream) - 1:
            imagination_log.append(
                {
                    "step": i + 1,
                    **{k[12:]: v for k, v in stats.items() if k.startswith("imagination_")},
                    "domain": stats["domain"],
                    "active_latents": stats["active_latents"],
                    "recon": stats["recon"],
                    "kl": stats["kl"],
                }
            )
        if args["progress"] and (i + 1) % 500 == 0:
            print(
                f"  [seed {seed} {condition}] update {i + 1}/{len(stream)} domain {stats['domain']} "
                f"active {stats['active_latents']} recon {stats['recon']:.1f} {time.time() - t0:.0f} s",
                flush=True,
            )
        if i >= a_steps:
            x, y = labelled(moving, 64)
            probe.train_step(posterior_means(learner, x), y)
            k = i - a_steps + 1
            if k % args["eval_every"] == 0 or k == b_steps:
                curve_steps.append(k)
                curve_acc.append(probe.accuracy(posterior_means(learner, test_moving[0]), test_moving[1]))

    out["probe_steps"], out["probe_accuracy"] = curve_steps, curve_acc
    out["final_refit_moving_digits"] = refit_probe(
        learner, labelled(moving, args["refit_train"]), test_moving, seed, args["refit_steps"]
    )
    out["final_refit_static_digits"] = refit_probe(
        learner, labelled(static, args["refit_train"]), labelled(static, args["test_size"]), seed, args["refit_steps"]
    )
    if condition == "imagination":
        xd = to_tensor(moving.sample(512, np.random.default_rng(seed + 4))[0])
        zd = torch.randn(512, cfg.latent_dim, generator=torch.Generator().manual_seed(seed))
        out["explorer_digits"] = explorer_eval(learner, "digits", args["episodes"], args["explore_steps"], seed)
        out["policy_after_b_moving_digits"] = learner.imagination.evaluate(
            xd, zd, out["explorer_digits"]["position_latents"]
        )
    out["log"] = imagination_log
    out["num_domains"] = learner.num_domains
    out["domain_events"] = [d for d in learner.domain_log if d["event"] == "new"]
    out["seconds"] = round(time.time() - t0, 1)
    print(
        f"[seed {seed} {condition:12s}] final probe acc {curve_acc[-1]:.3f}  refit moving "
        f"{out['final_refit_moving_digits']:.3f}  static {out['final_refit_static_digits']:.3f}  "
        f"domains {learner.num_domains}  {out['seconds']} s",
        flush=True,
    )
    return out


# ------------------------------------------------------------------------------------------
# summary, figure
# ------------------------------------------------------------------------------------------
def summarise(runs: list[dict[str, Any]], conditions: list[str], seeds: list[int], last_k: int) -> dict[str, Any]:
    by = {(r["condition"], r["seed"]): r for r in runs}
    summary: dict[str, Any] = {"conditions": {}}
    for c in conditions:
        acc = np.array([by[(c, s)]["probe_accuracy"] for s in seeds])
        final = acc[:, -last_k:].mean(1)
        entry = {
            "probe_steps": by[(c, seeds[0])]["probe_steps"],
            "probe_accuracy_mean": acc.mean(0).round(4).tolist(),
            "probe_accuracy_std": acc.std(0).round(4).tolist(),
            "final_accuracy_per_seed": final.round(4).tolist(),
            "final_accuracy_mean": float(final.mean()),
            "final_accuracy_std": float(final.std()),
        }
        for key in ("stage_a_refit_moving_digits", "final_refit_moving_digits", "final_refit_static_digits"):
            v = np.array([by[(c, s)][key] for s in seeds])
            entry[key] = {"per_seed": v.round(4).tolist(), "mean": float(v.mean()), "std": float(v.std())}
        summary["conditions"][c] = entry
    gaps = {}
    if "imagination" in conditions:
        for other in conditions:
            if other == "imagination":
                continue
            d = np.array(summary["conditions"]["imagination"]["final_accuracy_per_seed"]) - np.array(
                summary["conditions"][other]["final_accuracy_per_seed"]
            )
            r = np.array(summary["conditions"]["imagination"]["final_refit_moving_digits"]["per_seed"]) - np.array(
                summary["conditions"][other]["final_refit_moving_digits"]["per_seed"]
            )
            gaps[f"imagination_minus_{other}"] = {
                "probe_final_per_seed": d.round(4).tolist(),
                "probe_final_mean": float(d.mean()),
                "probe_final_std": float(d.std()),
                "seeds_positive": int((d > 0).sum()),
                "refit_per_seed": r.round(4).tolist(),
                "refit_mean": float(r.mean()),
                "refit_std": float(r.std()),
            }
        ex = {}
        for env_key in ("explorer_shapes", "explorer_digits"):
            rows = [by[("imagination", s)][env_key] for s in seeds if env_key in by[("imagination", s)]]
            if rows:
                ex[env_key] = {
                    k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))}
                    for k in ("start", "explorer", "random", "best_position")
                }
        summary["explorer"] = ex
        pol = {}
        for key in ("policy_after_a", "policy_after_b_moving_digits"):
            rows = [by[("imagination", s)][key] for s in seeds]
            pol[key] = {k: float(np.mean([r[k] for r in rows])) for k in ("policy", "identity", "ratio")}
        summary["policy_latent_error"] = pol
    summary["gaps"] = gaps
    return summary


def plot(summary: dict[str, Any], runs: list[dict[str, Any]], seeds: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"imagination": "tab:blue", "baseline": "tab:red", "random_shift": "tab:gray", "real_moving": "tab:green"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1.6, 1]})
    ax = axes[0]
    for c, e in summary["conditions"].items():
        x = np.array(e["probe_steps"])
        m, s = np.array(e["probe_accuracy_mean"]), np.array(e["probe_accuracy_std"])
        ax.plot(
            x,
            m,
            color=colours.get(c),
            label=f"{c} (final {e['final_accuracy_mean']:.3f} ± {e['final_accuracy_std']:.3f})",
        )
        ax.fill_between(x, m - s, m + s, color=colours.get(c), alpha=0.2)
        for r in runs:
            if r["condition"] == c:
                ax.plot(r["probe_steps"], r["probe_accuracy"], color=colours.get(c), alpha=0.25, lw=0.7)
    ax.axhline(0.1, color="k", lw=0.5, ls=":")
    ax.set_xlabel("updates into the static-digits stage")
    ax.set_ylabel("probe accuracy, digits at random positions")
    ax.set_title(f"moving-digit probe during static digits ({len(seeds)} seeds, mean ± std)")
    ax.legend(fontsize=8, loc="lower right")
    ax = axes[1]
    ex = summary.get("explorer", {})
    labels = ["start", "explorer", "random", "best_position"]
    width = 0.38
    for j, (key, name) in enumerate((("explorer_shapes", "shapes"), ("explorer_digits", "digits"))):
        if key not in ex:
            continue
        means = [ex[key][k]["mean"] for k in labels]
        stds = [ex[key][k]["std"] for k in labels]
        ax.bar(np.arange(4) + (j - 0.5) * width, means, width, yerr=stds, label=f"{name} env", capsize=3)
    ax.set_xticks(np.arange(4), ["no move", "explorer", "random\nactions", "best\nposition"])
    ax.set_ylabel("||z* - z||² on position latents")
    ax.set_title("acting for real: realise 'this sprite, over there'")
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="one seed, tiny stages: a smoke run under a minute")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--conditions", nargs="+", default=None, choices=CONDITIONS)
    p.add_argument("--stage-a", type=int, default=None, help="updates on moving shapes")
    p.add_argument("--stage-b", type=int, default=None, help="updates on static digits")
    p.add_argument(
        "--fraction", type=float, default=1.0, help="imagined images per real image (config.imagination_fraction)"
    )
    p.add_argument("--max-shift", type=float, default=0.25, help="translation bound, fraction of the side")
    p.add_argument(
        "--capacity-steps", type=int, default=6000, help="updates for capacity C to reach C_max (cpu32: 6000)"
    )
    p.add_argument("--eval-every", type=int, default=None, help="probe evaluations every n updates of the digits stage")
    p.add_argument("--progress", action="store_true", help="print a line every 500 updates")
    p.add_argument("--jobs", type=int, default=1, help="parallel runs (one torch thread each)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--figure", type=Path, default=None)
    a = p.parse_args(argv)
    quick = a.quick
    seeds = a.seeds or ([0] if quick else [0, 1, 2, 3, 4])
    conditions = a.conditions or (["imagination", "baseline"] if quick else list(CONDITIONS))
    args = {
        "stage_a": a.stage_a or (120 if quick else 2000),
        "stage_b": a.stage_b or (80 if quick else 2500),
        "fraction": a.fraction,
        "max_shift": a.max_shift,
        "capacity_steps": a.capacity_steps,
        "eval_every": a.eval_every or (20 if quick else 100),
        "progress": a.progress,
        "test_size": 300 if quick else 1000,
        "refit_train": 600 if quick else 3000,
        "refit_steps": 100 if quick else 1500,
        "episodes": 4 if quick else 30,
        "explore_steps": 6,
    }
    suffix = "_quick" if quick else ""
    out = a.out or ROOT / "benchmarks" / "results" / f"imagination_exploration{suffix}.json"
    fig = a.figure or ROOT / "docs" / "figures" / f"imagination_exploration{suffix}.png"
    t0 = time.time()
    jobs = [(s, c) for s in seeds for c in conditions]
    if a.jobs > 1:
        with ProcessPoolExecutor(a.jobs) as pool:
            runs = list(pool.map(run, *zip(*jobs), [args] * len(jobs)))
    else:
        runs = [run(s, c, args) for s, c in jobs]
    last_k = 1 if quick else 4
    summary = summarise(runs, conditions, seeds, last_k)
    result = {
        "experiment": "moving_shapes -> static digits; probe on moving digits during the static stage",
        "command": " ".join(["python examples/imagination_exploration.py", *(sys.argv[1:] if argv is None else argv)]),
        "seeds": seeds,
        "settings": args,
        "final_accuracy_is_mean_of_last_evals": last_k,
        "probe": "vase_rl.evaluation.LatentProbe (2x256 ReLU, Adam 6e-4, batch 64) on posterior means; "
        "one step per learner update during the static-digits stage",
        "summary": summary,
        "runs": [{k: v for k, v in r.items() if k != "log"} for r in runs],
        "logs": {f"{r['condition']}/{r['seed']}": r["log"] for r in runs},
        "seconds": round(time.time() - t0, 1),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()},
    }
    from vase_rl.provenance import write_json

    write_json(
        out,
        result,
        command=result["command"],
        seeds=seeds,
        started=t0,
        code_paths=["core", "envs", "evaluation", "examples/imagination_exploration.py"],
    )
    title = (
        f"VASE cpu32, moving shapes ({args['stage_a']} updates) -> static digits ({args['stage_b']}), "
        f"imagination fraction {args['fraction']}, max shift {args['max_shift']}"
    )
    plot(summary, runs, seeds, fig, title)
    for name, g in summary["gaps"].items():
        print(
            f"{name}: probe final {g['probe_final_mean']:+.3f} ± {g['probe_final_std']:.3f} "
            f"({g['seeds_positive']}/{len(seeds)} seeds > 0); refit {g['refit_mean']:+.3f} ± {g['refit_std']:.3f}"
        )
    for key, e in summary.get("explorer", {}).items():
        print(key, {k: round(v["mean"], 3) for k, v in e.items()})
    print(f"wrote {out} and {fig} in {result['seconds']} s")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
