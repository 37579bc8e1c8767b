"""Piece-wise stationary visual environments and data streams (installed as ``vase_rl.envs``).

Three users, one set of sprites:

* offline training: ``make_stream(["moving_shapes", "digits", "moving_digits"], batch_size=64)``
  yields ``StreamBatch(images, domain, domain_name, factors, step, domain_ids)``;
* RL agents: Gymnasium ids ``vase_rl/SpriteTask-v0``, ``vase_rl/SpriteTaskContinuous-v0``,
  ``vase_rl/DigitTask-v0``, ``vase_rl/DomainSequence-v0``, ``vase_rl/DomainSequenceContinuous-v0``
  and ``vase_rl/MovingSprites-v0``, registered when this package is imported;
* evaluation: ground-truth factors and domain ids beside every image (``make_family``,
  ``make_domain``, streams, and ``info`` in the environments).

Sprites are procedural (numpy only, nothing downloaded); banks of pre-rendered sprites are
built on first use and cached. Real MNIST-style data can be plugged in from local IDX files
(``load_idx_dataset``, ``register_idx_domain``). See docs/ENVIRONMENTS.md.
"""

from .domains import (
    DOMAIN_NAMES,
    VARIANT_PREFIXES,
    list_domains,
    list_families,
    make_domain,
    make_family,
    parse_domain,
    register_family,
)
from .evaluate import evaluate_policy_returns
from .families import FACTOR_NAMES, ProceduralFamily, SpriteFamily, clear_caches
from .idx import IDXDataset, IDXFamily, find_idx_files, load_idx, load_idx_dataset, register_idx_domain, save_idx
from .registration import ENV_IDS, register_envs
from .sprite_task import (
    ACTION_MEANINGS,
    DomainSequenceEnv,
    SpriteTaskEnv,
    SpriteTaskOracle,
    goal_layout,
    oracle_action,
)
from .streams import DataStream, Segment, StreamBatch, make_stream

__all__ = [
    "ACTION_MEANINGS",
    "DOMAIN_NAMES",
    "ENV_IDS",
    "FACTOR_NAMES",
    "VARIANT_PREFIXES",
    "DataStream",
    "DomainSequenceEnv",
    "IDXDataset",
    "IDXFamily",
    "ProceduralFamily",
    "Segment",
    "SpriteFamily",
    "SpriteTaskEnv",
    "SpriteTaskOracle",
    "StreamBatch",
    "clear_caches",
    "evaluate_policy_returns",
    "find_idx_files",
    "goal_layout",
    "list_domains",
    "list_families",
    "load_idx",
    "load_idx_dataset",
    "make_domain",
    "make_family",
    "make_stream",
    "oracle_action",
    "parse_domain",
    "register_envs",
    "register_family",
    "register_idx_domain",
    "save_idx",
]

register_envs()
