"""Forgetting and transfer measures for a stream of domain segments.

Two views of the same experiment:

* an **accuracy matrix** ``R[i, j]``: the score on the data of segment j measured at the end of
  training stage i (stage i = segment i of the stream; a revisited domain is a new column).
  From it:
  - :func:`average_accuracy`: mean of ``R[i, :i+1]`` (ACC of Lopez-Paz & Ranzato 2017,
    "Gradient Episodic Memory for Continual Learning"), by default after the last stage;
  - :func:`backward_transfer`: BWT = mean_{j<T-1} (R[T-1, j] - R[j, j]) (Lopez-Paz & Ranzato
    2017); negative values mean forgetting;
  - :func:`chaudhry_forgetting`: average forgetting of Chaudhry et al. 2018, "Riemannian Walk
    for Incremental Learning": f_j^k = max_{j<=l<k} R[l, j] - R[k, j], averaged over j < k.
    The maximum runs over the stages *from the one that trained j on*: before that, a score on
    j is whatever an untrained read-out happens to give, not knowledge that could be forgotten.

  Streams in which a domain comes back (table 3: digits -> garments -> digits) give the same
  domain several columns. Pass ``domains`` (the domain of every stage) and each measure counts
  every domain once: BWT compares a domain's score at the end with its score when it was *last*
  trained (relearning a returning domain is training, not backward transfer; a domain trained in
  the final stage has no backward transfer), Chaudhry's forgetting takes the best score since the
  domain was *first* trained and leaves out the domain being trained at stage k, and ACC
  averages over distinct domains.
* **per-step probe curves** (a probe score per domain, recorded every step or interval), as in
  the VASE paper (Achille et al. 2018, appendix A.5). :func:`paper_forgetting` implements its
  forgetting: per domain, the best score while training on it minus the worst score on it
  afterwards, averaged over domains. :func:`accuracy_matrix` turns curves into ``R``.

The matrix measures assume higher is better (accuracies). The curve functions also take
errors such as MSE with ``higher_is_better=False``: "forgetting" is then the rise of the error
(worst afterwards minus best during), positive when things got worse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from vase_rl.evaluation._arrays import to_numpy

__all__ = [
    "Segment",
    "segments_from_labels",
    "average_accuracy",
    "backward_transfer",
    "chaudhry_forgetting",
    "accuracy_matrix",
    "paper_forgetting",
    "paper_forgetting_per_domain",
    "paper_max_accuracy",
]


class Segment(NamedTuple):
    """A stationary stretch of the stream: ``domain`` trained on steps ``start <= t < stop``."""

    domain: Any
    start: int
    stop: int


# --------------------------------------------------------------------------------------------
# accuracy matrix measures


def _matrix(r: Any) -> np.ndarray:
    m = to_numpy(r, "R")
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"R must be a square (stages x segments) matrix, got shape {m.shape}")
    return m


def _stage(stage: int, num: int) -> int:
    k = stage + num if stage < 0 else stage
    if not 0 <= k < num:
        raise IndexError(f"stage {stage} out of range for {num} stages")
    return k


def _need_finite(values: np.ndarray, what: str) -> None:
    if not np.isfinite(values).all():
        raise ValueError(f"R has NaN/inf among the entries {what} needs")


def _stage_domains(domains: Any, num: int) -> list[Any] | None:
    if domains is None:
        return None
    labels = [d.item() if hasattr(d, "item") else d for d in np.asarray(domains, dtype=object).reshape(-1)]
    if len(labels) != num:
        raise ValueError(f"domains has {len(labels)} entries but R has {num} stages; give one domain per stage")
    return labels


def _first_columns(labels: list[Any], upto: int) -> dict[Any, int]:
    """Distinct domains among stages 0..upto -> the first column that holds each."""
    out: dict[Any, int] = {}
    for j in range(upto + 1):
        out.setdefault(labels[j], j)
    return out


def average_accuracy(R: Any, stage: int = -1, domains: Any = None) -> float:
    """Mean score over the segments seen so far after ``stage``: mean(R[stage, :stage+1]).

    With ``domains`` (one domain per stage), each domain seen so far counts once."""
    m = _matrix(R)
    k = _stage(stage, m.shape[0])
    labels = _stage_domains(domains, m.shape[0])
    cols = list(range(k + 1)) if labels is None else list(_first_columns(labels, k).values())
    row = m[k, cols]
    _need_finite(row, "average_accuracy")
    return float(row.mean())


def backward_transfer(R: Any, domains: Any = None) -> float:
    """BWT (Lopez-Paz & Ranzato 2017): mean over j < T-1 of R[T-1, j] - R[j, j].

    With ``domains`` (one domain per stage), a domain counts once, from the stage that trained
    it *last*: BWT = mean over domains d not trained in the final stage of
    R[T-1, j_d] - R[j_d, j_d], j_d = d's last training stage. A returning domain is therefore
    measured from its return, and relearning it is not counted as transfer. Raises a
    ``ValueError`` when no domain qualifies (every domain is trained in the final stage)."""
    m = _matrix(R)
    t = m.shape[0]
    if t < 2:
        raise ValueError("backward_transfer needs at least 2 stages")
    labels = _stage_domains(domains, t)
    if labels is None:
        cols = list(range(t - 1))
    else:
        last = {d: j for j, d in enumerate(labels)}
        cols = sorted(j for d, j in last.items() if j < t - 1)
        if not cols:
            raise ValueError("backward_transfer: every domain is trained in the final stage, none can transfer back")
    diff = m[t - 1, cols] - m[cols, cols]
    _need_finite(diff, "backward_transfer")
    return float(diff.mean())


def chaudhry_forgetting(R: Any, stage: int = -1, domains: Any = None) -> float:
    """Average forgetting after ``stage`` k (Chaudhry et al. 2018).

    f_j^k = max_{l = j..k-1} R[l, j] - R[k, j] for each j < k, averaged over j: the best score
    on j *since it was trained*, minus its score now (stages before j was trained do not count).

    With ``domains`` (one domain per stage), each domain trained before stage k and not trained
    at stage k counts once: the best score since its first training stage minus its score at k.
    Raises a ``ValueError`` when no domain qualifies.
    """
    m = _matrix(R)
    k = _stage(stage, m.shape[0])
    if k < 1:
        raise ValueError("chaudhry_forgetting needs a stage >= 1 (nothing can be forgotten at stage 0)")
    labels = _stage_domains(domains, m.shape[0])
    if labels is None:
        cols = list(range(k))
    else:
        cols = [j for d, j in _first_columns(labels, k - 1).items() if d != labels[k]]
        if not cols:
            raise ValueError(f"chaudhry_forgetting: every domain seen before stage {k} is trained at stage {k}")
    f = []
    for j in cols:
        since = m[j:k, j]
        now = m[k, j]
        _need_finite(np.append(since, now), "chaudhry_forgetting")
        f.append(since.max() - now)
    return float(np.mean(f))


# --------------------------------------------------------------------------------------------
# curves


def segments_from_labels(labels: Any, steps: Any = None) -> list[Segment]:
    """Runs of equal consecutive labels as :class:`Segment` s.

    ``steps`` gives the step number of each label (default ``0..n-1``); a segment stops where
    the next one starts, the last one at ``steps[-1] + 1``.
    """
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {lab.shape}")
    st = np.arange(lab.size) if steps is None else to_numpy(steps, "steps", np.int64)
    if st.shape != lab.shape:
        raise ValueError(f"steps has shape {st.shape} but labels has shape {lab.shape}")
    change = np.flatnonzero(lab[1:] != lab[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [lab.size]])
    out = []
    for a, b in zip(starts, stops):
        stop = int(st[b]) if b < lab.size else int(st[-1]) + 1
        dom = lab[a].item() if hasattr(lab[a], "item") else lab[a]
        out.append(Segment(dom, int(st[a]), stop))
    return out


def _curves(curves: Any) -> dict[Any, np.ndarray]:
    if isinstance(curves, Mapping):
        out = {d: to_numpy(c, f"curves[{d!r}]").reshape(-1) for d, c in curves.items()}
    else:
        arr = to_numpy(curves, "curves")
        if arr.ndim != 2:
            raise ValueError("curves must be a mapping domain -> 1-D curve or a (num_points, num_domains) array")
        out = {j: arr[:, j] for j in range(arr.shape[1])}
    lengths = {c.size for c in out.values()}
    if len(lengths) != 1:
        raise ValueError(f"all curves must have the same length, got lengths {sorted(lengths)}")
    return out


def _prepare(
    curves: Any, segments: Any, steps: Any, skip_missing: bool = False
) -> tuple[dict, list[Segment], np.ndarray]:
    cv = _curves(curves)
    n = next(iter(cv.values())).size
    st = np.arange(n) if steps is None else to_numpy(steps, "steps").reshape(-1)
    if st.size != n:
        raise ValueError(f"steps has {st.size} entries but the curves have {n} points")
    if np.any(np.diff(st) < 0):
        raise ValueError("steps must be non-decreasing")
    segs = _segments(segments, st)
    for s in segs:
        if s.domain not in cv and not skip_missing:
            raise ValueError(f"no curve for domain {s.domain!r} (curves are for {list(cv)})")
    return cv, segs, st


def _segments(segments: Any, steps: np.ndarray) -> list[Segment]:
    if isinstance(segments, np.ndarray) or (
        isinstance(segments, Sequence) and len(segments) > 0 and np.ndim(segments[0]) == 0
    ):
        lab = np.asarray(segments)
        if lab.size != steps.size:
            raise ValueError("a label sequence given as segments must have one label per curve point")
        return segments_from_labels(lab, steps)
    segs = [Segment(*s) for s in segments]
    if not segs:
        raise ValueError("segments is empty")
    for a, b in zip(segs, segs[1:]):
        if b.start < a.stop:
            raise ValueError(f"segments overlap or are out of order: {a} then {b}")
    return segs


def _best(values: np.ndarray, higher: bool) -> float:
    return float(np.nanmax(values) if higher else np.nanmin(values))


def _worst(values: np.ndarray, higher: bool) -> float:
    return float(np.nanmin(values) if higher else np.nanmax(values))


def paper_forgetting_per_domain(
    curves: Any,
    segments: Any,
    steps: Any = None,
    higher_is_better: bool = True,
    skip_missing: bool = False,
) -> dict[Any, float]:
    """Forgetting per domain as in the VASE paper's appendix A.5.

    For every segment that is followed by more of the stream: (best score of that segment's
    domain during the segment) - (worst score of the same domain at any later point). A
    domain's value is the mean over its segments; domains seen only in the final segment are
    absent. NaN curve points (not evaluated) are ignored.

    Args:
        curves: mapping domain -> 1-D per-point score, or a ``(num_points, num_domains)`` array
            whose column j is domain j.
        segments: :class:`Segment` triples ``(domain, start, stop)`` in step units, or one true
            domain label per curve point.
        steps: the step number of each curve point (default ``0..n-1``).
        higher_is_better: ``False`` for errors such as MSE (then it is the rise of the error).
        skip_missing: ignore segments of domains without a curve (e.g. a position probe
            that exists only for moving domains) instead of raising.
    """
    cv, segs, st = _prepare(curves, segments, steps, skip_missing)
    sign = 1.0 if higher_is_better else -1.0
    per: dict[Any, list[float]] = {}
    for seg in segs:
        if seg.domain not in cv:
            continue
        c = cv[seg.domain]
        during = c[(st >= seg.start) & (st < seg.stop)]
        after = c[st >= seg.stop]
        if not np.isfinite(during).any() or not np.isfinite(after).any():
            continue
        value = sign * (_best(during, higher_is_better) - _worst(after, higher_is_better))
        per.setdefault(seg.domain, []).append(value)
    return {d: float(np.mean(v)) for d, v in per.items()}


def paper_forgetting(
    curves: Any,
    segments: Any,
    steps: Any = None,
    higher_is_better: bool = True,
    skip_missing: bool = False,
) -> float:
    """Mean over domains of :func:`paper_forgetting_per_domain` (VASE paper, appendix A.5)."""
    per = paper_forgetting_per_domain(curves, segments, steps, higher_is_better, skip_missing)
    if not per:
        raise ValueError("no segment is followed by evaluated points: forgetting is undefined")
    return float(np.mean(list(per.values())))


def paper_max_accuracy(
    curves: Any,
    segments: Any,
    steps: Any = None,
    higher_is_better: bool = True,
    skip_missing: bool = False,
) -> float:
    """Mean over domains of the best score reached while training on that domain (the
    "max" column of the VASE paper's tables)."""
    cv, segs, st = _prepare(curves, segments, steps, skip_missing)
    best: dict[Any, list[float]] = {}
    for seg in segs:
        if seg.domain not in cv:
            continue
        during = cv[seg.domain][(st >= seg.start) & (st < seg.stop)]
        if np.isfinite(during).any():
            best.setdefault(seg.domain, []).append(_best(during, higher_is_better))
    if not best:
        raise ValueError("no segment has an evaluated point")
    agg = max if higher_is_better else min
    return float(np.mean([agg(v) for v in best.values()]))


def accuracy_matrix(
    curves: Any,
    segments: Any,
    steps: Any = None,
    reduce: str = "last",
    skip_missing: bool = False,
) -> np.ndarray:
    """Accuracy matrix ``R[i, j]`` from curves: the score of segment j's domain within stage i.

    ``reduce`` picks the value inside stage i: ``"last"`` evaluated point (default, "after
    training stage i"), ``"max"`` or ``"mean"``. Entries without an evaluated point are NaN,
    and so are the columns of domains without a curve when ``skip_missing``.
    """
    if reduce not in ("last", "max", "mean"):
        raise ValueError(f"reduce must be 'last', 'max' or 'mean', got {reduce!r}")
    cv, segs, st = _prepare(curves, segments, steps, skip_missing)
    r = np.full((len(segs), len(segs)), np.nan)
    for i, stage in enumerate(segs):
        inside = (st >= stage.start) & (st < stage.stop)
        for j, col in enumerate(segs):
            if col.domain not in cv:
                continue
            vals = cv[col.domain][inside]
            vals = vals[np.isfinite(vals)]
            if vals.size:
                r[i, j] = vals[-1] if reduce == "last" else (vals.max() if reduce == "max" else vals.mean())
    return r
