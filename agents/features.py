"""A frozen VASE encoder inside an SB3 policy: :class:`VASEFeaturesExtractor`.

For users who prefer the encoder in the policy rather than in the environment (e.g. off-policy
agents that keep raw frames in their replay buffer and re-encode at sampling time). The
encoder is loaded from a checkpoint path (a ``VASE.save`` or ``VecVASE.save`` file) — never
passed as a live module, which SB3 would pickle into the model zip and un-share on load — and
frozen: ``requires_grad=False`` and kept in eval mode, so PPO's optimiser cannot change it.
Features are the masked posterior means (as :class:`~vase_rl.wrappers.VecVASE` produces),
optionally the one-hot of the domain the classifier infers, and, for ``Dict`` observations, the
other entries (as SB3 preprocesses them: one-hot for ``Discrete``, flattened Boxes) unless
``latents_only=True``.

The agent's zip holds the encoder's weights (they are part of the policy's state dict); the
checkpoint file is needed only to build a *new* policy. Build the policy kwargs with
:meth:`VASEFeaturesExtractor.policy_kwargs`, which also stores the learner's config, so that
``PPO.load`` works after the checkpoint file has moved or been deleted::

    PPO("CnnPolicy", env, policy_kwargs=VASEFeaturesExtractor.policy_kwargs("vase.pt"))
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.preprocessing import get_flattened_obs_dim, is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from vase_rl.config import VASEConfig
from vase_rl.learner import VASE
from vase_rl.masking import apply_mask
from vase_rl.observations import ImageObservationAdapter
from vase_rl.wrappers import load_checkpoint

__all__ = ["VASEFeaturesExtractor"]


class VASEFeaturesExtractor(BaseFeaturesExtractor):
    """Frozen VASE encoder as an SB3 features extractor.

    Args:
        observation_space: the policy's observation space (SB3 passes it).
        learner_path: checkpoint to load the encoder from (needed to build a new policy).
        image_key: image entry of a ``Dict`` observation space (use ``MultiInputPolicy``).
        append_domain: append the one-hot (``max_domains``) of the classifier's inferred domain.
        normalize_images: set as the policy's ``normalize_images`` (SB3 divides uint8 image
            spaces by 255 before the extractor when True).
        channels_first, grayscale, value_range, frame_stack, allow_small_images: as for
            :class:`~vase_rl.observations.ImageObservationAdapter`.
        latents_only: for ``Dict`` spaces, only the latents (default: the other entries too).
        keep_keys: for ``Dict`` spaces, which other entries to append (default: all).
        config: the learner's config as a dict (stored by :meth:`policy_kwargs`): the encoder is
            built from it when ``learner_path`` is gone, and its weights come from the agent's zip.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        learner_path: str | None = None,
        image_key: str | None = None,
        append_domain: bool = False,
        normalize_images: bool = True,
        channels_first: bool | None = None,
        grayscale: bool | None = None,
        *,
        value_range: Sequence[float] | None = None,
        frame_stack: int | None = None,
        allow_small_images: bool = False,
        latents_only: bool = False,
        keep_keys: Sequence[str] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        learner, pending = self._learner(learner_path, config)
        cfg = learner.config
        adapter = ImageObservationAdapter(
            observation_space,
            cfg.image_shape,
            image_key=image_key,
            channels_first=channels_first,
            grayscale=grayscale,
            value_range=value_range,
            frame_stack=frame_stack,
            allow_small_images=allow_small_images,
        )
        others: list[str] = []
        if isinstance(observation_space, gym.spaces.Dict):
            rest = [k for k in observation_space.spaces if k != image_key]
            if latents_only:
                if keep_keys:
                    raise ValueError("latents_only=True contradicts keep_keys")
            else:
                others = rest if keep_keys is None else list(keep_keys)
                missing = [k for k in others if k not in rest]
                if missing:
                    raise ValueError(
                        f"keep_keys {missing} are not entries of the Dict besides the image; they are {rest}"
                    )
        elif latents_only or keep_keys is not None:
            raise ValueError("latents_only and keep_keys only apply to Dict observation spaces")
        frame_dim = cfg.latent_dim + (cfg.max_domains if append_domain else 0)
        extra_dim = sum(get_flattened_obs_dim(observation_space.spaces[k]) for k in others)
        super().__init__(observation_space, frame_dim * adapter.frames + extra_dim)
        self.adapter = adapter
        image_space = adapter.image_space
        self.prescaled = bool(
            normalize_images and is_image_space(image_space, check_channels=False) and adapter.value_range == (0, 255)
        )
        self.image_key = image_key
        self.other_keys = others
        self.frames = adapter.frames
        self.append_domain = bool(append_domain)
        self.max_domains = cfg.max_domains
        self.encoder = learner.encoder.requires_grad_(False).eval()
        self.classifier = learner.classifier.requires_grad_(False).eval() if append_domain else None
        # buffers: part of the policy's state dict, so a loaded agent has the trained values
        self.register_buffer("latent_mask", torch.as_tensor(learner.latent_mask, dtype=torch.bool))
        self.register_buffer("num_domains", torch.tensor(max(learner.num_domains, 1), dtype=torch.long))
        self.learner_path = None if learner_path is None else str(learner_path)
        self.config = cfg.to_dict()
        self._weights_pending = pending

    @staticmethod
    def _learner(learner_path: str | None, config: dict[str, Any] | None) -> tuple[VASE, bool]:
        """(learner, weights pending): the learner from the file, or a shell built from ``config``
        whose weights must come from a state dict (``PPO.load`` puts the agent's in)."""
        stored = None if config is None else VASEConfig.from_dict(dict(config))
        if learner_path is not None and Path(learner_path).is_file():
            learner, _ = load_checkpoint(learner_path, device="cpu")
            if stored is None or learner.config == stored:
                return learner, False
            warnings.warn(
                f"{learner_path} holds a learner with another configuration than the one this policy was built "
                "with; the stored configuration is used and the weights must come from the agent's state dict",
                RuntimeWarning,
                stacklevel=3,
            )
        elif stored is None:
            raise FileNotFoundError(
                f"no VASE checkpoint at {learner_path!r}. The agent's zip holds the encoder weights, but building the "
                "extractor needs the learner's config: load with PPO.load(zip, custom_objects={'policy_kwargs': "
                "VASEFeaturesExtractor.policy_kwargs('<where vase.pt is now>')}), and build new policies with "
                "policy_kwargs=VASEFeaturesExtractor.policy_kwargs(path), which stores the config in the agent"
            )
        return VASE(stored, seed=0, device="cpu"), True

    @classmethod
    def policy_kwargs(cls, learner_path: str, **kwargs: Any) -> dict[str, Any]:
        """``policy_kwargs`` for an SB3 algorithm with this extractor on the checkpoint at
        ``learner_path``; the learner's config is stored too, so the saved agent loads even when
        the checkpoint has moved. ``kwargs`` go to the extractor (``image_key=``, ...)."""
        learner, _ = load_checkpoint(learner_path, device="cpu")
        options = dict(kwargs, learner_path=str(learner_path), config=learner.config.to_dict())
        return {"features_extractor_class": cls, "features_extractor_kwargs": options}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if any(key.startswith(prefix + "encoder.") for key in state_dict):
            self._weights_pending = False

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
        if self._weights_pending:
            raise RuntimeError(
                f"the VASE encoder's weights were never loaded (no checkpoint at {self.learner_path!r}, and no agent "
                "state dict was loaded): point learner_path at the checkpoint to build a new policy"
            )
        x = observations[self.image_key] if isinstance(observations, dict) else observations
        with torch.no_grad():
            x = self.adapter.convert(x, prescaled=self.prescaled)
            mu, _, hidden = self.encoder(x)
            z = apply_mask(mu.float(), self.latent_mask, None)
            if self.classifier is not None:
                domain = self.classifier(hidden.float())[:, : int(self.num_domains)].argmax(1)
                z = torch.cat([z, torch.nn.functional.one_hot(domain, self.max_domains).to(z.dtype)], dim=1)
            if self.frames > 1:
                z = z.reshape(-1, self.frames * z.shape[1])
        if not self.other_keys:
            return z
        rest = [torch.flatten(observations[k].float(), start_dim=1) for k in self.other_keys]
        return torch.cat([z, *rest], dim=1)
