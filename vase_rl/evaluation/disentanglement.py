"""Disentanglement metrics against ground-truth generative factors.

Two metrics, with disentanglement_lib-style signatures ``fn(latents, factors, ...)``, where
``latents`` is ``(num_samples, num_latents)`` (normally the encoder mean) and ``factors`` is
``(num_samples, num_factors)``, paired row by row:

* **MIG**, the mutual information gap of Chen et al. 2018, "Isolating Sources of
  Disentanglement in Variational Autoencoders". Every latent is discretised into ``num_bins``
  equal-width histogram bins; for each factor v_k the gap between the largest and the second
  largest I(z_j; v_k) is divided by H(v_k), and the gaps are averaged over factors. This is the
  estimator disentanglement_lib uses (not the full-grid sampling estimator of the paper).
* **DCI**, disentanglement / completeness / informativeness of Eastwood & Williams 2018,
  "A Framework for the Quantitative Evaluation of Disentangled Representations". One regressor
  or classifier per factor gives an importance matrix R[latent, factor] (by default
  scikit-learn's gradient-boosted trees with their default settings, 100 trees of depth 3, the
  predictor disentanglement_lib uses);
  D = sum_i rho_i (1 - H_K(P_i.)) with rho_i the share of total importance held by latent i and
  the entropy taken in base K = #factors; C = sum_k rho_k (1 - H_L(P_.k)) in base L = #latents;
  I = held-out prediction quality (accuracy for discrete factors, R^2 clipped to [0, 1] for
  continuous ones).

Sample sizes: disentanglement_lib scores MIG on 10,000 samples and DCI on 10,000 training plus
5,000 test samples (:data:`STANDARD_NUM_SAMPLES`, :data:`STANDARD_NUM_TEST`). The histogram MI
estimate is biased upwards on small samples, so scores from fewer samples are not comparable:
the ``*_scores`` functions report ``num_samples`` and whether it reaches the standard size.

Mutual information is in nats. scikit-learn is only needed for DCI and is imported lazily.
Pitfalls worth remembering when reading scores: mean vs sampled representations give
different numbers, and non-identifiable factors (e.g. dSprites orientation symmetries) cap
the achievable score below 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vase_rl.evaluation._arrays import as_2d, check_pair

__all__ = [
    "MIN_SAMPLES",
    "STANDARD_NUM_SAMPLES",
    "STANDARD_NUM_TEST",
    "MAX_DISCRETE_VALUES",
    "discretize",
    "mutual_info_matrix",
    "mig",
    "mig_scores",
    "dci",
    "dci_scores",
    "dci_from_importance",
]

#: Fewer samples than this make histogram / split based estimates meaningless: we refuse them.
MIN_SAMPLES = 10
#: disentanglement_lib's sample sizes: MIG and DCI's training set, and DCI's held-out set.
STANDARD_NUM_SAMPLES = 10_000
STANDARD_NUM_TEST = 5_000
#: With ``discrete_factors=None`` a factor with at most this many distinct values is discrete.
MAX_DISCRETE_VALUES = 20


# --------------------------------------------------------------------------------------------
# discretisation and mutual information


def discretize(column: np.ndarray, num_bins: int) -> np.ndarray:
    """Bin a 1-D array into ``num_bins`` equal-width bins over its range; returns ints in
    ``[0, num_bins)``. A constant column falls into bin 0."""
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    column = np.asarray(column, dtype=np.float64)
    lo, hi = column.min(), column.max()
    if hi <= lo:
        return np.zeros(column.shape[0], dtype=np.int64)
    edges = np.linspace(lo, hi, num_bins + 1)
    # inner edges only: values equal to ``hi`` land in the last bin
    return np.digitize(column, edges[1:-1], right=False).astype(np.int64)


def _resolve_discrete(factors: np.ndarray, discrete_factors: bool | Sequence[bool] | None) -> np.ndarray:
    num_factors = factors.shape[1]
    if discrete_factors is None:
        return np.array([np.unique(factors[:, k]).size <= MAX_DISCRETE_VALUES for k in range(num_factors)], dtype=bool)
    if isinstance(discrete_factors, (bool, np.bool_)):
        return np.full(num_factors, bool(discrete_factors))
    flags = np.asarray(discrete_factors, dtype=bool).reshape(-1)
    if flags.size != num_factors:
        raise ValueError(f"discrete_factors has {flags.size} entries but there are {num_factors} factors")
    return flags


def _codes(column: np.ndarray, discrete: bool, num_bins: int) -> np.ndarray:
    if discrete:
        return np.unique(column, return_inverse=True)[1].reshape(-1).astype(np.int64)
    return discretize(column, num_bins)


def _entropy_of_codes(codes: np.ndarray) -> float:
    p = np.bincount(codes) / codes.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _mutual_info_codes(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) between two integer code sequences."""
    joint = np.zeros((a.max() + 1, b.max() + 1), dtype=np.float64)
    np.add.at(joint, (a, b), 1.0)
    joint /= a.size
    pa = joint.sum(axis=1, keepdims=True)
    pb = joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float(max(0.0, (joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum()))


def mutual_info_matrix(
    latents: Any,
    factors: Any,
    num_bins: int = 20,
    discrete_factors: bool | Sequence[bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Discrete mutual information between every latent and every factor.

    Returns ``(mi, factor_entropy)``: ``mi[j, k] = I(z_j; v_k)`` in nats with ``z_j`` discretised
    into ``num_bins`` equal-width bins, and ``factor_entropy[k] = H(v_k)``. Discrete factors are
    used as categories; continuous ones are discretised like the latents.
    """
    z, v = check_pair(latents, factors, MIN_SAMPLES)
    flags = _resolve_discrete(v, discrete_factors)
    z_codes = [discretize(z[:, j], num_bins) for j in range(z.shape[1])]
    v_codes = [_codes(v[:, k], bool(flags[k]), num_bins) for k in range(v.shape[1])]
    mi = np.array([[_mutual_info_codes(zc, vc) for vc in v_codes] for zc in z_codes])
    entropy = np.array([_entropy_of_codes(vc) for vc in v_codes])
    return mi, entropy


# --------------------------------------------------------------------------------------------
# MIG


def mig_scores(
    latents: Any,
    factors: Any,
    num_bins: int = 20,
    discrete_factors: bool | Sequence[bool] | None = None,
) -> dict[str, Any]:
    """MIG with its ingredients (Chen et al. 2018, histogram estimator).

    Returns a dict with ``"mig"`` (float in [0, 1]), ``"per_factor"`` (normalised gap per factor,
    NaN for skipped factors), ``"mutual_info"`` (latents x factors, nats), ``"factor_entropy"``
    and ``"skipped_factors"`` (indices of constant factors, which have H = 0 and are left out
    of the mean), ``"num_samples"`` and ``"standard_sample_size"`` (at least
    :data:`STANDARD_NUM_SAMPLES`). With a single latent the second-best MI is taken to be 0.
    """
    mi, entropy = mutual_info_matrix(latents, factors, num_bins, discrete_factors)
    skipped = [k for k in range(mi.shape[1]) if entropy[k] <= 1e-12]
    if len(skipped) == mi.shape[1]:
        raise ValueError("every factor is constant (zero entropy): MIG is undefined")
    ordered = np.sort(mi, axis=0)[::-1]  # descending along latents
    second = ordered[1] if mi.shape[0] > 1 else np.zeros(mi.shape[1])
    gap = np.full(mi.shape[1], np.nan)
    keep = np.array([k not in skipped for k in range(mi.shape[1])])
    gap[keep] = (ordered[0][keep] - second[keep]) / entropy[keep]
    gap = np.clip(gap, 0.0, 1.0)  # plug-in MI of a discretised copy can never exceed H(v)
    n = int(as_2d(latents, "latents").shape[0])
    return {
        "mig": float(np.nanmean(gap)),
        "num_samples": n,
        "standard_sample_size": n >= STANDARD_NUM_SAMPLES,
        "per_factor": gap,
        "mutual_info": mi,
        "factor_entropy": entropy,
        "skipped_factors": skipped,
    }


def mig(
    latents: Any,
    factors: Any,
    num_bins: int = 20,
    discrete_factors: bool | Sequence[bool] | None = None,
) -> float:
    """Mutual information gap (Chen et al. 2018) in [0, 1]; see :func:`mig_scores`.

    Args:
        latents: ``(num_samples, num_latents)`` representation (e.g. encoder means).
        factors: ``(num_samples, num_factors)`` ground-truth factors of the same samples.
        num_bins: equal-width histogram bins per latent (and per continuous factor).
        discrete_factors: ``None`` (a factor with <= 20 distinct values is discrete), one bool
            for all factors, or one bool per factor.
    """
    return mig_scores(latents, factors, num_bins, discrete_factors)["mig"]


# --------------------------------------------------------------------------------------------
# DCI


def _entropy_normalised(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    """Entropy of distributions along ``axis`` in the given base (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=axis) / np.log(base)


def dci_from_importance(importance: Any) -> dict[str, Any]:
    """Disentanglement and completeness (Eastwood & Williams 2018) of an importance matrix.

    ``importance`` is ``(num_latents, num_factors)`` and non-negative. Latents (factors) with
    zero total importance get weight 0. With one factor every latent is trivially
    disentangled (D_i = 1); with one latent every factor is trivially complete (C_k = 1).
    Returns ``disentanglement``, ``completeness``, ``per_latent_disentanglement``,
    ``per_factor_completeness``, ``latent_weights`` and ``factor_weights``.
    """
    r = np.asarray(importance, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"importance must be (num_latents, num_factors), got shape {r.shape}")
    if (r < 0).any() or not np.isfinite(r).all():
        raise ValueError("importance must be finite and non-negative")
    num_latents, num_factors = r.shape
    total = r.sum()
    row = r.sum(axis=1)
    col = r.sum(axis=0)
    if num_factors == 1:
        d_i = np.ones(num_latents)
    else:
        p = np.divide(r, row[:, None], out=np.zeros_like(r), where=row[:, None] > 0)
        d_i = np.where(row > 0, 1.0 - _entropy_normalised(p, num_factors, axis=1), 0.0)
    if num_latents == 1:
        c_k = np.ones(num_factors)
    else:
        p = np.divide(r, col[None, :], out=np.zeros_like(r), where=col[None, :] > 0)
        c_k = np.where(col > 0, 1.0 - _entropy_normalised(p, num_latents, axis=0), 0.0)
    if total > 0:
        w_latent, w_factor = row / total, col / total
    else:
        w_latent, w_factor = np.zeros(num_latents), np.zeros(num_factors)
    return {
        "disentanglement": float(np.clip((w_latent * d_i).sum(), 0.0, 1.0)),
        "completeness": float(np.clip((w_factor * c_k).sum(), 0.0, 1.0)),
        "per_latent_disentanglement": d_i,
        "per_factor_completeness": c_k,
        "latent_weights": w_latent,
        "factor_weights": w_factor,
    }


_METHODS = ("random_forest", "gradient_boosting", "lasso")


def _fit_one(
    method: str, discrete: bool, x_tr, y_tr, x_te, y_te, *, random_state, n_estimators, max_depth, lasso_alpha
):
    """Fit one predictor; return (importance over latents, train score, test score)."""
    try:
        from sklearn import ensemble, linear_model
    except ImportError as err:  # pragma: no cover - sklearn is a dev/eval dependency
        raise ImportError("dci needs scikit-learn: pip install scikit-learn (or vase-rl[dev])") from err

    if method == "lasso":
        mu, sd = y_tr.mean(), y_tr.std()
        sd = sd if sd > 0 else 1.0
        model = linear_model.Lasso(alpha=lasso_alpha, max_iter=5000)
        model.fit(x_tr, (y_tr - mu) / sd)
        imp = np.abs(model.coef_)
        scores = [_r2(model.predict(x) * sd + mu, y) for x, y in ((x_tr, y_tr), (x_te, y_te))]
        return imp, scores[0], scores[1]

    if method == "random_forest":
        cls = ensemble.RandomForestClassifier if discrete else ensemble.RandomForestRegressor
        model = cls(
            n_estimators=n_estimators, max_depth=max_depth, max_features=None, random_state=random_state, n_jobs=1
        )
    else:
        cls = ensemble.GradientBoostingClassifier if discrete else ensemble.GradientBoostingRegressor
        model = cls(n_estimators=n_estimators, max_depth=3, random_state=random_state)
    if discrete:
        # class labels as integer codes: scikit-learn rejects float targets it reads as
        # continuous ("Unknown label type"), e.g. a factor with 8 distinct float positions
        codes = np.unique(np.concatenate([y_tr, y_te]), return_inverse=True)[1].reshape(-1)
        y_tr, y_te = codes[: len(y_tr)], codes[len(y_tr) :]
    if discrete and np.unique(y_tr).size < 2:
        # a classifier cannot be fitted on a single class: no latent carries information
        return np.zeros(x_tr.shape[1]), 1.0, float(np.mean(y_te == y_tr[0]))
    model.fit(x_tr, y_tr)
    imp = np.clip(np.asarray(model.feature_importances_, dtype=np.float64), 0.0, None)  # round-off
    if discrete:
        scores = [float(np.mean(model.predict(x) == y)) for x, y in ((x_tr, y_tr), (x_te, y_te))]
    else:
        scores = [_r2(model.predict(x), y) for x, y in ((x_tr, y_tr), (x_te, y_te))]
    return imp, scores[0], scores[1]


def _r2(pred: np.ndarray, y: np.ndarray) -> float:
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot <= 0:
        return 1.0 if np.allclose(pred, y) else 0.0
    return float(np.clip(1.0 - ((y - pred) ** 2).sum() / ss_tot, 0.0, 1.0))


def dci_scores(
    latents: Any,
    factors: Any,
    *,
    method: str = "gradient_boosting",
    discrete_factors: bool | Sequence[bool] | None = None,
    test_fraction: float = 0.25,
    test_latents: Any = None,
    test_factors: Any = None,
    random_state: int = 0,
    n_estimators: int | None = None,
    max_depth: int | None = 8,
    lasso_alpha: float = 0.01,
) -> dict[str, Any]:
    """DCI scores (Eastwood & Williams 2018) from one predictor per factor.

    Args:
        latents: ``(num_samples, num_latents)``; standardised internally (with the training
            set's mean and spread).
        factors: ``(num_samples, num_factors)``.
        method: importance source: ``"gradient_boosting"`` (default: scikit-learn's
            ``GradientBoostingClassifier`` / ``Regressor`` with their default 100 trees of
            depth 3, the predictor of disentanglement_lib), ``"random_forest"`` (all features
            considered at every split; much faster, but not the standard: on the same data its
            D differs, e.g. 0.35 against 0.48 for gradient boosting, see issue 13) or
            ``"lasso"`` (|coefficients| on standardised latents; treats every factor as
            continuous, as in the original paper's lasso variant).
        discrete_factors: as in :func:`mig`; discrete factors get a classifier.
        test_fraction: held-out share for informativeness (random split, ``random_state``)
            when no separate test set is given.
        test_latents, test_factors: a separate held-out set (disentanglement_lib draws 5,000
            fresh samples); then all of ``latents`` / ``factors`` train the predictors.
        n_estimators: trees per predictor; ``None`` gives 100 for gradient boosting
            (scikit-learn's and disentanglement_lib's default) and 10 for the random forest.
        max_depth: depth limit of the random-forest trees (gradient boosting uses depth 3).

    Each factor's importance column is normalised to sum to 1 (tree importances already do),
    so every factor that is predicted at all counts equally in the weights.

    Returns a dict with ``disentanglement``, ``completeness``, ``informativeness`` (mean test
    score: accuracy for discrete factors, R^2 clipped to [0, 1] for continuous ones),
    ``informativeness_train``, ``importance`` (latents x factors), the per-latent /
    per-factor terms of :func:`dci_from_importance`, ``method``, ``num_train``, ``num_test``
    and ``standard_sample_size`` (training set of at least :data:`STANDARD_NUM_SAMPLES`).
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    z, v = check_pair(latents, factors, MIN_SAMPLES)
    if (test_latents is None) != (test_factors is None):
        raise ValueError("give both test_latents and test_factors, or neither")
    if test_latents is not None:
        z_te, v_te = check_pair(test_latents, test_factors, 2)
        if z_te.shape[1] != z.shape[1] or v_te.shape[1] != v.shape[1]:
            raise ValueError(
                f"the test set has {z_te.shape[1]} latents / {v_te.shape[1]} factors, the training set "
                f"{z.shape[1]} / {v.shape[1]}"
            )
        n_train = z.shape[0]
        z, v = np.concatenate([z, z_te]), np.concatenate([v, v_te])
        tr, te = np.arange(n_train), np.arange(n_train, z.shape[0])
    else:
        n = z.shape[0]
        n_test = min(n - 2, max(2, int(round(test_fraction * n))))
        perm = np.random.default_rng(random_state).permutation(n)
        te, tr = perm[:n_test], perm[n_test:]
    flags = _resolve_discrete(v, discrete_factors)
    if method == "lasso":
        flags = np.zeros_like(flags)
    if n_estimators is None:
        n_estimators = 100 if method == "gradient_boosting" else 10
    sd = z[tr].std(axis=0)
    z = (z - z[tr].mean(axis=0)) / np.where(sd > 0, sd, 1.0)

    num_latents, num_factors = z.shape[1], v.shape[1]
    importance = np.zeros((num_latents, num_factors))
    train_scores, test_scores = np.zeros(num_factors), np.zeros(num_factors)
    for k in range(num_factors):
        imp, s_tr, s_te = _fit_one(
            method,
            bool(flags[k]),
            z[tr],
            v[tr, k],
            z[te],
            v[te, k],
            random_state=random_state,
            n_estimators=n_estimators,
            max_depth=max_depth,
            lasso_alpha=lasso_alpha,
        )
        total = imp.sum()
        importance[:, k] = imp / total if total > 0 else 0.0
        train_scores[k], test_scores[k] = s_tr, s_te
    out = dci_from_importance(importance)
    out.update(
        informativeness=float(test_scores.mean()),
        informativeness_train=float(train_scores.mean()),
        per_factor_informativeness=test_scores,
        importance=importance,
        discrete_factors=flags,
        method=method,
        num_train=int(tr.size),
        num_test=int(te.size),
        standard_sample_size=bool(tr.size >= STANDARD_NUM_SAMPLES),
    )
    return out


def dci(latents: Any, factors: Any, **kwargs: Any) -> float:
    """DCI disentanglement score in [0, 1] (Eastwood & Williams 2018); see :func:`dci_scores`
    for the keyword arguments and the completeness / informativeness companions."""
    return dci_scores(latents, factors, **kwargs)["disentanglement"]
