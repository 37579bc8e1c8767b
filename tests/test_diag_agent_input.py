"""The agent-input diagnostic (benchmarks/diag_agent_input.py): its variants change exactly the
agent's input they name, and its CI-size run writes its JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import import_benchmark


@pytest.fixture(scope="module")
def diag():
    return import_benchmark("diag_agent_input")


def _quick_single_domain():
    from agents import continual

    return continual.ContinualSettings.from_dict(dict(continual.quick_settings("sprites", {}).to_dict(), phases=1))


def test_used_latents_only_zeroes_exactly_the_latents_the_decoder_does_not_use(diag):
    from agents import continual

    make = diag._patched_env_factory("used_latents_only", continual.make_arm_env)
    env, _ = make("vase", _quick_single_domain(), 0)
    try:
        vec = env.venv
        env.reset()  # pretrains
        learner = vec.learner
        used = np.zeros(learner.config.latent_dim, dtype=bool)
        used[[0, 3]] = True
        learner.memory.records[learner.memory.current].used_latents = used.tolist()
        z = vec.encode(vec.old_obs)
        assert np.all(z[:, ~used] == 0.0)
        assert np.all(np.abs(z[:, used]).sum(0) > 0)  # the used ones pass unchanged, not zeroed
    finally:
        env.close()


def test_no_normalisation_leaves_the_latents_as_the_encoder_gives_them(diag):
    from agents import continual

    make = diag._patched_env_factory("no_normalisation", continual.make_arm_env)
    env, _ = make("vase", _quick_single_domain(), 0)
    try:
        obs = env.reset()
        np.testing.assert_array_equal(obs, env.venv.encode(env.venv.old_obs))
    finally:
        env.close()


def test_quick_run_writes_every_variant(diag, tmp_path):
    out = tmp_path / "d.json"
    assert diag.main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["variants"] == list(diag.VARIANTS)
    assert set(report["summary"]) == set(diag.VARIANTS)
    assert {(r["variant"], r["seed"]) for r in report["results"]} == {(v, 0) for v in diag.VARIANTS}
    assert report["settings"]["phases"] == 1 and report["provenance"]["code_digest"]


def test_variants_do_not_stack_across_the_jobs_of_one_process(diag):
    """A worker runs several jobs: a used-latents-only job after a no-normalisation job must still
    normalise (this stacked, and the first run's used-latents-only row was measured without it)."""
    from stable_baselines3.common.vec_env import VecNormalize

    from agents import continual

    original = continual.make_arm_env
    with diag.agent_input("no_normalisation"):
        assert continual.make_arm_env is not original
    assert continual.make_arm_env is original
    with diag.agent_input("used_latents_only"):
        env, _ = continual.make_arm_env("vase", _quick_single_domain(), 0)
    try:
        assert isinstance(env, VecNormalize) and env.norm_obs
    finally:
        env.close()
