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
    goals_line,
    run_ablation,
    summarise_ablation,
    variant_config,
)
from vase_rl.evaluation.experiment import (
    RUN_FILES,
    decoder_dependence,
    load_run,
    matrix_measures,
    measure_latent_usage,
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
    out, res = finished
    assert res["segments"] == [["moving_shapes", 0, 10], ["digits", 10, 20]]
    o = res["object_id"]
    # recompute the paper's forgetting and max from the raw probe records (probes.json), by
    # hand: shapes' best online accuracy during steps 0-9 minus its worst at any later record
    records = json.loads((out / RUN_FILES["probes"]).read_text())
    online = [r for r in records if r["task"] == "object_id" and not r["refit"]]
    shapes = [(r["step"], r["value"]) for r in online if r["domain"] == "moving_shapes"]
    digits = [(r["step"], r["value"]) for r in online if r["domain"] == "digits"]
    best_during = max(v for t, v in shapes if t < 10)
    worst_after = min(v for t, v in shapes if t >= 10)
    assert o["forgetting"] == pytest.approx(best_during - worst_after)
    assert o["change"] == pytest.approx(worst_after - best_during)
    assert o["best"] == pytest.approx((best_during + max(v for t, v in digits if t >= 10)) / 2)
    # the accuracy matrix: last evaluation within each stage; BWT = R[1,0] - R[0,0]
    last = lambda pts, lo, hi: [v for t, v in sorted(pts) if lo <= t < hi][-1]
    expected = [[last(shapes, 0, 10), last(digits, 0, 10)], [last(shapes, 10, 20), last(digits, 10, 20)]]
    np.testing.assert_allclose(np.asarray(o["matrix"], dtype=float), expected)
    assert o["backward_transfer"] == pytest.approx(expected[1][0] - expected[0][0])
    assert set(o["refit_final"]) == {"moving_shapes", "digits"}
    # only the moving domain has a position probe
    assert set(res["position"]["refit_final"]) == {"moving_shapes"}
    d = res["domain_inference"]
    assert d["boundary"]["num_true"] == 1 and d["tolerance"] == 5
    assert len(d["boundary"]["delays"]) == 1  # every true switch has a delay, caught or not
    u = res["latent_usage"]
    assert u["latent_dim"] == 4 and u["domains"] == ["moving_shapes", "digits"] and "definition" in u
    # one definition: in use for a domain = active in the mask applied to it AND used by the decoder
    for name in u["domains"]:
        assert all(a or not b for a, b in zip(u["active"][name], u["in_use"][name]))
    union = np.any([u["in_use"][n] for n in u["domains"]], axis=0)
    assert u["num_in_use"] == int(union.sum())
    assert "learner_memory" in u and "num_in_use" not in u["learner_memory"]
    assert res["switches"] == {"S": True, "D": True, "A": True, "objective": "disentangled"}


PROVENANCE_KEYS = {
    "commit",
    "dirty",
    "versions",
    "cpu",
    "threads",
    "command",
    "seeds",
    "started",
    "wall_seconds",
    "code_paths",
    "code_digest",
    "code_files",
}


def test_run_folder_records_provenance(finished):
    out, res = finished
    prov = res["provenance"]
    assert set(prov) >= PROVENANCE_KEYS, PROVENANCE_KEYS - set(prov)
    assert prov["seeds"] == [0] and prov["wall_seconds"] >= 0
    assert torch.__version__.startswith(prov["versions"]["torch"].split("+")[0])
    assert {"model", "flags", "torch_capability"} <= set(prov["cpu"])
    assert "vase_rl/learner.py" in prov["code_files"] and any(f.startswith("envs/") for f in prov["code_files"])
    assert [s["step"] for s in prov["starts"]] == [0] and prov["code_changed_during_run"] is False
    settings = json.loads((out / RUN_FILES["experiment"]).read_text())
    assert PROVENANCE_KEYS - {"started", "wall_seconds"} <= set(settings["provenance"])
    assert settings["provenance"]["code_digest"] == prov["code_digest"]


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
    strip = lambda r: {k: v for k, v in r.items() if k not in ("wall_time_s", "experiment", "provenance")}
    assert strip(res) == strip(full)
    # the provenance names both starts of the work
    assert [s["step"] for s in res["provenance"]["starts"]] == [0, stop_at]


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


def _res(change, f1, in_use=3, matched=1):
    return {
        "object_id": {"best": 0.9, "change": change},
        "domain_inference": {
            "boundary": {"f1": f1, "num_true": 1, "num_matched": matched},
            "reidentification": {"rate": 1.0},
        },
        "latent_usage": {"num_in_use": in_use},
    }


def test_summary_statistics_and_table():
    res = _res

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
    assert g["assessable"] is True
    table = ablation_table(s, title="T")
    assert "| VASE (SDA) | 90.0 ± 0.0 | -3.0 ± 1.4 |" in table
    assert "| CCI-VAE (-) |" in table and "–" in table


def test_a_collapsed_variant_cannot_win_the_ranking():
    # issue 13: A and DA with 0 latents in use forgot little (nothing learnt) and ranked 2nd-3rd
    results = {
        ("SDA", 0): _res(-0.06, 1.0),
        ("A", 0): _res(-0.01, 0.0, in_use=0, matched=0),  # collapsed: forgets "least"
        ("SA", 0): _res(-0.03, 1.0, matched=0),  # S on but no switch detected
        ("-", 0): _res(-0.25, 0.0, matched=0),  # no S: detecting nothing is by design
    }
    s = summarise_ablation(results, ["SDA", "A", "SA", "-"], [0])
    g = s["goals"]
    # old key (-change only) gave A, SA, SDA, -; degenerate runs now rank last
    assert g["ranking_by_change"] == ["SDA", "-", "A", "SA"]
    assert g["vase_rank"] == 1 and set(g["degenerate_variants"]) == {"A", "SA"}
    rows = {r["variant"]: r for r in s["variants"]}
    assert rows["A"]["degenerate_runs"] == {"0": ["no latents in use"]}  # no S: no switch expected
    assert rows["SA"]["degenerate_runs"] == {"0": ["no switch detected"]}
    assert rows["-"]["degenerate_runs"] == {}
    assert "| 1/1 |" in ablation_table(s)


def test_goals_are_not_assessable_on_a_degenerate_vase_run():
    # the quick run of the issue: VASE with no latent in use and no switch detected
    results = {("SDA", 0): _res(-0.01, 0.0, in_use=0, matched=0), ("-", 0): _res(-0.2, 0.0)}
    g = summarise_ablation(results, ["SDA", "-"], [0])["goals"]
    assert g["assessable"] is False and g["vase_at_most_half_of_cci_vae"] is None and g["vase_rank"] is None
    assert any("no latents in use" in r for r in g["not_assessable_because"])
    assert any("no switch detected" in r for r in g["not_assessable_because"])
    assert goals_line(g).startswith("goals: NOT ASSESSABLE")
    # numbers that were never measured do not count as sound either
    g2 = summarise_ablation(
        {("SDA", 0): {"object_id": {"change": -0.01}}, ("-", 0): _res(-0.2, 0.0)}, ["SDA", "-"], [0]
    )
    assert g2["goals"]["assessable"] is False


def test_matrix_measures_count_a_returning_domain_once():
    r = [[0.8, 0.2, 0.8], [0.5, 0.9, 0.5], [0.95, 0.6, 0.95]]
    m = matrix_measures(r, ["digits", "garments", "digits"])
    assert m["backward_transfer"] == pytest.approx(0.6 - 0.9)  # not ((0.95-0.8)+(0.6-0.9))/2
    assert m["chaudhry_forgetting"] == pytest.approx(0.3)
    assert m["average_accuracy"] == pytest.approx((0.95 + 0.6) / 2)
    assert matrix_measures([[0.5]], ["a"]) == {}
    assert "backward_transfer" not in matrix_measures([[0.5, 0.1], [0.4, 0.6]], ["a", "a"])


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


class _OneLatentDecoder(torch.nn.Module):
    """A stand-in decoder whose output depends on latent 0 only."""

    def forward(self, z, onehot):
        return (5.0 * z[:, :1]).view(-1, 1, 1, 1).expand(-1, 1, 16, 16)


def test_decoder_dependence_finds_the_latents_the_decoder_uses():
    learner = VASE(tiny(), seed=0, device="cpu")
    learner.decoder = _OneLatentDecoder()
    x = np.random.default_rng(0).integers(0, 255, (32, 16, 16, 1), dtype=np.uint8)
    gen = torch.Generator().manual_seed(0)
    used, sigma = decoder_dependence(learner, x, 0, np.ones(4, bool), generator=gen)
    assert used.tolist() == [True, False, False, False]
    assert sigma[0] < 1.0 < sigma[1:].min()  # ignored latents tolerate noise beyond T = 1
    # a masked latent is never "in use", whatever the decoder does with it
    used, _ = decoder_dependence(learner, x, 0, np.array([False, True, True, True]), generator=gen)
    assert not used.any()
    views = {"a": (x, 0, np.ones(4, bool)), "b": (x, 0, np.array([False, True, True, True]))}
    u = measure_latent_usage(learner, views, num_images=32)
    assert u["in_use"] == {"a": [True, False, False, False], "b": [False] * 4} and u["num_in_use"] == 1
    assert u["labels"]["b"] == ["frozen", "unused", "unused", "unused"]
