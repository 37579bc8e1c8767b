"""The capacity-measure diagnostic (benchmarks/diag_capacity_measure.py): its summary on known
rows, and a tiny run that writes every field."""

from __future__ import annotations

import json

import pytest
from conftest import import_benchmark


@pytest.fixture(scope="module")
def diag():
    return import_benchmark("diag_capacity_measure")


def test_changes_counts_value_changes(diag):
    assert diag.changes([16, 16, 15, 15, 16, 0, 0]) == 3
    assert diag.changes([4]) == 0 and diag.changes([]) == 0


def test_summary_of_known_rows(diag):
    rows = [
        {"active_latents": a, "atypicality_max": m, "information": i, "marginal_kl": 1.0, "kl": i + 1.0,
         "capacity": 5.0, "recon": 10.0}
        for a, m, i in [(16, 0.1, 1.0), (8, 0.9, 2.0), (8, 0.5, 3.0), (16, 0.3, 4.0)]
    ]  # fmt: skip
    s = diag.summarise(rows, last=2)
    assert s["changes_of_active_count"] == 2 and s["min_active"] == 8 and s["mean_active"] == 12.0
    assert s["median_alpha_max"] == 0.5  # sorted 0.1, 0.3, 0.5, 0.9 -> element 2
    assert s["last2_information"] == pytest.approx(3.5) and s["last2_kl"] == pytest.approx(4.5)
    assert diag.summarise([]) == {"updates": 0}


@pytest.mark.slow
def test_a_tiny_run_records_both_measures_after_the_switch(diag, tmp_path):
    out = tmp_path / "d.json"
    assert diag.main(["--seeds", "0", "--steps-per-domain", "12", "--updates-after", "4", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["capacity_measure"] for r in data["runs"]] == ["kl", "information"]
    for run in data["runs"]:
        assert [row["update"] for row in run["rows"]] == [13, 14, 15, 16, 17]
        assert all(row["domain"] is not None for row in run["rows"])
        assert run["summary"]["updates"] == 5
    assert data["provenance"]["seeds"] == [0] and data["provenance"]["code_digest"]
