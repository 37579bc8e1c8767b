"""Hand-made switch sequences for the domain-inference measures (vase_rl.evaluation.domains)."""

import math

import numpy as np
import pytest

from vase_rl.evaluation import adjusted_rand_index, boundary_scores, change_points, domain_agreement, reidentification

TRUE = [0] * 5 + [1] * 5 + [2] * 5  # switches at 5 and 10


def test_change_points():
    np.testing.assert_array_equal(change_points(TRUE), [5, 10])
    np.testing.assert_array_equal(change_points(["a", "a", "b", "a"]), [2, 3])
    assert change_points([3, 3, 3]).size == 0


def test_boundary_scores_with_lag_and_false_alarm():
    pred = [7] * 7 + [8] * 2 + [9] * 3 + [4] * 3  # switches at 7, 9, 12
    s = boundary_scores(pred, TRUE, tolerance=2)
    assert s["matches"] == [(5, 7), (10, 12)]
    assert s["false_alarms"] == [9] and s["missed"] == []
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(1.0)
    assert s["f1"] == pytest.approx(0.8)
    assert s["mean_delay"] == pytest.approx(2.0)
    tight = boundary_scores(pred, TRUE, tolerance=1)
    assert tight["num_matched"] == 0 and tight["precision"] == 0.0 and tight["recall"] == 0.0
    assert tight["f1"] == 0.0 and math.isnan(tight["mean_delay_matched"])
    # both switches missed at tolerance 1, but the learner did switch 2 updates after each
    # (at 7 for the switch at 5, at 12 for the one at 10): that is the delay charged
    assert tight["delays"] == [2, 2] and tight["mean_delay"] == pytest.approx(2.0)


def test_boundary_detection_may_not_lead():
    pred = [0] * 4 + [1] * 11  # switch at 4, one step before the true one at 5
    s = boundary_scores(pred, [0] * 5 + [1] * 10, tolerance=5)
    assert s["num_matched"] == 0 and s["false_alarms"] == [4] and s["missed"] == [5]


def test_boundary_each_switch_matched_once():
    true = [0] * 5 + [1] + [2] * 9  # switches at 5 and 6
    pred = [0] * 6 + [1] * 9  # one switch at 6
    s = boundary_scores(pred, true, tolerance=3)
    assert s["matches"] == [(5, 6)] and s["missed"] == [6]
    assert s["precision"] == 1.0 and s["recall"] == 0.5
    # two true switches (5, 7), two predictions (7, 8) within tolerance 2: both must match
    s2 = boundary_scores([0] * 7 + [1] + [2] * 7, [0] * 5 + [1] * 2 + [2] * 8, tolerance=2)
    assert s2["matches"] == [(5, 7), (7, 8)] and s2["mean_delay"] == pytest.approx(1.5)
    # true (5, 8), predicted (7, 8), tolerance 3: taking 8 for the first switch would strand
    # the second; the earliest free prediction matches both
    s3 = boundary_scores([0] * 7 + [1] + [2] * 7, [0] * 5 + [1] * 3 + [2] * 7, tolerance=3)
    assert s3["matches"] == [(5, 7), (8, 8)] and s3["recall"] == 1.0


def test_boundary_empty_conventions():
    s = boundary_scores([0] * 10, [0] * 10, tolerance=0)
    assert (s["precision"], s["recall"], s["f1"]) == (1.0, 1.0, 1.0)
    assert math.isnan(s["mean_delay"])  # nothing to detect, no delay
    # predictions without any true switch: all false alarms
    s = boundary_scores([0] * 3 + [1] * 7, [0] * 10, tolerance=0)
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 1.0, 0.0)


def test_boundary_a_learner_that_never_switches_scores_nothing():
    # the old convention gave precision 1.0 (nothing predicted, nothing wrong) and no delay
    s = boundary_scores([0] * 15, TRUE, tolerance=3)
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    # each switch is charged its whole segment (5 positions), the latest it could be noticed
    assert s["delays"] == [5, 5] and s["mean_delay"] == pytest.approx(5.0)
    assert s["missed"] == [5, 10] and math.isnan(s["mean_delay_matched"])


def test_boundary_mean_delay_counts_missed_switches():
    # switch at 5 caught at 7 (tolerance 2); the one at 10 never caught before the end (15)
    s = boundary_scores([0] * 7 + [1] * 8, TRUE, tolerance=2)
    assert s["matches"] == [(5, 7)] and s["missed"] == [10]
    assert s["delays"] == [2, 5]
    assert s["mean_delay"] == pytest.approx((2 + 5) / 2)  # the old definition gave 2.0
    assert s["mean_delay_matched"] == pytest.approx(2.0)
    # caught, but 3 updates late with tolerance 2: a miss for recall, a delay of 3
    late = boundary_scores([0] * 7 + [1] * 6 + [2] * 2, TRUE, tolerance=2)
    assert late["missed"] == [10] and late["delays"] == [2, 3]
    assert late["false_alarms"] == [13] and late["mean_delay"] == pytest.approx(2.5)


def test_boundary_errors():
    with pytest.raises(ValueError, match="same length"):
        boundary_scores([0, 1], [0, 1, 1], tolerance=1)
    with pytest.raises(ValueError, match="tolerance"):
        boundary_scores([0, 1], [0, 1], tolerance=-1)
    with pytest.raises(ValueError, match="1-D"):
        boundary_scores([[0, 1]], [[0, 1]], tolerance=1)


def test_adjusted_rand_index_hand_computed():
    true = [0, 0, 0, 1, 1, 1]
    pred = [0, 0, 1, 1, 2, 2]
    # pairs within cells: 1 + 1 = 2; rows: 3 + 3 = 6; columns: 1 + 1 + 1 = 3; C(6, 2) = 15
    # expected = 6 * 3 / 15 = 1.2; max = 4.5; ARI = 0.8 / 3.3
    assert adjusted_rand_index(pred, true) == pytest.approx(8 / 33)
    assert adjusted_rand_index(true, pred) == pytest.approx(8 / 33)
    assert adjusted_rand_index([5, 5, 9, 9, 1], [0, 0, 1, 1, 2]) == pytest.approx(1.0)  # renaming
    assert adjusted_rand_index([0] * 4, [1] * 4) == 1.0
    assert adjusted_rand_index([0] * 4, [0, 1, 2, 3]) == pytest.approx(0.0)


def test_adjusted_rand_index_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.integers(0, 4, 50), rng.integers(0, 3, 50)
        b[:25] = a[:25]
        assert adjusted_rand_index(a, b) == pytest.approx(metrics.adjusted_rand_score(a, b), abs=1e-12)


def test_domain_agreement():
    agree = domain_agreement([0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1])
    assert agree["purity"] == pytest.approx(5 / 6)
    assert agree["inverse_purity"] == pytest.approx(4 / 6)
    assert agree["ari"] == pytest.approx(8 / 33)
    assert (agree["num_pred_domains"], agree["num_true_domains"]) == (3, 2)
    # one id per step: purity is trivially 1, inverse purity and ARI expose the over-splitting
    split = domain_agreement(list(range(6)), [0, 0, 0, 1, 1, 1])
    assert split["purity"] == 1.0 and split["inverse_purity"] == pytest.approx(2 / 6)
    assert split["ari"] == pytest.approx(0.0)


def test_reidentification():
    true = ["A"] * 4 + ["B"] * 4 + ["A"] * 4 + ["B"] * 4
    pred = [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 2, 2, 2, 1]
    r = reidentification(pred, true)
    assert r["num_returns"] == 2 and r["num_correct"] == 1 and r["rate"] == 0.5
    first, second = r["returns"]
    assert (first["domain"], first["start"], first["stop"]) == ("A", 8, 12)
    assert (first["expected_id"], first["predicted_id"], first["correct"]) == (0, 0, True)  # lag forgiven
    assert (second["expected_id"], second["predicted_id"], second["correct"]) == (1, 2, False)


def test_reidentification_uses_all_earlier_visits():
    # A's earlier positions: [0, 0, 0] then [3, 3] -> majority id 0, not the last visit's 3
    true = [0, 0, 0, 1, 0, 0, 1, 0]
    pred = [0, 0, 0, 5, 3, 3, 5, 3]
    r = reidentification(pred, true)
    assert [x["expected_id"] for x in r["returns"]] == [0, 5, 0]
    assert [x["correct"] for x in r["returns"]] == [False, True, False]
    assert r["rate"] == pytest.approx(1 / 3)
    assert math.isnan(reidentification([0, 0, 1], [0, 0, 1])["rate"])


def test_reidentification_of_a_learner_that_never_switches_is_zero():
    true = ["A"] * 4 + ["B"] * 4 + ["A"] * 4
    r = reidentification([0] * 12, true)
    # old definition: A's return got id 0, A's id before was 0 -> "correct", rate 1.0
    assert r["num_returns"] == 1 and r["rate"] == 0.0 and r["num_ambiguous"] == 1
    assert r["returns"][0]["shared_with"] == ["B"] and r["returns"][0]["correct"] is False


def test_reidentification_needs_the_domains_own_id():
    # A and B lumped into id 0, C kept apart: A's return is not a re-identification, C's is
    true = ["A"] * 3 + ["B"] * 3 + ["C"] * 3 + ["A"] * 3 + ["C"] * 3
    pred = [0] * 6 + [1] * 3 + [0] * 3 + [1] * 3
    r = reidentification(pred, true)
    assert [x["correct"] for x in r["returns"]] == [False, True]
    assert r["rate"] == pytest.approx(0.5) and r["num_ambiguous"] == 1
    # the same stream told apart: both returns re-identified
    assert reidentification([0] * 3 + [2] * 3 + [1] * 3 + [0] * 3 + [1] * 3, true)["rate"] == 1.0
