"""The experiment runner and the ablation driver: files, metrics wiring, resumption, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vase_rl import VASE, VASEConfig
from vase_rl.evaluation.ablation import (
    DEFAULT_VARIANTS,
    ablation_table,
    ablation_variants,
    run_ablation,
    summarise_ablation,
    variant_config,
)
from vase_rl.evaluation.experiment import (
    RUN_FILES,
    load_run,
    parse_sequence,
    probe_latents,
    run_experiment,
    to_jsonable,
)

TINY = dict(
    image_shape=(1, 16, 16),
    latent_dim=4,
    width=0.25,
    batch_size=8,
    domain_warmup=5,
    patience=1,
    snapshot_every=5,
    used_refresh_every=5,
    used_estimation_steps=5,
    capacity_max=5.0,
    capacity_increment=1 / 50,
)
RUN = dict(eval_every=5, eval_size=16, refit_steps=5, refit_size=16, probe_batch_size=8, disentanglement=False)
SEQ = "moving_shapes,digits"


def tiny(**kw) -> VASEConfig:
    return VASEConfig.preset("cpu32", **{**TINY, **kw})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    res = run_experiment(tiny(), SEQ, 10, 0, out, **RUN)
    return out, res


def test_parse_sequence():
    assert parse_sequence("a, b:30 ,c") == ["a", ("b", 30), "c"]
    assert parse_sequence(["a", ["b", 3]]) == ["a", ("b", 3)]
    for bad in ("a,,b", "a:x", "a:0"):
        with pytest.raises(ValueError):
            parse_sequence(bad)


def test_run_writes_every_file(finished):
    out, res = finished
    for name in RUN_FILES.values():
        assert (out / name).is_file(), name
    hist = json.loads((out / RUN_FILES["history"]).read_text())
    assert len(hist["step"]) == 20 and hist["step"][:3] == [0, 1, 2]
    assert hist["true_domain"] == [0] * 10 + [1] * 10
    assert all(len(a) == 4 for a in hist["atypicality"])
    assert VASE.load(out / RUN_FILES["model"], device="cpu").num_updates == 20


def test_results_wire_the_metrics(finished):
    _, res = finished
    assert res["segments"] == [["moving_shapes", 0, 10], ["digits", 10, 20]]
    o = res["object_id"]
    assert 0.0 <= o["best"] <= 1.0
    assert o["change"] == pytest.approx(-o["forgetting"])
    assert np.asarray(o["matrix"], dtype=float).shape == (2, 2)
    assert set(o["refit_final"]) == {"moving_shapes", "digits"}
    # only the moving domain has a position probe
    assert set(res["position"]["refit_final"]) == {"moving_shapes"}
    d = res["domain_inference"]
    assert d["boundary"]["num_true"] == 1 and d["tolerance"] == 5
    assert res["latent_usage"]["latent_dim"] == 4
    assert res["switches"] == {"S": True, "D": True, "A": True, "objective": "disentangled"}


def test_finished_run_is_returned_not_retrained(finished):
    out, res = finished
    calls = []
    again = run_experiment(tiny(), SEQ, 10, 0, out, step_callback=lambda t, s: calls.append(t), **RUN)
    assert calls == [] and again == res


def test_other_experiment_in_same_folder_is_refused(finished):
    out, _ = finished
    with pytest.raises(ValueError, match="different experiment"):
        run_experiment(tiny(), SEQ, 11, 0, out, **RUN)
    with pytest.raises(ValueError, match="config"):
        run_experiment(tiny(gamma=3.0), SEQ, 10, 0, out, **RUN)


def test_resume_reproduces_an_uninterrupted_run(tmp_path, finished):
    _, full = finished
    stop_at = 13  # mid-way through the second domain, between checkpoints
    part = run_experiment(
        tiny(), SEQ, 10, 0, tmp_path, checkpoint_every=4, step_callback=lambda t, s: t + 1 < stop_at, **RUN
    )
    assert part == {"stopped_at": stop_at}
    assert not (tmp_path / RUN_FILES["results"]).exists()
    res = run_experiment(tiny(), SEQ, 10, 0, tmp_path, checkpoint_every=4, **RUN)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("wall_time_s", "experiment")}
    assert strip(res) == strip(full)


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(TypeError):
        run_experiment({"latent_dim": 4}, SEQ, 5, 0, tmp_path)
    with pytest.raises(ValueError, match="eval_every"):
        run_experiment(tiny(), SEQ, 5, 0, tmp_path, eval_every=0)
    with pytest.raises(ValueError):
        run_experiment(tiny(), "no_such_domain", 5, 0, tmp_path)


def test_probe_latents_follow_the_switches():
    x = np.random.default_rng(0).integers(0, 255, (8, 16, 16, 1), dtype=np.uint8)
    learner = VASE(tiny(atypicality_mask=False), seed=0, device="cpu")
    learner.update(x)
    z, dom = probe_latents(learner, x)
    mu, _ = learner.posterior(x)
    np.testing.assert_allclose(z, mu, rtol=1e-5, atol=1e-6)  # A off: every latent
    assert dom == 0
    before = learner.num_updates
    learner2 = VASE(tiny(), seed=0, device="cpu")
    learner2.update(x)
    learner2._mask[:] = False
    learner2.memory.records[0].latent_mask = [False] * 4
    z2, _ = probe_latents(learner2, x)
    assert np.all(z2 == 0)
    assert learner.num_updates == before  # no side effects


def test_to_jsonable():
    out = to_jsonable({"a": np.float32(1.5), "b": [np.nan, np.int64(2)], 3: (np.array([True]),)})
    assert out == {"a": 1.5, "b": [None, 2], "3": [[True]]}
    json.dumps(out)


def test_load_run(finished, tmp_path):
    out, res = finished
    run = load_run(out)
    assert run["results"] == res and "history" in run and "probes" in run
    with pytest.raises(FileNotFoundError):
        load_run(tmp_path)


def test_variants_and_configs():
    assert len(DEFAULT_VARIANTS) == 10 and DEFAULT_VARIANTS[0] == "SDA" and "-" in DEFAULT_VARIANTS
    assert len(ablation_variants(("disentangled", "entangled"))) == 16
    base = tiny()
    cci = variant_config(base, "-")
    assert (cci.domain_inference, cci.dreaming, cci.atypicality_mask) == (False, False, False)
    sa = variant_config(base, "SA")
    assert (sa.domain_inference, sa.dreaming, sa.atypicality_mask) == (True, False, True)
    ent = variant_config(base, "SDA/entangled")
    assert ent.objective == "entangled" and ent.kappa == pytest.approx(1.1)
    assert variant_config(ent, "SDA").kappa == pytest.approx(1.5)
    with pytest.raises(ValueError, match="switch part"):
        variant_config(base, "XYZ")


def test_summary_statistics_and_table():
    def res(change, f1):
        return {
            "object_id": {"best": 0.9, "change": change},
            "domain_inference": {"boundary": {"f1": f1}, "reidentification": {"rate": 1.0}},
        }

    results = {
        ("SDA", 0): res(-0.02, 1.0),
        ("SDA", 1): res(-0.04, 0.5),
        ("-", 0): res(-0.10, 0.0),
        ("-", 1): res(-0.12, 0.0),
    }
    s = summarise_ablation(results, ["SDA", "-"], [0, 1])
    m = s["variants"][0]["metrics"]["object_id_change"]
    assert m["mean"] == pytest.approx(-0.03) and m["std"] == pytest.approx(np.std([-0.02, -0.04], ddof=1))
    assert s["variants"][0]["metrics"]["position_best"]["mean"] is None
    assert s["variants"][1]["metrics"]["reidentification"]["mean"] is None  # S off: not applicable
    g = s["goals"]
    assert g["vase_rank"] == 1 and g["vase_at_most_half_of_cci_vae"] is True
    assert g["vase_forgetting_pct"] == pytest.approx(3.0)
    table = ablation_table(s, title="T")
    assert "| VASE (SDA) | 90.0 ± 0.0 | -3.0 ± 1.4 |" in table
    assert "| CCI-VAE (-) |" in table and "–" in table


def test_run_ablation_writes_json_and_markdown(tmp_path):
    summary = run_ablation(tiny(), SEQ, 6, [0], tmp_path, variants=["SDA", "-"], run_kwargs=RUN)
    assert [v["variant"] for v in summary["variants"]] == ["SDA", "-"]
    assert (tmp_path / "runs" / "SDA" / "seed0" / RUN_FILES["results"]).is_file()
    assert (tmp_path / "runs" / "none" / "seed0" / RUN_FILES["results"]).is_file()
    assert json.loads((tmp_path / "ablation.json").read_text())["seeds"] == [0]
    md = (tmp_path / "ablation.md").read_text()
    main, _, domains = md.partition("Domain inference")
    rows = [line for line in main.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and rows[1].startswith("| VASE (SDA) |") and rows[2].startswith("| CCI-VAE (-) |")
    drows = [line for line in domains.splitlines() if line.startswith("| ")]
    assert len(drows) == 2 and drows[1].startswith("| VASE (SDA) |")  # only variants with S
    with pytest.raises(ValueError, match="at least one seed"):
        run_ablation(tiny(), SEQ, 6, [], tmp_path)
