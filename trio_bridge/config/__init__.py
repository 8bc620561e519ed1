"""Configuration: the schema, the YAML loader and key resolution.

Imports nothing else of the package.
"""

from .errors import ConfigError
from .loader import LoadedConfig, load_config_dir
from .model import BridgeSettings, ClientSpec, KeyRef, ProviderSpec

__all__ = [
    "BridgeSettings",
    "ClientSpec",
    "ConfigError",
    "KeyRef",
    "LoadedConfig",
    "ProviderSpec",
    "load_config_dir",
]
