"""The loss formulas against hand-computed values and torch.distributions."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from vase_rl import objectives as O


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(5, 7, generator=g)
    logvar = torch.randn(5, 7, generator=g)
    ours = O.gaussian_kl_to_standard(mu, logvar)
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu)))
    torch.testing.assert_close(ours, ref)


def test_gaussian_kl_hand_values():
    # KL(N(1, 1) || N(0, 1)) = 0.5 ; KL(N(0, e^2) || N(0,1)) = 0.5 (e^2 - 1 - 2)
    out = O.gaussian_kl_to_standard(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(out, torch.tensor([0.5, 0.5 * (math.e**2 - 3.0)]))


def test_bernoulli_nll_matches_distribution():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 1, 4, 4, generator=g)
    target = (torch.rand(3, 1, 4, 4, generator=g) > 0.5).float()
    ref = -Bernoulli(logits=logits).log_prob(target).flatten(1).sum(1)
    torch.testing.assert_close(O.bernoulli_nll(logits, target), ref)


def test_gaussian_nll_matches_distribution():
    g = torch.Generator().manual_seed(2)
    mean, target = torch.rand(2, 3, 4, 4, generator=g), torch.rand(2, 3, 4, 4, generator=g)
    ref = -Normal(mean, 0.1).log_prob(target).flatten(1).sum(1)
    torch.testing.assert_close(O.gaussian_nll(mean, target, 0.1), ref)
    with pytest.raises(ValueError, match="likelihood"):
        O.reconstruction_nll(mean, target, "laplace")


def test_bernoulli_kl_matches_distribution():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(50, generator=g) * 3, torch.randn(50, generator=g) * 3
    ref = kl_divergence(Bernoulli(logits=a), Bernoulli(logits=b))
    torch.testing.assert_close(O.bernoulli_kl(a, b), ref, rtol=1e-4, atol=1e-5)
    assert torch.all(O.bernoulli_kl(a, a).abs() < 1e-6)


def test_gaussian_fixed_std_kl():
    ref = kl_divergence(Normal(torch.tensor(0.3), 0.1), Normal(torch.tensor(0.1), 0.1))
    torch.testing.assert_close(O.gaussian_kl_fixed_std(torch.tensor(0.3), torch.tensor(0.1), 0.1), ref)


def test_wasserstein2_hand_values():
    # W2^2(N(1, 4), N(0, 1)) = 1 + (2 - 1)^2 = 2 per coordinate
    w = O.wasserstein2_diag(
        torch.tensor([1.0]), torch.tensor([math.log(4.0)]), torch.tensor([0.0]), torch.tensor([0.0])
    )
    torch.testing.assert_close(w, torch.tensor([2.0]))
    mu, lv = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.all(O.wasserstein2_diag(mu, lv, mu, lv) == 0)


def test_capacity_schedule():
    assert O.capacity_at(0, 35.0, 6.3e-6) == 0.0
    assert O.capacity_at(1000, 35.0, 6.3e-6) == pytest.approx(35.0 * 6.3e-6 * 1000)
    assert O.capacity_at(10**7, 35.0, 6.3e-6) == 35.0  # saturates
    with pytest.raises(ValueError):
        O.capacity_at(-1, 35.0, 1e-3)


def test_capacity_penalty_reductions_differ_by_batch_variance():
    kl = torch.tensor([1.0, 3.0, 8.0])
    c, gamma = 2.0, 100.0
    batch = O.capacity_penalty(kl, c, gamma, "batch_mean")
    per = O.capacity_penalty(kl, c, gamma, "per_sample")
    assert batch.item() == pytest.approx(gamma * (4.0 - 2.0) ** 2)
    assert per.item() == pytest.approx(gamma * ((1 - 2) ** 2 + (3 - 2) ** 2 + (8 - 2) ** 2) / 3)
    assert (per - batch).item() == pytest.approx(gamma * kl.var(unbiased=False).item(), rel=1e-5)
    with pytest.raises(ValueError):
        O.capacity_penalty(kl, c, gamma, "l1")


def test_reduce_features():
    x = torch.arange(12.0).reshape(2, 2, 3)
    assert O.reduce_features(x, "sum").item() == pytest.approx((15 + 51) / 2)
    assert O.reduce_features(x, "mean").item() == pytest.approx(5.5)


# --- the explained fraction (domain inference's score) and the KL split ---------------------------
def test_perfect_and_trivial_nll_match_distributions():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 2, 5, 5, generator=g)
    ref = -Bernoulli(probs=x.clamp(1e-6, 1 - 1e-6), validate_args=False).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(O.perfect_nll(x, "bernoulli"), ref, rtol=1e-4, atol=1e-4)
    mean = x.mean((2, 3), keepdim=True).expand_as(x)  # per image and channel
    ref = -Bernoulli(probs=mean, validate_args=False).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(O.trivial_nll(x, "bernoulli"), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(O.trivial_nll(x, "gaussian", 0.2), -Normal(mean, 0.2).log_prob(x).flatten(1).sum(1))
    torch.testing.assert_close(O.perfect_nll(x, "gaussian", 0.2), -Normal(x, 0.2).log_prob(x).flatten(1).sum(1))


def test_explained_fraction_hand_values_and_ink_invariance():
    x = torch.zeros(2, 1, 10, 10)
    x[0, 0, :5] = 1.0  # half the pixels on
    x[1, 0, 0, :2] = 1.0  # 2 % ink
    perfect, trivial = O.perfect_nll(x, "bernoulli"), O.trivial_nll(x, "bernoulli")
    # a model that knows the image exactly explains all, one that knows only its mean explains nothing
    assert torch.allclose(O.explained_fraction(perfect, x, "bernoulli"), torch.ones(2), atol=1e-5)
    torch.testing.assert_close(O.explained_fraction(trivial, x, "bernoulli"), torch.zeros(2), atol=1e-5, rtol=0)
    halfway = perfect + 0.5 * (trivial - perfect)  # halfway in nats, whatever the amount of ink
    torch.testing.assert_close(O.explained_fraction(halfway, x, "bernoulli"), torch.full((2,), 0.5))
    # worse than the trivial model is negative, and clipped below at -1
    assert O.explained_fraction(trivial + 1e4, x, "bernoulli").tolist() == [-1.0, -1.0]
    # a blank image has no explainable nats: the denominator is bounded (no division by zero)
    blank = torch.zeros(1, 1, 10, 10)
    assert torch.isfinite(O.explained_fraction(torch.tensor([5.0]), blank, "bernoulli")).all()


def test_kl_splits_exactly_into_information_and_marginal_mismatch():
    g = torch.Generator().manual_seed(5)
    mu, logvar = torch.randn(256, 4, generator=g), torch.randn(256, 4, generator=g) * 0.5
    info, marginal = O.marginal_information_split(mu, logvar)
    torch.testing.assert_close(info + marginal, O.gaussian_kl_to_standard(mu, logvar).mean(0), rtol=1e-5, atol=1e-6)
    assert (info >= 0).all() and (marginal >= 0).all()
    # a constant shift of every posterior mean is pure marginal mismatch, no information
    info2, marginal2 = O.marginal_information_split(mu + 3.0, logvar)
    torch.testing.assert_close(info2, info)
    assert (marginal2 > marginal + 4.0).all()
    # posteriors equal to the prior carry nothing and are typical
    info0, marginal0 = O.marginal_information_split(torch.zeros(8, 2), torch.zeros(8, 2))
    assert torch.allclose(info0, torch.zeros(2)) and torch.allclose(marginal0, torch.zeros(2))
