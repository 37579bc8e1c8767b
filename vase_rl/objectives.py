"""Pure loss functions of VASE (``VASE_SPEC.md`` §3 and §7).

- likelihoods: Bernoulli on logits and fixed-variance Gaussian, negative log-likelihood
  summed over pixels, one value per example;
- closed-form KL of a diagonal Gaussian posterior to N(0, I), per latent;
- the capacity schedule C(t) and the squared capacity penalty gamma * |KL - C|^2 (eq. 3);
- the dreaming proximities: squared 2-Wasserstein distance between diagonal Gaussians
  (encoder, eq. 7) and the KL between two pixel likelihoods (decoder, eq. 7);
- the *explained fraction* of an image's NLL, the scale-free score domain inference compares
  (not in the paper; ``docs/DESIGN_NOTES.md``): how much of the gap between a trivial model that
  knows only the image's mean intensity and a perfect reconstruction a decoder closes.

Every function is batch-first and free of state; the learner composes them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "bernoulli_nll",
    "gaussian_nll",
    "reconstruction_nll",
    "nll_normaliser",
    "gaussian_kl_to_standard",
    "capacity_at",
    "capacity_penalty",
    "wasserstein2_diag",
    "bernoulli_kl",
    "gaussian_kl_fixed_std",
    "decoder_kl",
    "reduce_features",
    "perfect_nll",
    "trivial_nll",
    "explained_fraction",
    "marginal_information_split",
]


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def bernoulli_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-log Bernoulli(target | sigmoid(logits)) summed over all non-batch dims -> (B,).

    Targets may be any value in [0, 1] (the continuous-Bernoulli-free "soft" cross-entropy the
    field uses for grey images)."""
    return _flat(F.binary_cross_entropy_with_logits(logits, target, reduction="none")).sum(1)


def gaussian_nll(mean: torch.Tensor, target: torch.Tensor, std: float) -> torch.Tensor:
    """-log N(target | mean, std^2 I) summed over all non-batch dims -> (B,)."""
    per = 0.5 * ((target - mean) / std) ** 2 + math.log(std) + 0.5 * math.log(2 * math.pi)
    return _flat(per).sum(1)


def reconstruction_nll(params: torch.Tensor, target: torch.Tensor, likelihood: str, std: float = 0.1) -> torch.Tensor:
    """Per-example NLL for the configured likelihood (``params`` = logits or Gaussian means)."""
    if likelihood == "bernoulli":
        return bernoulli_nll(params, target)
    if likelihood == "gaussian":
        return gaussian_nll(params, target, std)
    raise ValueError(f"unknown likelihood {likelihood!r}; use 'bernoulli' or 'gaussian'")


def nll_normaliser(likelihood: str, std: float, num_pixels: int) -> float:
    """The part of the per-example NLL that does not depend on the reconstruction.

    For the fixed-variance Gaussian it is D (log std + log(2 pi) / 2): negative when
    std < 1/sqrt(2 pi) ~ 0.399, which would make NLLs negative and break a multiplicative test
    such as Algorithm 1's ``L > kappa * L_ref``. ``NLL - nll_normaliser`` is >= 0 for both
    likelihoods (Bernoulli has no such constant: 0)."""
    if likelihood == "bernoulli":
        return 0.0
    if likelihood == "gaussian":
        return float(num_pixels) * (math.log(std) + 0.5 * math.log(2 * math.pi))
    raise ValueError(f"unknown likelihood {likelihood!r}; use 'bernoulli' or 'gaussian'")


def gaussian_kl_to_standard(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per latent coordinate, same shape as ``mu``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def marginal_information_split(mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the batch-mean KL of each latent into information and marginal mismatch -> two (N,).

    With the batch's aggregate posterior fitted by a Gaussian of mean m = mean(mu) and variance
    v = var(mu) + mean(sigma^2) (population moments of the mixture),
    mean_b KL(q(z_n|x_b) || N(0, 1)) = I_n + M_n exactly, where
    M_n = KL(N(m, v) || N(0, 1)) = (v + m^2 - 1 - log v) / 2 is the marginal mismatch (the
    atypicality of eq. 4 computed from the posterior moments) and I_n = (log v - mean log sigma^2) / 2
    >= 0 the Gaussian-channel information the latent carries about x. A constant shift of mu or a
    shrunk sigma without spread in mu changes M_n only."""
    v = mu.var(0, unbiased=False) + logvar.exp().mean(0)
    m = mu.mean(0)
    log_v = v.log()
    marginal = 0.5 * (v + m.pow(2) - 1.0 - log_v)
    information = 0.5 * (log_v - logvar.mean(0))
    return information, marginal


def capacity_at(step: int, capacity_max: float, increment: float) -> float:
    """Capacity C after ``step`` optimiser updates: grows by ``increment * capacity_max`` per
    update from 0 and saturates at ``capacity_max`` (spec §3)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return float(min(capacity_max, increment * capacity_max * step))


def capacity_penalty(
    kl_per_example: torch.Tensor, capacity: float, gamma: float, reduction: str = "batch_mean"
) -> torch.Tensor:
    """gamma * |KL - C|^2 (eq. 3).

    ``batch_mean``: square of (batch-mean KL - C), as written in the paper.
    ``per_sample``: batch mean of the per-example squares; it exceeds ``batch_mean`` by
    exactly gamma * Var_batch(KL) (population variance)."""
    if reduction == "batch_mean":
        return gamma * (kl_per_example.mean() - capacity) ** 2
    if reduction == "per_sample":
        return gamma * ((kl_per_example - capacity) ** 2).mean()
    raise ValueError(f"unknown capacity reduction {reduction!r}; use 'batch_mean' or 'per_sample'")


def reduce_features(per_feature: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce all non-batch dims by ``sum`` or ``mean``, then average over the batch -> scalar."""
    flat = _flat(per_feature)
    if reduction == "sum":
        return flat.sum(1).mean()
    if reduction == "mean":
        return flat.mean()
    raise ValueError(f"unknown reduction {reduction!r}; use 'sum' or 'mean'")


def wasserstein2_diag(
    mu_a: torch.Tensor, logvar_a: torch.Tensor, mu_b: torch.Tensor, logvar_b: torch.Tensor
) -> torch.Tensor:
    """Squared 2-Wasserstein distance between diagonal Gaussians, per coordinate:
    (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2. Sum over coordinates for the full W2^2."""
    return (mu_a - mu_b).pow(2) + ((0.5 * logvar_a).exp() - (0.5 * logvar_b).exp()).pow(2)


def bernoulli_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(Bernoulli(sigmoid(logits_p)) || Bernoulli(sigmoid(logits_q))) per element, computed
    stably in log space."""
    p = torch.sigmoid(logits_p)
    log_p, log_1mp = F.logsigmoid(logits_p), F.logsigmoid(-logits_p)
    log_q, log_1mq = F.logsigmoid(logits_q), F.logsigmoid(-logits_q)
    return p * (log_p - log_q) + (1 - p) * (log_1mp - log_1mq)


def gaussian_kl_fixed_std(mean_p: torch.Tensor, mean_q: torch.Tensor, std: float) -> torch.Tensor:
    """KL(N(mean_p, std^2) || N(mean_q, std^2)) per element = (mean_p - mean_q)^2 / (2 std^2)."""
    return (mean_p - mean_q).pow(2) / (2.0 * std * std)


def decoder_kl(params_old: torch.Tensor, params_new: torch.Tensor, likelihood: str, std: float = 0.1) -> torch.Tensor:
    """Per-pixel KL(p_old(x|z,s) || p_new(x|z,s)) for the configured likelihood."""
    if likelihood == "bernoulli":
        return bernoulli_kl(params_old, params_new)
    if likelihood == "gaussian":
        return gaussian_kl_fixed_std(params_old, params_new, std)
    raise ValueError(f"unknown likelihood {likelihood!r}; use 'bernoulli' or 'gaussian'")


def perfect_nll(target: torch.Tensor, likelihood: str, std: float = 0.1) -> torch.Tensor:
    """The smallest NLL any decoder can reach on each image -> (B,).

    Bernoulli with soft targets: the entropy of Bernoulli(x) summed over pixels (0 for binary
    images), reached at logits = logit(x). Gaussian with fixed std: the normalising constant
    D (log std + log(2 pi) / 2), reached at mean = x."""
    if likelihood == "bernoulli":
        x = target.clamp(1e-6, 1 - 1e-6)
        return _flat(-(x * x.log() + (1 - x) * (-x).log1p())).sum(1)
    if likelihood == "gaussian":
        d = target[0].numel()
        return torch.full((target.shape[0],), nll_normaliser("gaussian", std, d), device=target.device)
    raise ValueError(f"unknown likelihood {likelihood!r}; use 'bernoulli' or 'gaussian'")


def trivial_nll(target: torch.Tensor, likelihood: str, std: float = 0.1) -> torch.Tensor:
    """NLL of each image under the model that knows only its mean intensity per channel -> (B,).

    Every pixel of a channel gets the channel's mean as its Bernoulli probability or Gaussian mean:
    a reference that cancels how much "ink" a domain has, which a raw loss ratio cannot."""
    b, c = target.shape[0], target.shape[1]
    mean = target.reshape(b, c, -1).mean(2).reshape(b, c, *([1] * (target.ndim - 2))).expand_as(target)
    if likelihood == "bernoulli":
        p = mean.clamp(1e-6, 1 - 1e-6)
        return _flat(F.binary_cross_entropy(p, target, reduction="none")).sum(1)
    if likelihood == "gaussian":
        return gaussian_nll(mean, target, std)
    raise ValueError(f"unknown likelihood {likelihood!r}; use 'bernoulli' or 'gaussian'")


def explained_fraction(
    nll: torch.Tensor,
    target: torch.Tensor,
    likelihood: str,
    std: float = 0.1,
    min_gap: float | None = None,
    lowest: float = -1.0,
    perfect: torch.Tensor | None = None,
    trivial: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per image, the fraction of the explainable NLL a decoder explains -> (B,):

        f = 1 - (NLL - NLL_perfect) / (NLL_trivial - NLL_perfect)

    1 is a perfect reconstruction, 0 is no better than the image's mean intensity, negative is
    worse. It does not depend on how much ink or texture a domain has, so one threshold serves
    every domain. ``min_gap`` (default: 1 % of the pixel count, at least 1 nat) bounds the
    denominator for near-blank images; values are clipped below at ``lowest`` so one absurd
    image cannot dominate a batch mean. ``perfect`` / ``trivial`` may pass the two reference NLLs
    when several decoders are scored on the same images."""
    if perfect is None:
        perfect = perfect_nll(target, likelihood, std)
    if trivial is None:
        trivial = trivial_nll(target, likelihood, std)
    gap = trivial - perfect
    if min_gap is None:
        min_gap = max(1.0, 0.01 * target[0].numel())
    frac = 1.0 - (nll.detach().float() - perfect) / gap.clamp_min(min_gap)
    return frac.clamp_min(lowest)
