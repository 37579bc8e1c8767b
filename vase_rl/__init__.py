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

    warnings.warn(f"vase_rl.envs could not be imported ({_err}); no environments registered")
