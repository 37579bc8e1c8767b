"""Dreaming feedback of VASE (``VASE_SPEC.md`` §7, eq. 7 and 9).

A ``Snapshot`` is a frozen copy (phi_old, theta_old) of encoder and decoder, re-synced every
tau updates. For past domains s' it hallucinates x' = E[p_theta_old(x | z, s')] with
z ~ N(0, I); the current networks are then pulled towards the snapshot on those dreams:

- encoder proximity: W2^2(q_phi(z|x'), q_phi_old(z|x')), diagonal Gaussians;
- decoder proximity: KL(p_theta_old(x|z, s') || p_theta(x|z, s')), per pixel.

Reduction (``"mean"`` or ``"sum"`` over latents / pixels, always averaged over the batch) is
part of the config, because the paper's weights only make sense with one stated reduction.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from vase_rl.objectives import decoder_kl, reduce_features, wasserstein2_diag

__all__ = ["Snapshot", "pixel_means", "encoder_proximity", "decoder_proximity"]


def pixel_means(params: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Images (means of the pixel likelihood) from decoder outputs, in [0, 1]."""
    if likelihood == "bernoulli":
        return torch.sigmoid(params)
    return params.clamp(0.0, 1.0)


def encoder_proximity(
    mu: torch.Tensor, logvar: torch.Tensor, mu_old: torch.Tensor, logvar_old: torch.Tensor, reduction: str
) -> torch.Tensor:
    """Batch-averaged W2^2 between the current and the snapshot posteriors."""
    return reduce_features(wasserstein2_diag(mu, logvar, mu_old, logvar_old), reduction)


def decoder_proximity(
    params_old: torch.Tensor, params_new: torch.Tensor, likelihood: str, std: float, reduction: str
) -> torch.Tensor:
    """Batch-averaged KL(p_old || p_new) over pixels."""
    return reduce_features(decoder_kl(params_old, params_new, likelihood, std), reduction)


class Snapshot(nn.Module):
    """Frozen copies of the encoder and decoder."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder)
        self.decoder = copy.deepcopy(decoder)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        self.synced_at = 0

    @torch.no_grad()
    def sync(self, encoder: nn.Module, decoder: nn.Module, step: int) -> None:
        self.encoder.load_state_dict(encoder.state_dict())
        self.decoder.load_state_dict(decoder.state_dict())
        self.synced_at = int(step)

    def train(self, mode: bool = True) -> Snapshot:  # always stays in eval mode
        return super().train(False)
