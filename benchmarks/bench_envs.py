"""Speed of the visual environments and streams, plus reference returns of the sprite tasks.

Measures, on this machine:
  * env steps/s with random actions (through ``gym.make``, i.e. with Gymnasium's default
    wrappers, and on the raw env), for the sprite tasks at 32x32 and 64x64;
  * stream throughput in images/s for several domains, batch sizes and image sizes;
  * the one-off cost of building a sprite bank (cold cache);
  * oracle and random returns of every registered environment.

Writes ``benchmarks/results/envs.json`` (with a provenance block: commit, versions, CPU,
threads, command, wall time, digest of ``envs/`` and this script) and the tables between the
BENCH markers of ``docs/ENVIRONMENTS.md``, headed by the command and the commit.
Run:  python benchmarks/bench_envs.py [--quick] [--out FILE] [--no-doc]
Numbers are medians of ``--repeats`` runs; goals: >= 5,000 env steps/s at 64x64 and
>= 20,000 stream images/s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import gymnasium as gym
import vase_rl.envs as E

from vase_rl import provenance

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "envs.json"
DOC = ROOT / "docs" / "ENVIRONMENTS.md"
START, END = "<!-- BENCH:START -->", "<!-- BENCH:END -->"
GOAL_STEPS, GOAL_IMAGES = 5_000, 20_000


#: The code these numbers measure (see vase_rl.provenance.CODE_PATHS).
CODE = ("envs", "benchmarks/bench_envs.py")


def env_steps_per_s(env_id: str, steps: int, repeats: int, raw: bool, **kwargs) -> float:
    env = gym.make(env_id, **kwargs)
    if raw:
        env = env.unwrapped
    env.reset(seed=0)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps)]
    rates = []
    for _ in range(repeats):
        env.reset(seed=0)
        t0 = time.perf_counter()
        for a in actions:
            _, _, term, trunc, _ = env.step(a)
            if term or trunc:
                env.reset()
        rates.append(steps / (time.perf_counter() - t0))
    env.close()
    return statistics.median(rates)


def stream_images_per_s(domain: str, batch: int, size: int, channels: int, images: int, repeats: int) -> float:
    steps = max(1, images // batch)
    stream = E.make_stream([(domain, steps)], batch_size=batch, image_size=size, channels=channels)
    stream[0]  # build the bank outside the timing
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _b in stream:
            pass
        rates.append(steps * batch / (time.perf_counter() - t0))
    return statistics.median(rates)


def bank_build_seconds(name: str, size: int) -> float:
    E.clear_caches()
    t0 = time.perf_counter()
    E.make_family(name, image_size=size).prepare()
    return time.perf_counter() - t0


def run(quick: bool, repeats: int) -> dict:
    steps = 3_000 if quick else 20_000
    images = 20_000 if quick else 100_000
    episodes = 50 if quick else 300
    out: dict = {
        "settings": {
            "quick": quick,
            "repeats": repeats,
            "env_steps": steps,
            "stream_images": images,
            "episodes": episodes,
        },
    }

    out["bank_build_s"] = [
        {"family": fam, "image_size": size, "seconds": round(bank_build_seconds(fam, size), 3)}
        for fam in ("shapes", "digits", "letters", "garments")
        for size in (32, 64)
    ]
    env_rows = []
    for env_id, size, ch in [
        ("vase_rl/SpriteTask-v0", 32, 1),
        ("vase_rl/SpriteTask-v0", 64, 1),
        ("vase_rl/SpriteTask-v0", 64, 3),
        ("vase_rl/SpriteTaskContinuous-v0", 64, 1),
        ("vase_rl/DigitTask-v0", 64, 1),
        ("vase_rl/DomainSequence-v0", 64, 1),
    ]:
        row = {"env": env_id, "image_size": size, "channels": ch}
        row["steps_per_s_gym_make"] = round(
            env_steps_per_s(env_id, steps, repeats, False, image_size=size, channels=ch)
        )
        row["steps_per_s_raw"] = round(env_steps_per_s(env_id, steps, repeats, True, image_size=size, channels=ch))
        env_rows.append(row)
        print(row, flush=True)
    out["env_steps"] = env_rows

    stream_rows = []
    for domain, size, ch, batch in [
        ("moving_shapes", 32, 1, 64),
        ("moving_digits", 32, 1, 64),
        ("moving_garments", 32, 1, 64),
        ("moving_digits", 32, 1, 256),
        ("moving_shapes", 64, 1, 64),
        ("moving_digits", 64, 1, 64),
        ("moving_digits", 64, 3, 64),
        ("inverted_moving_letters", 64, 1, 64),
        ("noisy_moving_digits", 32, 1, 64),
        ("noisy_moving_digits", 64, 1, 64),
        ("coloured_cluttered_moving_garments", 64, 3, 64),
    ]:
        rate = stream_images_per_s(domain, batch, size, ch, images, repeats)
        row = {"domain": domain, "image_size": size, "channels": ch, "batch_size": batch, "images_per_s": round(rate)}
        stream_rows.append(row)
        print(row, flush=True)
    out["stream"] = stream_rows

    returns = []
    for env_id in E.ENV_IDS:
        for policy in ("oracle", "random"):
            r = E.evaluate_policy_returns(env_id, policy, episodes=episodes, seed=0)
            returns.append({"env": env_id, "policy": policy, **{k: round(v, 3) for k, v in r.items()}})
            print(returns[-1], flush=True)
    out["returns"] = returns
    return out


def markdown(res: dict, command: str | None = None, json_path: str = "benchmarks/results/envs.json") -> str:
    prov = res["provenance"]
    v = prov["versions"]
    lines = [
        f"Measured with `{command or prov['command']}` at {provenance.short_commit(prov)} on "
        f"{provenance.machine_summary(prov)}, Python {v['python']}, numpy {v['numpy']}, gymnasium {v['gymnasium']}; "
        f"medians of {res['settings']['repeats']} runs (JSON: `{json_path}`). "
        f"Goals: >= {GOAL_STEPS:,} env steps/s at 64x64, >= {GOAL_IMAGES:,} stream images/s.",
        "",
        "**Environment steps per second** (random actions, resets included)",
        "",
        "| env | obs | steps/s via `gym.make` | steps/s raw env |",
        "|---|---|---:|---:|",
    ]
    for r in res["env_steps"]:
        lines.append(
            f"| `{r['env']}` | {r['image_size']}x{r['image_size']}x{r['channels']} | "
            f"{r['steps_per_s_gym_make']:,} | {r['steps_per_s_raw']:,} |"
        )
    lines += [
        "",
        "**Stream throughput** (`make_stream`, images with factors and domain ids)",
        "",
        "| domain | images | batch | images/s |",
        "|---|---|---:|---:|",
    ]
    for r in res["stream"]:
        lines.append(
            f"| `{r['domain']}` | {r['image_size']}x{r['image_size']}x{r['channels']} | "
            f"{r['batch_size']} | {r['images_per_s']:,} |"
        )
    lines += [
        "",
        "**Sprite bank build** (once per process, family, size and seed; cached afterwards)",
        "",
        "| family | 32x32 | 64x64 |",
        "|---|---:|---:|",
    ]
    by = {(b["family"], b["image_size"]): b["seconds"] for b in res["bank_build_s"]}
    for fam in ("shapes", "digits", "letters", "garments"):
        lines.append(f"| {fam} | {by[(fam, 32)]:.2f} s | {by[(fam, 64)]:.2f} s |")
    lines += [
        "",
        f"**Reference returns** ({res['settings']['episodes']} episodes, default kwargs, 32x32)",
        "",
        "| env | policy | mean return | std | success rate | mean length |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in res["returns"]:
        lines.append(
            f"| `{r['env']}` | {r['policy']} | {r['mean_return']:.3f} | {r['std_return']:.3f} | "
            f"{r['success_rate']:.2f} | {r['mean_length']:.1f} |"
        )
    return "\n".join(lines)


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (as docs cite it), else as given."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def update_doc(text: str) -> None:
    doc = DOC.read_text()
    if START not in doc or END not in doc:
        raise SystemExit(f"{DOC} lacks the {START} / {END} markers")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps/images/episodes (smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS, help="result JSON (default benchmarks/results/envs.json)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/ENVIRONMENTS.md")
    args = parser.parse_args(argv)
    command = "python benchmarks/bench_envs.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    code = provenance.code_state(CODE)  # the code as it was when the measurement started
    with provenance.Timer() as timer:
        res = run(args.quick, args.repeats)
    res["provenance"] = provenance.collect(command=command.strip(), started=timer.started, code_state=code)
    provenance.write_json(args.out, res)
    print(f"wrote {args.out}")
    if not args.no_doc:
        update_doc(markdown(res, json_path=_shown(args.out)))
        print(f"updated {DOC}")


if __name__ == "__main__":
    main()
