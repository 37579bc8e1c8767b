"""Known-answer tests for MIG and DCI (vase_rl.evaluation.disentanglement)."""

import math

import numpy as np
import pytest

from vase_rl.evaluation import dci, dci_from_importance, dci_scores, discretize, mig, mig_scores, mutual_info_matrix

N = 2000
CARDINALITIES = (3, 6, 10, 4, 8)


@pytest.fixture(scope="module")
def discrete_factors():
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(0, c, size=N) for c in CARDINALITIES], axis=1).astype(float)


@pytest.fixture(scope="module")
def continuous_factors():
    return np.random.default_rng(1).uniform(-1.0, 1.0, size=(N, 4))


# ------------------------------------------------------------------------------ helpers


def test_discretize_equal_width_bins():
    codes = discretize(np.array([0.0, 0.24, 0.26, 0.5, 0.74, 1.0]), 4)
    np.testing.assert_array_equal(codes, [0, 0, 1, 2, 2, 3])
    np.testing.assert_array_equal(discretize(np.full(5, 3.0), 20), np.zeros(5))


def test_mutual_info_hand_computed():
    # v = 0 0 0 0 1 1 1 1, z = 0 0 0 1 1 1 1 1 (repeated to pass the sample minimum)
    v = np.tile([0, 0, 0, 0, 1, 1, 1, 1], 3).astype(float)
    z = np.tile([0, 0, 0, 1, 1, 1, 1, 1], 3).astype(float)
    mi, h = mutual_info_matrix(z, v, num_bins=2)
    expected = 3 / 8 * math.log(2) + 1 / 8 * math.log(2 / 5) + 1 / 2 * math.log(8 / 5)
    assert mi[0, 0] == pytest.approx(expected, abs=1e-12)
    assert h[0] == pytest.approx(math.log(2), abs=1e-12)


# ------------------------------------------------------------------------------ MIG


def test_mig_hand_computed_two_latents():
    v = np.tile([0, 0, 0, 0, 1, 1, 1, 1], 3).astype(float)
    z_good = np.tile([0, 0, 0, 1, 1, 1, 1, 1], 3).astype(float)
    z_indep = np.tile([0, 1, 0, 1, 0, 1, 0, 1], 3).astype(float)  # independent of v: MI = 0
    mi_good = 3 / 8 * math.log(2) + 1 / 8 * math.log(2 / 5) + 1 / 2 * math.log(8 / 5)
    score = mig(np.stack([z_indep, z_good], 1), v, num_bins=2)
    assert score == pytest.approx(mi_good / math.log(2), abs=1e-12)


def test_mig_identity_is_one(discrete_factors):
    assert 0.97 <= mig(discrete_factors, discrete_factors) <= 1.0


def test_mig_noise_is_low(discrete_factors):
    noise = np.random.default_rng(2).normal(size=(N, 5))
    assert mig(noise, discrete_factors) < 0.05


def test_mig_permuted_and_rescaled_latents(discrete_factors):
    perm = [3, 0, 4, 1, 2]
    base = mig(discrete_factors, discrete_factors)
    assert mig(discrete_factors[:, perm] * -2.5 + 7.0, discrete_factors) == pytest.approx(base, abs=1e-9)


def test_mig_duplicated_latent(discrete_factors):
    every_twice = np.concatenate([discrete_factors, discrete_factors], axis=1)
    assert mig(every_twice, discrete_factors) == pytest.approx(0.0, abs=1e-12)
    one_twice = np.concatenate([discrete_factors, discrete_factors[:, :1]], axis=1)
    scores = mig_scores(one_twice, discrete_factors)
    assert scores["per_factor"][0] == pytest.approx(0.0, abs=1e-12)
    assert scores["mig"] == pytest.approx(np.mean(scores["per_factor"][1:]) * 4 / 5, abs=1e-12)
    assert 0.97 * 4 / 5 <= scores["mig"] <= 4 / 5


def test_mig_extra_noise_dims_keep_score(discrete_factors):
    noise = np.random.default_rng(3).normal(size=(N, 5))
    assert mig(np.concatenate([discrete_factors, noise], 1), discrete_factors) > 0.95


def test_mig_continuous_factors(continuous_factors):
    f = continuous_factors
    assert mig(f, f, discrete_factors=False) > 0.9
    assert mig(np.random.default_rng(4).normal(size=f.shape), f) < 0.05


def test_mig_skips_constant_factor(discrete_factors):
    f = np.concatenate([discrete_factors, np.zeros((N, 1))], 1)
    scores = mig_scores(discrete_factors, f)
    assert scores["skipped_factors"] == [5]
    assert np.isnan(scores["per_factor"][5])
    assert scores["mig"] == pytest.approx(mig(discrete_factors, discrete_factors))
    with pytest.raises(ValueError, match="constant"):
        mig(discrete_factors, np.zeros((N, 2)))


def test_mig_accepts_torch_tensors(discrete_factors):
    torch = pytest.importorskip("torch")
    z = torch.tensor(discrete_factors, requires_grad=True)
    assert mig(z, discrete_factors) == pytest.approx(mig(discrete_factors, discrete_factors))


# ------------------------------------------------------------------------------ DCI


def test_dci_from_importance_hand_computed():
    ident = dci_from_importance(np.eye(3))
    assert ident["disentanglement"] == pytest.approx(1.0) and ident["completeness"] == pytest.approx(1.0)
    flat = dci_from_importance(np.ones((3, 3)))
    assert flat["disentanglement"] == pytest.approx(0.0, abs=1e-12)
    assert flat["completeness"] == pytest.approx(0.0, abs=1e-12)
    # row 0 -> only factor 0 (D_0 = 1), row 1 split evenly (D_1 = 0), weights 1/3, 2/3
    # column 0 split evenly (C_0 = 0), column 1 only latent 1 (C_1 = 1), weights 2/3, 1/3
    r = dci_from_importance([[1.0, 0.0], [1.0, 1.0]])
    assert r["disentanglement"] == pytest.approx(1 / 3)
    assert r["completeness"] == pytest.approx(1 / 3)
    np.testing.assert_allclose(r["per_latent_disentanglement"], [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(r["latent_weights"], [1 / 3, 2 / 3])
    # three factors, entropy in base 3: p = (1/2, 1/2, 0) -> H_3 = ln 2 / ln 3
    r3 = dci_from_importance([[2.0, 2.0, 0.0]])
    assert r3["disentanglement"] == pytest.approx(1 - math.log(2) / math.log(3))
    assert r3["completeness"] == pytest.approx(1.0)  # a single latent is trivially complete
    with pytest.raises(ValueError):
        dci_from_importance([[-1.0, 1.0]])


def test_dci_identity_permuted_and_noise(discrete_factors):
    f = discrete_factors[:400]  # gradient boosting (the default) is slow; 400 samples suffice here
    ident = dci_scores(f, f)
    assert ident["disentanglement"] > 0.97 and ident["completeness"] > 0.97
    assert ident["informativeness"] > 0.97
    assert dci(f[:, [2, 4, 0, 3, 1]], f, method="random_forest") > 0.97
    noise = dci_scores(np.random.default_rng(5).normal(size=(400, 5)), f)
    assert noise["disentanglement"] < 0.1
    assert noise["informativeness"] < 0.4  # near chance: 1/3 .. 1/10 per factor


def test_dci_extra_noise_dims(discrete_factors):
    z = np.concatenate([discrete_factors, np.random.default_rng(6).normal(size=(N, 5))], 1)
    assert dci(z, discrete_factors, method="random_forest") > 0.9


def test_dci_detects_mixing(continuous_factors):
    f = continuous_factors[:, :2]
    mixed = np.stack([f[:, 0] + f[:, 1], f[:, 0] - f[:, 1]], 1)
    # with a linear read-out each mixed latent loads equally on both factors: D = C = 0
    lasso = dci_scores(mixed, f, method="lasso", lasso_alpha=1e-4)
    assert lasso["disentanglement"] < 0.02 and lasso["completeness"] < 0.02
    assert lasso["informativeness"] > 0.99
    assert dci(f, f, method="lasso", lasso_alpha=1e-4) > 0.99
    assert dci(mixed, f) < dci(f, f) - 0.3


def test_dci_gradient_boosting_option(discrete_factors):
    f = discrete_factors[:400, :2]
    assert dci(f, f, method="gradient_boosting", n_estimators=10) > 0.95
    assert dci(f, f, method="random_forest") > 0.95


def _entropy(p: np.ndarray, base: int) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / math.log(base))


def test_dci_default_is_scikit_learns_gradient_boosting():
    """The default predictor is disentanglement_lib's: scikit-learn's GradientBoostingClassifier
    with its default settings. Reference computed here from sklearn directly and the DCI formulas
    written out (D = sum_i rho_i (1 - H_K(P_i.)), C = sum_k rho_k (1 - H_L(P_.k)))."""
    ensemble = pytest.importorskip("sklearn.ensemble")
    rng = np.random.default_rng(11)
    v = np.stack([rng.integers(0, 3, 300), rng.integers(0, 4, 300)], 1).astype(float)
    z = np.stack([v[:, 0] + 0.3 * rng.normal(size=300), v[:, 1] + 0.3 * rng.normal(size=300), rng.normal(size=300)], 1)
    v_te = np.stack([rng.integers(0, 3, 100), rng.integers(0, 4, 100)], 1).astype(float)
    z_te = np.stack([v_te[:, 0], v_te[:, 1], rng.normal(size=100)], 1)
    out = dci_scores(z, v, test_latents=z_te, test_factors=v_te)
    assert out["method"] == "gradient_boosting" and (out["num_train"], out["num_test"]) == (300, 100)
    assert out["standard_sample_size"] is False

    mean, sd = z.mean(0), z.std(0)
    imp = np.zeros((3, 2))
    acc = []
    for k in range(2):
        model = ensemble.GradientBoostingClassifier(random_state=0).fit((z - mean) / sd, v[:, k].astype(int))
        imp[:, k] = model.feature_importances_
        acc.append(np.mean(model.predict((z_te - mean) / sd) == v_te[:, k]))
    np.testing.assert_allclose(out["importance"], imp, atol=1e-12)
    rho_latent, rho_factor = imp.sum(1) / imp.sum(), imp.sum(0) / imp.sum()
    d = sum(rho_latent[i] * (1 - _entropy(imp[i] / imp[i].sum(), 2)) for i in range(3))
    c = sum(rho_factor[k] * (1 - _entropy(imp[:, k] / imp[:, k].sum(), 3)) for k in range(2))
    assert out["disentanglement"] == pytest.approx(d, abs=1e-9)
    assert out["completeness"] == pytest.approx(c, abs=1e-9)
    assert out["informativeness"] == pytest.approx(np.mean(acc), abs=1e-12)


def test_sample_size_is_reported(discrete_factors):
    m = mig_scores(discrete_factors, discrete_factors)
    assert m["num_samples"] == N and m["standard_sample_size"] is False
    assert dci_scores(discrete_factors[:200], discrete_factors[:200], method="lasso")["num_train"] == 150
    with pytest.raises(ValueError, match="both"):
        dci_scores(discrete_factors, discrete_factors, test_latents=discrete_factors)


def test_dci_deterministic(discrete_factors):
    f = discrete_factors[:300]
    z = f + np.random.default_rng(8).normal(scale=0.5, size=f.shape)
    a, b = dci_scores(z, f), dci_scores(z, f)
    np.testing.assert_array_equal(a["importance"], b["importance"])


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("fn", [mig, dci])
def test_validation_errors(fn):
    f = np.random.default_rng(9).integers(0, 3, size=(100, 2)).astype(float)
    with pytest.raises(ValueError, match="same number of samples"):
        fn(f[:99], f)
    bad = f.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        fn(bad, f)
    with pytest.raises(ValueError, match="non-finite"):
        fn(f, np.where(bad == bad, bad, np.inf))
    with pytest.raises(ValueError, match="too few samples"):
        fn(f[:5], f[:5])
    with pytest.raises(ValueError, match="shape"):
        fn(f[:, :, None], f)


def test_argument_errors():
    f = np.random.default_rng(10).integers(0, 3, size=(100, 2)).astype(float)
    with pytest.raises(ValueError, match="discrete_factors"):
        mig(f, f, discrete_factors=[True])
    with pytest.raises(ValueError, match="method"):
        dci(f, f, method="svm")
    with pytest.raises(ValueError, match="test_fraction"):
        dci(f, f, test_fraction=1.0)


def test_dci_accepts_float_valued_discrete_factors():
    # 8 distinct float positions: treated as discrete (<= 20 values) and fitted by a classifier
    rng = np.random.default_rng(0)
    pos = rng.integers(0, 8, 400) / 7.0 * 0.6 + 0.2
    shape = rng.integers(0, 3, 400).astype(float)
    latents = np.stack(
        [pos + 0.01 * rng.normal(size=400), shape + 0.01 * rng.normal(size=400), rng.normal(size=400)], 1
    )
    out = dci_scores(latents, np.stack([pos, shape], 1), method="random_forest")
    assert out["informativeness"] > 0.9
    assert out["disentanglement"] > 0.8
