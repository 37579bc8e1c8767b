"""Gymnasium and Stable-Baselines3 wrappers that turn image observations into VASE latents.

* :class:`VASEWrapper` — a ``gymnasium.ObservationWrapper`` for one environment;
* :class:`VecVASE` — an SB3 ``VecEnvWrapper`` modelled on ``VecNormalize``: all sub-envs are
  encoded in one batch in the main process (``SubprocVecEnv`` workers only run environments),
  ``infos[i]["terminal_observation"]`` is encoded too, ``save(path)`` / ``VecVASE.load(path, venv)``;
* :class:`VASEVectorWrapper` — the same for Gymnasium vector envs (``gym.make_vec``).

What happens to each observation (batch)::

    raw image ─► ImageObservationAdapter (layout, dtype, grey/RGB, resize; vase_rl.observations)
              ─► if learning: FIFO window of recent frames (current data only, never a replay of
                 old domains) ─► every ``train_every`` wrapper steps, once ``learning_starts``
                 frames were seen: ``gradient_steps`` x ``VASE.update(batch_size frames)``
              ─► masked posterior mean (+ optional inferred-domain one-hot, latent mask)
              ─► float32 latent in Box(-clip, clip, (d,)), a fresh NaN-free array every call.

The learner (weights, optimiser, domains, RNG) is one :class:`vase_rl.VASE` object: several
wrappers may share it (pass ``learner=``). The window and counters are per wrapper and
transient (they are not saved: a loaded wrapper refills its window first).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from vase_rl.config import VASEConfig
from vase_rl.learner import VASE
from vase_rl.observations import ImageObservationAdapter

__all__ = [
    "VASEWrapper",
    "VecVASE",
    "VASEVectorWrapper",
    "LatentFeed",
    "make_vase_vec_env",
    "resolve_learner",
    "save_checkpoint",
    "load_checkpoint",
    "sync_vase",
    "unwrap_vase",
    "find_vec_vase_in",
    "limit_torch_threads",
]

WRAPPER_CHECKPOINT_KEY = "vase_rl_wrapper"
DEFAULT_PRESET = "cpu32"
DEFAULT_CLIP = 10.0
DEFAULT_TRAIN_EVERY = 8

# ------------------------------------------------------------------------------------------
# learner construction and checkpoints
# ------------------------------------------------------------------------------------------
ConfigLike = VASEConfig | dict | str | None


def _as_config(config: ConfigLike) -> VASEConfig:
    if config is None:
        return VASEConfig.preset(DEFAULT_PRESET)
    if isinstance(config, VASEConfig):
        return config
    if isinstance(config, dict):
        return VASEConfig.from_dict(dict(config))
    if isinstance(config, (str, os.PathLike)):
        text = str(config)
        if text.endswith(".json") or os.path.sep in text:
            return VASEConfig.load(text)
        return VASEConfig.preset(text)
    raise TypeError(
        f"config must be a VASEConfig, a dict of its fields, a preset name (e.g. 'cpu32') or the path "
        f"of a config .json; got {type(config).__name__}"
    )


def _config_record(config: ConfigLike) -> Any:
    """A JSON-able form of ``config`` for ``RecordConstructorArgs`` (never a live object)."""
    if isinstance(config, VASEConfig):
        return config.to_dict()
    if isinstance(config, os.PathLike):
        return str(config)
    return config


def resolve_learner(
    config: ConfigLike = None,
    learner: VASE | None = None,
    learner_path: str | os.PathLike | None = None,
    seed: int | None = None,
    device: str | torch.device = "auto",
) -> VASE:
    """The learner a wrapper uses: ``learner`` itself (shared), one loaded from ``learner_path``
    (a ``VASE.save`` or wrapper ``save`` file), or a new ``VASE(config, seed, device)``."""
    if learner is not None:
        if not isinstance(learner, VASE):
            raise TypeError(f"learner must be a vase_rl.VASE, got {type(learner).__name__}")
        if learner_path is not None:
            raise ValueError("pass either learner= or learner_path=, not both")
        if config is not None and _as_config(config) != learner.config:
            raise ValueError("config differs from the given learner's config; pass only learner= to share it")
        return learner
    if learner_path is not None:
        if config is not None:
            raise ValueError("pass either config= or learner_path= (the checkpoint holds its config), not both")
        return load_checkpoint(learner_path, device=device)[0]
    return VASE(_as_config(config), seed=seed, device=device)


def save_checkpoint(
    path: str | os.PathLike, learner: VASE, settings: dict[str, Any] | None = None, kind: str = "VASE"
) -> Path:
    """Write the learner's full state (a file ``VASE.load`` reads) plus the wrapper's settings
    in the checkpoint's ``extra`` dict, atomically, and the config as ``<path>.config.json``."""
    extra = None if settings is None else {WRAPPER_CHECKPOINT_KEY: {"kind": kind, "settings": dict(settings)}}
    return learner.save(path, extra=extra)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "auto") -> tuple[VASE, dict[str, Any]]:
    """(learner, wrapper settings) from a file written by a wrapper's ``save`` or ``VASE.save``
    (settings are then empty)."""
    state = VASE._read_checkpoint(path)
    learner = VASE.from_state_dict(state, device=device, source=str(path))
    extra = state.get("extra") if isinstance(state, dict) else None
    wrapper = extra.get(WRAPPER_CHECKPOINT_KEY) if isinstance(extra, dict) else None
    settings = dict(wrapper.get("settings", {})) if isinstance(wrapper, dict) else {}
    return learner, settings


# ------------------------------------------------------------------------------------------
# the shared machinery: adapter + schedule + window + latent output
# ------------------------------------------------------------------------------------------
_SCALAR_KEYS = (
    "loss",
    "recon",
    "kl",
    "capacity",
    "regulariser",
    "classifier",
    "dream_encoder",
    "dream_decoder",
    "dream_classifier",
    "atypicality_max",
    "active_latents",
    "used_latents",
)
_EVENTS = ("new", "switch", "pending", "max_domains")


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class LatentFeed:
    """Adapter, training schedule, recent-frame window and latent output of one wrapper.

    ``frames_per_step`` is the number of frames one wrapper step brings (1 for a single env,
    ``num_envs`` for vector envs); it only sets the default window size.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        learner: VASE,
        *,
        frames_per_step: int = 1,
        image_key: str | None = None,
        channels_first: bool | None = None,
        grayscale: bool | None = None,
        clip: float = DEFAULT_CLIP,
        append_domain: bool = False,
        append_mask: bool = False,
        train_every: int = DEFAULT_TRAIN_EVERY,
        gradient_steps: int = 1,
        batch_size: int | None = None,
        learning_starts: int | None = None,
        window_size: int | None = None,
    ) -> None:
        self.learner = learner
        cfg = learner.config
        self.adapter = ImageObservationAdapter(
            observation_space, cfg.image_shape, image_key=image_key, channels_first=channels_first, grayscale=grayscale
        )
        if not (isinstance(clip, (int, float)) and not isinstance(clip, bool) and np.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be a finite positive number, got {clip!r}")
        self.clip = float(clip)
        self.append_domain = bool(append_domain)
        self.append_mask = bool(append_mask)
        self.train_every = _positive_int("train_every", train_every)
        self.gradient_steps = _positive_int("gradient_steps", gradient_steps)
        self.batch_size = _positive_int("batch_size", cfg.batch_size if batch_size is None else batch_size, 2)
        self.learning_starts = _positive_int(
            "learning_starts", self.batch_size if learning_starts is None else learning_starts, 0
        )
        # Updates draw from the learner's window of recent frames (vase_rl/window.py): a window of
        # many episodes, because consecutive frames of a few episodes are far from i.i.d. and
        # VASE's atypicality mask reads a batch whose latent marginals differ from the prior as
        # "atypical" (see docs/RL.md); 16 batches of recent frames is still current data.
        # window_size=None keeps the learner's window (config.window_size, 1,024 frames in the
        # presets), grown only if one update's new frames would not fit: a wrapper built to share
        # a learner (e.g. a frozen evaluation env) never shrinks the window of the one training it.
        # An explicit window_size resizes the shared window.
        needed = self.train_every * max(int(frames_per_step), 1)
        if window_size is None:
            window_size = max(learner.window.capacity, needed)
        learner.window.resize(_positive_int("window_size", window_size, 2))
        self.image_key, self.channels_first, self.grayscale = image_key, channels_first, grayscale
        self.latent_dim = cfg.latent_dim
        self.dim = (
            cfg.latent_dim
            + (cfg.max_domains if self.append_domain else 0)
            + (cfg.latent_dim if self.append_mask else 0)
        )
        self.latent_space = spaces.Box(-self.clip, self.clip, (self.dim,), np.float32)
        self._since_update = 0
        self.frames_seen = 0
        self.steps = 0
        self.updates = 0
        self.history: deque[dict[str, Any]] = deque(maxlen=1000)
        self._mask_key: tuple | None = None
        self._mask_owner: VASE | None = None
        self._mask_cache: torch.Tensor | None = None

    # ---------------------------------------------------------------- settings
    def settings(self) -> dict[str, Any]:
        """Plain-data settings (what ``save`` stores beside the learner)."""
        return {
            "image_key": self.image_key,
            "channels_first": self.channels_first,
            "grayscale": self.grayscale,
            "clip": self.clip,
            "append_domain": self.append_domain,
            "append_mask": self.append_mask,
            "train_every": self.train_every,
            "gradient_steps": self.gradient_steps,
            "batch_size": self.batch_size,
            "learning_starts": self.learning_starts,
            "window_size": self.window_size,
        }

    @property
    def window_size(self) -> int:
        """Capacity of the learner's frame window (shared by every wrapper of that learner)."""
        return self.learner.window.capacity

    def set_learner(self, learner: VASE) -> None:
        """Use another learner (e.g. a training env's, for evaluation); same latent layout required."""
        if not isinstance(learner, VASE):
            raise TypeError(f"learner must be a vase_rl.VASE, got {type(learner).__name__}")
        old, new = self.learner.config, learner.config
        if (old.image_shape, old.latent_dim, old.max_domains) != (new.image_shape, new.latent_dim, new.max_domains):
            raise ValueError(
                f"cannot share a learner with image_shape={new.image_shape}, latent_dim={new.latent_dim}, "
                f"max_domains={new.max_domains}: this wrapper was built for image_shape={old.image_shape}, "
                f"latent_dim={old.latent_dim}, max_domains={old.max_domains}"
            )
        learner.window.resize(max(learner.window.capacity, self.window_size))
        self.learner = learner

    # ---------------------------------------------------------------- data path
    def prepare(self, images: Any) -> torch.Tensor:
        """Raw image batch (already selected from a Dict) -> learner input on its device."""
        if isinstance(images, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(images))
        elif isinstance(images, torch.Tensor):
            t = images.detach()
        else:
            t = torch.from_numpy(np.ascontiguousarray(np.asarray(images)))
        expected = self.adapter.single_shape
        if tuple(t.shape[1:]) != expected:
            raise ValueError(f"observation batch has shape {tuple(t.shape)}; expected (B, *{expected})")
        return self.adapter.convert(t.to(self.learner.device, non_blocking=True))

    def learn_from(self, x: torch.Tensor) -> list[dict[str, Any]]:
        """Add prepared frames to the learner's window and run the updates that are due."""
        learner = self.learner
        learner.window.append(x)
        self.frames_seen += int(x.shape[0])
        self.steps += 1
        self._since_update += 1
        out: list[dict[str, Any]] = []
        due = self.frames_seen >= self.learning_starts and self._since_update >= self.train_every
        if due and len(learner.window) >= 2:
            self._since_update = 0
            for _ in range(self.gradient_steps):
                stats = learner.update(learner.sample_window(self.batch_size))
                self.updates += 1
                self.history.append({k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))})
                out.append(stats)
        return out

    @property
    def window_frames(self) -> int:
        return len(self.learner.window)

    def clear_window(self) -> None:
        self.learner.window.clear()

    def _mask(self, device: torch.device) -> torch.Tensor:
        """The learner's mask in force as a float tensor, cached until the next update."""
        learner = self.learner
        key = (learner.num_updates, learner.skipped_updates, str(device))
        if self._mask_key != key or self._mask_owner is not learner:
            self._mask_owner = learner
            self._mask_cache = torch.as_tensor(learner.latent_mask, dtype=torch.float32, device=device)
            self._mask_key = key
        return self._mask_cache

    @torch.no_grad()
    def latents(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(masked posterior means, encoder hidden layer) of prepared frames.

        A lean path: the encoder ``VASE.encode_tensor`` runs (the learner's own, or its synced
        bf16 / compiled form, as ``VASE.execution`` resolved), under the learner's autocast, times
        the cached mask: the same numbers as ``encode_tensor`` without its per-call bookkeeping
        (mode switches of three networks, the mask look-up), which costs as much as a fifth of
        a cpu32 batch of 8 frames."""
        learner = self.learner
        encoder = learner.encoder
        if encoder.training:
            encoder.eval()
        with learner._autocast():
            mu, _, hidden = learner._compiled()(x)
        return mu.float() * self._mask(mu.device), hidden

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> np.ndarray:
        """Prepared frames -> (B, d) float32 observations: a new, finite, clipped array."""
        learner = self.learner
        z, hidden = self.latents(x)
        parts = [z]
        if self.append_domain:
            if hidden is None:
                _, _, hidden = learner.encoder(x)
            classifier = learner.classifier
            if classifier.training:
                classifier.eval()
            n_dom = max(learner.num_domains, 1)
            domain = classifier(hidden.float())[:, :n_dom].argmax(1)
            parts.append(torch.nn.functional.one_hot(domain, learner.config.max_domains).to(z.dtype))
        if self.append_mask:
            parts.append(self._mask(z.device).expand(z.shape[0], -1))
        out = (torch.cat(parts, dim=1) if len(parts) > 1 else z).cpu().numpy()
        out = np.nan_to_num(out, nan=0.0, posinf=self.clip, neginf=-self.clip)  # a new array
        np.clip(out, -self.clip, self.clip, out=out)
        return out.astype(np.float32, copy=False)

    # ---------------------------------------------------------------- statistics
    def stats(self, learning: bool, since: int | None = None) -> dict[str, Any]:
        """Plain-data statistics; with ``since`` (a ``num_updates`` value), loss terms are the mean
        over this wrapper's updates after it and events are counted after it."""
        learner = self.learner
        mask = learner.latent_mask
        used = learner.used_latents
        out: dict[str, Any] = {
            "learning": bool(learning),
            "num_updates": int(learner.num_updates),
            "wrapper_updates": int(self.updates),
            "frames_seen": int(self.frames_seen),
            "window_frames": len(self.learner.window),
            "domain": int(learner.current_domain),
            "num_domains": int(learner.num_domains),
            "active_latents": int(mask.sum()),
            "used_latents": -1 if used is None else int(used.sum()),
            "capacity": float(learner.capacity),
            "skipped_updates": int(learner.skipped_updates),
            "execution": dict(learner.execution),  # resolved precision/layout (vase_rl/precision.py)
        }
        if since is None:
            recent = [self.history[-1]] if self.history else []
        else:
            recent = [h for h in self.history if int(h.get("step", 0)) > since]
        out["updates_aggregated"] = len(recent)
        valid = [h for h in recent if not h.get("skipped")]
        for key in _SCALAR_KEYS:
            values = [float(h[key]) for h in valid if key in h]
            if values:
                name = {
                    "capacity": "update_capacity",
                    "active_latents": "mean_active_latents",
                    "used_latents": "mean_used_latents",
                }.get(key, key)
                out[name] = float(np.mean(values))
        if "kl" in out and "update_capacity" in out:
            out["kl_minus_capacity"] = out["kl"] - out["update_capacity"]
        start = -1 if since is None else since
        counts = dict.fromkeys(_EVENTS, 0)
        for d in learner.domain_log:
            if d["step"] >= start and d["event"] in counts:
                counts[d["event"]] += 1
        for event, n in counts.items():
            out[f"events_{event}"] = n
        return out


def _feed_kwargs(
    image_key,
    channels_first,
    grayscale,
    clip,
    append_domain,
    append_mask,
    train_every,
    gradient_steps,
    batch_size,
    learning_starts,
    window_size,
) -> dict[str, Any]:
    return dict(
        image_key=image_key,
        channels_first=channels_first,
        grayscale=grayscale,
        clip=clip,
        append_domain=append_domain,
        append_mask=append_mask,
        train_every=train_every,
        gradient_steps=gradient_steps,
        batch_size=batch_size,
        learning_starts=learning_starts,
        window_size=window_size,
    )


# ------------------------------------------------------------------------------------------
# Gymnasium: one environment
# ------------------------------------------------------------------------------------------
class _FeedAccess:
    """What the Gymnasium wrappers share: the learner/feed accessors, the learning switch,
    statistics and saving. Subclasses set ``self._feed`` and ``self._learning``."""

    _feed: LatentFeed
    _learning: bool
    _checkpoint_kind = "VASEWrapper"

    @property
    def learner(self) -> VASE:
        """The :class:`vase_rl.VASE` this wrapper feeds and encodes with (possibly shared)."""
        return self._feed.learner

    @property
    def feed(self) -> LatentFeed:
        return self._feed

    @property
    def learning(self) -> bool:
        return self._learning

    @learning.setter
    def learning(self, flag: bool) -> None:
        self.set_learning(flag)

    def set_learning(self, flag: bool) -> None:
        """Switch online learning on/off (off: no frames stored, no updates, deterministic)."""
        self._learning = bool(flag)

    def get_vase_stats(self, since: int | None = None) -> dict[str, Any]:
        """Plain-data statistics (losses, KL vs capacity, domains, latents, events); see
        :meth:`LatentFeed.stats`. Safe through ``env_method``/``call`` of vector envs."""
        return self._feed.stats(self._learning, since)

    def set_learner(self, learner: VASE) -> None:
        self._feed.set_learner(learner)

    def _record_args(
        self,
        config: ConfigLike,
        learner: VASE | None,
        learning: bool,
        learner_path: Any,
        seed: int | None,
        device: Any,
        feed_kwargs: dict[str, Any],
    ) -> None:
        """Gymnasium's ``RecordConstructorArgs`` with JSON-able values only (a config as a dict)."""
        gym.utils.RecordConstructorArgs.__init__(
            self,
            config=_config_record(learner.config if config is None and learner is not None else config),
            learning=bool(learning),
            learner_path=None if learner_path is None else str(learner_path),
            seed=seed,
            device=device if isinstance(device, str) else str(device),
            **feed_kwargs,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Save the learner and this wrapper's settings (``VASE.load`` also reads the file)."""
        return save_checkpoint(
            path, self.learner, dict(self._feed.settings(), learning=self._learning), self._checkpoint_kind
        )


class VASEWrapper(_FeedAccess, gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Image observations -> VASE latents, with VASE learning online from the frames.

    >>> env = VASEWrapper(gym.make("vase_rl/SpriteTask-v0"), VASEConfig.preset("cpu32"))
    >>> env.observation_space            # Box(-10.0, 10.0, (16,), float32)

    Args:
        env: an environment with an image observation space (see :mod:`vase_rl.observations`).
        config: ``VASEConfig``, dict of its fields, preset name or config ``.json`` path
            (default: the ``"cpu32"`` preset); ignored when ``learner``/``learner_path`` is given.
        learner: an existing :class:`vase_rl.VASE` to use (and share with other wrappers).
        learning: feed frames to the learner and update it (``False``: a pure, deterministic encoder).
        learner_path: load the learner from a checkpoint (for re-creation from a spec / RL Zoo).
        seed, device: for a new learner (``device="auto"`` picks CUDA when present).
        image_key: the image entry of a ``Dict`` observation space.
        channels_first, grayscale: layout / colour overrides (see ``ImageObservationAdapter``).
        clip: observation bound; latents are clipped to [-clip, clip].
        append_domain: append the one-hot (``max_domains``) of the domain the classifier infers.
        append_mask: append the latent mask in force (1 = active latent).
        train_every: wrapper steps (observations) between updates; ``gradient_steps`` per update.
        batch_size: frames per update (default ``config.batch_size``), drawn without replacement
            from the learner's FIFO window of the last ``window_size`` frames (default: the learner's, 1,024).
        learning_starts: frames to see before the first update (default ``batch_size``).

    Only JSON-able arguments are recorded for ``env.spec``: a ``learner`` object is not (a
    re-made env gets a fresh learner unless ``learner_path`` is given).
    """

    def __init__(
        self,
        env: gym.Env,
        config: ConfigLike = None,
        learner: VASE | None = None,
        learning: bool = True,
        *,
        learner_path: str | None = None,
        seed: int | None = None,
        device: str = "auto",
        image_key: str | None = None,
        channels_first: bool | None = None,
        grayscale: bool | None = None,
        clip: float = DEFAULT_CLIP,
        append_domain: bool = False,
        append_mask: bool = False,
        train_every: int = DEFAULT_TRAIN_EVERY,
        gradient_steps: int = 1,
        batch_size: int | None = None,
        learning_starts: int | None = None,
        window_size: int | None = None,
    ) -> None:
        feed_kwargs = _feed_kwargs(
            image_key,
            channels_first,
            grayscale,
            clip,
            append_domain,
            append_mask,
            train_every,
            gradient_steps,
            batch_size,
            learning_starts,
            window_size,
        )
        self._record_args(config, learner, learning, learner_path, seed, device, feed_kwargs)
        gym.ObservationWrapper.__init__(self, env)
        learner = resolve_learner(config, learner, learner_path, seed, device)
        self._feed = LatentFeed(env.observation_space, learner, frames_per_step=1, **feed_kwargs)
        self.observation_space = self._feed.latent_space
        self._learning = bool(learning)

    # ---------------------------------------------------------------- gymnasium API
    def observation(self, observation: Any) -> np.ndarray:
        x = self._feed.prepare(self._feed.adapter.select(observation)[None])
        if self._learning:
            self._feed.learn_from(x)
        return self._feed.encode(x)[0]

    # ---------------------------------------------------------------- control and data
    def encode(self, observation: Any, batched: bool = False) -> np.ndarray:
        """Latents of raw observation(s), without any side effect."""
        images = self._feed.adapter.select(observation)
        x = self._feed.prepare(images if batched else np.asarray(images)[None])
        z = self._feed.encode(x)
        return z if batched else z[0]

    def reconstruct(self, observation: Any, batched: bool = False) -> np.ndarray:
        """The learner's reconstruction (C, H, W) float in [0, 1] of raw observation(s)."""
        images = self._feed.adapter.select(observation)
        x = self._feed.prepare(images if batched else np.asarray(images)[None])
        rec = self.learner.reconstruct(x)
        return rec if batched else rec[0]

    @classmethod
    def load(cls, path: str | os.PathLike, env: gym.Env, device: str = "auto", **overrides: Any) -> VASEWrapper:
        """Wrap ``env`` with the learner and settings saved at ``path`` (``overrides`` win)."""
        learner, settings = load_checkpoint(path, device=device)
        kwargs = dict(settings)
        kwargs.update(overrides)
        wrapper = cls(env, learner=learner, device=device, **kwargs)
        wrapper._saved_kwargs.update(config=None, learner_path=str(path))
        return wrapper


# ------------------------------------------------------------------------------------------
# Stable-Baselines3: vectorised environments
# ------------------------------------------------------------------------------------------
class VecVASE(VecEnvWrapper):
    """SB3 ``VecEnvWrapper`` encoding every sub-env's image in one batch with a VASE learner.

    Modelled on ``VecNormalize``: ``training`` switches learning (set it to ``False`` for
    evaluation), :meth:`encode` is side-effect free, :meth:`get_original_obs` returns the last
    raw observations, :meth:`save` / :meth:`VecVASE.load(path, venv) <load>` persist the learner
    and the settings (the agent's ``model.save`` does not include them), and pickling excludes
    the venv (call :meth:`set_venv` after unpickling). Options as for :class:`VASEWrapper`;
    ``train_every`` counts vector steps (8 envs, ``train_every=8``: one update per 64 new
    frames); an update draws ``batch_size`` of the last ``window_size`` (default
    the learner's ``config.window_size``, 1,024) frames.
    """

    def __init__(
        self,
        venv: VecEnv,
        config: ConfigLike = None,
        learner: VASE | None = None,
        training: bool = True,
        *,
        learner_path: str | None = None,
        seed: int | None = None,
        device: str = "auto",
        image_key: str | None = None,
        channels_first: bool | None = None,
        grayscale: bool | None = None,
        clip: float = DEFAULT_CLIP,
        append_domain: bool = False,
        append_mask: bool = False,
        train_every: int = DEFAULT_TRAIN_EVERY,
        gradient_steps: int = 1,
        batch_size: int | None = None,
        learning_starts: int | None = None,
        window_size: int | None = None,
    ) -> None:
        if not isinstance(venv, VecEnv):
            raise TypeError(
                f"VecVASE wraps an SB3 VecEnv (e.g. make_vec_env(...)); got {type(venv).__name__}. "
                "For a single gymnasium env use VASEWrapper."
            )
        learner = resolve_learner(config, learner, learner_path, seed, device)
        self._feed = LatentFeed(
            venv.observation_space,
            learner,
            frames_per_step=venv.num_envs,
            **_feed_kwargs(
                image_key,
                channels_first,
                grayscale,
                clip,
                append_domain,
                append_mask,
                train_every,
                gradient_steps,
                batch_size,
                learning_starts,
                window_size,
            ),
        )
        super().__init__(venv, observation_space=self._feed.latent_space)
        self.training = bool(training)
        self.old_obs: Any = None

    # ---------------------------------------------------------------- VecEnv API
    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        self.old_obs = obs
        return self._process(obs, [], [])

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        self.old_obs = obs
        idx = [i for i, done in enumerate(dones) if done and infos[i].get("terminal_observation") is not None]
        terminal = [self._feed.adapter.select(infos[i]["terminal_observation"]) for i in idx]
        latents = self._process(obs, terminal, idx, infos)
        return latents, rewards, dones, infos

    def _process(self, obs: Any, terminal: list[Any], idx: list[int], infos: Any = None) -> np.ndarray:
        images = np.asarray(self._feed.adapter.select(obs))
        n = images.shape[0]
        if terminal:
            images = np.concatenate([images, np.stack([np.asarray(t) for t in terminal])], axis=0)
        x = self._feed.prepare(images)
        if self.training:
            self._feed.learn_from(x)
        z = self._feed.encode(x)
        for j, i in enumerate(idx):
            infos[i]["terminal_observation"] = z[n + j].copy()
        return z[:n]

    # ---------------------------------------------------------------- control and data
    @property
    def learner(self) -> VASE:
        return self._feed.learner

    @property
    def feed(self) -> LatentFeed:
        return self._feed

    def set_training(self, flag: bool) -> None:
        self.training = bool(flag)

    set_learning = set_training

    @property
    def learning(self) -> bool:
        return self.training

    def encode(self, obs: Any) -> np.ndarray:
        """Latents of a batch of raw observations (as the wrapped venv returns them), no side effect."""
        return self._feed.encode(self._feed.prepare(np.asarray(self._feed.adapter.select(obs))))

    def get_original_obs(self) -> Any:
        """The raw observations of the last ``reset``/``step``."""
        return self.old_obs

    def get_vase_stats(self, since: int | None = None) -> dict[str, Any]:
        return self._feed.stats(self.training, since)

    def set_learner(self, learner: VASE) -> None:
        self._feed.set_learner(learner)

    def for_evaluation(self, eval_venv: VecEnv, **overrides: Any) -> VecVASE:
        """Wrap ``eval_venv`` with this wrapper's learner (the same object) and settings, frozen:
        evaluation always sees the current representation and never changes it."""
        kwargs = dict(self._feed.settings())
        kwargs.update(overrides)
        kwargs.setdefault("training", False)
        return VecVASE(eval_venv, learner=self.learner, **kwargs)

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Save the learner and settings (``VASE.load`` also reads the file)."""
        return save_checkpoint(path, self.learner, dict(self._feed.settings(), learning=self.training), "VecVASE")

    @staticmethod
    def load(path: str | os.PathLike, venv: VecEnv, device: str = "auto", **overrides: Any) -> VecVASE:
        """Wrap ``venv`` with the learner and settings saved at ``path``; ``overrides`` (e.g.
        ``training=False`` for evaluation) win over the saved settings."""
        learner, settings = load_checkpoint(path, device=device)
        kwargs = dict(settings)
        if "learning" in kwargs:
            kwargs["training"] = kwargs.pop("learning")
        kwargs.update(overrides)
        return VecVASE(venv, learner=learner, device=device, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["venv"]
        del state["class_attributes"]
        feed: LatentFeed = state.pop("_feed")
        state["_vase_checkpoint"] = {
            "learner": feed.learner.state_dict(),
            "device": str(feed.learner.device),
            "settings": feed.settings(),
            "space": feed.adapter.observation_space,
            "frames_per_step": self.num_envs,
        }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        ckpt = state.pop("_vase_checkpoint")
        device = ckpt["device"] if torch.device(ckpt["device"]).type != "cuda" or torch.cuda.is_available() else "cpu"
        learner = VASE.from_state_dict(ckpt["learner"], device=device)
        self.__dict__.update(state)
        self._feed = LatentFeed(ckpt["space"], learner, frames_per_step=ckpt["frames_per_step"], **ckpt["settings"])
        self.venv = None  # type: ignore[assignment]

    def set_venv(self, venv: VecEnv) -> None:
        """Attach a venv after unpickling (as ``VecNormalize.set_venv``)."""
        import inspect

        if self.venv is not None:
            raise ValueError("Trying to set venv of an already initialised VecVASE wrapper")
        if venv.observation_space != self._feed.adapter.observation_space:
            ImageObservationAdapter(
                venv.observation_space,
                self.learner.config.image_shape,
                self._feed.image_key,
                self._feed.channels_first,
                self._feed.grayscale,
            )
        self.venv = venv
        self.num_envs = venv.num_envs
        self.render_mode = venv.render_mode
        self.class_attributes = dict(inspect.getmembers(self.__class__))


# ------------------------------------------------------------------------------------------
# Gymnasium: vector environments
# ------------------------------------------------------------------------------------------
class VASEVectorWrapper(_FeedAccess, gym.vector.VectorObservationWrapper, gym.utils.RecordConstructorArgs):
    """The Gymnasium vector-env twin of :class:`VecVASE` (needs ``autoreset_mode`` NEXT_STEP or
    DISABLED, the defaults of ``SyncVectorEnv``/``AsyncVectorEnv``, in which final observations
    are ordinary observations). Options as for :class:`VASEWrapper`."""

    _checkpoint_kind = "VASEVectorWrapper"

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        config: ConfigLike = None,
        learner: VASE | None = None,
        learning: bool = True,
        *,
        learner_path: str | None = None,
        seed: int | None = None,
        device: str = "auto",
        image_key: str | None = None,
        channels_first: bool | None = None,
        grayscale: bool | None = None,
        clip: float = DEFAULT_CLIP,
        append_domain: bool = False,
        append_mask: bool = False,
        train_every: int = DEFAULT_TRAIN_EVERY,
        gradient_steps: int = 1,
        batch_size: int | None = None,
        learning_starts: int | None = None,
        window_size: int | None = None,
    ) -> None:
        feed_kwargs = _feed_kwargs(
            image_key,
            channels_first,
            grayscale,
            clip,
            append_domain,
            append_mask,
            train_every,
            gradient_steps,
            batch_size,
            learning_starts,
            window_size,
        )
        self._record_args(config, learner, learning, learner_path, seed, device, feed_kwargs)
        gym.vector.VectorObservationWrapper.__init__(self, env)
        learner = resolve_learner(config, learner, learner_path, seed, device)
        self._feed = LatentFeed(env.single_observation_space, learner, frames_per_step=env.num_envs, **feed_kwargs)
        self.single_observation_space = self._feed.latent_space
        self.observation_space = gym.vector.utils.batch_space(self._feed.latent_space, env.num_envs)
        self._learning = bool(learning)

    def observations(self, observations: Any) -> np.ndarray:
        x = self._feed.prepare(np.asarray(self._feed.adapter.select(observations)))
        if self._learning:
            self._feed.learn_from(x)
        return self._feed.encode(x)


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def limit_torch_threads(env: gym.Env, threads: int = 1) -> gym.Env:
    """``wrapper_class`` for ``make_vec_env``: runs inside each worker, where only the
    environment lives, and keeps torch there to ``threads`` thread(s)."""
    torch.set_num_threads(threads)
    return env


def make_vase_vec_env(
    env_id: str | Callable[..., gym.Env],
    n_envs: int = 8,
    config: ConfigLike = None,
    *,
    seed: int | None = None,
    vec_env_cls: str | type[VecEnv] = "dummy",
    start_method: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    wrapper_class: Callable[[gym.Env], gym.Env] | None = None,
    monitor_dir: str | None = None,
    **vase_kwargs: Any,
) -> VecVASE:
    """``make_vec_env`` (Monitor on each env) wrapped in :class:`VecVASE`. ``vec_env_cls``:
    ``"dummy"``, ``"subproc"`` (forkserver start, one torch thread per worker) or a class.
    ``vase_kwargs`` go to ``VecVASE`` (``learner=``, ``training=``, ``train_every=``, ...)."""
    from stable_baselines3.common.env_util import make_vec_env

    vec_kwargs: dict[str, Any] = {}
    if vec_env_cls in ("dummy", None):
        cls: type[VecEnv] = DummyVecEnv
    elif vec_env_cls == "subproc":
        cls = SubprocVecEnv
    elif isinstance(vec_env_cls, type) and issubclass(vec_env_cls, VecEnv):
        cls = vec_env_cls
    else:
        raise ValueError(f"vec_env_cls must be 'dummy', 'subproc' or a VecEnv class, got {vec_env_cls!r}")
    if cls is SubprocVecEnv:
        vec_kwargs["start_method"] = start_method or "forkserver"
    inner = wrapper_class
    wrap = _ThreadLimitedWrapper(inner) if cls is SubprocVecEnv else inner
    venv = make_vec_env(
        env_id,
        n_envs=n_envs,
        seed=seed,
        vec_env_cls=cls,
        env_kwargs=env_kwargs,
        wrapper_class=wrap,
        monitor_dir=monitor_dir,
        vec_env_kwargs=vec_kwargs or None,
    )
    try:
        return VecVASE(venv, config, seed=seed, **vase_kwargs)
    except BaseException:
        venv.close()
        raise


class _ThreadLimitedWrapper:
    """Picklable ``wrapper_class``: one torch thread in the worker, then the user's wrapper."""

    def __init__(self, inner: Callable[[gym.Env], gym.Env] | None) -> None:
        self.inner = inner

    def __call__(self, env: gym.Env) -> gym.Env:
        limit_torch_threads(env, 1)
        return env if self.inner is None else self.inner(env)


def find_vec_vase_in(venv: Any) -> VecVASE | None:
    """The first :class:`VecVASE` in an SB3 VecEnv wrapper stack, or ``None``."""
    depth = 0
    while venv is not None and depth < 64:
        if isinstance(venv, VecVASE):
            return venv
        venv = venv.venv if isinstance(venv, VecEnvWrapper) else None
        depth += 1
    return None


def unwrap_vase(env: Any) -> VecVASE | VASEWrapper | VASEVectorWrapper | None:
    """The first VASE wrapper in a (vector or single) wrapper stack, or ``None``."""
    seen = 0
    while env is not None and seen < 64:
        if isinstance(env, (VecVASE, VASEWrapper, VASEVectorWrapper)):
            return env
        env = getattr(env, "venv", None) if isinstance(env, VecEnvWrapper) else getattr(env, "env", None)
        seen += 1
    return None


def sync_vase(train_env: Any, eval_env: Any, share: bool = True) -> None:
    """Make ``eval_env``'s VASE wrapper use ``train_env``'s learner, frozen (the analogue of
    ``sync_envs_normalization``). ``share=True`` uses the same object (evaluation then always
    sees the current weights); ``share=False`` gives it a frozen copy of the current state."""
    train, evaluation = unwrap_vase(train_env), unwrap_vase(eval_env)
    if train is None or evaluation is None:
        which = "train_env" if train is None else "eval_env"
        raise ValueError(f"{which} has no VASE wrapper (VecVASE, VASEWrapper or VASEVectorWrapper)")
    learner = train.learner if share else VASE.from_state_dict(train.learner.state_dict(), device=train.learner.device)
    evaluation.set_learner(learner)
    evaluation.set_learning(False)
