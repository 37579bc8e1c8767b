"""A frozen VASE encoder inside an SB3 policy: :class:`VASEFeaturesExtractor`.

For users who prefer the encoder in the policy rather than in the environment (e.g. off-policy
agents that keep raw frames in their replay buffer and re-encode at sampling time). The
encoder is loaded from a checkpoint path (a ``VASE.save`` or ``VecVASE.save`` file) — never
passed as a live module, which SB3 would pickle into the model zip and un-share on load — and
frozen: ``requires_grad=False`` and kept in eval mode, so PPO's optimiser cannot change it.
Features are the masked posterior means (as :class:`~vase_rl.wrappers.VecVASE` produces) and
optionally the one-hot of the domain the classifier infers.

    PPO("CnnPolicy", env, policy_kwargs=dict(
        features_extractor_class=VASEFeaturesExtractor,
        features_extractor_kwargs=dict(learner_path="vase.pt")))
"""

from __future__ import annotations

import gymnasium as gym
import torch
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from vase_rl.masking import apply_mask
from vase_rl.observations import ImageObservationAdapter
from vase_rl.wrappers import load_checkpoint

__all__ = ["VASEFeaturesExtractor"]


class VASEFeaturesExtractor(BaseFeaturesExtractor):
    """Frozen VASE encoder as an SB3 features extractor.

    Args:
        observation_space: the policy's observation space (SB3 passes it).
        learner_path: checkpoint to load the encoder from.
        image_key: image entry of a ``Dict`` observation space (use ``MultiInputPolicy``).
        append_domain: append the one-hot (``max_domains``) of the classifier's inferred domain.
        normalize_images: set as the policy's ``normalize_images`` (SB3 divides uint8 image
            spaces by 255 before the extractor when True).
        channels_first, grayscale: as for :class:`~vase_rl.observations.ImageObservationAdapter`.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        learner_path: str,
        image_key: str | None = None,
        append_domain: bool = False,
        normalize_images: bool = True,
        channels_first: bool | None = None,
        grayscale: bool | None = None,
    ) -> None:
        learner, _ = load_checkpoint(learner_path, device="cpu")
        cfg = learner.config
        features_dim = cfg.latent_dim + (cfg.max_domains if append_domain else 0)
        super().__init__(observation_space, features_dim)
        self.adapter = ImageObservationAdapter(
            observation_space, cfg.image_shape, image_key=image_key, channels_first=channels_first, grayscale=grayscale
        )
        image_space = self.adapter.image_space
        self.prescaled = bool(normalize_images and is_image_space(image_space, check_channels=False))
        self.image_key = image_key
        self.append_domain = bool(append_domain)
        self.max_domains = cfg.max_domains
        self.num_domains = max(learner.num_domains, 1)
        self.encoder = learner.encoder.requires_grad_(False).eval()
        self.classifier = learner.classifier.requires_grad_(False).eval() if append_domain else None
        self.register_buffer("latent_mask", torch.as_tensor(learner.latent_mask, dtype=torch.bool))
        self.learner_path = str(learner_path)

    def apply(self, fn):
        """As ``nn.Module.apply`` but never into the loaded networks: SB3's ``ortho_init`` calls
        ``features_extractor.apply(init_weights)``, which would overwrite the learnt encoder."""
        frozen = {id(self.encoder), id(self.classifier)}
        for child in self.children():
            if id(child) not in frozen:
                child.apply(fn)
        fn(self)
        return self

    def train(self, mode: bool = True) -> VASEFeaturesExtractor:
        super().train(mode)
        self.encoder.eval()  # frozen: never in training mode
        if self.classifier is not None:
            self.classifier.eval()
        return self

    def forward(self, observations: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        x = observations[self.image_key] if isinstance(observations, dict) else observations
        with torch.no_grad():
            x = self.adapter.convert(x, prescaled=self.prescaled)
            mu, _, hidden = self.encoder(x)
            z = apply_mask(mu.float(), self.latent_mask, None)
            if self.classifier is None:
                return z
            domain = self.classifier(hidden.float())[:, : self.num_domains].argmax(1)
            return torch.cat([z, torch.nn.functional.one_hot(domain, self.max_domains).to(z.dtype)], dim=1)
