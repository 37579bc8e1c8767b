"""PPO on VASE latents over a real piece-wise stationary stream: Pong -> Breakout -> Pong.

All sub-environments play the same game and switch together every ``--switch-every`` steps
(``AtariGameSequence``: full 18-action set shared by every game, raw 210x160 grey frames, no
OpenCV — VecVASE resizes with torch; the learner's input is the ``atari-grey64`` recipe's
64x64 grey, 32x32 with ``--quick``). VASE is never told about the switches; the script
prints when the games changed and what VASE's domain inference decided (new domain / switch
back to a known one), and ends with the domain-vs-game table.

    python examples/atari_sequence.py --quick          # well under a minute
    python examples/atari_sequence.py                  # 3 x 60k steps

Needs the ``atari`` extra: ``pip install "vase-rl[atari]"`` (ale-py ships its ROMs).
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import torch
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from vase_rl.agents import VASECallback, ppo_on_latents, save_stack
from vase_rl.agents.real_envs import AtariGameSequence, recipe

from vase_rl.wrappers import VecVASE, make_vase_vec_env


class DomainTracker(BaseCallback):
    """Records the true game of env 0 and VASE's current domain at every step."""

    def __init__(self, env: VecVASE, every: int = 1) -> None:
        super().__init__()
        self.vase_env = env
        self.every = every
        self.pairs: Counter = Counter()
        self.events: list[str] = []
        self._game: str | None = None
        self._domain: int | None = None

    def _on_step(self) -> bool:
        info = self.locals["infos"][0]
        game = info.get("game")
        learner = self.vase_env.learner
        domain = learner.current_domain if learner.num_domains else None
        if game is not None and game != self._game:
            self.events.append(f"{self.num_timesteps:>8} steps: game -> {game}")
            self._game = game
        if domain is not None and domain != self._domain:
            self.events.append(f"{self.num_timesteps:>8} steps: VASE domain -> {domain} ({learner.num_domains} known)")
            self._domain = domain
        if game is not None and domain is not None:
            self.pairs[(game, domain)] += 1
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--games", default="Pong,Breakout,Pong")
    parser.add_argument("--switch-every", type=int, default=None, help="steps per env and game block")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=None, help="VASE input side (default 64, quick 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/atari_sequence")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    games = tuple(g.strip() for g in args.games.split(",") if g.strip())
    n_envs = 4 if args.quick and args.n_envs == 8 else args.n_envs
    switch_every = args.switch_every or (300 if args.quick else 7_500)  # per env: 7.5k x 8 envs = 60k steps
    total = switch_every * n_envs * len(games)
    side = args.image_size or (32 if args.quick else 64)
    config = recipe("atari-grey64").config("cpu32", image_shape=(1, side, side), domain_warmup=30 if args.quick else 60)
    if args.quick:
        config = config.replace(width=0.25, latent_dim=8, batch_size=32)

    def make_env():
        return AtariGameSequence(games, switch_every=switch_every, switch_unit="steps")

    venv = make_vase_vec_env(make_env, n_envs, config, seed=args.seed, device=args.device)
    model = ppo_on_latents(venv, seed=args.seed, ppo_kwargs=dict(n_steps=64 if args.quick else 128))
    os.makedirs(args.out, exist_ok=True)
    model.set_logger(configure(args.out, ["csv"] if args.quick else ["stdout", "csv"]))
    tracker = DomainTracker(venv)
    start = time.perf_counter()
    model.learn(total, callback=CallbackList([VASECallback(), tracker]))
    elapsed = time.perf_counter() - start

    print(
        f"{total} steps ({' -> '.join(games)}, {switch_every} steps per env and game) in {elapsed:.1f} s "
        f"({total / elapsed:.0f} steps/s), {venv.learner.num_updates} VASE updates"
    )
    print("timeline:")
    for line in tracker.events:
        print("  " + line)
    print("steps per (game, VASE domain):")
    for (game, domain), count in sorted(tracker.pairs.items()):
        print(f"  {game:>10}  domain {domain}: {count}")
    decisions = Counter(d["event"] for d in venv.learner.domain_log)
    print(f"domain-inference decisions logged: {dict(decisions)}")
    print(f"stack saved to {save_stack(os.path.join(args.out, 'stack'), model)}")
    venv.close()


if __name__ == "__main__":
    main()
