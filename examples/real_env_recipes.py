"""Why the real-environment recipes choose the image sizes and colours they do: a measurement.

For each candidate learner input (the ``cpu32`` preset's 32x32 grey, 64x64 grey, 64x64 RGB,
84x84 grey), it measures on real frames what survives the conversion of
``vase_rl.observations`` (the same torch-only resize the wrappers use):

* Pong's ball: the largest change the ball makes in the learner's input (|frame - frame with the
  ball painted over| at the learner's size, in [0, 1] units), over ``--frames`` frames of play;
* MiniGrid's colours: the smallest distance between two of MiniGrid's six object colours as a
  flat patch in the learner's input (red and purple are the closest pair in grey).

    python examples/real_env_recipes.py             # ~10 s; writes runs/real_env_recipes/recipes.json

Needs the ``atari`` and ``minigrid`` extras.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np
import torch
from gymnasium import spaces

from vase_rl.observations import LUMA_WEIGHTS, ImageObservationAdapter
from vase_rl.provenance import write_json

SHAPES = {"grey32 (cpu32 preset)": (1, 32, 32), "grey64": (1, 64, 64), "rgb64": (3, 64, 64), "grey84": (1, 84, 84)}
BALL = (236, 236, 236)


def pong_pairs(frames: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame, same frame without the ball) for the first ``frames`` frames with the ball in play."""
    from vase_rl.agents.real_envs import make_atari

    env = make_atari("Pong", obs_type="rgb", repeat_action_probability=0.0)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(5000):
        ball = np.all(obs[34:194] == BALL, axis=-1)  # inside the field (the walls share the ball's colour)
        if ball.any():
            ys, xs = np.nonzero(ball)
            without = obs.copy()
            without[ys + 34, xs] = obs[34 + ys.min(), (xs.max() + 3) % 160]
            pairs.append((obs.copy(), without))
            if len(pairs) >= frames:
                break
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return pairs


def contrast(adapter: ImageObservationAdapter, a: np.ndarray, b: np.ndarray) -> float:
    return float((adapter.to_tensor(a[None]) - adapter.to_tensor(b[None])).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=50, help="Pong frames with the ball in play")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/real_env_recipes/recipes.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()

    pairs = pong_pairs(args.frames, args.seed)
    luma = np.asarray(LUMA_WEIGHTS)
    raw = [float(np.abs(a @ luma - b @ luma).max()) / 255.0 for a, b in pairs]
    space = spaces.Box(0, 255, pairs[0][0].shape, np.uint8)
    pong: dict[str, dict[str, float]] = {"raw 210x160 grey": {"mean": float(np.mean(raw)), "min": float(np.min(raw))}}
    for name, shape in SHAPES.items():
        adapter = ImageObservationAdapter(space, shape)
        values = [contrast(adapter, a, b) for a, b in pairs]
        pong[name] = {"mean": float(np.mean(values)), "min": float(np.min(values))}

    from minigrid.core.constants import COLORS

    patch = spaces.Box(0, 255, (64, 64, 3), np.uint8)
    colours = {name: np.broadcast_to(np.asarray(rgb, np.uint8), (64, 64, 3)).copy() for name, rgb in COLORS.items()}
    minigrid: dict[str, dict[str, object]] = {}
    for name, shape in SHAPES.items():
        adapter = ImageObservationAdapter(patch, shape)
        distances = {
            f"{a}-{b}": contrast(adapter, colours[a], colours[b]) for a, b in itertools.combinations(colours, 2)
        }
        closest = min(distances, key=distances.get)
        minigrid[name] = {
            "closest_pair": closest,
            "distance": distances[closest],
            "red-purple": distances["red-purple"],
        }

    payload = {
        "what": "largest change Pong's ball makes in the learner input; smallest distance between MiniGrid colours",
        "pong_ball_contrast": pong,
        "pong_frames": len(pairs),
        "minigrid_colour_distance": minigrid,
    }
    path = write_json(args.out, payload, seeds=[args.seed], started=started)
    print(f"Pong ball contrast over {len(pairs)} frames (mean / min):")
    for name, value in pong.items():
        print(f"  {name:>24}: {value['mean']:.3f} / {value['min']:.3f}")
    print("MiniGrid: closest pair of object colours, and red vs purple:")
    for name, value in minigrid.items():
        print(f"  {name:>24}: {value['closest_pair']} {value['distance']:.3f}; red-purple {value['red-purple']:.3f}")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
