"""The paper's claims, as tests that fail when the library stops showing them.

Each test trains the real thing for a few seeds through the public API (``VASE``,
``VASEConfig``, ``vase_rl.envs.make_stream``, ``vase_rl.evaluation``, ``vase_rl.agents``) and
checks one claim the docs make:

* the atypicality mask masks latents a domain does not use (position latents learnt on moving
  shapes are masked while static digits are trained), and a domain keeps its own mask;
* dreaming reduces forgetting (full VASE against VASE without dreaming, S A);
* VASE forgets less than CCI-VAE on a small stream (table 1 analogue, 600 updates per domain);
* PPO improves on the latents within a small budget;
* imagination beats no imagination on its probe (digits at random positions, read from the
  latents of a learner that only ever saw static digits).

They take 15-40 minutes on two CPU cores, so they are not part of ``make test``: run them with
``make check-claims`` (which sets ``VASE_RL_CLAIMS=1``). Settings are the documented ones: the
reproduction config ``benchmarks/results/ablation_config.json`` (docs/RESULTS.md) for the
stream claims, the ``cpu32`` preset for RL and imagination. A claim that does not hold on the
current core stays here as ``xfail(strict=False)`` with the numbers measured, so it is visible
and turns into a pass (XPASS) when the core gets it right.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from vase_rl.envs import make_stream

from vase_rl import VASE, VASEConfig
from vase_rl.evaluation import TABLE1_SEQUENCE, LatentProbe, run_ablation

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("VASE_RL_CLAIMS"),
        reason="claim tests take 15-40 min on 2 cores: run them with `make check-claims`",
    ),
]

ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILE = ROOT / "benchmarks" / "results" / "ablation_config.json"
SEEDS = (0, 1, 2)
#: a claim must hold on average and in at least this many of the seeds
MIN_SEEDS = 2


def reproduction_config(**overrides) -> VASEConfig:
    """The configuration of docs/RESULTS.md's tables (16x16, 600 updates per domain)."""
    return VASEConfig.load(CONFIG_FILE).replace(**overrides)


def paired(better: dict[int, float], worse: dict[int, float]) -> tuple[float, float, int]:
    """Means of two per-seed measures (higher is better) and in how many seeds ``better`` won."""
    wins = sum(better[s] > worse[s] for s in better)
    return float(np.mean(list(better.values()))), float(np.mean(list(worse.values()))), wins


# ------------------------------------------------------------------------------ the mask

POSITION = (4, 5)  # factor columns x, y (vase_rl.envs.FACTOR_NAMES)


def _position_latents(learner: VASE, images: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Latents whose posterior mean follows the sprite's position (|correlation| > 0.5)."""
    mu, _ = learner.posterior(images)
    corr = np.zeros(mu.shape[1])
    for n in range(mu.shape[1]):
        if mu[:, n].std() > 1e-6:
            corr[n] = max(abs(np.corrcoef(mu[:, n], factors[:, c])[0, 1]) for c in POSITION)
    return np.flatnonzero(corr > 0.5)


@pytest.fixture(scope="module")
def mask_runs() -> dict[int, dict]:
    """Per seed: VASE on moving shapes (600 updates) then static digits (60 updates)."""
    torch.set_num_threads(1)
    out = {}
    for seed in SEEDS:
        learner = VASE(reproduction_config(), seed=seed, device="cpu")
        stream = make_stream([("moving_shapes", 600), ("digits", 60)], batch_size=64, seed=seed, image_size=16)
        held_out = []
        for t, batch in enumerate(stream):
            if t == 600:
                shapes_domain = learner.current_domain
                images = np.concatenate([b.images for b in held_out])
                factors = np.concatenate([b.factors for b in held_out])
                position = _position_latents(learner, images, factors)
            learner.update(batch.images)
            if 580 <= t < 600:
                held_out.append(batch)
        out[seed] = {
            "position": position,
            "digits_mask": learner.latent_mask,
            "digits_domain": learner.current_domain,
            "shapes_domain": shapes_domain,
            "shapes_stored_mask": np.asarray(learner.domains[shapes_domain]["latent_mask"], dtype=bool),
        }
    return out


def test_the_mask_masks_latents_a_domain_does_not_use(mask_runs):
    """Static digits have no position: the latents that carry position on moving shapes must be
    masked while digits are trained (spec §4, the paper's fig. 2), without masking everything."""
    ok = {}
    for seed, r in mask_runs.items():
        assert r["position"].size > 0, f"seed {seed}: no latent learnt position on moving shapes"
        masked = [int(n) for n in r["position"] if not r["digits_mask"][n]]
        ok[seed] = bool(masked) and r["digits_mask"].any() and r["digits_domain"] != r["shapes_domain"]
    assert sum(ok.values()) >= MIN_SEEDS, {
        s: {
            "position_latents": r["position"].tolist(),
            "mask_on_digits": r["digits_mask"].astype(int).tolist(),
            "new_domain": r["digits_domain"] != r["shapes_domain"],
        }
        for s, r in mask_runs.items()
    }


@pytest.mark.xfail(
    strict=False,
    reason="measured on this core (seeds 0-2, reproduction config): the moving-shapes domain's stored mask lost "
    "its position latents in 3 of 3 seeds (latents 5,14 / 8,13 / 4,13 masked) -- batches held while a new "
    "domain's patience runs set the *old* domain's stored mask to the new data's mask (learner.update: "
    "`record.latent_mask = self._mask` for held batches). Reported to the core (issue 10).",
)
def test_a_domain_keeps_its_own_mask_after_the_stream_moves_on(mask_runs):
    """The mask a domain stores is the one its own data needs: after the switch to digits, moving
    shapes must still have their position latents active (otherwise the representation of a
    returning moving domain has no position)."""
    kept = {s: all(r["shapes_stored_mask"][n] for n in r["position"]) for s, r in mask_runs.items()}
    assert sum(kept.values()) >= MIN_SEEDS, {
        s: {"position_latents": r["position"].tolist(), "stored_mask": r["shapes_stored_mask"].astype(int).tolist()}
        for s, r in mask_runs.items()
    }


# ------------------------------------------------------------------------------ forgetting


@pytest.fixture(scope="module")
def table1(tmp_path_factory) -> dict:
    """The table 1 analogue for VASE (SDA), VASE without dreaming (SA) and CCI-VAE (-)."""
    out = tmp_path_factory.mktemp("table1")
    summary = run_ablation(
        reproduction_config(),
        TABLE1_SEQUENCE,
        600,
        SEEDS,
        out,
        variants=("SDA", "SA", "-"),
        jobs=2,
        run_kwargs={"disentanglement": False},
    )
    return {r["variant"]: r for r in summary["variants"]}


def _changes(row: dict) -> dict[int, float]:
    return {int(s): v["object_id_change"] for s, v in row["per_seed"].items()}


def test_vase_forgets_less_than_cci_vae(table1):
    """Table 1: full VASE loses less object-id accuracy than CCI-VAE (max during - min after)."""
    vase, cci = _changes(table1["SDA"]), _changes(table1["-"])
    assert not table1["SDA"]["degenerate_runs"], table1["SDA"]["degenerate_runs"]
    m_vase, m_cci, wins = paired(vase, cci)
    detail = f"VASE change {vase} (mean {m_vase:+.3f}) vs CCI-VAE {cci} (mean {m_cci:+.3f}), VASE better in {wins}"
    assert m_vase > m_cci and wins >= MIN_SEEDS, detail


def test_dreaming_reduces_forgetting(table1):
    """VASE with dreaming forgets less than the same learner without it (S A)."""
    dream, no_dream = _changes(table1["SDA"]), _changes(table1["SA"])
    m_d, m_n, wins = paired(dream, no_dream)
    detail = f"with dreaming {dream} (mean {m_d:+.3f}) vs without {no_dream} (mean {m_n:+.3f}), better in {wins}"
    assert m_d > m_n and wins >= MIN_SEEDS, detail


# ------------------------------------------------------------------------------ RL

PPO_STEPS = 30_000
PPO_SEEDS = (0, 1)
#: return gain required between the first and the last fifth of training (returns lie in about
#: [-1, 1.5]); measured on this core: 0.05 -> 0.41 (seed 0) and -0.13 -> 0.21 (seed 1)
PPO_MIN_GAIN = 0.2


def test_ppo_improves_on_latents_within_a_small_budget():
    """PPO (MlpPolicy) on the latents of a learning VecVASE improves its return on the sprite task."""
    from vase_rl.agents import EpisodeReturns, ppo_on_latents

    torch.set_num_threads(1)
    gains = {}
    for seed in PPO_SEEDS:
        model = ppo_on_latents(
            "vase_rl/SpriteTask-v0", n_envs=8, config="cpu32", seed=seed, device="cpu", env_kwargs={"image_size": 32}
        )
        returns = EpisodeReturns()
        model.learn(PPO_STEPS, callback=returns)
        rec = np.array(returns.records)
        first = rec[rec[:, 0] <= 0.2 * PPO_STEPS, 1].mean()
        last = rec[rec[:, 0] > 0.8 * PPO_STEPS, 1].mean()
        gains[seed] = (round(float(first), 3), round(float(last), 3))
        model.get_env().close()
    assert all(last - first >= PPO_MIN_GAIN for first, last in gains.values()), f"(first, last) fifth: {gains}"


# ------------------------------------------------------------------------------ imagination

#: The documented experiment's scale (docs/IMAGINATION.md): updates on moving shapes, then on static
#: digits; a probe refit on 3,000 moving digits for 1,500 steps, tested on 1,000.
IMAGINATION_STAGES = (2000, 2500)
PROBE_TRAIN, PROBE_STEPS, PROBE_TEST = 3000, 1500, 1000


def _moving_digit_probe_accuracy(imagination: bool, seed: int) -> float:
    """cpu32 VASE on moving shapes then static digits; a probe trained afresh on its latents
    (posterior means) classifies digits at random positions, which the learner never saw move."""
    from vase_rl.envs import make_family

    torch.set_num_threads(1)
    cfg = VASEConfig.preset("cpu32", imagination=imagination, imagination_fraction=1.0, imagination_max_shift=0.25)
    learner = VASE(cfg, seed=seed, device="cpu")
    a, b = IMAGINATION_STAGES
    for batch in make_stream([("moving_shapes", a), ("digits", b)], batch_size=64, seed=seed):
        learner.update(batch.images)
    moving = make_family("moving_digits", image_size=32, channels=1, seed=0)
    rng = np.random.default_rng(10_000 + seed)  # the same probe data in both conditions
    x_train, f_train = moving.sample(PROBE_TRAIN, rng)
    x_test, f_test = moving.sample(PROBE_TEST, rng)
    probe = LatentProbe(cfg.latent_dim, 10, seed=seed)
    probe.fit(learner.posterior(x_train)[0], f_train[:, 0].astype(np.int64), PROBE_STEPS)
    return float(probe.accuracy(learner.posterior(x_test)[0], f_test[:, 0].astype(np.int64)))


def test_imagination_beats_no_imagination_on_its_probe():
    """Paper fig. 4C: imagining 'this digit, over there' makes the latents of moving digits more
    useful than training on static digits alone."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(cond, s) for s in SEEDS for cond in (True, False)]
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        acc = dict(zip(jobs, pool.map(_moving_digit_probe_accuracy, *zip(*jobs))))
    with_im = {s: round(acc[(True, s)], 3) for s in SEEDS}
    without = {s: round(acc[(False, s)], 3) for s in SEEDS}
    m_i, m_b, wins = paired(with_im, without)
    detail = f"imagination {with_im} (mean {m_i:.3f}) vs baseline {without} (mean {m_b:.3f}), better in {wins}"
    assert m_i > m_b and wins >= MIN_SEEDS, detail
