"""Update-time benchmark of the VASE learner, per CPU kind (issues: core performance, 15).

Measures, side by side in one process and interleaved round by round (so machine load affects
all variants alike), the time of one optimisation step for:

  (a) a bare beta-VAE step on the same encoder/decoder (recon + beta * KL, Adam);
  (b) VASE without dreaming (domain inference, atypicality mask, used-latent refreshes, classifier);
  (c) VASE with dreaming (two domains exist, so every step also dreams);

for the ``cpu32`` and ``paper64`` presets, each on the plain exact path (fp32, contiguous) and
with the execution options left at ``"auto"`` (what a new user gets: vase_rl/precision.py), plus
(c) and (a) with an explicit ``precision="bf16"`` (falls back to fp32 where bf16 is not native),
(c) with ``channels_last=True``, and with ``--force-bf16`` also ``precision="bf16-force"`` (the
cost the fallback avoids; very slow without native bf16).

Results are labelled by CPU kind (``cpu:avx512_bf16``, ``cpu:avx2``, ...; see
``vase_rl.precision.device_capability``). To measure the AVX2 kind on an AVX-512 machine, limit
torch and oneDNN before torch starts; the run is then labelled ``-emulated``:

    python benchmarks/bench_update.py --rounds 3 --steps 5          # this machine's kind
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/bench_update.py --rounds 3 --steps 5
    python benchmarks/bench_update.py --quick                       # a smoke-sized run, no files written

Writes ``benchmarks/results/update_<kind>.json`` (with provenance: CPU model, flags, torch
capability, load) and the table for that kind between its markers in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def tune_malloc() -> bool:
    """Ask glibc to keep freed buffers (no trimming, no mmap for big blocks): avoids a page fault per
    reuse of the large activation buffers. Returns False where glibc is not available."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_trim_threshold, 1 << 30)) and bool(libc.mallopt(m_mmap_max, 0))


def synthetic_batch(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    img = np.zeros((n, size, size, 1), np.uint8)
    s = rng.integers(size // 6, size // 3, n)
    x = rng.integers(0, size - size // 3, n)
    y = rng.integers(0, size - size // 3, n)
    for i in range(n):
        img[i, y[i] : y[i] + s[i], x[i] : x[i] + s[i]] = 255
    return img


class BetaVAEStep:
    """(a): the same networks trained as a plain beta-VAE (no masking, domains, dreams)."""

    def __init__(self, config, seed: int) -> None:
        from vase_rl.learner import VASE

        base = VASE(
            config.replace(dreaming=False, domain_inference=False, atypicality_mask=False), seed=seed, device="cpu"
        )
        self.learner = base
        self.encoder, self.decoder = base.encoder, base.decoder
        self.opt = torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=config.learning_rate)
        self.onehot = base._eye[0]
        self.gen = torch.Generator().manual_seed(seed)

    def update(self, batch) -> None:
        from vase_rl.objectives import bernoulli_nll, gaussian_kl_to_standard

        x = self.learner._prep(batch)
        mu, logvar, _ = self.learner._encode_net(self.encoder, x)
        z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=self.gen)
        logits = self.learner._decode_net(self.decoder, z, 0)
        loss = bernoulli_nll(logits, x).mean() + 4.0 * gaussian_kl_to_standard(mu, logvar).sum(1).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


PLAIN = {"precision": "fp32", "channels_last": False, "compile_inference": False}
AUTO = {"precision": "auto", "channels_last": "auto", "compile_inference": "auto"}


def make_variants(preset: str, seed: int, force_bf16: bool):
    from vase_rl import VASE, VASEConfig

    base = VASEConfig.preset(preset)
    plain, auto = base.replace(**PLAIN), base.replace(**AUTO)
    size = base.image_shape[1]
    rng = np.random.default_rng(seed)
    warm = [synthetic_batch(rng, base.batch_size, size) for _ in range(4)]

    def vase(config):
        learner = VASE(config, seed=seed, device="cpu")
        for b in warm:
            learner.update(b)
        return learner

    def with_two_domains(config):
        # dreaming runs only with a past domain and a synced snapshot (VASE._dreaming_active):
        # give it both, so the timed updates really dream
        learner = vase(config)
        learner.memory.allocate(learner.latent_mask.tolist(), learner.num_updates)
        learner.sync_snapshot()
        assert learner._dreaming_active(), "the dreaming variant must dream"
        return learner

    variants = {
        "a_beta_vae": BetaVAEStep(plain, seed),
        "b_vase_no_dreaming": vase(plain.replace(dreaming=False)),
        "c_vase_dreaming": with_two_domains(plain),
        "a_beta_vae_auto": BetaVAEStep(auto, seed),
        "b_vase_no_dreaming_auto": vase(auto.replace(dreaming=False)),
        "c_vase_dreaming_auto": with_two_domains(auto),
        "a_beta_vae_bf16": BetaVAEStep(plain.replace(precision="bf16"), seed),
        "c_vase_dreaming_bf16": with_two_domains(plain.replace(precision="bf16")),
        "c_vase_dreaming_channels_last": with_two_domains(plain.replace(channels_last=True)),
    }
    if force_bf16:
        variants["a_beta_vae_bf16_force"] = BetaVAEStep(plain.replace(precision="bf16-force"), seed)
        variants["c_vase_dreaming_bf16_force"] = with_two_domains(plain.replace(precision="bf16-force"))
    return base, variants


def execution_of(variant) -> dict:
    learner = variant.learner if isinstance(variant, BetaVAEStep) else variant
    return dict(learner.execution)


def path_label(execution: dict) -> str:
    """``fp32``, ``bf16 + channels_last``, ... : the path a variant actually ran."""
    parts = [execution["precision"]]
    if execution["channels_last"]:
        parts.append("channels_last")
    if execution["compile_inference"]:
        parts.append("compiled encode")
    return " + ".join(parts)


def bench_clock(threads: int):
    """The clock for timings: with one torch thread, the process's CPU time (time-slicing by other
    processes on a shared machine is then not counted); with more, wall time."""
    return (time.process_time, "process CPU time") if threads == 1 else (time.perf_counter, "wall time")


def time_updates(variants: dict, batches: list, rounds: int, steps: int, clock=time.perf_counter) -> dict:
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            v = variants[name]
            t0 = clock()
            for i in range(steps):
                v.update(batches[(r * steps + i) % len(batches)])
            times[name].append((clock() - t0) / steps)
    return times


def summarise(t: dict[str, float]) -> dict[str, float]:
    """The ratios the issues set goals on, from one run's best-round times."""
    out = {
        "b_over_a_plain": t["b_vase_no_dreaming"] / t["a_beta_vae"],
        "c_over_a_plain": t["c_vase_dreaming"] / t["a_beta_vae"],
        "b_over_a_auto": t["b_vase_no_dreaming_auto"] / t["a_beta_vae_auto"],
        "c_over_a_auto": t["c_vase_dreaming_auto"] / t["a_beta_vae_auto"],
        "auto_speedup_dreaming": t["c_vase_dreaming"] / t["c_vase_dreaming_auto"],
        "auto_speedup_beta_vae": t["a_beta_vae"] / t["a_beta_vae_auto"],
        "bf16_request_speedup_dreaming": t["c_vase_dreaming"] / t["c_vase_dreaming_bf16"],
        "channels_last_speedup_dreaming": t["c_vase_dreaming"] / t["c_vase_dreaming_channels_last"],
    }
    if "c_vase_dreaming_bf16_force" in t:
        out["bf16_force_speedup_dreaming"] = t["c_vase_dreaming"] / t["c_vase_dreaming_bf16_force"]
        out["bf16_force_speedup_beta_vae"] = t["a_beta_vae"] / t["a_beta_vae_bf16_force"]
    return out


def kind_label(capability: dict) -> str:
    """``cpu-avx512_bf16``, ``cpu-avx2-emulated``: the CPU kind as a file-name-safe label."""
    return capability["kind"].replace(":", "-") + ("-emulated" if capability["emulated"] else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["cpu32", "paper64"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6, help="updates per variant per round")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: timed in process CPU time)")
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test), writes nothing unless --out")
    parser.add_argument("--force-bf16", action="store_true", help="also time precision='bf16-force' (slow off native)")
    parser.add_argument("--malloc-tuned", action="store_true", help="keep freed buffers in glibc malloc")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/update_<kind>.json)")
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "PERFORMANCE.md"))
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.presets = 2, 2, ["cpu32"]
    from vase_rl.precision import device_capability
    from vase_rl.provenance import machine_summary, write_json

    started = time.time()
    torch.set_num_threads(args.threads)
    clock, clock_name = bench_clock(args.threads)
    malloc = tune_malloc() if args.malloc_tuned else False
    capability = device_capability(torch.device("cpu"))
    label = kind_label(capability)
    results: dict = {
        "cpu_kind": label,
        "capability": capability,
        "malloc_tuned": malloc,
        "clock": clock_name,
        "rounds": args.rounds,
        "threads": args.threads,
        "load_before": list(os.getloadavg()),
        "presets": {},
    }
    for preset in args.presets:
        cfg, variants = make_variants(preset, 0, args.force_bf16)
        rng = np.random.default_rng(1)
        batches = [synthetic_batch(rng, cfg.batch_size, cfg.image_shape[1]) for _ in range(8)]
        times = time_updates(variants, batches, args.rounds, args.steps, clock)
        best = {k: min(v) for k, v in times.items()}  # best round: the least disturbed by other processes
        base = best["a_beta_vae"]
        results["presets"][preset] = {
            "best_seconds": best,
            "median_seconds": {k: statistics.median(v) for k, v in times.items()},
            "samples": times,
            "ratio_to_beta_vae": {k: v / base for k, v in best.items()},
            "execution": {k: execution_of(v) for k, v in variants.items()},
            "ratios": summarise(best),
        }
        print(f"[{label} {preset}] " + ", ".join(f"{k}={v * 1e3:.1f} ms" for k, v in best.items()), flush=True)
        print(f"[{label} {preset}] " + ", ".join(f"{k}={v:.2f}" for k, v in summarise(best).items()), flush=True)
    results["load_after"] = list(os.getloadavg())
    argv_list = sys.argv[1:] if argv is None else argv
    results["command"] = " ".join(
        [f"{v}={os.environ[v]}" for v in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if os.environ.get(v)]
        + ["python benchmarks/bench_update.py", *argv_list]
    )
    results["machine"] = machine_summary()
    out = args.out or (None if args.quick else str(ROOT / "benchmarks" / "results" / f"update_{label}.json"))
    if out:
        write_json(
            out,
            results,
            command=results["command"],
            seeds=[0, 1],
            started=started,
            code_paths=["core", "benchmarks/bench_update.py"],
        )
        print(f"wrote {out}")
    if not args.quick:
        write_markdown(results, Path(args.markdown), Path(out).relative_to(ROOT) if out else None)
    return 0


def write_markdown(results: dict, path: Path, json_path: Path | None) -> None:
    cap = results["capability"]
    label = results["cpu_kind"]
    lines = [
        f"<!-- generated by benchmarks/bench_update.py for {label}; edit the text around the table freely -->",
        f"Command: `{results['command']}`  ",
        f"CPU: {results['machine']}; {cap['detail']}  ",
        f"Load average (1 min) before / after: {results['load_before'][0]:.1f} / {results['load_after'][0]:.1f} "
        f"on {os.cpu_count()} CPUs" + (f"; JSON: `{json_path}`" if json_path else ""),
        "",
        f"Times: {results['clock']} per update, best of {results['rounds']} rounds, {results['threads']} torch thread(s)",
        "",
        "| preset | variant | ran as | ms / update | × plain β-VAE |",
        "|---|---|---|---:|---:|",
    ]
    for preset, entry in results["presets"].items():
        for name, sec in entry["best_seconds"].items():
            ran = path_label(entry["execution"][name])
            lines.append(f"| {preset} | {name} | {ran} | {sec * 1e3:.1f} | {entry['ratio_to_beta_vae'][name]:.2f} |")
    lines += [
        "",
        "| preset | (b)/(a) plain | (c)/(a) plain | (b)/(a) auto | (c)/(a) auto | auto speed-up (c) | "
        "auto speed-up (a) | bf16 request (c) | channels_last (c) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for preset, entry in results["presets"].items():
        r = entry["ratios"]
        lines.append(
            f"| {preset} | {r['b_over_a_plain']:.2f} | {r['c_over_a_plain']:.2f} | {r['b_over_a_auto']:.2f} | "
            f"{r['c_over_a_auto']:.2f} | {r['auto_speedup_dreaming']:.2f}× | {r['auto_speedup_beta_vae']:.2f}× | "
            f"{r['bf16_request_speedup_dreaming']:.2f}× | {r['channels_last_speedup_dreaming']:.2f}× |"
        )
    replace_section(path, f"bench_update:{label}", "\n".join(lines) + "\n", title=f"### Update time, {label}")


def replace_section(path: Path, name: str, table: str, title: str) -> None:
    """Put ``table`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path``; a new
    section (with ``title``) goes before ``<!-- <bench>:new-kinds-above -->`` (``<bench>``: the part
    of ``name`` before the colon) or at the end."""
    anchor = f"<!-- {name.split(':')[0]}:new-kinds-above -->"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Performance\n\n"
    block = start + "\n" + table + end
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    elif anchor in text:
        text = text.replace(anchor, f"{title}\n\n{block}\n\n{anchor}", 1)
    else:
        text = text.rstrip("\n") + f"\n\n{title}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
