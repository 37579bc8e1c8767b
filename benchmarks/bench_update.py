"""Update-time benchmark of the VASE learner (issue: core performance).

Measures, side by side in one process and interleaved round by round (so machine load affects
all variants alike), the time of one optimisation step for:

  (a) a bare beta-VAE step on the same encoder/decoder (recon + beta * KL, Adam);
  (b) VASE without dreaming (domain inference, atypicality mask, used-latent refreshes, classifier);
  (c) VASE with dreaming (two domains exist, so every step also dreams);

for the ``cpu32`` and ``paper64`` presets, plus execution options of (c): bfloat16 autocast and
channels_last; and inference (``encode``) with and without ``torch.compile``.

    python benchmarks/bench_update.py                 # full run, writes benchmarks/results/update.json
    python benchmarks/bench_update.py --quick         # a smoke-sized run
    python benchmarks/bench_update.py --malloc-tuned  # glibc keeps freed buffers (see docs/PERFORMANCE.md)

Results go to JSON and a markdown table in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
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


def make_variants(preset: str, seed: int, options: list[str]):
    from vase_rl import VASE, VASEConfig

    cfg = VASEConfig.preset(preset)
    size = cfg.image_shape[1]
    rng = np.random.default_rng(seed)
    warm = [synthetic_batch(rng, cfg.batch_size, size) for _ in range(4)]

    def vase(config):
        learner = VASE(config, seed=seed, device="cpu")
        for b in warm:
            learner.update(b)
        return learner

    variants = {"a_beta_vae": BetaVAEStep(cfg, seed), "b_vase_no_dreaming": vase(cfg.replace(dreaming=False))}

    def with_two_domains(config):
        learner = vase(config)
        learner.memory.allocate(learner.latent_mask.tolist(), learner.num_updates)
        return learner

    variants["c_vase_dreaming"] = with_two_domains(cfg)
    if "bf16" in options:
        variants["c_vase_dreaming_bf16"] = with_two_domains(cfg.replace(precision="bf16"))
        variants["a_beta_vae_bf16"] = BetaVAEStep(cfg.replace(precision="bf16"), seed)
    if "channels_last" in options:
        variants["c_vase_dreaming_channels_last"] = with_two_domains(cfg.replace(channels_last=True))
    return cfg, variants


def time_updates(variants: dict, batches: list, rounds: int, steps: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            v = variants[name]
            t0 = time.perf_counter()
            for i in range(steps):
                v.update(batches[(r * steps + i) % len(batches)])
            times[name].append((time.perf_counter() - t0) / steps)
    return times


def time_encode(cfg, seed: int, batch, rounds: int, reps: int) -> dict[str, float]:
    from vase_rl import VASE

    out = {}
    for name, compiled in (("encode_eager", False), ("encode_compiled", True)):
        learner = VASE(cfg.replace(compile_inference=compiled), seed=seed, device="cpu")
        learner.encode(batch)  # compile / warm up
        learner.encode(batch)
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(reps):
                learner.encode(batch)
            samples.append((time.perf_counter() - t0) / reps)
        out[name] = statistics.median(samples)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["cpu32", "paper64"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="updates per variant per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    parser.add_argument("--no-options", action="store_true", help="skip bf16/channels_last/compile variants")
    parser.add_argument("--malloc-tuned", action="store_true", help="keep freed buffers in glibc malloc")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "update.json"))
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "PERFORMANCE.md"))
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.presets = 2, 2, ["cpu32"]
    torch.set_num_threads(args.threads)
    malloc = tune_malloc() if args.malloc_tuned else False
    options = [] if args.no_options else ["bf16", "channels_last"]
    results = {
        "command": "python benchmarks/bench_update.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": args.threads,
            "malloc_tuned": malloc,
        },
        "presets": {},
    }
    for preset in args.presets:
        cfg, variants = make_variants(preset, 0, options)
        rng = np.random.default_rng(1)
        batches = [synthetic_batch(rng, cfg.batch_size, cfg.image_shape[1]) for _ in range(8)]
        times = time_updates(variants, batches, args.rounds, args.steps)
        med = {k: statistics.median(v) for k, v in times.items()}
        base = med["a_beta_vae"]
        entry = {"median_seconds": med, "samples": times, "ratio_to_beta_vae": {k: v / base for k, v in med.items()}}
        if "bf16" in options:
            entry["bf16_speedup_dreaming"] = med["c_vase_dreaming"] / med["c_vase_dreaming_bf16"]
            entry["bf16_speedup_beta_vae"] = med["a_beta_vae"] / med["a_beta_vae_bf16"]
            entry["encode"] = time_encode(cfg, 0, batches[0], args.rounds, max(2, args.steps))
        results["presets"][preset] = entry
        print(f"[{preset}] " + ", ".join(f"{k}={v * 1e3:.1f} ms ({v / base:.2f}x)" for k, v in med.items()), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    if not args.quick:
        write_markdown(results, Path(args.markdown))
    return 0


def write_markdown(results: dict, path: Path) -> None:
    lines = [
        "<!-- generated by benchmarks/bench_update.py; edit the text around the table freely -->",
        f"Command: `{results['command']}`  ",
        f"Machine: {results['machine']['platform']}, {results['machine']['processor']}, torch "
        f"{results['machine']['torch']}, {results['machine']['threads']} threads, malloc tuned: "
        f"{results['machine']['malloc_tuned']}",
        "",
        "| preset | variant | ms / update | × bare β-VAE |",
        "|---|---|---:|---:|",
    ]
    for preset, entry in results["presets"].items():
        for name, sec in entry["median_seconds"].items():
            lines.append(f"| {preset} | {name} | {sec * 1e3:.1f} | {entry['ratio_to_beta_vae'][name]:.2f} |")
        if "encode" in entry:
            enc = entry["encode"]
            lines.append(
                f"| {preset} | encode (eager → compiled) | {enc['encode_eager'] * 1e3:.2f} → "
                f"{enc['encode_compiled'] * 1e3:.2f} | |"
            )
    table = "\n".join(lines) + "\n"
    marker_start, marker_end = "<!-- bench_update:start -->", "<!-- bench_update:end -->"
    if path.exists() and marker_start in path.read_text():
        text = path.read_text()
        head, rest = text.split(marker_start, 1)
        _, tail = rest.split(marker_end, 1)
        path.write_text(head + marker_start + "\n" + table + marker_end + tail)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Performance\n\n" + marker_start + "\n" + table + marker_end + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
