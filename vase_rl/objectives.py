"""Pure loss functions of VASE (``VASE_SPEC.md`` §3 and §7).

- likelihoods: Bernoulli on logits and fixed-variance Gaussian, negative log-likelihood
  summed over pixels, one value per example;
- closed-form KL of a diagonal Gaussian posterior to N(0, I), per latent;
- the capacity schedule C(t) and the squared capacity penalty gamma * |KL - C|^2 (eq. 3);
- the dreaming proximities: squared 2-Wasserstein distance between diagonal Gaussians
  (encoder, eq. 7) and the KL between two pixel likelihoods (decoder, eq. 7).

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
