"""Gymnasium and Stable-Baselines3 wrappers that turn image observations into VASE latents.

* :class:`VASEWrapper` — a ``gymnasium.ObservationWrapper`` for one environment;
* :class:`VecVASE` — an SB3 ``VecEnvWrapper`` modelled on ``VecNormalize``: all sub-envs are
  encoded in one batch in the main process (``SubprocVecEnv`` workers only run environments),
  ``infos[i]["terminal_observation"]`` is encoded too, ``save(path)`` / ``VecVASE.load(path, venv)``;
* :class:`VASEVectorWrapper` — the same for Gymnasium vector envs (``gym.make_vec``).

What happens to each observation (batch)::

    raw observation ─► ImageObservationAdapter (value range, layout, grey/RGB, frame stacks,
                       resize; vase_rl.observations) — ambiguous inputs raise with the fix
                    ─► if learning: the learner's FIFO window of recent frames ─► every
                       ``train_every`` frames, once ``learning_starts`` frames were seen:
                       ``gradient_steps`` x ``VASE.update(batch_size frames)`` — at once, or at the
                       next rollout boundary (``update_at``; LearningSchedule)
                    ─► masked posterior mean of the learner's encoder, or of its slow copy
                       (``slow_encoder_rate``; SlowEncoder) (+ optional domain one-hot, latent mask)
                    ─► float32 latent in Box(-clip, clip, (d,)), a fresh NaN-free array every call;
                       for a Dict observation, a Dict {"latents": ..., other entries passed through}
                       unless ``latents_only=True``.

The learner (weights, optimiser, domains, RNG, frame window) is one :class:`vase_rl.VASE`
object: several wrappers may share it (pass ``learner=``). What is each wrapper's own — the
learning switch, the update schedule and its counters — lives in one :class:`LearningSchedule`;
it also decides *when* the agent's encoder may change (drift control: rollout-boundary updates
through :meth:`LatentFeed.end_rollout`, pretraining before the agent's first step, freeze
windows), and the optional :class:`SlowEncoder` is what the agent reads while the learner trains.
When no seed is given, the learner takes the seed the agent or the environment is seeded with
(``PPO(seed=s)`` calls ``env.seed(s)``; ``reset(seed=s)`` for a single env), as long as it has
not learnt anything yet. :func:`set_stack_training` / :func:`freeze` switch every learning layer
of a wrapper stack (VecVASE, VecNormalize, VASEWrapper sub-envs, Gymnasium normalisers) at once.
:meth:`LatentFeed.fingerprint` identifies the representation an agent is trained on
(``vase_rl.agents.stack`` stores it with the agent and checks it on load).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import os
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper, VecNormalize
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from vase_rl.config import VASEConfig
from vase_rl.learner import VASE
from vase_rl.observations import ImageObservationAdapter

__all__ = [
    "VASEWrapper",
    "VecVASE",
    "VASEVectorWrapper",
    "LatentFeed",
    "LearningSchedule",
    "SlowEncoder",
    "LATENT_KEY",
    "make_vase_vec_env",
    "resolve_learner",
    "save_checkpoint",
    "load_checkpoint",
    "sync_vase",
    "unwrap_vase",
    "find_vec_vase_in",
    "limit_torch_threads",
    "set_stack_training",
    "freeze",
    "compare_fingerprints",
]

WRAPPER_CHECKPOINT_KEY = "vase_rl_wrapper"
DEFAULT_PRESET = "cpu32"
DEFAULT_CLIP = 10.0
DEFAULT_TRAIN_EVERY = 64  # frames per update round (8 envs x 8 steps)
LATENT_KEY = "latents"  # the entry holding the latents in a Dict output
PRETRAIN_WINDOW_BYTES = 256 * 2**20  # pretraining keeps every frame up to this size (64k frames at 32x32 grey)
FINGERPRINT_FORMAT = 1

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
    path: str | os.PathLike,
    learner: VASE,
    settings: dict[str, Any] | None = None,
    kind: str = "VASE",
    input_space: dict[str, Any] | None = None,
    state: dict[str, Any] | None = None,
) -> Path:
    """Write the learner's full state (a file ``VASE.load`` reads) plus the wrapper's settings,
    its own state (schedule counters, slow encoder) and a description of the raw image it reads
    in the checkpoint's ``extra`` dict, atomically, and the config as ``<path>.config.json``."""
    extra = None
    if settings is not None:
        record: dict[str, Any] = {"kind": kind, "settings": dict(settings)}
        if input_space is not None:
            record["input"] = dict(input_space)
        if state:
            record["state"] = state
        extra = {WRAPPER_CHECKPOINT_KEY: record}
    return learner.save(path, extra=extra)


def _saved_settings(record: dict[str, Any]) -> dict[str, Any]:
    """The wrapper keyword arguments stored in a checkpoint record. Checkpoints written before
    ``train_every`` counted frames stored it in wrapper steps: they load with that unit."""
    kwargs = dict(record.get("settings", {}))
    if "train_every" in kwargs and "train_every_unit" not in kwargs:
        kwargs["train_every_unit"] = "steps"
    return kwargs


def _wrapper_record(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(learner state, wrapper record) of a checkpoint file."""
    state = VASE._read_checkpoint(path)
    extra = state.get("extra") if isinstance(state, dict) else None
    wrapper = extra.get(WRAPPER_CHECKPOINT_KEY) if isinstance(extra, dict) else None
    return state, wrapper if isinstance(wrapper, dict) else {}


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "auto") -> tuple[VASE, dict[str, Any]]:
    """(learner, wrapper settings) from a file written by a wrapper's ``save`` or ``VASE.save``
    (settings are then empty)."""
    state, record = _wrapper_record(path)
    learner = VASE.from_state_dict(state, device=device, source=str(path))
    return learner, _saved_settings(record)


def _input_record(adapter: ImageObservationAdapter) -> dict[str, Any]:
    """Plain data describing the raw image a wrapper reads (checked when a checkpoint is reused)."""
    return {"shape": list(adapter.single_shape), "dtype": str(np.dtype(adapter.image_space.dtype))}


def _check_input(record: dict[str, Any] | None, adapter: ImageObservationAdapter, source: str) -> None:
    if not record:
        return
    now = _input_record(adapter)
    if list(record.get("shape", now["shape"])) != now["shape"] or record.get("dtype", now["dtype"]) != now["dtype"]:
        raise ValueError(
            f"{source} was trained on raw images of shape {tuple(record['shape'])} {record['dtype']}, but this env "
            f"gives {tuple(now['shape'])} {now['dtype']}: the representation would see other pixels than it learnt "
            "from. Build the env as it was at training time, or, to reuse the learner on other frames on purpose, "
            "wrap it explicitly: VecVASE(venv, learner=VASE.load(path))"
        )


# ------------------------------------------------------------------------------------------
# fingerprints: which representation an agent was trained on
# ------------------------------------------------------------------------------------------
def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _weights_digest(learner: VASE, slow: SlowEncoder | None = None) -> str:
    """SHA-256 of what decides the latents: the encoder and classifier weights the agent reads
    (the slow copies when there is a slow encoder) and the latent mask."""
    digest = hashlib.sha256()
    encoder, classifier = (learner.encoder, learner.classifier) if slow is None else (slow.encoder, slow.classifier)
    for name, module in (("encoder", encoder), ("classifier", classifier)):
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}.{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(_tensor_bytes(tensor))
    digest.update(np.asarray(learner.latent_mask, dtype=bool).tobytes())
    if slow is not None and slow.mask is not None:
        digest.update(_tensor_bytes(slow.mask.float()))
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """JSON round trip, so a fingerprint compares equal after an SB3 zip (tuples become lists)."""
    return json.loads(json.dumps(value))


def compare_fingerprints(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between the representation an agent was saved with (``saved``) and the one
    it is given now (``current``), as sentences; empty when they are the same."""
    if not isinstance(saved, dict) or saved.get("format") != FINGERPRINT_FORMAT:
        return [f"the agent's stored fingerprint is not a vase_rl fingerprint (format {saved!r:.60})"]
    problems: list[str] = []
    if saved.get("output") != current.get("output"):
        problems.append(f"the observation layout differs (agent: {saved.get('output')}, now: {current.get('output')})")
    old_cfg, new_cfg = saved.get("config", {}), current.get("config", {})
    changed = sorted(k for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k) != new_cfg.get(k))
    if changed:
        shown = ", ".join(f"{k}: {old_cfg.get(k)!r} -> {new_cfg.get(k)!r}" for k in changed[:6])
        problems.append(f"a learner with another configuration ({shown}{', ...' if len(changed) > 6 else ''})")
    elif saved.get("seed") != current.get("seed"):
        problems.append(
            f"another learner (seed {saved.get('seed')} when the agent was saved, {current.get('seed')} now), "
            "e.g. a fresh, untrained encoder"
        )
    elif saved.get("num_updates") != current.get("num_updates"):
        problems.append(
            f"the same learner at another point of its training ({saved.get('num_updates')} updates when the agent "
            f"was saved, {current.get('num_updates')} now)"
        )
    if not problems and saved.get("weights_sha256") != current.get("weights_sha256"):
        problems.append("other encoder weights or latent mask (same configuration, seed and update count)")
    return problems


# ------------------------------------------------------------------------------------------
# the shared machinery: adapter + learning schedule + latent output
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


UPDATE_AT = ("auto", "step", "rollout")
TRAIN_EVERY_UNITS = ("frames", "steps")


def _frame_windows(windows: Any, freeze_after: Any) -> tuple[tuple[int, int | None], ...] | None:
    """Validated learning windows ``((start, stop), ...)`` in frames (``stop`` None: open), or None
    (learning at every frame). ``freeze_after=N`` is the window ``((0, N),)``."""
    if freeze_after is not None:
        if windows is not None:
            raise ValueError(
                "pass either freeze_after=N or learning_windows=[...], not both (freeze_after=N is [(0, N)])"
            )
        return ((0, _positive_int("freeze_after", freeze_after, 0)),)
    if windows is None:
        return None
    if isinstance(windows, (str, bytes)) or not isinstance(windows, Sequence):
        raise TypeError(f"learning_windows must be a list of (start, stop) frame counts, got {windows!r}")
    out: list[tuple[int, int | None]] = []
    last = -1
    for item in windows:
        if not isinstance(item, Sequence) or isinstance(item, (str, bytes)) or len(item) != 2:
            raise ValueError(f"each learning window is a (start, stop) pair of frame counts, got {item!r}")
        start = _positive_int("learning window start", item[0], 0)
        stop = None if item[1] is None else _positive_int("learning window stop", item[1], 0)
        if stop is not None and stop <= start:
            raise ValueError(f"learning window {item!r} is empty: stop must be > start (or None for no end)")
        if start < last:
            raise ValueError(f"learning windows must be sorted and must not overlap, got {windows!r}")
        out.append((start, stop))
        last = float("inf") if stop is None else stop
    return tuple(out)


@dataclasses.dataclass
class LearningSchedule:
    """Everything about *when* a wrapper trains its learner, in one place: the switch, the
    schedule and its counters (the counters are saved with the wrapper's checkpoint).

    * ``train_every`` counts frames (``train_every_unit="frames"``, the default): one update round
      (``gradient_steps`` updates) each time the frames seen cross a multiple of ``train_every``, so a
      single env and a vector env of any size give the same updates per frame. ``"steps"`` counts
      wrapper steps instead (the rule before frames; old checkpoints load with it).
    * ``learning_starts``: frames to see before the first update.
    * ``update_at``: ``"step"`` runs the updates as soon as they are due (inside ``step``);
      ``"rollout"`` defers them to the next rollout boundary (:meth:`LatentFeed.end_rollout`, called
      by ``VASECallback`` at ``on_rollout_end``), so the agent sees one encoder per rollout;
      ``"auto"`` (default) is ``"rollout"`` while a callback drives the boundaries (an on-policy
      agent with ``VASECallback``) and ``"step"`` otherwise.
    * ``freeze_after`` / ``learning_windows``: the frames (counted from the first one, pretraining
      included) during which the learner trains; outside them frames are counted but neither
      stored nor trained on.
    * ``pretrain_frames`` / ``pretrain_updates``: before the agent's first step, the wrapper steps
      the env itself (random actions or a given policy) for this many frames and runs this many
      updates (default: the ``train_every`` rate) on them.
    """

    enabled: bool = True
    train_every: int = DEFAULT_TRAIN_EVERY
    gradient_steps: int = 1
    batch_size: int = 64
    learning_starts: int = 64
    train_every_unit: str = "frames"
    update_at: str = "auto"
    freeze_after: int | None = None
    learning_windows: Any = None
    pretrain_frames: int = 0
    pretrain_updates: int | None = None
    # counters
    frames_seen: int = 0
    steps: int = 0
    since_update: int = 0
    updates: int = 0
    pending: int = 0  # update rounds due while updates wait for the rollout boundary
    pending_frames: int = 0  # frames seen since the last boundary while updates wait
    pretrained_frames: int = 0
    boundaries: int = 0  # rollout boundaries seen (end_rollout calls)
    rollout_driven: bool = False  # a callback calls end_rollout() at every rollout end

    def __post_init__(self) -> None:
        self.enabled = bool(self.enabled)
        self.train_every = _positive_int("train_every", self.train_every)
        self.gradient_steps = _positive_int("gradient_steps", self.gradient_steps)
        self.batch_size = _positive_int("batch_size", self.batch_size, 2)
        self.learning_starts = _positive_int("learning_starts", self.learning_starts, 0)
        if self.train_every_unit not in TRAIN_EVERY_UNITS:
            raise ValueError(f"train_every_unit must be one of {TRAIN_EVERY_UNITS}, got {self.train_every_unit!r}")
        if self.update_at not in UPDATE_AT:
            raise ValueError(
                f"update_at must be one of {UPDATE_AT} ('rollout': between rollouts, driven by VASECallback), "
                f"got {self.update_at!r}"
            )
        self.learning_windows = _frame_windows(self.learning_windows, self.freeze_after)
        self.freeze_after = None  # folded into learning_windows
        self.pretrain_frames = _positive_int("pretrain_frames", self.pretrain_frames, 0)
        if self.pretrain_updates is not None:
            self.pretrain_updates = _positive_int("pretrain_updates", self.pretrain_updates, 0)

    def settings(self) -> dict[str, Any]:
        return {
            "train_every": self.train_every,
            "train_every_unit": self.train_every_unit,
            "gradient_steps": self.gradient_steps,
            "batch_size": self.batch_size,
            "learning_starts": self.learning_starts,
            "update_at": self.update_at,
            "learning_windows": None if self.learning_windows is None else [list(w) for w in self.learning_windows],
            "pretrain_frames": self.pretrain_frames,
            "pretrain_updates": self.pretrain_updates,
        }

    _COUNTERS = ("frames_seen", "steps", "since_update", "updates", "pretrained_frames", "boundaries")

    def counters(self) -> dict[str, int]:
        """The counters worth keeping across a save/load (frames seen decide freeze windows and
        whether pretraining is still due)."""
        return {k: int(getattr(self, k)) for k in self._COUNTERS}

    def restore_counters(self, counters: dict[str, Any] | None) -> None:
        for key, value in (counters or {}).items():
            if key in self._COUNTERS:
                setattr(self, key, int(value))

    # ------------------------------------------------------------------ rules
    @property
    def mode(self) -> str:
        """``"rollout"`` or ``"step"``: when due updates run now."""
        if self.update_at == "rollout" or (self.update_at == "auto" and self.rollout_driven):
            return "rollout"
        return "step"

    def learns_at(self, frames: int) -> bool:
        """Whether frame number ``frames`` (0-based count before it) falls in a learning window."""
        if self.learning_windows is None:
            return True
        return any(start <= frames and (stop is None or frames < stop) for start, stop in self.learning_windows)

    @property
    def active(self) -> bool:
        """Learning is on and the next frame falls in a learning window."""
        return self.enabled and self.learns_at(self.frames_seen)

    @property
    def pretrain_due(self) -> bool:
        return self.enabled and self.pretrained_frames < self.pretrain_frames

    def record(self, frames: int) -> int:
        """Count one wrapper step bringing ``frames`` frames; the number of update rounds (each
        ``gradient_steps`` updates) due now."""
        before = self.frames_seen
        self.frames_seen += int(frames)
        self.steps += 1
        if not self.learns_at(before):
            return 0
        if self.train_every_unit == "steps":
            self.since_update += 1
            if self.frames_seen >= self.learning_starts and self.since_update >= self.train_every:
                self.since_update = 0
                return 1
            return 0
        # frames: multiples of train_every crossed by this batch, counted from learning_starts
        every = self.train_every
        first = max(1, -(-self.learning_starts // every))
        due = self.frames_seen // every - max(before // every, first - 1)
        self.since_update = self.frames_seen % every
        return max(0, due)

    @property
    def untouched(self) -> bool:
        return self.frames_seen == 0 and self.updates == 0


class SlowEncoder:
    """A slow copy of the learner's encoder (and domain classifier) that the agent reads while
    the learner trains the fast one: after every learner update the wrapper runs, each weight
    moves a fraction ``rate`` of the way to the fast one (an exponential moving average,
    Polyak averaging)::

        theta_slow <- theta_slow + rate * (theta_fast - theta_slow)

    so a change of the fast encoder reaches the agent spread over ~1/rate updates. The latent
    mask in force is the learner's, unless ``smooth_mask``: then the agent's mask is a moving
    average of the learner's mask (1 = active) with the same rate, so a latent the learner masks
    or unmasks fades out or in over ~1/rate updates instead of jumping between a value and 0 (a
    mask that flickers after a domain allocation moves the agent's input the most; docs/RL.md).
    Wrappers sharing a learner for evaluation share this object too (``for_evaluation``,
    ``sync_vase``); it is saved with the wrapper's checkpoint.
    """

    def __init__(self, learner: VASE, rate: float, smooth_mask: bool = False) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < float(rate) <= 1.0:
            raise ValueError(f"slow_encoder_rate must be a number in (0, 1] (the EMA step per update), got {rate!r}")
        if not isinstance(smooth_mask, bool):
            raise TypeError(f"slow_mask must be True or False, got {smooth_mask!r}")
        self.rate = float(rate)
        self.encoder = copy.deepcopy(learner.encoder).eval()
        self.classifier = copy.deepcopy(learner.classifier).eval()
        for param in self._params():
            param.requires_grad_(False)
        self.updates = 0  # EMA steps taken
        # the agent's mask (float, 1 = active) when smoothed; None: the learner's mask as it is
        self.mask: torch.Tensor | None = self._fast_mask(learner) if smooth_mask else None

    @property
    def smooth_mask(self) -> bool:
        return self.mask is not None

    @staticmethod
    def _fast_mask(learner: VASE) -> torch.Tensor:
        # the learner's mask tensor itself (``latent_mask`` would copy it through host memory)
        return learner._mask.detach().to(dtype=torch.float32).clone()

    def _params(self) -> list[torch.nn.Parameter]:
        return [*self.encoder.parameters(), *self.classifier.parameters()]

    @staticmethod
    def _fast_params(learner: VASE) -> list[torch.nn.Parameter]:
        return [*learner.encoder.parameters(), *learner.classifier.parameters()]

    @torch.no_grad()
    def follow(self, learner: VASE) -> None:
        """One EMA step towards the learner's current weights."""
        for slow, fast in zip(self._params(), self._fast_params(learner)):
            slow.lerp_(fast.detach().to(slow.dtype), self.rate)
        if self.mask is not None:
            # an unchanged mask stays exactly as it is (set_learner refuses another latent size)
            self.mask.lerp_(self._fast_mask(learner).to(self.mask.device), self.rate)
        self.updates += 1

    @torch.no_grad()
    def sync(self, learner: VASE) -> None:
        """Copy the learner's weights (a hard reset of the average)."""
        for slow, fast in zip(self._params(), self._fast_params(learner)):
            slow.copy_(fast.detach())
        if self.mask is not None:
            self.mask = self._fast_mask(learner)

    def state_dict(self) -> dict[str, Any]:
        state = {
            "rate": self.rate,
            "updates": self.updates,
            "encoder": {k: v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()},
            "classifier": {k: v.detach().cpu().clone() for k, v in self.classifier.state_dict().items()},
        }
        if self.mask is not None:
            state["mask"] = self.mask.detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.classifier.load_state_dict(state["classifier"])
        self.updates = int(state.get("updates", 0))
        if self.mask is not None and state.get("mask") is not None:
            self.mask = torch.as_tensor(state["mask"], dtype=torch.float32).to(self.mask.device).clone()


# the observation options every wrapper takes (keyword-only), in the order of their docs
_FEED_DEFAULTS: dict[str, Any] = {
    "image_key": None,
    "channels_first": None,
    "grayscale": None,
    "value_range": None,
    "frame_stack": None,
    "allow_small_images": False,
    "latents_only": False,
    "keep_keys": None,
    "clip": DEFAULT_CLIP,
    "append_domain": False,
    "append_mask": False,
    "train_every": DEFAULT_TRAIN_EVERY,
    "train_every_unit": "frames",
    "gradient_steps": 1,
    "batch_size": None,
    "learning_starts": None,
    "window_size": None,
    "update_at": "auto",
    "slow_encoder_rate": None,
    "slow_mask": False,
    "freeze_after": None,
    "learning_windows": None,
    "pretrain_frames": 0,
    "pretrain_updates": None,
}


def _drop_orphan_slow_mask(kwargs: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Saved or inherited settings with ``slow_mask`` and an override ``slow_encoder_rate=None``
    (read the fast encoder): the mask smoothing goes with the slow encoder. A ``slow_mask``
    given in the overrides themselves is kept (and refused without a rate, as always)."""
    if kwargs.get("slow_encoder_rate") is None and "slow_mask" not in overrides:
        kwargs.pop("slow_mask", None)
    return kwargs


def _feed_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(options) - set(_FEED_DEFAULTS))
    if unknown:
        raise TypeError(f"{where} got unknown option(s) {unknown}; known: {sorted(_FEED_DEFAULTS)}")
    out = dict(_FEED_DEFAULTS)
    out.update(options)
    return out


class LatentFeed:
    """Adapter, learning schedule and latent output of one wrapper.

    ``frames_per_step`` is the number of observations one wrapper step brings (1 for a single
    env, ``num_envs`` for vector envs); it only sets the default window size. Options as for
    :class:`VASEWrapper`.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        learner: VASE,
        *,
        frames_per_step: int = 1,
        learning: bool = True,
        image_key: str | None = None,
        channels_first: bool | None = None,
        grayscale: bool | None = None,
        value_range: Sequence[float] | None = None,
        frame_stack: int | None = None,
        allow_small_images: bool = False,
        latents_only: bool = False,
        keep_keys: Sequence[str] | None = None,
        clip: float = DEFAULT_CLIP,
        append_domain: bool = False,
        append_mask: bool = False,
        train_every: int = DEFAULT_TRAIN_EVERY,
        train_every_unit: str = "frames",
        gradient_steps: int = 1,
        batch_size: int | None = None,
        learning_starts: int | None = None,
        window_size: int | None = None,
        update_at: str = "auto",
        slow_encoder_rate: float | None = None,
        slow_mask: bool = False,
        freeze_after: int | None = None,
        learning_windows: Sequence[Sequence[int | None]] | None = None,
        pretrain_frames: int = 0,
        pretrain_updates: int | None = None,
    ) -> None:
        self.learner = learner
        cfg = learner.config
        self.adapter = ImageObservationAdapter(
            observation_space,
            cfg.image_shape,
            image_key=image_key,
            channels_first=channels_first,
            grayscale=grayscale,
            value_range=value_range,
            frame_stack=frame_stack,
            allow_small_images=allow_small_images,
        )
        if not (isinstance(clip, (int, float)) and not isinstance(clip, bool) and np.isfinite(clip) and clip > 0):
            raise ValueError(f"clip must be a finite positive number, got {clip!r}")
        self.clip = float(clip)
        self.append_domain = bool(append_domain)
        self.append_mask = bool(append_mask)
        batch = cfg.batch_size if batch_size is None else batch_size
        self.schedule = LearningSchedule(
            enabled=learning,
            train_every=train_every,
            gradient_steps=gradient_steps,
            batch_size=batch,
            learning_starts=batch if learning_starts is None and isinstance(batch, int) else learning_starts,
            train_every_unit=train_every_unit,
            update_at=update_at,
            freeze_after=freeze_after,
            learning_windows=learning_windows,
            pretrain_frames=pretrain_frames,
            pretrain_updates=pretrain_updates,
        )
        self.frames_per_step = max(int(frames_per_step), 1)
        if slow_mask and slow_encoder_rate is None:
            raise ValueError("slow_mask=True smooths the mask at the slow encoder's rate: set slow_encoder_rate too")
        self.slow: SlowEncoder | None = (
            None if slow_encoder_rate is None else SlowEncoder(learner, slow_encoder_rate, smooth_mask=slow_mask)
        )
        self._warned_pending = False
        # Updates draw from the learner's window of recent frames (vase_rl/window.py): a window of
        # many episodes, because consecutive frames of a few episodes are far from i.i.d. and
        # VASE's atypicality mask reads a batch whose latent marginals differ from the prior as
        # "atypical" (see docs/RL.md); 16 batches of recent frames is still current data.
        # window_size=None keeps the learner's window (config.window_size, 1,024 frames in the
        # presets), grown only if one update's new frames would not fit: a wrapper built to share
        # a learner (e.g. a frozen evaluation env) never shrinks the window of the one training it.
        # An explicit window_size resizes the shared window.
        per_update = self.schedule.train_every
        needed = per_update * max(int(frames_per_step), 1) if train_every_unit == "steps" else per_update
        if window_size is None:
            window_size = max(learner.window.capacity, needed)
        learner.window.resize(_positive_int("window_size", window_size, 2))
        self.image_key, self.channels_first, self.grayscale = image_key, channels_first, grayscale
        self.value_range = None if value_range is None else [float(v) for v in self.adapter.value_range]
        self.frame_stack = None if frame_stack is None else int(frame_stack)
        self.frames = self.adapter.frames
        self.allow_small_images = bool(allow_small_images)
        self.latent_dim = cfg.latent_dim
        self.frame_dim = (
            cfg.latent_dim
            + (cfg.max_domains if self.append_domain else 0)
            + (cfg.latent_dim if self.append_mask else 0)
        )
        self.dim = self.frame_dim * self.frames
        self.latent_space = spaces.Box(-self.clip, self.clip, (self.dim,), np.float32)
        self.latents_only, self.keep_keys = self._pass_through(observation_space, latents_only, keep_keys)
        if self.keep_keys is None:
            self.output_space: spaces.Space = self.latent_space
        else:
            entries = {LATENT_KEY: self.latent_space}
            entries.update({k: observation_space.spaces[k] for k in self.keep_keys})
            self.output_space = spaces.Dict(entries)
        self.history: deque[dict[str, Any]] = deque(maxlen=1000)
        self._mask_key: tuple | None = None
        self._mask_owner: VASE | None = None
        self._mask_cache: torch.Tensor | None = None

    def _pass_through(
        self, space: spaces.Space, latents_only: bool, keep_keys: Sequence[str] | None
    ) -> tuple[bool, list[str] | None]:
        """(latents_only, the Dict entries passed through beside the latents, or None for a Box output)."""
        if not isinstance(space, spaces.Dict):
            if latents_only or keep_keys is not None:
                raise ValueError(
                    "latents_only and keep_keys only apply to Dict observation spaces; this one is "
                    f"{type(space).__name__}: drop them"
                )
            return False, None
        if latents_only:
            if keep_keys:
                raise ValueError(f"latents_only=True drops every other entry; it contradicts keep_keys={keep_keys!r}")
            return True, None
        others = [k for k in space.spaces if k != self.image_key]
        if keep_keys is None:
            keep = others
        else:
            if isinstance(keep_keys, str):
                raise TypeError(f"keep_keys must be a list of keys, got the string {keep_keys!r}")
            keep = list(keep_keys)
            missing = [k for k in keep if k not in others]
            if missing:
                raise ValueError(
                    f"keep_keys {missing} are not entries of the Dict besides the image {self.image_key!r}; "
                    f"they are {others}"
                )
        if LATENT_KEY in keep:
            raise ValueError(
                f"the Dict observation already has an entry {LATENT_KEY!r}, where the latents go: leave it out "
                f"with keep_keys={[k for k in keep if k != LATENT_KEY]!r} or rename it"
            )
        return False, keep

    # ---------------------------------------------------------------- settings
    def settings(self) -> dict[str, Any]:
        """Plain-data settings (what ``save`` stores beside the learner)."""
        return {
            "image_key": self.image_key,
            "channels_first": self.channels_first,
            "grayscale": self.grayscale,
            "value_range": self.value_range,
            "frame_stack": self.frame_stack,
            "allow_small_images": self.allow_small_images,
            "latents_only": self.latents_only,
            "keep_keys": self.keep_keys if self.keep_keys is None or self._keeps_subset else None,
            "clip": self.clip,
            "append_domain": self.append_domain,
            "append_mask": self.append_mask,
            **self.schedule.settings(),
            "window_size": self.window_size,
            "slow_encoder_rate": None if self.slow is None else self.slow.rate,
            # named only when on (a checkpoint without it loads in versions before the option)
            **({"slow_mask": True} if self.slow is not None and self.slow.smooth_mask else {}),
        }

    def wrapper_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of this wrapper besides its settings: the schedule's counters
        and the slow encoder's weights (both decide what the agent sees after a load)."""
        state: dict[str, Any] = {"schedule": self.schedule.counters()}
        if self.slow is not None:
            state["slow_encoder"] = self.slow.state_dict()
        return state

    def load_wrapper_state(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        self.schedule.restore_counters(state.get("schedule"))
        if self.slow is not None and state.get("slow_encoder") is not None:
            self.slow.load_state_dict(state["slow_encoder"])

    @property
    def _keeps_subset(self) -> bool:
        others = [k for k in self.adapter.observation_space.spaces if k != self.image_key]
        return self.keep_keys != others

    # read-only views of the schedule (older code reads them off the feed)
    @property
    def learning(self) -> bool:
        return self.schedule.enabled

    @learning.setter
    def learning(self, flag: bool) -> None:
        self.schedule.enabled = bool(flag)

    @property
    def train_every(self) -> int:
        return self.schedule.train_every

    @property
    def gradient_steps(self) -> int:
        return self.schedule.gradient_steps

    @property
    def batch_size(self) -> int:
        return self.schedule.batch_size

    @property
    def learning_starts(self) -> int:
        return self.schedule.learning_starts

    @property
    def frames_seen(self) -> int:
        return self.schedule.frames_seen

    @property
    def steps(self) -> int:
        return self.schedule.steps

    @property
    def updates(self) -> int:
        return self.schedule.updates

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
        self._mask_owner = None
        if self.slow is not None:
            self.slow = SlowEncoder(learner, self.slow.rate, smooth_mask=self.slow.smooth_mask)

    def share_slow_encoder(self, slow: SlowEncoder | None) -> None:
        """Read through another wrapper's slow encoder (evaluation envs of a training env)."""
        if slow is not None and not isinstance(slow, SlowEncoder):
            raise TypeError(f"expected a SlowEncoder or None, got {type(slow).__name__}")
        self.slow = slow

    def fingerprint(self) -> dict[str, Any]:
        """Plain data identifying the representation the agent sees: the learner's config, seed,
        update count, a SHA-256 of its encoder/classifier weights and mask, and the output layout."""
        learner = self.learner
        return _plain(
            {
                "format": FINGERPRINT_FORMAT,
                "weights_sha256": _weights_digest(learner, self.slow),
                "seed": int(learner.seed),
                "num_updates": int(learner.num_updates),
                "config": learner.config.to_dict(),
                "output": {
                    "dim": self.dim,
                    "append_domain": self.append_domain,
                    "append_mask": self.append_mask,
                    "frames": self.frames,
                    "keys": None if self.keep_keys is None else [LATENT_KEY, *self.keep_keys],
                    "slow_encoder_rate": None if self.slow is None else self.slow.rate,
                    # named only when on, so fingerprints saved before the option still match
                    **({"slow_mask": True} if self.slow is not None and self.slow.smooth_mask else {}),
                },
            }
        )

    # ---------------------------------------------------------------- data path
    def prepare(self, images: Any) -> torch.Tensor:
        """Raw image batch (already selected from a Dict) -> learner input on its device, one row
        per frame (``B * frame_stack`` rows)."""
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

    def newest(self, x: torch.Tensor) -> torch.Tensor:
        """The newest frame of each observation of a prepared batch (all rows without a stack)."""
        if self.frames == 1:
            return x
        return x.reshape(-1, self.frames, *x.shape[1:])[:, -1]

    def learn_from(self, x: torch.Tensor, run: bool = True) -> list[dict[str, Any]]:
        """Add prepared frames to the learner's window (the newest of each stack: older ones were
        added at earlier steps) and run the updates that are due — now, or at the next rollout
        boundary when the schedule's mode is ``"rollout"``. ``run=False`` (a reset) only counts
        them as due: they run at the next step, so an agent's first observation after a reset or
        a load comes from the encoder it was saved with. Outside the learning windows frames are
        only counted."""
        x = self.newest(x)
        schedule = self.schedule
        if schedule.learns_at(schedule.frames_seen):
            self.learner.window.append(x)
        schedule.pending += schedule.record(int(x.shape[0]))
        if not run:
            return []
        if schedule.mode == "rollout":
            schedule.pending_frames += int(x.shape[0])
            if schedule.pending_frames > 4 * self.learner.window.capacity:
                # nobody ends the rollouts (no VASECallback in learn()?): do not starve the learner
                if not self._warned_pending and schedule.update_at == "rollout":
                    warnings.warn(
                        "VASE updates wait for the rollout boundary (update_at='rollout') but no rollout ended "
                        f"for {schedule.pending_frames} frames; running them now. Pass VASECallback() to "
                        "model.learn(...) or call env.end_rollout() at your rollout boundaries.",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    self._warned_pending = True
                return self.run_pending_updates()[1]
            return []
        return self.run_pending_updates()[1]

    def _run_rounds(self, rounds: int) -> list[dict[str, Any]]:
        """``rounds`` x ``gradient_steps`` learner updates on batches drawn from the window (the
        slow encoder follows after each)."""
        learner, schedule = self.learner, self.schedule
        out: list[dict[str, Any]] = []
        if rounds <= 0 or len(learner.window) < 2:
            return out
        for _ in range(rounds * schedule.gradient_steps):
            stats = learner.update(learner.sample_window(schedule.batch_size))
            schedule.updates += 1
            if self.slow is not None:
                self.slow.follow(learner)
            self.history.append({k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))})
            out.append(stats)
        return out

    def run_pending_updates(self) -> tuple[int, list[dict[str, Any]]]:
        """Run the update rounds waiting for the rollout boundary; (updates run, their stats)."""
        schedule = self.schedule
        rounds, schedule.pending, schedule.pending_frames = schedule.pending, 0, 0
        out = self._run_rounds(rounds) if self.learning else []
        return len(out), out

    def end_rollout(self) -> int:
        """The rollout boundary: run the updates deferred during the rollout (``update_at`` =
        ``"rollout"``, or ``"auto"`` while a callback drives the boundaries) and return how many
        ran (0 in ``"step"`` mode, where nothing waits). The public hook for anything that
        collects rollouts (``VASECallback`` calls it at ``on_rollout_end``)."""
        self.schedule.boundaries += 1
        return self.run_pending_updates()[0]

    def drive_rollouts(self, flag: bool = True) -> None:
        """Declare that a caller will call :meth:`end_rollout` at every rollout end (what
        ``VASECallback`` does for on-policy agents); with ``update_at="auto"`` the updates then
        wait for the boundaries. ``False`` hands back to ``"step"`` (running what waits)."""
        self.schedule.rollout_driven = bool(flag)
        if not flag:
            self.run_pending_updates()

    def fit_window_to_rollout(self, frames_per_rollout: int) -> int:
        """Grow the learner's window so that updates run at the boundary can draw from the whole
        rollout (they would otherwise all draw from its last ``window_size`` frames); the window
        never shrinks. Returns the capacity."""
        needed = _positive_int("frames_per_rollout", frames_per_rollout, 2)
        window = self.learner.window
        if needed > window.capacity:
            window.resize(needed)
        return window.capacity

    def pretrain(
        self,
        reset: Callable[[], Any],
        step: Callable[[], tuple[Any, list[Any]]],
        frames: int | None = None,
        updates: int | None = None,
    ) -> dict[str, Any]:
        """Learn from the environment's own frames before the agent starts.

        ``reset()`` returns a raw observation batch; ``step()`` acts (the caller's policy) and returns
        (raw observation batch, list of raw terminal observations). Steps until ``frames`` env frames
        (``frames_per_step`` per step; default: what the schedule still owes) were seen, then runs
        ``updates`` updates (default ``pretrain_updates``, else the ``train_every`` rate).

        While it pretrains, the learner's window holds every pretraining frame (up to
        ``PRETRAIN_WINDOW_BYTES`` of them), and the updates run once they are all in: each batch
        is then drawn from the whole random-policy data set, not from its last ``window_size``
        frames, which keeps consecutive batches alike. When the frames do not fit, the updates are
        spread evenly over the steps instead. Afterwards the window goes back to its size (keeping
        the newest frames). Returns what was done."""
        schedule = self.schedule
        total = schedule.pretrain_frames - schedule.pretrained_frames if frames is None else frames
        total = _positive_int("pretrain frames", total, 0)
        n = self.frames_per_step
        steps = -(-total // n)
        if updates is None:
            updates = schedule.pretrain_updates
        if updates is None:
            per = schedule.train_every * (n if schedule.train_every_unit == "steps" else 1)
            updates = (steps * n // per) * schedule.gradient_steps
        updates = _positive_int("pretrain updates", updates, 0)
        learner = self.learner
        window = learner.window
        capacity = window.capacity
        frame_bytes = 4 * int(np.prod(learner.config.image_shape))
        expected = (steps + 1) * n + steps * n // 4  # reset + steps + room for terminal frames
        fits = expected * frame_bytes <= PRETRAIN_WINDOW_BYTES
        window.resize(max(capacity, min(expected, PRETRAIN_WINDOW_BYTES // frame_bytes)))
        before_updates = schedule.updates

        def run(k: int) -> None:
            for _ in range(k):
                stats = learner.update(learner.sample_window(schedule.batch_size))
                schedule.updates += 1
                if self.slow is not None:
                    self.slow.follow(learner)
                self.history.append({key: v for key, v in stats.items() if isinstance(v, (int, float, str, bool))})

        x = self.newest(self.prepare(np.asarray(self.adapter.select(reset()))))
        window.append(x)
        schedule.frames_seen += int(x.shape[0])
        done = 0
        for i in range(steps):
            obs, terminal = step()
            images = np.asarray(self.adapter.select(obs))
            if terminal:
                images = np.concatenate([images, np.stack([np.asarray(self.adapter.select(t)) for t in terminal])])
            x = self.newest(self.prepare(images))
            window.append(x)
            schedule.frames_seen += int(x.shape[0])
            schedule.pretrained_frames += n
            if not fits:
                target = (updates * (i + 1)) // steps
                if target > done and len(window) >= 2:
                    run(target - done)
                    done = target
        if fits and len(window) >= 2:
            run(updates)
        window.resize(capacity)
        schedule.pretrained_frames = max(schedule.pretrained_frames, schedule.pretrain_frames)
        if self.slow is not None:
            self.slow.sync(learner)  # the agent starts on the pretrained encoder
        return {
            "frames": steps * n,
            "steps": steps,
            "updates": schedule.updates - before_updates,
            "num_domains": int(learner.num_domains),
            "window": "all frames" if fits else f"last {window.capacity} frames",
        }

    @property
    def window_frames(self) -> int:
        return len(self.learner.window)

    def clear_window(self) -> None:
        self.learner.window.clear()

    def _mask(self, device: torch.device) -> torch.Tensor:
        """The mask the agent's latents are multiplied by: the slow encoder's smoothed mask when
        there is one, else the learner's mask in force as a float tensor, cached until the next
        update."""
        if self.slow is not None and self.slow.mask is not None:
            return self.slow.mask.to(device)
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
        if self.slow is not None:  # the agent reads the slow copy (eager, under the learner's autocast)
            with learner._autocast():
                mu, _, hidden = self.slow.encoder(x)
            return mu.float() * self._mask(mu.device), hidden
        encoder = learner.encoder
        if encoder.training:
            encoder.eval()
        with learner._autocast():
            mu, _, hidden = learner._compiled()(x)
        return mu.float() * self._mask(mu.device), hidden

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> np.ndarray:
        """Prepared frames -> (B, dim) float32 latents (a stack's frames side by side, oldest
        first): a new, finite, clipped array."""
        learner = self.learner
        z, hidden = self.latents(x)
        parts = [z]
        if self.append_domain:
            if hidden is None:
                _, _, hidden = learner.encoder(x)
            classifier = learner.classifier if self.slow is None else self.slow.classifier
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
        if self.frames > 1:
            out = out.reshape(-1, self.dim)
        return out.astype(np.float32, copy=False)

    def output(self, latents: np.ndarray, raw: Any) -> Any:
        """The wrapper's observation: ``latents`` itself, or for a Dict observation the Dict of
        the latents and copies of the entries passed through from ``raw`` (batched or not, as
        ``latents``)."""
        if self.keep_keys is None:
            return latents
        out: dict[str, Any] = {LATENT_KEY: latents}
        for key in self.keep_keys:
            out[key] = copy.deepcopy(raw[key])
        return out

    # ---------------------------------------------------------------- statistics
    def stats(self, learning: bool | None = None, since: int | None = None) -> dict[str, Any]:
        """Plain-data statistics; with ``since`` (a ``num_updates`` value), loss terms are the mean
        over this wrapper's updates after it and events are counted after it."""
        learner = self.learner
        mask = learner.latent_mask
        used = learner.used_latents
        out: dict[str, Any] = {
            "learning": bool(self.learning if learning is None else learning),
            "learner_seed": int(learner.seed),
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
            "update_mode": self.schedule.mode,
            "pending_updates": int(self.schedule.pending * self.schedule.gradient_steps),
            "pretrained_frames": int(self.schedule.pretrained_frames),
            "learning_active": bool(self.schedule.active),
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


def _reseed_untouched(feed: LatentFeed, seed: Any) -> bool:
    """Rebuild ``feed``'s learner with ``seed`` if it has not seen a frame yet (the learner's
    weights are drawn from its seed at construction). True when it was rebuilt."""
    if seed is None or isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        return False
    old = feed.learner
    if not feed.schedule.untouched or old.num_updates or len(old.window) or int(seed) == old.seed:
        return False
    new = VASE(old.config, seed=int(seed), device=old.device)
    new.window.resize(old.window.capacity)
    feed.learner = new
    feed._mask_owner = None
    if feed.slow is not None:
        feed.slow = SlowEncoder(new, feed.slow.rate, smooth_mask=feed.slow.smooth_mask)
    return True


# ------------------------------------------------------------------------------------------
# what lies below a wrapper: frame stacks and symbolic grids are refused unless the user says
# ------------------------------------------------------------------------------------------
_STACKING_WRAPPERS = ("FrameStackObservation", "FrameStack", "VecFrameStack")
_MINIGRID_PIXEL_WRAPPERS = ("RGBImgObsWrapper", "RGBImgPartialObsWrapper")


def _gym_chain(env: Any) -> list[Any]:
    """The wrappers of a Gymnasium env (outermost first) and, last, the unwrapped env."""
    chain, seen = [], 0
    while env is not None and seen < 64:
        chain.append(env)
        env = getattr(env, "env", None) if isinstance(env, (gym.Wrapper, gym.vector.VectorWrapper)) else None
        seen += 1
    if chain and isinstance(chain[-1], gym.vector.SyncVectorEnv) and chain[-1].envs:
        chain.extend(_gym_chain(chain[-1].envs[0]))
    return chain


def _vec_chain(venv: Any) -> list[Any]:
    """The layers of an SB3 VecEnv (outermost first) and the first sub-env's Gymnasium chain
    when it lives in this process (DummyVecEnv)."""
    chain, seen = [], 0
    while venv is not None and seen < 64:
        chain.append(venv)
        venv = venv.venv if isinstance(venv, VecEnvWrapper) else None
        seen += 1
    base = chain[-1] if chain else None
    if isinstance(base, DummyVecEnv) and base.envs:
        chain.extend(_gym_chain(base.envs[0]))
    return chain


def _stack_size(layer: Any) -> int | None:
    for holder in (layer, getattr(layer, "stacked_obs", None)):
        for name in ("stack_size", "n_stack", "num_stack"):
            value = getattr(holder, name, None) if holder is not None else None
            if isinstance(value, (int, np.integer)):
                return int(value)
    return None


def _check_env_input(env: Any, options: dict[str, Any], where: str) -> None:
    """Refuse inputs that the observation space alone would let VASE misread."""
    chain = _vec_chain(env) if isinstance(env, VecEnv) else _gym_chain(env)
    if options.get("frame_stack") is None:
        for layer in chain:
            name = type(layer).__name__
            if name in _STACKING_WRAPPERS:
                n = _stack_size(layer)
                shown = n if n is not None else "k"
                raise TypeError(
                    f"{where}: the observations are stacks of {shown} frames made by {name} below the VASE wrapper; "
                    "read as one image, their time steps would be mixed like colour channels. Stack latents instead "
                    f"(remove {name} and put VecFrameStack(vase_env, {shown}) after the VASE wrapper), or pass "
                    f"frame_stack={shown} to encode every frame and put their latents side by side"
                )
        if isinstance(env, VecEnv) and not isinstance(chain[-1], gym.Env):
            try:
                from gymnasium.wrappers import FrameStackObservation

                if any(env.env_is_wrapped(FrameStackObservation)):
                    raise TypeError(
                        f"{where}: the sub-envs are wrapped in FrameStackObservation; stack latents instead "
                        "(VecFrameStack after the VASE wrapper) or pass frame_stack=<number of frames>"
                    )
            except (AttributeError, NotImplementedError):  # pragma: no cover - exotic VecEnvs
                pass
    if options.get("value_range") is None:
        unwrapped = chain[-1] if chain else None
        module = type(unwrapped).__module__ if unwrapped is not None else ""
        names = {type(layer).__name__ for layer in chain}
        if module.split(".")[0] == "minigrid" and not names & set(_MINIGRID_PIXEL_WRAPPERS):
            raise TypeError(
                f"{where}: this MiniGrid env gives its symbolic grid (object, colour and state indices per cell), "
                "not pixels. Render pixels with minigrid.wrappers.RGBImgObsWrapper (what "
                "vase_rl.agents.real_envs.make_minigrid does), or, to encode the indices as an image on purpose, "
                "pass value_range=(0, 10) (and allow_small_images=True for a 7x7 view)"
            )


# ------------------------------------------------------------------------------------------
# Gymnasium: one environment
# ------------------------------------------------------------------------------------------
class _FeedAccess:
    """What the Gymnasium wrappers share: the learner/feed accessors, the learning switch,
    seeds, fingerprints, statistics and saving. Subclasses set ``self._feed`` and
    ``self._seed_from_env``."""

    _feed: LatentFeed
    _seed_from_env: bool = False
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
        """Whether frames go to the learner and updates run (settable)."""
        return self._feed.learning

    @learning.setter
    def learning(self, flag: bool) -> None:
        self.set_learning(flag)

    # ``training``, as VecNormalize and VecVASE call it
    training = learning

    def set_learning(self, flag: bool) -> None:
        """Switch online learning on/off (off: no frames stored, no updates, deterministic)."""
        self._feed.learning = bool(flag)

    set_training = set_learning

    def get_vase_stats(self, since: int | None = None) -> dict[str, Any]:
        """Plain-data statistics (losses, KL vs capacity, domains, latents, events); see
        :meth:`LatentFeed.stats`. Safe through ``env_method``/``call`` of vector envs."""
        return self._feed.stats(None, since)

    def representation_fingerprint(self) -> dict[str, Any]:
        """Plain data identifying the representation (see :meth:`LatentFeed.fingerprint`)."""
        return self._feed.fingerprint()

    def set_learner(self, learner: VASE) -> None:
        self._feed.set_learner(learner)
        self._seed_from_env = False

    def end_rollout(self) -> int:
        """Rollout boundary: run the updates that waited for it; returns how many ran (see
        :meth:`LatentFeed.end_rollout`). Safe through ``env_method``."""
        return self._feed.end_rollout()

    def drive_rollouts(self, flag: bool = True) -> None:
        """See :meth:`LatentFeed.drive_rollouts` (``VASECallback`` calls it)."""
        self._feed.drive_rollouts(flag)

    def fit_window_to_rollout(self, frames_per_rollout: int) -> int:
        """See :meth:`LatentFeed.fit_window_to_rollout`."""
        return self._feed.fit_window_to_rollout(frames_per_rollout)

    def _record_args(
        self,
        config: ConfigLike,
        learner: VASE | None,
        learning: bool,
        learner_path: Any,
        seed: int | None,
        device: Any,
        options: dict[str, Any],
    ) -> None:
        """Gymnasium's ``RecordConstructorArgs`` with JSON-able values only (a config as a dict)."""
        plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}
        gym.utils.RecordConstructorArgs.__init__(
            self,
            config=_config_record(learner.config if config is None and learner is not None else config),
            learning=bool(learning),
            learner_path=None if learner_path is None else str(learner_path),
            seed=seed,
            device=device if isinstance(device, str) else str(device),
            **plain,
        )

    def _setup(self, observation_space, config, learner, learning, learner_path, seed, device, options, per_step):
        self._seed_from_env = learner is None and learner_path is None and seed is None
        learner = resolve_learner(config, learner, learner_path, seed, device)
        self._feed = LatentFeed(observation_space, learner, frames_per_step=per_step, learning=learning, **options)

    def save(self, path: str | os.PathLike) -> Path:
        """Save the learner, this wrapper's settings and state (``VASE.load`` also reads the file)."""
        return save_checkpoint(
            path,
            self.learner,
            dict(self._feed.settings(), learning=self.learning),
            self._checkpoint_kind,
            _input_record(self._feed.adapter),
            self._feed.wrapper_state(),
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
        seed: the new learner's seed; ``None``: the seed of the first seeded ``reset`` (while the
            learner has not learnt anything), else a random one (``env.learner.seed`` tells).
        device: for a new learner (``"auto"`` picks CUDA when present).

    Keyword options (the same for :class:`VecVASE` and :class:`VASEVectorWrapper`):
        image_key: the image entry of a ``Dict`` observation space.
        keep_keys: the other ``Dict`` entries to pass through beside the latents (default: all);
            the observation is then ``Dict({"latents": Box, **kept})``.
        latents_only: ``True``: drop the other ``Dict`` entries, the observation is the latent Box.
        channels_first, grayscale: layout / colour overrides (see ``ImageObservationAdapter``).
        value_range: ``(low, high)`` of the pixels when the space does not declare 0..255 or [0, 1].
        frame_stack: the image holds this many stacked frames (VecFrameStack/FrameStackObservation
            below the wrapper): each is encoded and the latents are put side by side, oldest first;
            only the newest frame of each observation goes to the learner.
        allow_small_images: accept images with a side under 16 px (else read as a symbolic grid).
        clip: observation bound; latents are clipped to [-clip, clip].
        append_domain: append the one-hot (``max_domains``) of the domain the classifier infers.
        append_mask: append the latent mask in force (1 = active latent).
        train_every: frames between update rounds (the same for any number of envs; with
            ``train_every_unit="steps"``: wrapper steps, the older rule); ``gradient_steps`` per round.
        update_at: ``"auto"`` (default: at rollout boundaries while ``VASECallback`` drives an
            on-policy agent, else at once), ``"rollout"`` or ``"step"`` (see :class:`LearningSchedule`).
        slow_encoder_rate: the agent reads an exponential moving average of the encoder that moves
            this fraction towards the learner's per update (:class:`SlowEncoder`); None: the encoder.
        slow_mask: with a slow encoder, the agent's latent mask is a moving average of the
            learner's at the same rate (a latent fades out / in instead of jumping to 0 and back).
        pretrain_frames, pretrain_updates: learn from this many frames of the env (random actions)
            with this many updates before the agent's first step (at the first ``reset``; :meth:`pretrain`).
        freeze_after, learning_windows: the frames during which the learner trains (pretraining counted).
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
        **options: Any,
    ) -> None:
        options = _feed_options(options, "VASEWrapper")
        self._record_args(config, learner, learning, learner_path, seed, device, options)
        gym.ObservationWrapper.__init__(self, env)
        _check_env_input(env, options, "VASEWrapper")
        self._setup(env.observation_space, config, learner, learning, learner_path, seed, device, options, 1)
        self.observation_space = self._feed.output_space

    # ---------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if self._seed_from_env:
            _reseed_untouched(self._feed, seed)
        if self._feed.schedule.pretrain_due:
            self.pretrain(seed=seed, options=options)
            seed = None  # the pretraining consumed it; the agent's episodes continue the env's RNG
        self._resetting = True
        try:
            return super().reset(seed=seed, options=options)
        finally:
            self._resetting = False

    def pretrain(
        self,
        frames: int | None = None,
        policy: Callable[[Any], Any] | None = None,
        updates: int | None = None,
        *,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Let VASE learn from this env's frames before the agent starts: step the env with
        ``policy(raw observation) -> action`` (default: uniform random actions) for ``frames``
        frames (default: the ``pretrain_frames`` still owed) and run ``updates`` updates (default:
        ``pretrain_updates``, else the ``train_every`` rate). The first ``reset`` does this by itself
        when ``pretrain_frames`` is set. Returns what was done."""
        env = self.env
        actions = _action_sampler(env.action_space, self.learner.seed)
        state: dict[str, Any] = {}

        def reset() -> Any:
            obs, _ = env.reset(seed=seed, options=options)
            state["obs"] = obs
            return np.asarray(self._feed.adapter.select(obs))[None]

        def step() -> tuple[Any, list[Any]]:
            action = actions() if policy is None else policy(state["obs"])
            obs, _, terminated, truncated, _ = env.step(action)
            terminal = []
            if terminated or truncated:
                terminal = [obs]
                obs, _ = env.reset()
            state["obs"] = obs
            return np.asarray(self._feed.adapter.select(obs))[None], terminal

        return self._feed.pretrain(reset, step, frames, updates)

    def observation(self, observation: Any) -> Any:
        feed = self._feed
        x = feed.prepare(np.asarray(feed.adapter.select(observation))[None])
        if feed.learning:
            feed.learn_from(x, run=not getattr(self, "_resetting", False))
        return feed.output(feed.encode(x)[0], observation)

    # ---------------------------------------------------------------- control and data
    def encode(self, observation: Any, batched: bool = False) -> np.ndarray:
        """Latents of raw observation(s), without any side effect (Dict entries are not added)."""
        images = self._feed.adapter.select(observation)
        x = self._feed.prepare(images if batched else np.asarray(images)[None])
        z = self._feed.encode(x)
        return z if batched else z[0]

    def reconstruct(self, observation: Any, batched: bool = False) -> np.ndarray:
        """The learner's reconstruction (C, H, W) float in [0, 1] of raw observation(s) (one per
        frame of a stack)."""
        images = self._feed.adapter.select(observation)
        x = self._feed.prepare(images if batched else np.asarray(images)[None])
        rec = self.learner.reconstruct(x)
        return rec if batched or self._feed.frames > 1 else rec[0]

    @classmethod
    def load(cls, path: str | os.PathLike, env: gym.Env, device: str = "auto", **overrides: Any) -> VASEWrapper:
        """Wrap ``env`` with the learner and settings saved at ``path`` (``overrides`` win)."""
        state, record = _wrapper_record(path)
        learner = VASE.from_state_dict(state, device=device, source=str(path))
        kwargs = _saved_settings(record)
        kwargs.update(overrides)
        _drop_orphan_slow_mask(kwargs, overrides)
        wrapper = cls(env, learner=learner, device=device, **kwargs)
        _check_input(record.get("input"), wrapper._feed.adapter, str(path))
        wrapper._feed.load_wrapper_state(record.get("state"))
        wrapper._saved_kwargs.update(config=None, learner_path=str(path))
        return wrapper


# ------------------------------------------------------------------------------------------
# Stable-Baselines3: vectorised environments
# ------------------------------------------------------------------------------------------
class VecVASE(VecEnvWrapper):
    """SB3 ``VecEnvWrapper`` encoding every sub-env's image in one batch with a VASE learner.

    Modelled on ``VecNormalize``: ``training`` (alias ``learning``) switches learning (set it to
    ``False`` for evaluation; :func:`freeze` switches every learning layer of a stack), :meth:`encode`
    is side-effect free, :meth:`get_original_obs` returns a copy of the last raw observations,
    :meth:`save` / :meth:`VecVASE.load(path, venv) <load>` persist the learner and the settings (the
    agent's ``model.save`` does not include them; ``vase_rl.agents.save_stack`` saves everything),
    and pickling excludes the venv (call :meth:`set_venv` after unpickling). Options as for
    :class:`VASEWrapper`; ``train_every`` counts frames of all sub-envs together (8 envs and the
    default 64: one update round per 8 vector steps). With no ``seed``, the learner takes the one ``env.seed(s)`` is called with
    (``PPO(seed=s)`` does) while it has not learnt anything.
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
        **options: Any,
    ) -> None:
        if not isinstance(venv, VecEnv):
            raise TypeError(
                f"VecVASE wraps an SB3 VecEnv (e.g. make_vec_env(...)); got {type(venv).__name__}. "
                "For a single gymnasium env use VASEWrapper."
            )
        options = _feed_options(options, "VecVASE")
        _check_env_input(venv, options, "VecVASE")
        self._seed_from_env = learner is None and learner_path is None and seed is None
        learner = resolve_learner(config, learner, learner_path, seed, device)
        self._feed = LatentFeed(
            venv.observation_space, learner, frames_per_step=venv.num_envs, learning=training, **options
        )
        super().__init__(venv, observation_space=self._feed.output_space)
        self.old_obs: Any = None

    # ---------------------------------------------------------------- VecEnv API
    def reset(self) -> Any:
        if self._feed.schedule.pretrain_due:
            self.pretrain()
        obs = self.venv.reset()
        self.old_obs = obs
        return self._process(obs, [], [], run=False)

    def pretrain(
        self, frames: int | None = None, policy: Callable[[Any], Any] | None = None, updates: int | None = None
    ) -> dict[str, Any]:
        """Let VASE learn from the env's own frames before the agent starts: step the sub-envs
        with ``policy(raw observation batch) -> actions`` (default: uniform random actions, seeded
        by the learner's seed) until ``frames`` frames (default: the ``pretrain_frames`` still owed;
        ``num_envs`` per step) were seen, running ``updates`` updates (default ``pretrain_updates``,
        else the ``train_every`` rate) spread evenly over them. The first ``reset`` does this by
        itself when ``pretrain_frames`` is set (``PPO.learn`` resets before its first step), and the
        agent then starts from fresh episodes. Returns what was done."""
        venv = self.venv
        sample = _action_sampler(venv.action_space, self.learner.seed)
        state: dict[str, Any] = {}

        def reset() -> Any:
            state["obs"] = venv.reset()
            return state["obs"]

        def step() -> tuple[Any, list[Any]]:
            obs_now = state["obs"]
            actions = np.stack([sample() for _ in range(venv.num_envs)]) if policy is None else policy(obs_now)
            obs, _, dones, infos = venv.step(actions)
            state["obs"] = obs
            terminal = [
                infos[i]["terminal_observation"]
                for i, done in enumerate(dones)
                if done and infos[i].get("terminal_observation") is not None
            ]
            return obs, terminal

        return self._feed.pretrain(reset, step, frames, updates)

    def end_rollout(self) -> int:
        """Rollout boundary: run the VASE updates that waited for it; returns how many ran (see
        :meth:`LatentFeed.end_rollout`; ``VASECallback`` calls this at ``on_rollout_end``)."""
        return self._feed.end_rollout()

    def drive_rollouts(self, flag: bool = True) -> None:
        """See :meth:`LatentFeed.drive_rollouts`."""
        self._feed.drive_rollouts(flag)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        self.old_obs = obs
        idx = [i for i, done in enumerate(dones) if done and infos[i].get("terminal_observation") is not None]
        terminal = [self._feed.adapter.select(infos[i]["terminal_observation"]) for i in idx]
        latents = self._process(obs, terminal, idx, infos)
        return latents, rewards, dones, infos

    def _process(self, obs: Any, terminal: list[Any], idx: list[int], infos: Any = None, run: bool = True) -> Any:
        feed = self._feed
        images = np.asarray(feed.adapter.select(obs))
        n = images.shape[0]
        if terminal:
            images = np.concatenate([images, np.stack([np.asarray(t) for t in terminal])], axis=0)
        x = feed.prepare(images)
        if feed.learning:
            feed.learn_from(x, run=run)
        z = feed.encode(x)
        for j, i in enumerate(idx):
            infos[i]["terminal_observation"] = feed.output(z[n + j].copy(), infos[i]["terminal_observation"])
        return feed.output(z[:n], obs)

    def seed(self, seed: int | None = None) -> Any:
        """Seed the sub-envs (as ``VecEnv.seed``) and, when this wrapper made its learner without a
        seed and it has not learnt yet, rebuild the learner with ``seed`` (``PPO(seed=s)`` calls this)."""
        if self._seed_from_env:
            _reseed_untouched(self._feed, seed)
        return self.venv.seed(seed)

    # ---------------------------------------------------------------- control and data
    @property
    def learner(self) -> VASE:
        return self._feed.learner

    @property
    def feed(self) -> LatentFeed:
        return self._feed

    @property
    def training(self) -> bool:
        """Whether frames go to the learner and updates run (settable, as ``VecNormalize.training``)."""
        return self._feed.learning

    @training.setter
    def training(self, flag: bool) -> None:
        self._feed.learning = bool(flag)

    learning = training

    def set_training(self, flag: bool) -> None:
        self.training = flag

    set_learning = set_training

    def encode(self, obs: Any) -> np.ndarray:
        """Latents of a batch of raw observations (as the wrapped venv returns them), no side effect."""
        return self._feed.encode(self._feed.prepare(np.asarray(self._feed.adapter.select(obs))))

    def get_original_obs(self) -> Any:
        """A copy of the raw observations of the last ``reset``/``step``."""
        return copy.deepcopy(self.old_obs)

    def get_vase_stats(self, since: int | None = None) -> dict[str, Any]:
        return self._feed.stats(None, since)

    def representation_fingerprint(self) -> dict[str, Any]:
        """Plain data identifying the representation (see :meth:`LatentFeed.fingerprint`)."""
        return self._feed.fingerprint()

    def set_learner(self, learner: VASE) -> None:
        self._feed.set_learner(learner)
        self._seed_from_env = False

    def for_evaluation(self, eval_venv: VecEnv, **overrides: Any) -> VecVASE:
        """Wrap ``eval_venv`` with this wrapper's learner (the same object) and settings, frozen:
        evaluation always sees the current representation and never changes it."""
        kwargs = dict(self._feed.settings())
        kwargs.update(overrides)
        _drop_orphan_slow_mask(kwargs, overrides)
        kwargs.setdefault("training", False)
        wrapper = VecVASE(eval_venv, learner=self.learner, **kwargs)
        if (
            self._feed.slow is not None
            and kwargs.get("slow_encoder_rate") == self._feed.slow.rate
            and bool(kwargs.get("slow_mask")) == self._feed.slow.smooth_mask
        ):
            wrapper.feed.share_slow_encoder(self._feed.slow)
        return wrapper

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Save the learner and settings (``VASE.load`` also reads the file)."""
        return save_checkpoint(
            path,
            self.learner,
            dict(self._feed.settings(), learning=self.training),
            "VecVASE",
            _input_record(self._feed.adapter),
            self._feed.wrapper_state(),
        )

    @staticmethod
    def load(path: str | os.PathLike, venv: VecEnv, device: str = "auto", **overrides: Any) -> VecVASE:
        """Wrap ``venv`` with the learner and settings saved at ``path``; ``overrides`` (e.g.
        ``training=False`` for evaluation) win over the saved settings. A venv whose raw images
        differ in shape or dtype from the ones the learner was trained on is refused."""
        state, record = _wrapper_record(path)
        learner = VASE.from_state_dict(state, device=device, source=str(path))
        kwargs = _saved_settings(record)
        if "learning" in kwargs:
            kwargs["training"] = kwargs.pop("learning")
        kwargs.update(overrides)
        _drop_orphan_slow_mask(kwargs, overrides)
        wrapper = VecVASE(venv, learner=learner, device=device, **kwargs)
        _check_input(record.get("input"), wrapper._feed.adapter, str(path))
        wrapper._feed.load_wrapper_state(record.get("state"))
        return wrapper

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["venv"]
        del state["class_attributes"]
        feed: LatentFeed = state.pop("_feed")
        state["_vase_checkpoint"] = {
            "learner": feed.learner.state_dict(),
            "device": str(feed.learner.device),
            "settings": feed.settings(),
            "learning": feed.learning,
            "space": feed.adapter.observation_space,
            "frames_per_step": self.num_envs,
            "wrapper_state": feed.wrapper_state(),
        }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        ckpt = state.pop("_vase_checkpoint")
        device = ckpt["device"] if torch.device(ckpt["device"]).type != "cuda" or torch.cuda.is_available() else "cpu"
        learner = VASE.from_state_dict(ckpt["learner"], device=device)
        self.__dict__.update(state)
        self._feed = LatentFeed(
            ckpt["space"],
            learner,
            frames_per_step=ckpt["frames_per_step"],
            learning=ckpt.get("learning", True),
            **ckpt["settings"],
        )
        self._feed.load_wrapper_state(ckpt.get("wrapper_state"))
        self.venv = None  # type: ignore[assignment]

    def set_venv(self, venv: VecEnv) -> None:
        """Attach a venv after unpickling (as ``VecNormalize.set_venv``); its observation space must
        be the one this wrapper was built for (other frames would be misread as the learnt ones)."""
        if self.venv is not None:
            raise ValueError("Trying to set venv of an already initialised VecVASE wrapper")
        expected = self._feed.adapter.observation_space
        if venv.observation_space != expected:
            raise ValueError(
                f"set_venv: this VecVASE reads observations {expected}, the new venv gives {venv.observation_space}; "
                "build the venv as at training time, or, to use the learner on other frames on purpose, wrap it "
                "anew: VecVASE(venv, learner=old.learner, **old.feed.settings())"
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
    are ordinary observations). Options as for :class:`VASEWrapper`; with no ``seed``, the learner
    takes the seed of the first seeded ``reset`` (an int, or the first of a list)."""

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
        **options: Any,
    ) -> None:
        options = _feed_options(options, "VASEVectorWrapper")
        self._record_args(config, learner, learning, learner_path, seed, device, options)
        gym.vector.VectorObservationWrapper.__init__(self, env)
        _check_env_input(env, options, "VASEVectorWrapper")
        self._setup(
            env.single_observation_space, config, learner, learning, learner_path, seed, device, options, env.num_envs
        )
        self.single_observation_space = self._feed.output_space
        self.observation_space = gym.vector.utils.batch_space(self._feed.output_space, env.num_envs)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if self._seed_from_env:
            _reseed_untouched(self._feed, seed[0] if isinstance(seed, (list, tuple)) and seed else seed)
        if self._feed.schedule.pretrain_due:
            self.pretrain(seed=seed, options=options)
            seed = None  # consumed by the pretraining
        self._resetting = True
        try:
            return super().reset(seed=seed, options=options)
        finally:
            self._resetting = False

    def pretrain(
        self,
        frames: int | None = None,
        policy: Callable[[Any], Any] | None = None,
        updates: int | None = None,
        *,
        seed: int | list[int] | None = None,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """As :meth:`VecVASE.pretrain` (``policy`` maps the raw observation batch to actions). The
        env's autoreset mode must give final observations as ordinary ones (NEXT_STEP/DISABLED)."""
        env = self.env
        sample = _action_sampler(env.action_space, self.learner.seed)
        state: dict[str, Any] = {}

        def reset() -> Any:
            state["obs"], _ = env.reset(seed=seed, options=options)
            return self._feed.adapter.select(state["obs"])

        def step() -> tuple[Any, list[Any]]:
            action = sample() if policy is None else policy(state["obs"])
            state["obs"], *_ = env.step(action)
            return self._feed.adapter.select(state["obs"]), []

        return self._feed.pretrain(reset, step, frames, updates)

    def observations(self, observations: Any) -> Any:
        feed = self._feed
        x = feed.prepare(np.asarray(feed.adapter.select(observations)))
        if feed.learning:
            feed.learn_from(x, run=not getattr(self, "_resetting", False))
        return feed.output(feed.encode(x), observations)


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _action_sampler(space: spaces.Space, seed: int) -> Callable[[], Any]:
    """Uniform random actions from a private, seeded copy of ``space`` (the env's own space and
    its RNG are left alone)."""
    own = copy.deepcopy(space)
    own.seed(int(seed) % (2**32))
    return own.sample


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


def set_stack_training(env: Any, training: bool) -> list[str]:
    """Switch every learning layer of a wrapper stack at once and say which ones it reached:
    ``VecVASE`` and ``VecNormalize`` (``training``), ``VASEWrapper``/``VASEVectorWrapper`` (also
    inside the sub-envs of an SB3 VecEnv, through ``env_method``) and Gymnasium's normalisers
    (``update_running_mean``). ``env.training = False`` on a plain ``VecNormalize`` reaches only
    that layer; this reaches them all."""
    flag = bool(training)
    reached: list[str] = []
    layer, depth = env, 0
    while layer is not None and depth < 64:
        depth += 1
        name = type(layer).__name__
        if isinstance(layer, VecEnvWrapper):
            if isinstance(layer, VecVASE):
                layer.training = flag
                reached.append(f"{name}.training")
            elif isinstance(layer, VecNormalize):
                own = getattr(layer, "set_own_training", None)
                if own is not None:
                    own(flag)
                else:
                    layer.training = flag
                reached.append(f"{name}.training")
            layer = layer.venv
            continue
        if isinstance(layer, VecEnv):  # the base VecEnv: reach into its sub-envs
            indices = [i for i, wrapped in enumerate(layer.env_is_wrapped(VASEWrapper)) if wrapped]
            if indices:
                layer.env_method("set_learning", flag, indices=indices)
                reached.append(f"VASEWrapper.learning ({len(indices)} sub-envs)")
            from gymnasium.wrappers import NormalizeObservation, NormalizeReward

            for wrapper in (NormalizeObservation, NormalizeReward):
                indices = [i for i, wrapped in enumerate(layer.env_is_wrapped(wrapper)) if wrapped]
                if indices:
                    layer.env_method("set_wrapper_attr", "update_running_mean", flag, indices=indices)
                    reached.append(f"{wrapper.__name__}.update_running_mean ({len(indices)} sub-envs)")
            break
        if isinstance(layer, _FeedAccess):
            layer.set_learning(flag)
            reached.append(f"{name}.learning")
        elif isinstance(getattr(type(layer), "update_running_mean", None), property):
            layer.update_running_mean = flag
            reached.append(f"{name}.update_running_mean")
        if isinstance(layer, gym.vector.SyncVectorEnv):
            for sub in layer.envs:
                reached.extend(set_stack_training(sub, flag))
            break
        layer = getattr(layer, "env", None) if isinstance(layer, (gym.Wrapper, gym.vector.VectorWrapper)) else None
    return reached


def freeze(env: Any) -> list[str]:
    """``set_stack_training(env, False)``: nothing in the stack learns or updates statistics."""
    return set_stack_training(env, False)


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
    slow = train.feed.slow
    if slow is not None and not share:
        copied = SlowEncoder(learner, slow.rate, smooth_mask=slow.smooth_mask)
        copied.load_state_dict(slow.state_dict())
        slow = copied
    evaluation.feed.share_slow_encoder(slow)
    evaluation.set_learning(False)
