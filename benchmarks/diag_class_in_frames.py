"""Diagnostic: do the frames VASE learns from hold the sprite's class? (a supervised reference)

``benchmarks/probe_continual_latents.py`` reads the class out of the continual benchmark's latents.
A low score there has two possible causes: the learner's input (the frames after the wrapper's
resizing to the preset's 32x32 grey) has lost the class, or the representation does not keep it.
This trains a small supervised CNN (three 3x3 convolutions of 32/64/64 channels with ReLU and max
pooling, global max pooling, a linear layer; Adam 1e-3, batch 64) on exactly the learner's input
— frames prepared by the VASE arm's own wrapper — of every look of the task and reports its
held-out class accuracy. If it is near 1, the class is in the frames and the representation is
what drops it.

    python benchmarks/diag_class_in_frames.py --task sprites --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CODE = (
    "core",
    "wrappers",
    "agents",
    "envs",
    "benchmarks/probe_continual_latents.py",
    "benchmarks/diag_class_in_frames.py",
)


def supervised_accuracy(
    images: Any, classes: np.ndarray, num_classes: int, epochs: int, seed: int, train_fraction: float = 0.75
) -> float:
    """Held-out accuracy of the CNN trained on the first ``train_fraction`` of ``images``
    (a float tensor (N, C, H, W))."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    x = images.float()
    y = torch.as_tensor(classes, dtype=torch.long)
    cut = int(len(x) * train_fraction)
    net = nn.Sequential(
        nn.Conv2d(x.shape[1], 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(cut, generator=gen)
        for i in range(0, cut, 64):
            idx = order[i : i + 64]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        return float((net(x[cut:]).argmax(1) == y[cut:]).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sprites", choices=("sprites", "moving"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--frames", type=int, default=4000, help="frames per look (3/4 train)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", default=None, help="default: benchmarks/results/diag_class_in_frames_<task>.json")
    args = parser.parse_args(argv)
    if args.frames < 8:
        parser.error("--frames must be at least 8")

    import torch
    from probe_continual_latents import look_frames

    from agents import continual
    from vase_rl.provenance import code_state, write_json
    from vase_rl.wrappers import find_vec_vase_in

    torch.set_num_threads(1)
    code = code_state(CODE)
    started = time.time()
    settings = continual.ContinualSettings(task=args.task)
    env, _ = continual.make_arm_env("vase", settings, 0)  # only its wrapper's input pipeline is used
    feed = find_vec_vase_in(env).feed
    looks = list(dict.fromkeys(settings.domains))
    results = []
    for look in looks:
        frames, classes, _ = look_frames(settings, look, args.frames)
        images = feed.prepare(np.asarray(feed.adapter.select(frames)))
        for seed in args.seeds:
            acc = supervised_accuracy(images, classes, settings.num_classes, args.epochs, seed)
            results.append({"look": look, "seed": seed, "class_accuracy": acc, "input_shape": list(images.shape[1:])})
            print(f"  {look} seed {seed}: supervised CNN class accuracy {acc:.3f} on {list(images.shape[1:])}")
    env.close()
    summary = {
        look: {
            "mean": float(np.mean([r["class_accuracy"] for r in results if r["look"] == look])),
            "per_seed": [r["class_accuracy"] for r in results if r["look"] == look],
        }
        for look in looks
    }
    out = args.out or str(ROOT / "benchmarks" / "results" / f"diag_class_in_frames_{args.task}.json")
    payload = {
        "settings": settings.to_dict(),
        "task": args.task,
        "model": "CNN 32/64/64 channels, 3x3, max pooling; Adam 1e-3, batch 64",
        "frames_per_look": args.frames,
        "epochs": args.epochs,
        "train_fraction": 0.75,
        "results": results,
        "summary": summary,
    }
    write_json(out, payload, seeds=args.seeds, started=started, code_state=code)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
