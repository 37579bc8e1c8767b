"""Save and restore, in one call each, the whole stack an agent was trained with.

An agent trained on VASE latents depends on three things that SB3 saves apart: the
representation (:class:`~vase_rl.wrappers.VecVASE`), the statistics of any ``VecNormalize``
above it, and the agent itself. :func:`save_stack` writes all of them into one folder::

    run/stack/
      stack.json          what is where: the layers above VecVASE (bottom to top), the algorithm,
                          the representation's fingerprint
      vase.pt             the learner and VecVASE's settings (VecVASE.save)
      vecnormalize.pkl    VecNormalize's statistics and settings (VecNormalize.save)
      agent.zip           the agent (model.save), carrying the fingerprint as ``vase_fingerprint``

and :func:`load_stack` rebuilds it on a fresh raw venv (file names inside the folder are
relative, so a moved folder loads). The fingerprint (:meth:`vase_rl.wrappers.LatentFeed.fingerprint`:
config, seed, update count, SHA-256 of encoder/classifier weights and mask, output layout) is
stored with the agent and compared with the representation it is given:
:func:`check_representation` refuses (or, with ``strict=False``, warns about) an agent put on a
representation it was not trained with, naming what differs.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecFrameStack, VecMonitor, VecNormalize

from vase_rl.wrappers import VASEWrapper, VecVASE, compare_fingerprints, set_stack_training

__all__ = [
    "save_stack",
    "load_stack",
    "LoadedStack",
    "check_representation",
    "representation_fingerprint",
    "attach_fingerprint",
    "FINGERPRINT_ATTRIBUTE",
    "STACK_MANIFEST",
]

STACK_MANIFEST = "stack.json"
STACK_FORMAT = "vase_rl.stack"
STACK_VERSION = 1
FINGERPRINT_ATTRIBUTE = "vase_fingerprint"  # an SB3 model attribute: saved in the zip's data, restored by load
_ALGORITHM_PACKAGES = ("stable_baselines3", "sb3_contrib")


class LoadedStack(NamedTuple):
    """What :func:`load_stack` returns: ``model, env = load_stack(...)``."""

    model: Any
    env: VecEnv


def _split(env: Any) -> tuple[list[VecEnvWrapper], VecVASE | None, VecEnv]:
    """(layers above the VASE layer, outermost first; the VecVASE or None; the layer below)."""
    above: list[VecEnvWrapper] = []
    layer = env
    while isinstance(layer, VecEnvWrapper) and not isinstance(layer, VecVASE):
        above.append(layer)
        layer = layer.venv
    if isinstance(layer, VecVASE):
        return above, layer, layer.venv
    return above, None, layer


def _per_env_wrappers(base: Any) -> list[int]:
    if not isinstance(base, VecEnv):
        return []
    try:
        return [i for i, wrapped in enumerate(base.env_is_wrapped(VASEWrapper)) if wrapped]
    except (AttributeError, NotImplementedError):  # pragma: no cover - exotic VecEnvs
        return []


def representation_fingerprint(env: Any) -> dict[str, Any] | None:
    """The fingerprint of the representation in an env stack: a ``VecVASE`` in it, a single
    ``VASEWrapper``, or the ``VASEWrapper`` of the first sub-env of a VecEnv; ``None`` if none."""
    _, vec, base = _split(env)
    if vec is not None:
        return vec.representation_fingerprint()
    if isinstance(env, VASEWrapper):
        return env.representation_fingerprint()
    indices = _per_env_wrappers(base)
    if indices:
        return base.env_method("representation_fingerprint", indices=indices[:1])[0]
    return None


def attach_fingerprint(model: Any, env: Any | None = None) -> dict[str, Any] | None:
    """Store the fingerprint of ``env``'s representation (default: the model's env) on the model,
    where ``model.save`` keeps it."""
    fingerprint = representation_fingerprint(model.get_env() if env is None else env)
    if fingerprint is not None:
        setattr(model, FINGERPRINT_ATTRIBUTE, fingerprint)
    return fingerprint


def check_representation(model: Any, env: Any | None = None, strict: bool = True) -> list[str]:
    """Compare the representation ``model`` was saved with against ``env``'s (default: the
    model's env). Returns what differs; raises ``ValueError`` on a difference when ``strict``
    (else warns). An agent without a stored fingerprint (saved by a plain ``model.save`` before
    any ``VASECallback``/``save_stack``) cannot be checked: a warning says so."""
    env = model.get_env() if env is None else env
    current = representation_fingerprint(env)
    if current is None:
        raise ValueError("the env has no VASE wrapper (VecVASE or VASEWrapper) to check the agent against")
    saved = getattr(model, FINGERPRINT_ATTRIBUTE, None)
    if saved is None:
        warnings.warn(
            "this agent carries no VASE fingerprint (saved without save_stack or VASECallback), so whether it was "
            "trained on this representation cannot be checked",
            RuntimeWarning,
            stacklevel=2,
        )
        return []
    problems = compare_fingerprints(saved, current)
    _report(problems, strict)
    return problems


def _report(problems: list[str], strict: bool) -> None:
    if not problems:
        return
    message = (
        "this agent was trained on another representation than the one it is given: "
        + "; ".join(problems)
        + ". Load the VASE checkpoint saved with the agent (vase_rl.agents.load_stack does), or pass "
        "strict=False to use the agent anyway"
    )
    if strict:
        raise ValueError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def save_stack(path: str | os.PathLike, model: Any = None, env: Any = None) -> Path:
    """Save the agent (if given), every layer above the VASE wrapper and the representation into
    the folder ``path``; returns it. ``env`` defaults to ``model.get_env()``.

    Layers above ``VecVASE`` that can be saved: ``VecNormalize`` (its statistics),
    ``VecFrameStack`` and ``VecMonitor`` (rebuilt from their settings). With ``VASEWrapper``
    sub-envs instead of a ``VecVASE``, the first sub-env's learner is saved."""
    if model is None and env is None:
        raise ValueError("save_stack needs the model, the env, or both")
    env = model.get_env() if env is None else env
    if env is None:
        raise ValueError("the model has no env; pass env= (the VecEnv stack it was trained on)")
    above, vec, base = _split(env)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    layers: list[dict[str, Any]] = []
    normalizers = 0
    for layer in reversed(above):  # bottom to top
        if isinstance(layer, VecNormalize):
            name = "vecnormalize.pkl" if normalizers == 0 else f"vecnormalize_{normalizers}.pkl"
            normalizers += 1
            layer.save(str(folder / name))
            layers.append({"type": "VecNormalize", "file": name})
        elif isinstance(layer, VecFrameStack):
            layers.append({"type": "VecFrameStack", "n_stack": int(layer.stacked_obs.n_stack)})
        elif isinstance(layer, VecMonitor):
            layers.append({"type": "VecMonitor"})
        else:
            raise ValueError(
                f"save_stack cannot save the layer {type(layer).__name__} above the VASE wrapper (supported: "
                "VecNormalize, VecFrameStack, VecMonitor); save it yourself and use VecVASE.save for the rest"
            )
    if vec is not None:
        vec.save(folder / "vase.pt")
        vase_layer = "VecVASE"
        fingerprint = vec.representation_fingerprint()
    else:
        indices = _per_env_wrappers(base)
        if not indices:
            raise ValueError(
                "save_stack found no VASE wrapper: the env stack has no VecVASE and no VASEWrapper sub-envs"
            )
        base.env_method("save", str(folder / "vase.pt"), indices=indices[:1])
        vase_layer = "VASEWrapper"
        fingerprint = base.env_method("representation_fingerprint", indices=indices[:1])[0]
    manifest: dict[str, Any] = {
        "format": STACK_FORMAT,
        "version": STACK_VERSION,
        "vase_layer": vase_layer,
        "vase": "vase.pt",
        "layers": layers,
        "fingerprint": fingerprint,
        "agent": None,
        "algorithm": None,
    }
    if model is not None:
        setattr(model, FINGERPRINT_ATTRIBUTE, fingerprint)
        model.save(folder / "agent.zip")
        cls = type(model)
        manifest.update(agent="agent.zip", algorithm=f"{cls.__module__}:{cls.__qualname__}")
    from vase_rl import __version__

    manifest["vase_rl_version"] = __version__
    tmp = folder / (STACK_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, folder / STACK_MANIFEST)
    return folder


def _read_manifest(folder: Path) -> dict[str, Any]:
    file = folder / STACK_MANIFEST
    if not file.is_file():
        raise FileNotFoundError(f"no {STACK_MANIFEST} in {folder}: not a folder written by vase_rl.agents.save_stack")
    manifest = json.loads(file.read_text())
    if manifest.get("format") != STACK_FORMAT or manifest.get("version") != STACK_VERSION:
        raise ValueError(f"{file} is not a vase_rl stack manifest of version {STACK_VERSION}")
    return manifest


def _algorithm(name: str) -> type:
    module, _, qualname = name.partition(":")
    if module.split(".")[0] not in _ALGORITHM_PACKAGES:
        raise ValueError(
            f"the stack's agent is a {name}; pass algorithm=<its class> to load it (only stable_baselines3 and "
            "sb3_contrib classes are imported by name)"
        )
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def load_stack(
    path: str | os.PathLike,
    venv: VecEnv,
    *,
    training: bool = False,
    device: str = "auto",
    policy_device: str = "cpu",
    algorithm: type | None = None,
    strict: bool = True,
    **load_kwargs: Any,
) -> LoadedStack:
    """Rebuild the stack saved by :func:`save_stack` on ``venv`` (the raw VecEnv, as built at
    training time) and load the agent onto it.

    ``training=False`` (default) freezes every learning layer (for evaluation); ``True`` resumes
    learning everywhere. ``device`` places the VASE learner, ``policy_device`` the agent.
    ``algorithm``: the agent's class (default: the one recorded, if from SB3/sb3_contrib).
    The agent's stored fingerprint must match the loaded representation (``strict=False``: warn).
    ``load_kwargs`` go to ``algorithm.load``."""
    folder = Path(path)
    manifest = _read_manifest(folder)
    if manifest.get("vase_layer") != "VecVASE":
        raise ValueError(
            "this stack was trained with VASEWrapper sub-envs, which load_stack cannot re-create inside a VecEnv: "
            f"build the sub-envs with VASEWrapper.load('{folder / manifest['vase']}', env) and load the agent with "
            "its class's load"
        )
    env: VecEnv = VecVASE.load(folder / manifest["vase"], venv, device=device, training=training)
    if manifest.get("fingerprint") is not None:  # before the layers above, which would fail on other shapes
        _report(compare_fingerprints(manifest["fingerprint"], env.representation_fingerprint()), strict)
    for layer in manifest["layers"]:
        kind = layer.get("type")
        if kind == "VecNormalize":
            env = VecNormalize.load(str(folder / layer["file"]), env)
        elif kind == "VecFrameStack":
            env = VecFrameStack(env, int(layer["n_stack"]))
        elif kind == "VecMonitor":
            env = VecMonitor(env)
        else:
            raise ValueError(f"{folder / STACK_MANIFEST} names an unknown layer {kind!r}")
    set_stack_training(env, training)
    model = None
    if manifest.get("agent"):
        cls = algorithm if algorithm is not None else _algorithm(manifest["algorithm"])
        model = cls.load(folder / manifest["agent"], env=env, device=policy_device, **load_kwargs)
        check_representation(model, env, strict=strict)
    return LoadedStack(model, env)
