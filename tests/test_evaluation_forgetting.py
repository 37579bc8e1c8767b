"""Hand-computed tests for the forgetting / transfer measures (vase_rl.evaluation.forgetting)."""

import numpy as np
import pytest

from vase_rl.evaluation import (
    Segment,
    accuracy_matrix,
    average_accuracy,
    backward_transfer,
    chaudhry_forgetting,
    paper_forgetting,
    paper_forgetting_per_domain,
    paper_max_accuracy,
    segments_from_labels,
)

# R[i, j]: score on segment j after training stage i
R = np.array(
    [
        [0.90, 0.10, 0.00],
        [0.95, 0.80, 0.20],
        [0.60, 0.50, 0.95],
    ]
)


def test_average_accuracy():
    assert average_accuracy(R) == pytest.approx((0.60 + 0.50 + 0.95) / 3)
    assert average_accuracy(R, stage=1) == pytest.approx((0.95 + 0.80) / 2)
    assert average_accuracy(R, stage=0) == pytest.approx(0.90)


def test_backward_transfer():
    # ((0.60 - 0.90) + (0.50 - 0.80)) / 2
    assert backward_transfer(R) == pytest.approx(-0.30)
    assert backward_transfer(R[:2, :2]) == pytest.approx(0.95 - 0.90)


def test_chaudhry_forgetting():
    # final stage: f_0 = max(0.90, 0.95) - 0.60 = 0.35, f_1 = max(0.10, 0.80) - 0.50 = 0.30
    assert chaudhry_forgetting(R) == pytest.approx(0.325)
    # stage 1: f_0 = 0.90 - 0.95 (negative forgetting = improvement)
    assert chaudhry_forgetting(R, stage=1) == pytest.approx(-0.05)
    with pytest.raises(ValueError):
        chaudhry_forgetting(R, stage=0)


def test_chaudhry_forgetting_takes_max_over_all_earlier_stages():
    r4 = np.array(
        [
            [0.9, 0.0, 0.0, 0.0],
            [0.7, 0.8, 0.0, 0.0],
            [0.8, 0.6, 0.9, 0.0],
            [0.5, 0.7, 0.6, 0.95],
        ]
    )
    # f_0 = 0.9 - 0.5 (best was two stages back), f_1 = 0.8 - 0.7, f_2 = 0.9 - 0.6
    assert chaudhry_forgetting(r4) == pytest.approx((0.4 + 0.1 + 0.3) / 3)
    assert chaudhry_forgetting(r4, stage=2) == pytest.approx(((0.9 - 0.8) + (0.8 - 0.6)) / 2)
    assert average_accuracy(r4, stage=2) == pytest.approx((0.8 + 0.6 + 0.9) / 3)


def test_chaudhry_forgetting_ignores_scores_before_training():
    # column 1 scored 0.95 at stage 0, before domain 1 was trained (an untrained read-out's luck);
    # the best since training it is 0.8 (stage 1)
    r3 = np.array(
        [
            [0.90, 0.95, 0.10],
            [0.50, 0.80, 0.10],
            [0.40, 0.70, 0.90],
        ]
    )
    # f_0 = max(0.9, 0.5) - 0.4 = 0.5; f_1 = 0.8 - 0.7 = 0.1 (the old max over all earlier
    # stages gave 0.95 - 0.7 = 0.25, mean 0.375)
    assert chaudhry_forgetting(r3) == pytest.approx(0.3)


# table 3 shape: digits -> garments -> digits; columns 0 and 2 are the same domain
R_RETURN = np.array(
    [
        [0.80, 0.20, 0.80],
        [0.50, 0.90, 0.50],
        [0.95, 0.60, 0.95],
    ]
)
RETURN_DOMAINS = ["digits", "garments", "digits"]


def test_backward_transfer_does_not_count_relearning_a_returning_domain():
    # digits are trained again in the final stage: their rise 0.8 -> 0.95 is relearning.
    # Only garments transfer back: 0.6 - 0.9. The old definition averaged in the digits'
    # +0.15 and reported ((0.95 - 0.8) + (0.6 - 0.9)) / 2 = -0.075.
    assert backward_transfer(R_RETURN, domains=RETURN_DOMAINS) == pytest.approx(-0.3)
    assert backward_transfer(R_RETURN) == pytest.approx(-0.075)  # one domain per column
    # a domain that returns before the end counts from its last training stage
    r4 = np.array([[0.7, 0.1, 0.7, 0.0], [0.4, 0.9, 0.4, 0.0], [0.8, 0.6, 0.8, 0.1], [0.5, 0.7, 0.5, 0.9]])
    # a: last trained at stage 2 (0.8) -> 0.5; b: stage 1 (0.9) -> 0.7; c is trained last
    assert backward_transfer(r4, domains=["a", "b", "a", "c"]) == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 2)
    with pytest.raises(ValueError, match="final stage"):
        backward_transfer(np.eye(2), domains=["a", "a"])
    with pytest.raises(ValueError, match="one domain per stage"):
        backward_transfer(R_RETURN, domains=["digits", "garments"])


def test_chaudhry_and_acc_count_each_domain_once():
    # stage 2 trains digits again: only garments can be forgotten, max since trained 0.9 -> 0.6
    assert chaudhry_forgetting(R_RETURN, domains=RETURN_DOMAINS) == pytest.approx(0.3)
    assert average_accuracy(R_RETURN, domains=RETURN_DOMAINS) == pytest.approx((0.95 + 0.6) / 2)
    assert average_accuracy(R_RETURN) == pytest.approx((0.95 + 0.6 + 0.95) / 3)
    # a domain trained twice before k: the best since its *first* training counts
    r4 = np.array([[0.9, 0.1, 0.9, 0.0], [0.4, 0.8, 0.4, 0.0], [0.6, 0.5, 0.6, 0.1], [0.3, 0.7, 0.3, 0.9]])
    assert chaudhry_forgetting(r4, domains=["a", "b", "a", "c"]) == pytest.approx(((0.9 - 0.3) + (0.8 - 0.7)) / 2)


def test_matrix_validation():
    with pytest.raises(ValueError, match="square"):
        average_accuracy(np.ones((2, 3)))
    with pytest.raises(ValueError, match="2 stages"):
        backward_transfer(np.ones((1, 1)))
    future_unknown = R.copy()
    future_unknown[0, 2] = np.nan  # upper triangle is never needed
    assert chaudhry_forgetting(future_unknown) == pytest.approx(0.325)
    broken = R.copy()
    broken[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        chaudhry_forgetting(broken)
    with pytest.raises(IndexError):
        average_accuracy(R, stage=3)


def test_segments_from_labels():
    assert segments_from_labels([0, 0, 1, 1, 1, 0]) == [Segment(0, 0, 2), Segment(1, 2, 5), Segment(0, 5, 6)]
    assert segments_from_labels(["a", "a", "b"], steps=[0, 10, 20]) == [Segment("a", 0, 20), Segment("b", 20, 21)]


def test_paper_forgetting_two_domains():
    curves = {
        0: [0.1, 0.5, 0.9, 0.8, 0.85, 0.7, 0.6, 0.75, 0.65, 0.8],
        1: [0.0, 0.0, 0.1, 0.1, 0.2, 0.3, 0.5, 0.9, 0.9, 0.9],
    }
    segments = [Segment(0, 0, 5), Segment(1, 5, 10)]
    # domain 0: best while training 0.9, worst afterwards 0.6; domain 1 is never left
    assert paper_forgetting_per_domain(curves, segments) == {0: pytest.approx(0.3)}
    assert paper_forgetting(curves, segments) == pytest.approx(0.3)
    assert paper_max_accuracy(curves, segments) == pytest.approx((0.9 + 0.9) / 2)
    # the same with per-point true labels instead of segments
    assert paper_forgetting(curves, [0] * 5 + [1] * 5) == pytest.approx(0.3)


def test_paper_forgetting_revisit_and_array_input():
    # A (steps 0-2), B (3-5), A again (6-8); columns: domain 0 = A, domain 1 = B
    a = [0.2, 0.6, 0.7, 0.5, 0.4, 0.45, 0.6, 0.8, 0.9]
    b = [0.0, 0.0, 0.0, 0.3, 0.9, 0.5, 0.7, 0.2, 0.6]
    segments = [Segment(0, 0, 3), Segment(1, 3, 6), Segment(0, 6, 9)]
    per = paper_forgetting_per_domain(np.stack([a, b], 1), segments)
    assert per == {0: pytest.approx(0.7 - 0.4), 1: pytest.approx(0.9 - 0.2)}
    assert paper_forgetting(np.stack([a, b], 1), segments) == pytest.approx(0.5)


def test_paper_forgetting_mse_and_intervals():
    # evaluated every 10 steps, NaN = not evaluated at that point
    steps = [0, 10, 20, 30, 40, 50]
    mse = {"d0": [0.5, 0.1, 0.2, 0.3, np.nan, 0.25], "d1": [0.9, 0.9, 0.9, 0.4, 0.2, 0.1]}
    segments = [Segment("d0", 0, 30), Segment("d1", 30, 60)]
    # lower is better: rise = worst afterwards (0.3) - best during (0.1)
    assert paper_forgetting(mse, segments, steps=steps, higher_is_better=False) == pytest.approx(0.2)
    assert paper_max_accuracy(mse, segments, steps=steps, higher_is_better=False) == pytest.approx((0.1 + 0.1) / 2)


def test_paper_forgetting_errors():
    with pytest.raises(ValueError, match="no curve"):
        paper_forgetting({0: [1.0, 1.0]}, [Segment(0, 0, 1), Segment(5, 1, 2)])
    with pytest.raises(ValueError, match="undefined"):
        paper_forgetting({0: [1.0, 1.0]}, [Segment(0, 0, 2)])
    with pytest.raises(ValueError, match="same length"):
        paper_forgetting({0: [1.0, 1.0], 1: [1.0]}, [Segment(0, 0, 2)])
    with pytest.raises(ValueError, match="overlap"):
        paper_forgetting({0: [1.0, 1.0]}, [Segment(0, 0, 2), Segment(0, 1, 2)])


def test_accuracy_matrix_from_curves():
    steps = [0, 5, 10, 15, 20, 25]
    curves = {0: [0.5, 0.9, 0.7, 0.6, 0.8, 0.75], 1: [0.1, 0.2, 0.6, 0.85, 0.3, 0.4]}
    segments = [Segment(0, 0, 10), Segment(1, 10, 20), Segment(0, 20, 30)]
    r = accuracy_matrix(curves, segments, steps=steps)
    expected = np.array([[0.9, 0.2, 0.9], [0.6, 0.85, 0.6], [0.75, 0.4, 0.75]])
    np.testing.assert_allclose(r, expected)
    np.testing.assert_allclose(accuracy_matrix(curves, segments, steps=steps, reduce="max")[1], [0.7, 0.85, 0.7])
    assert backward_transfer(r) == pytest.approx(((0.75 - 0.9) + (0.4 - 0.85)) / 2)


def test_skip_missing_domains():
    # a position probe exists only for the moving domain "m"; the static domain "s" has none
    curves = {"m": [0.1, 0.05, 0.3, 0.2, 0.4, 0.1]}
    segments = [Segment("m", 0, 2), Segment("s", 2, 4), Segment("m", 4, 6)]
    with pytest.raises(ValueError, match="no curve"):
        paper_forgetting(curves, segments, higher_is_better=False)
    # rise after the first "m" stretch: worst afterwards 0.4 - best during 0.05
    assert paper_forgetting(curves, segments, higher_is_better=False, skip_missing=True) == pytest.approx(0.35)
    r = accuracy_matrix(curves, segments, skip_missing=True)
    assert np.isnan(r[:, 1]).all()
    np.testing.assert_allclose(r[:, 0], [0.05, 0.2, 0.1])
