"""Imagination-driven exploration for VASE (``VASE_SPEC.md`` §10, paper appendix A.3.1).

A disentangled VASE represents *what* an object is and *where* it is in separate latents, so it
can imagine a configuration it has never seen ("this digit, but over there") and act to realise
it. This module holds the pieces:

* :class:`TranslationPolicy` g(z*, x): 4 conv 4x4 stride-2 layers of 16 filters (ReLU) on the
  image, concatenated with an imagined latent z*, one hidden fc layer, tanh -> a 2-D translation
  (tx, ty) bounded to ``max_shift`` x the image side.
* :func:`translate_images`: the differentiable spatial transformer (Kornia's affine warp) that
  applies the translation: x* = g(z*, x) . x.
* :class:`Imagination`: the plugin the learner owns when ``config.imagination`` is True. It
  trains the policy on the agent loss

      L_agent = E_x E_{z* ~ N(0, I)} E_{z ~ q_phi(z | x*)} || z* - z ||^2,   x* = g(z*, x) . x

  with respect to the policy only (the encoder is a frozen function for this loss: it gets no
  gradient and is not in the policy's optimiser), optionally scoring only the latents active in
  the current domain; and it supplies imagined x* that the learner appends to its batches
  (exploration by augmentation). Its state is saved inside the learner's checkpoint. One
  addition to the paper: a guard term mean(relu(|pre-tanh| - 2)^2) keeps the tanh out of
  saturation (see docs/IMAGINATION.md for why the paper's loss pushes it there).
* :class:`ImaginationExplorer`: acting for real. In an environment whose action is a
  translation (``vase_rl/SpriteTaskContinuous-v0``) it turns the policy's translation into the
  env's action to realise an imagined z*, closed loop, and measures how close the real latent of
  the resulting observation comes to z* (:func:`latent_error`).
* :func:`translation_sensitivity`: which latents respond to translations (the position latents).

Translation convention (checked against Kornia's source, ``kornia.geometry.transform.translate``
-> ``affine`` -> ``warp_affine``): a shift (dx, dy) in pixels moves the image content dx pixels to
the right and dy pixels down, ``out[y, x] = in[y - dy, x - dx]``, with bilinear sampling. We use
``align_corners=False``, under which whole-pixel shifts are exact (``align_corners=True`` leaves
~1e-6 rounding errors and a little leakage into the exposed border).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "TranslationPolicy",
    "Imagination",
    "ImaginationExplorer",
    "translate_images",
    "random_translation",
    "latent_error",
    "translation_sensitivity",
    "PADDING_MODES",
]

PADDING_MODES = ("background", "zeros", "border", "reflection")
STATE_VERSION = 1
SATURATION_LIMIT = 2.0  # |pre-tanh| beyond which the policy's output is pulled back (tanh(2) = 0.96)


# ------------------------------------------------------------------------------------------
# the spatial transformer
# ------------------------------------------------------------------------------------------
def _border_median(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel, the median of the 1-pixel frame: (B, C, 1, 1)."""
    frame = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1)
    return frame.median(dim=-1).values[..., None, None]


def translate_images(x: torch.Tensor, shift: torch.Tensor, padding: str = "background") -> torch.Tensor:
    """Translate images by ``shift`` pixels with Kornia's differentiable affine warp.

    Args:
        x: (B, C, H, W) float images.
        shift: (B, 2) translations (dx, dy) in pixels; content moves right by dx, down by dy.
            Fractional shifts interpolate bilinearly; gradients flow to ``shift`` and ``x``.
        padding: what fills the area the content leaves: ``"background"`` (default) the median
            of each image's outer frame (black for sprites on black, white for inverted ones),
            or Kornia's ``"zeros"``, ``"border"``, ``"reflection"``.
    """
    from kornia.geometry.transform import translate

    if x.ndim != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if shift.ndim != 2 or shift.shape != (x.shape[0], 2):
        raise ValueError(
            f"shift must be (B, 2) = ({x.shape[0]}, 2) pixel translations (dx, dy), got {tuple(shift.shape)}"
        )
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    shift = shift.to(dtype=x.dtype, device=x.device)
    if padding == "background":
        # the warp is linear in x, so warping (x - b) with zero padding and adding b back leaves
        # the moved content exact and fills the exposed area with b
        bg = _border_median(x.detach())
        return translate(x - bg, shift, mode="bilinear", padding_mode="zeros", align_corners=False) + bg
    return translate(x, shift, mode="bilinear", padding_mode=padding, align_corners=False)


def random_translation(
    x: torch.Tensor, max_shift: float, generator: torch.Generator | None = None, padding: str = "background"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Translate each image by a uniform random shift in [-max_shift, max_shift] x its side.

    The no-policy control for imagination (plain translation augmentation). Returns
    ``(x_shifted, shift_pixels)``."""
    b, _, h, w = x.shape
    u = torch.rand(b, 2, device=x.device, generator=generator) * 2.0 - 1.0
    shift = u * max_shift * torch.tensor([w, h], dtype=x.dtype, device=x.device)
    return translate_images(x, shift, padding), shift


# ------------------------------------------------------------------------------------------
# the policy g(z*, x)
# ------------------------------------------------------------------------------------------
class TranslationPolicy(nn.Module):
    """g(z*, x): image and imagined latent -> a bounded 2-D translation (appendix A.3.1).

    ``num_convs`` conv 4x4 stride-2 layers of ``filters`` channels (ReLU) on x (fewer when the
    image is too small to halve that often; 32x32 ends at 2x2), flattened and concatenated with
    z*, one hidden fc layer of ``hidden`` ReLU units, and a linear layer to 2 outputs squashed by
    tanh. :meth:`forward` returns the tanh output in [-1, 1]^2 (fractions of the bound);
    :meth:`shift_pixels` scales it to pixels, |tx| <= max_shift * W, |ty| <= max_shift * H.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        latent_dim: int,
        hidden: int = 64,
        max_shift: float = 0.5,
        filters: int = 16,
        num_convs: int = 4,
    ) -> None:
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        if not 0 < max_shift <= 1:
            raise ValueError(f"max_shift is a fraction of the image side in (0, 1], got {max_shift}")
        n = max(1, min(int(num_convs), int(math.log2(max(min(h, w), 2)))))
        layers: list[nn.Module] = []
        prev = c
        for _ in range(n):
            layers += [nn.Conv2d(prev, filters, 4, 2, 1), nn.ReLU()]
            prev = filters
        self.convs = nn.Sequential(*layers, nn.Flatten())
        flat = filters * (h >> n) * (w >> n)
        self.head = nn.Sequential(nn.Linear(flat + latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        with torch.no_grad():  # start near the identity translation, where tanh is steepest
            self.head[-1].weight.mul_(0.1)
            self.head[-1].bias.zero_()
        self.image_shape = (c, h, w)
        self.latent_dim = int(latent_dim)
        self.max_shift = float(max_shift)
        self.register_buffer("_side", torch.tensor([float(w), float(h)]), persistent=False)

    def preactivation(self, x: torch.Tensor, z_star: torch.Tensor) -> torch.Tensor:
        """(B, 2) outputs before the tanh."""
        if z_star.shape != (x.shape[0], self.latent_dim):
            raise ValueError(f"z_star must be (B, {self.latent_dim}) with B = {x.shape[0]}, got {tuple(z_star.shape)}")
        features = self.convs(x)
        return self.head(torch.cat([features, z_star.to(features.dtype)], dim=1))

    def forward(self, x: torch.Tensor, z_star: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.preactivation(x, z_star))

    def shift_pixels(self, x: torch.Tensor, z_star: torch.Tensor) -> torch.Tensor:
        """(B, 2) translations (dx, dy) in pixels."""
        return self(x, z_star) * (self.max_shift * self._side)

    def transform(
        self, x: torch.Tensor, z_star: torch.Tensor, padding: str = "background"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x* = g(z*, x) . x; returns ``(x_star, shift_pixels)`` (differentiable in the policy)."""
        shift = self.shift_pixels(x, z_star)
        return translate_images(x, shift, padding), shift


# ------------------------------------------------------------------------------------------
# the plugin the learner owns
# ------------------------------------------------------------------------------------------
def latent_error(
    z: torch.Tensor | np.ndarray, z_star: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray | None = None
) -> torch.Tensor | np.ndarray:
    """Per example squared distance sum_n m_n (z*_n - z_n)^2 over the scored latents ``mask``
    (bool (N,), or index array; default all). numpy in -> numpy out."""
    as_numpy = not isinstance(z, torch.Tensor) and not isinstance(z_star, torch.Tensor)
    zt = torch.as_tensor(z, dtype=torch.float32)
    zs = torch.as_tensor(z_star, dtype=torch.float32).to(zt.device)
    diff = (zs - zt).pow(2)
    if mask is not None:
        m = torch.as_tensor(mask).to(zt.device)
        if m.is_floating_point():
            raise TypeError("mask must be bool (N,) or integer latent indices, not float")
        if m.dtype != torch.bool:
            m = torch.zeros(zt.shape[-1], dtype=torch.bool, device=zt.device).index_fill_(0, m.long().reshape(-1), True)
        diff = diff * m.to(diff.dtype)
    out = diff.sum(-1)
    return out.cpu().numpy() if as_numpy else out


class Imagination:
    """The learner's imagination plugin: translation policy, agent loss, imagined batches.

    Built by :class:`vase_rl.VASE` when ``config.imagination`` is True (``learner.imagination``).
    The learner calls :meth:`imagine` on the first ``round(B * imagination_fraction)`` images of
    each batch and trains on the real + imagined images; after its own optimiser step it calls
    :meth:`train_step` every ``imagination_every`` updates (stats appear as ``imagination_*``).

    Relevant config fields: ``imagination_max_shift`` (translation bound, fraction of the side),
    ``imagination_hidden`` (policy hidden units), ``imagination_learning_rate`` (its Adam),
    ``imagination_active_only`` (score only the latents active in the current domain).
    All randomness (z*, posterior samples) comes from ``learner.generator``.
    """

    def __init__(self, config: Any, learner: Any) -> None:
        self.config = config
        self.learner = learner
        self.device = torch.device(learner.device)
        seed = int(getattr(learner, "seed", 0))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 104_729)  # own init stream: does not perturb the learner's weights
            self.policy = TranslationPolicy(
                config.image_shape,
                config.latent_dim,
                hidden=config.imagination_hidden,
                max_shift=config.imagination_max_shift,
            ).to(self.device)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.imagination_learning_rate)
        self.padding = "background"
        # keeps the tanh out of saturation: mean relu(|pre| - 2)^2 is added to L_agent (see docs)
        self.saturation_weight = 1.0
        self.num_updates = 0
        self.num_imagined = 0

    # --- pieces ------------------------------------------------------------------------
    @property
    def generator(self) -> torch.Generator | None:
        return getattr(self.learner, "generator", None)

    def sample_targets(self, n: int) -> torch.Tensor:
        """n imagined latents z* ~ N(0, I), (n, latent_dim), from the learner's generator."""
        return torch.randn(n, self.config.latent_dim, device=self.device, generator=self.generator)

    def score_mask(self) -> torch.Tensor:
        """Bool (N,): the latents L_agent scores (active ones if ``imagination_active_only``)."""
        n = self.config.latent_dim
        if not self.config.imagination_active_only:
            return torch.ones(n, dtype=torch.bool, device=self.device)
        mask = getattr(self.learner, "latent_mask", None)
        if mask is None:
            return torch.ones(n, dtype=torch.bool, device=self.device)
        return torch.as_tensor(np.asarray(mask, dtype=bool), device=self.device)

    def _encoder(self) -> nn.Module:
        return self.learner.encoder  # looked up each time: the learner may swap it

    def _posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar, _ = self._encoder()(x)
        return mu.float(), logvar.float()

    def transform(self, x: torch.Tensor, z_star: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x* = g(z*, x) . x with gradients into the policy; ``(x_star, shift_pixels)``."""
        return self.policy.transform(x, z_star, self.padding)

    @torch.no_grad()
    def imagine(self, x: torch.Tensor, z_star: torch.Tensor | None = None) -> torch.Tensor:
        """Imagined images for a batch of current data: z* ~ N(0, I) (or the given z*), and the
        policy's translation applied to ``x``. (B, C, H, W) in [0, 1], no gradient."""
        if z_star is None:
            z_star = self.sample_targets(x.shape[0])
        x_star, _ = self.transform(x.float(), z_star.to(self.device))
        self.num_imagined += int(x.shape[0])
        return x_star.clamp_(0.0, 1.0)

    def agent_loss(
        self, x: torch.Tensor, z_star: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_agent = mean_b sum_n m_n (z*_bn - z_bn)^2 with z ~ q(z | g(z*, x) . x).

        The loss depends on the policy's parameters through x*; backpropagate it only into the
        policy (see :meth:`train_step`). Returns ``(loss, parts)`` with ``shift`` (pixels),
        ``z_star``, ``mask``, ``mu`` (posterior means of x*) and ``saturation`` (the mean of
        relu(|pre-tanh| - 2)^2, which :meth:`train_step` adds with weight ``saturation_weight``)."""
        if z_star is None:
            z_star = self.sample_targets(x.shape[0])
        if mask is None:
            mask = self.score_mask()
        pre = self.policy.preactivation(x, z_star)
        shift = torch.tanh(pre) * (self.policy.max_shift * self.policy._side)
        x_star = translate_images(x, shift, self.padding)
        mu, logvar = self._posterior(x_star)
        eps = torch.randn(mu.shape, device=mu.device, generator=self.generator)
        z = mu + (0.5 * logvar).exp() * eps
        loss = latent_error(z, z_star, mask).mean()
        saturation = (pre.abs() - SATURATION_LIMIT).clamp_min(0.0).pow(2).mean()
        return loss, {"shift": shift, "z_star": z_star, "mask": mask, "mu": mu, "saturation": saturation}

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        """One Adam step of the policy on L_agent for a batch of real current data.

        Only the policy's parameters receive gradients (``backward(inputs=...)``): the encoder's
        ``.grad`` is left exactly as it was. Returns ``loss`` (L_agent, with posterior samples),
        ``error`` (the same with posterior means), ``error_identity`` (posterior means of the
        untranslated x against the same z*: ``error_identity - error`` is what the policy gains),
        ``shift`` (mean |t| as a fraction of the side), ``saturation`` (the guard term) and
        ``scored_latents``. A non-finite loss skips the step (``{"loss": nan, "skipped": 1}``)."""
        x = x.detach().float()
        mask = self.score_mask()
        z_star = self.sample_targets(x.shape[0])
        loss, parts = self.agent_loss(x, z_star, mask)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer.zero_grad(set_to_none=True)
        if not bool(torch.isfinite(loss)):
            return {"loss": float("nan"), "skipped": 1.0}
        (loss + self.saturation_weight * parts["saturation"]).backward(inputs=params)
        self.optimizer.step()
        self.num_updates += 1
        with torch.no_grad():
            mu0, _ = self._posterior(x)
            error = latent_error(parts["mu"], z_star, mask).mean()
            identity = latent_error(mu0, z_star, mask).mean()
            shift = (parts["shift"].abs() / self.policy._side).mean()
        return {
            "loss": float(loss.detach()),
            "error": float(error),
            "error_identity": float(identity),
            "shift": float(shift),
            "saturation": float(parts["saturation"].detach()),
            "scored_latents": float(mask.sum()),
        }

    @torch.no_grad()
    def evaluate(
        self, x: torch.Tensor, z_star: torch.Tensor | None = None, mask: torch.Tensor | np.ndarray | None = None
    ) -> dict[str, float]:
        """Mean squared latent error of the posterior means after the policy's translation
        (``policy``) and without it (``identity``), on the given latents (default: the scored
        ones), for a batch of images. No parameter or generator change when ``z_star`` is given."""
        x = x.to(self.device).float()
        if z_star is None:
            z_star = self.sample_targets(x.shape[0])
        if mask is None:
            mask = self.score_mask()
        x_star, _ = self.transform(x, z_star.to(self.device))
        mu_star, _ = self._posterior(x_star)
        mu0, _ = self._posterior(x)
        policy = float(latent_error(mu_star, z_star, mask).mean())
        identity = float(latent_error(mu0, z_star, mask).mean())
        return {"policy": policy, "identity": identity, "ratio": policy / max(identity, 1e-12)}

    # --- persistence (plain tensors and python types: torch.load(weights_only=True) works) ---
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "policy": {k: v.detach().cpu().clone() for k, v in self.policy.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "num_updates": int(self.num_updates),
            "num_imagined": int(self.num_imagined),
            "padding": str(self.padding),
            "saturation_weight": float(self.saturation_weight),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(
                f"imagination state has version {state.get('version') if isinstance(state, dict) else None}; "
                f"this vase_rl reads version {STATE_VERSION}"
            )
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_updates = int(state["num_updates"])
        self.num_imagined = int(state.get("num_imagined", 0))
        padding = str(state.get("padding", "background"))
        if padding not in PADDING_MODES:
            raise ValueError(f"imagination state has unknown padding {padding!r}")
        self.padding = padding
        self.saturation_weight = float(state.get("saturation_weight", 1.0))

    def __repr__(self) -> str:
        return (
            f"Imagination(updates={self.num_updates}, max_shift={self.policy.max_shift}, "
            f"active_only={self.config.imagination_active_only})"
        )


# ------------------------------------------------------------------------------------------
# which latents are about position
# ------------------------------------------------------------------------------------------
@torch.no_grad()
def translation_sensitivity(
    learner: Any, x: Any, max_shift: float = 0.15, num_shifts: int = 8, seed: int = 0
) -> np.ndarray:
    """How much each latent's posterior mean moves when the images are translated.

    Each image is translated by ``num_shifts`` random shifts within ``max_shift`` x the side;
    per latent, the result is the variance of mu across the shifts, averaged over the images
    (in the latent's own units, where the prior has variance 1). Position latents score high,
    identity latents and unused ones near 0. Returns (N,) float; ``np.argsort(-s)[:2]`` are the
    two most position-like latents."""
    from vase_rl.batches import as_image_batch

    xt = as_image_batch(x, learner.config.image_shape, learner.device)
    gen = torch.Generator(device=learner.device).manual_seed(int(seed))
    b = xt.shape[0]
    shifted, _ = random_translation(xt.repeat(num_shifts, 1, 1, 1), max_shift, gen)
    was_training = learner.encoder.training
    learner.encoder.eval()
    try:
        mu = learner.encoder(shifted)[0].float().view(num_shifts, b, -1)
    finally:
        learner.encoder.train(was_training)
    return mu.var(0, unbiased=False).mean(0).cpu().numpy()


# ------------------------------------------------------------------------------------------
# acting for real
# ------------------------------------------------------------------------------------------
class ImaginationExplorer:
    """Goal-conditioned explorer: realise an imagined z* in an environment whose action is a
    translation, using the imagination policy's output as the action.

    At each step the policy sees the real observation x and z*, proposes a translation t (pixels)
    that would make q(z | t . x) match z*, and the explorer sends the env action that moves the
    sprite by t (clipped to the action box). Repeating this closes the loop (the env's move per
    step is bounded, and the world is not the imagined image). :meth:`realise` records the
    latent error || z* - mu(x_t) ||^2 over the scored latents after every step.

    Args:
        learner: a :class:`vase_rl.VASE` with ``config.imagination`` on (``learner.imagination``).
        pixels_per_action: pixels the sprite moves per unit of action; by default read from a
            ``SpriteTaskEnv`` (``max_shift`` x the sprite's movable span) when :meth:`realise`
            or :meth:`act` get an ``env``.
    """

    def __init__(self, learner: Any, pixels_per_action: float | Sequence[float] | None = None) -> None:
        if getattr(learner, "imagination", None) is None:
            raise ValueError("the learner has no imagination policy; build it with config.imagination=True")
        self.learner = learner
        self.imagination: Imagination = learner.imagination
        self.pixels_per_action = (
            None
            if pixels_per_action is None
            else np.broadcast_to(np.asarray(pixels_per_action, dtype=np.float64), (2,)).copy()
        )

    @staticmethod
    def env_pixels_per_action(env: Any) -> np.ndarray:
        """Pixels moved per unit action in a ``SpriteTaskEnv`` (x, y)."""
        base = getattr(env, "unwrapped", env)
        try:
            fam = base.family
            span = float(fam.image_size - fam.patch_size)
            step = float(base.max_shift)
        except AttributeError as err:
            raise ValueError(
                "cannot read the translation scale from this env; pass pixels_per_action="
                "(pixels the sprite moves per unit action)"
            ) from err
        if span <= 0:
            raise ValueError("the env's sprite cannot move (its patch fills the image)")
        return np.array([span * step, span * step])

    def _scale(self, env: Any | None) -> np.ndarray:
        if self.pixels_per_action is not None:
            return self.pixels_per_action
        if env is None:
            raise ValueError("give pixels_per_action or pass the env")
        return self.env_pixels_per_action(env)

    def _obs(self, obs: Any) -> torch.Tensor:
        from vase_rl.batches import as_image_batch

        arr = obs if isinstance(obs, torch.Tensor) else np.asarray(obs)
        if arr.ndim == 3:
            arr = arr[None]
        return as_image_batch(arr, self.learner.config.image_shape, self.learner.device)

    @torch.no_grad()
    def encode(self, obs: Any) -> np.ndarray:
        """Posterior means (unmasked) of one observation: (latent_dim,)."""
        return self.learner.encoder(self._obs(obs))[0].float()[0].cpu().numpy()

    @torch.no_grad()
    def translation(self, obs: Any, z_star: Any) -> np.ndarray:
        """The policy's translation (dx, dy) in pixels for one observation and goal."""
        x = self._obs(obs)
        z = torch.as_tensor(np.asarray(z_star, dtype=np.float32), device=self.learner.device).reshape(1, -1)
        return self.imagination.policy.shift_pixels(x, z)[0].cpu().numpy().astype(np.float64)

    def act(self, obs: Any, z_star: Any, env: Any | None = None) -> np.ndarray:
        """Env action (float32 (2,) in [-1, 1]) that moves the sprite by the policy's translation."""
        return np.clip(self.translation(obs, z_star) / self._scale(env), -1.0, 1.0).astype(np.float32)

    def imagine_goal(
        self,
        obs: Any,
        latents: Sequence[int] | np.ndarray,
        rng: np.random.Generator | int | None = None,
        scale: float = 1.0,
    ) -> np.ndarray:
        """ "This object, but elsewhere": z* = mu(obs) with the given (position) latents redrawn
        from N(0, scale^2)."""
        rng = np.random.default_rng(rng)
        z = self.encode(obs).astype(np.float32)
        idx = np.asarray(latents, dtype=np.int64).reshape(-1)
        z[idx] = rng.normal(0.0, scale, size=idx.size).astype(np.float32)
        return z

    def realise(
        self,
        env: Any,
        z_star: Any,
        obs: Any | None = None,
        steps: int = 8,
        mask: Any | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Act for up to ``steps`` steps to realise ``z_star`` (from ``obs``, or a fresh
        ``env.reset(seed=seed)``). Returns ``errors`` (latent error before acting and after each
        step, on ``mask``: default the learner's active latents), ``initial_error``,
        ``final_error``, ``best_error``, ``actions``, ``positions`` (when the env reports them)
        and ``obs`` (the last observation)."""
        if obs is None:
            obs, info = env.reset(seed=seed)
        else:
            info = {}
        z_star = np.asarray(z_star, dtype=np.float32).reshape(-1)
        if mask is None:
            mask = np.asarray(self.learner.latent_mask, dtype=bool)
        errors = [float(latent_error(self.encode(obs)[None], z_star[None], mask)[0])]
        actions, positions = [], [np.asarray(info["position"]).tolist()] if "position" in info else []
        for _ in range(int(steps)):
            action = self.act(obs, z_star, env)
            obs, _, terminated, truncated, info = env.step(action)
            actions.append(action.tolist())
            if "position" in info:
                positions.append(np.asarray(info["position"]).tolist())
            errors.append(float(latent_error(self.encode(obs)[None], z_star[None], mask)[0]))
            if terminated or truncated:
                break
        return {
            "errors": errors,
            "initial_error": errors[0],
            "final_error": errors[-1],
            "best_error": min(errors),
            "actions": actions,
            "positions": positions,
            "obs": obs,
        }
