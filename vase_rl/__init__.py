"""vase_rl: VASE (Variational Autoencoder with Shared Embeddings) for life-long
representation learning, with Gymnasium and Stable-Baselines3 integration.

Importing the package registers the ``vase_rl/<Name>-v0`` Gymnasium environments.
"""

from vase_rl.config import VASEConfig
from vase_rl.learner import VASE

__version__ = "0.1.0"

__all__ = ["VASE", "VASEConfig", "__version__"]

try:  # environment registration must never make the core unusable
    from vase_rl import envs as _envs  # noqa: F401
except ImportError as _err:  # pragma: no cover - only when envs are broken
    import warnings

    warnings.warn(f"vase_rl.envs could not be imported ({_err}); no environments registered", stacklevel=2)

# Gymnasium / SB3 wrappers (vase_rl/wrappers.py), imported on first use to keep `import vase_rl` light
_WRAPPER_EXPORTS = ("VASEWrapper", "VecVASE", "VASEVectorWrapper", "make_vase_vec_env", "sync_vase", "unwrap_vase")
__all__ += list(_WRAPPER_EXPORTS)


def __getattr__(name):
    if name in _WRAPPER_EXPORTS:
        from vase_rl import wrappers

        return getattr(wrappers, name)
    if name == "agents":  # `import vase_rl; vase_rl.agents.VASECallback()` works without importing SB3 up front
        import importlib

        return importlib.import_module("vase_rl.agents")
    raise AttributeError(f"module 'vase_rl' has no attribute {name!r}")
