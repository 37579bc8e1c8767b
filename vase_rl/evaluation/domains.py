"""Quality of domain inference against the ground-truth domain stream.

VASE infers a domain id for every batch (spec §6, Algorithm 1 of the paper). Its ids are
arbitrary labels, so they are compared with the true domains in three label-free ways:

* :func:`boundary_scores`: change-point detection. A *switch* is a position t with
  ``labels[t] != labels[t-1]``. A predicted switch at p matches a true switch at c when
  ``c <= p <= c + tolerance`` (detection may lag, never lead); each switch is matched at most
  once (earliest available prediction first, which maximises the number of matches for
  equal-width windows). Reports precision, recall, F1 and the detection delay. A learner that
  predicts no switch has precision 0 when there was a switch to find (not 1), and the mean
  delay charges a missed switch the time until the learner did switch after it (or until the
  true segment ended), so missing a switch never looks faster than catching it late.
* :func:`domain_agreement`: clustering agreement. Purity (each predicted cluster votes for its
  majority true domain), inverse purity (the converse, which penalises over-splitting) and
  the adjusted Rand index of Hubert & Arabie 1985 (implemented here from the contingency
  table; equals ``sklearn.metrics.adjusted_rand_score``).
* :func:`reidentification`: when a true domain comes back, does the learner give it the id it
  gave that domain before, *and* is that id its own? The id of a stretch is its majority
  predicted id; a return whose id is shared with another true domain seen before is not a
  re-identification (a learner that never switches gives every domain id 0 and scores 0, not 1).

Positions are indices into the sequences (one entry per step, batch or decision).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vase_rl.evaluation._arrays import as_labels, check_same_length

__all__ = [
    "change_points",
    "boundary_scores",
    "adjusted_rand_index",
    "domain_agreement",
    "reidentification",
]


def change_points(labels: Any) -> np.ndarray:
    """Positions t >= 1 where ``labels[t] != labels[t - 1]``."""
    lab = as_labels(labels, "labels")
    return np.flatnonzero(lab[1:] != lab[:-1]) + 1


def boundary_scores(pred_domains: Any, true_domains: Any, tolerance: int = 0) -> dict[str, Any]:
    """Precision / recall / F1 of detected domain switches and the detection delay.

    Args:
        pred_domains: inferred domain id per position.
        true_domains: true domain id per position (same length).
        tolerance: a predicted switch may come up to this many positions after the true one.

    Conventions for empty sets (the ones a collapsed learner hits):

    * ``precision`` = matched / predicted switches; with no predicted switch it is 0.0 when
      there was a true switch to find (a learner that never switches has not been precise, it
      has detected nothing) and 1.0 only when there was none either;
    * ``recall`` = matched / true switches; 1.0 when there is no true switch;
    * ``f1`` = harmonic mean, 0.0 when precision + recall = 0.

    Delay: ``mean_delay`` averages over *every* true switch. A matched switch c counts p - c; a
    missed one counts the time until the learner first switched after it within its true
    segment (a detection later than the tolerance), or the whole segment length when it never
    did: the earliest time the switch could still be said to be noticed. ``mean_delay_matched``
    is the mean over matched switches only (NaN without matches), the definition used before.

    Returns a dict with those values and ``num_true``, ``num_pred``, ``num_matched``,
    ``matches`` (list of (true, predicted) positions), ``missed`` (unmatched true switches),
    ``false_alarms`` (unmatched predicted switches) and ``delays`` (one per true switch).
    """
    if int(tolerance) != tolerance or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative integer, got {tolerance}")
    pred = as_labels(pred_domains, "pred_domains")
    true = as_labels(true_domains, "true_domains")
    check_same_length(pred, true, "pred_domains", "true_domains")
    p_cp = change_points(pred)
    t_cp = change_points(true)
    used = np.zeros(p_cp.size, dtype=bool)
    matches: list[tuple[int, int]] = []
    for c in t_cp:  # true switches in order; take the earliest free prediction in the window
        window = np.flatnonzero(~used & (p_cp >= c) & (p_cp <= c + tolerance))
        if window.size:
            used[window[0]] = True
            matches.append((int(c), int(p_cp[window[0]])))
    n_m = len(matches)
    if p_cp.size:
        precision = n_m / p_cp.size
    else:
        precision = 0.0 if t_cp.size else 1.0
    recall = n_m / t_cp.size if t_cp.size else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    matched = dict(matches)
    segment_ends = np.append(t_cp[1:], true.size)
    delays = []
    for c, end in zip(t_cp, segment_ends):
        if int(c) in matched:
            delays.append(matched[int(c)] - int(c))
            continue
        later = p_cp[(p_cp >= c) & (p_cp < end)]
        delays.append(int(later[0] - c) if later.size else int(end - c))
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "mean_delay": float(np.mean(delays)) if delays else float("nan"),
        "mean_delay_matched": float(np.mean([p - c for c, p in matches])) if matches else float("nan"),
        "delays": [int(d) for d in delays],
        "num_true": int(t_cp.size),
        "num_pred": int(p_cp.size),
        "num_matched": n_m,
        "matches": matches,
        "missed": [int(c) for c in t_cp if int(c) not in matched],
        "false_alarms": [int(p) for p, u in zip(p_cp, used) if not u],
    }


def _contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), dtype=np.int64)
    np.add.at(table, (ai.reshape(-1), bi.reshape(-1)), 1)
    return table


def _pairs(n: np.ndarray) -> float:
    n = n.astype(np.float64)
    return float((n * (n - 1) / 2).sum())


def adjusted_rand_index(labels_a: Any, labels_b: Any) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985) of two labelings of the same items.

    1 for identical partitions (up to renaming), about 0 for independent ones, can be
    negative. When both partitions are trivial in the same way (one cluster each, or all
    singletons each) the index is 0/0 and 1.0 is returned, as scikit-learn does.
    """
    a = as_labels(labels_a, "labels_a")
    b = as_labels(labels_b, "labels_b")
    check_same_length(a, b, "labels_a", "labels_b")
    if a.size == 0:
        raise ValueError("cannot compare empty labelings")
    table = _contingency(a, b)
    index = _pairs(table)
    sum_a = _pairs(table.sum(axis=1))
    sum_b = _pairs(table.sum(axis=0))
    total = a.size * (a.size - 1) / 2
    expected = sum_a * sum_b / total if total > 0 else 0.0
    maximum = (sum_a + sum_b) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))


def domain_agreement(pred: Any, true: Any) -> dict[str, float]:
    """Purity, inverse purity and adjusted Rand index of predicted vs true domain ids.

    purity = (1/N) sum over predicted ids of the count of its most common true domain;
    inverse_purity = the same with the roles swapped. ``num_pred_domains`` and
    ``num_true_domains`` count the distinct ids.
    """
    p = as_labels(pred, "pred")
    t = as_labels(true, "true")
    check_same_length(p, t, "pred", "true")
    if p.size == 0:
        raise ValueError("cannot compare empty labelings")
    table = _contingency(p, t)  # rows: predicted ids, columns: true domains
    return {
        "purity": float(table.max(axis=1).sum() / p.size),
        "inverse_purity": float(table.max(axis=0).sum() / p.size),
        "ari": adjusted_rand_index(p, t),
        "num_pred_domains": int(table.shape[0]),
        "num_true_domains": int(table.shape[1]),
    }


def _majority(values: np.ndarray) -> Any:
    """Most frequent value; ties go to the value that occurs first."""
    uniq, first, counts = np.unique(values, return_index=True, return_counts=True)
    best = counts.max()
    candidates = [(first[i], uniq[i]) for i in range(uniq.size) if counts[i] == best]
    value = min(candidates)[1]
    return value.item() if hasattr(value, "item") else value


def reidentification(pred: Any, true: Any) -> dict[str, Any]:
    """Does the learner give a returning true domain its own id from before?

    The true stream is split into runs of one domain. A domain's *id so far* is the majority
    predicted id over all its earlier positions. For every run of a domain seen before (a
    *return*), the predicted id is the majority over the return run (so a short detection lag
    at the start of the run does not count against it). The return is re-identified when

    1. the predicted id equals the domain's id so far, and
    2. that id is the domain's own: no other true domain seen before the return has the same
       id so far. A learner that lumps domains together has not recognised anything; one that
       never switches gives every domain id 0 and re-identifies nothing.

    Returns ``rate`` (re-identified / returns, NaN without returns), ``num_returns``,
    ``num_correct``, ``num_ambiguous`` (returns whose expected id another domain shares) and
    ``returns``: one dict per return with ``domain``, ``start``, ``stop``, ``expected_id``,
    ``predicted_id``, ``shared_with`` (the other true domains holding that id) and ``correct``.
    """
    p = as_labels(pred, "pred")
    t = as_labels(true, "true")
    check_same_length(p, t, "pred", "true")
    cps = np.concatenate([[0], change_points(t), [t.size]]) if t.size else np.array([0])
    seen: dict[Any, list[np.ndarray]] = {}
    returns = []
    for a, b in zip(cps[:-1], cps[1:]):
        dom = t[a].item() if hasattr(t[a], "item") else t[a]
        run = p[a:b]
        if dom in seen:
            ids = {d: _majority(np.concatenate(runs)) for d, runs in seen.items()}
            expected = ids[dom]
            got = _majority(run)
            shared = [d for d, i in ids.items() if d != dom and i == expected]
            returns.append(
                {
                    "domain": dom,
                    "start": int(a),
                    "stop": int(b),
                    "expected_id": expected,
                    "predicted_id": got,
                    "shared_with": shared,
                    "correct": bool(expected == got and not shared),
                }
            )
        seen.setdefault(dom, []).append(run)
    n_ok = sum(r["correct"] for r in returns)
    return {
        "rate": n_ok / len(returns) if returns else float("nan"),
        "num_returns": len(returns),
        "num_correct": n_ok,
        "num_ambiguous": sum(bool(r["shared_with"]) for r in returns),
        "returns": returns,
    }
