"""Networks of VASE (``VASE_SPEC.md`` §1, paper appendix A.1).

- ``Encoder`` q_phi(z|x): conv 4x4 stride 2 (64, 64, 128, 128 filters at 64x64), ReLU, fc 256,
  ReLU, linear heads to mu and log sigma^2. The number of convolutions follows the image size
  (one per halving down to a 4x4 map); ``width`` scales filters and the hidden layer.
- ``Decoder`` p_theta(x|z, s): [z, one_hot(s)] -> fc 256 -> fc to the last conv map -> transposed
  convolutions back to the image; outputs Bernoulli logits or Gaussian means (unbounded).
- ``DomainClassifier`` q_psi(s|x): one linear layer on the encoder's hidden layer; the caller
  passes a detached hidden so its loss never reaches the encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from vase_rl.config import VASEConfig

__all__ = ["Encoder", "Decoder", "DomainClassifier", "conv_widths", "hidden_width"]


def conv_widths(config: VASEConfig) -> list[int]:
    n = config.num_convs
    return [max(4, int(round(c * config.width))) for c in config.conv_channels[:n]]


def hidden_width(config: VASEConfig) -> int:
    return max(8, int(round(config.hidden_dim * config.width)))


class Encoder(nn.Module):
    """x (B, C, H, W) in [0, 1] -> (mu (B, N), logvar (B, N), hidden (B, hidden))."""

    def __init__(self, config: VASEConfig) -> None:
        super().__init__()
        c, h, w = config.image_shape
        widths = conv_widths(config)
        layers: list[nn.Module] = []
        prev = c
        for out in widths:
            layers += [nn.Conv2d(prev, out, 4, 2, 1), nn.ReLU(inplace=True)]
            prev = out
        self.convs = nn.Sequential(*layers)
        scale = 2 ** len(widths)
        self.feature_shape = (prev, h // scale, w // scale)
        flat = prev * (h // scale) * (w // scale)
        hidden = hidden_width(config)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True))
        self.head = nn.Linear(hidden, 2 * config.latent_dim)
        self.latent_dim = config.latent_dim
        self.logvar_clamp = float(config.logvar_clamp)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.fc(self.convs(x))
        out = self.head(hidden).float()
        mu, logvar = out[:, : self.latent_dim], out[:, self.latent_dim :]
        logvar = logvar.clamp(-self.logvar_clamp, self.logvar_clamp)
        return mu, logvar, hidden


class Decoder(nn.Module):
    """(z (B, N), domain one-hot (B, K)) -> pixel parameters (B, C, H, W)."""

    def __init__(self, config: VASEConfig) -> None:
        super().__init__()
        c, h, w = config.image_shape
        widths = conv_widths(config)
        scale = 2 ** len(widths)
        self.feature_shape = (widths[-1], h // scale, w // scale)
        hidden = hidden_width(config)
        flat = widths[-1] * (h // scale) * (w // scale)
        self.fc = nn.Sequential(
            nn.Linear(config.latent_dim + config.max_domains, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, flat),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        rev = list(reversed(widths))
        for i, cin in enumerate(rev):
            last = i == len(rev) - 1
            cout = c if last else rev[i + 1]
            layers.append(nn.ConvTranspose2d(cin, cout, 4, 2, 1))
            if not last:
                layers.append(nn.ReLU(inplace=True))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, domain_onehot: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, domain_onehot.to(z.dtype)], dim=1))
        h = h.view(z.shape[0], *self.feature_shape)
        return self.deconvs(h).float()


class DomainClassifier(nn.Module):
    """Linear q_psi(s|x) on the encoder's hidden layer -> logits (B, K)."""

    def __init__(self, config: VASEConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_width(config), config.max_domains)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden).float()
