"""The model registry: entries, import from the Hub or a folder, family adapters, lineage."""

from cortex.hub.entry import KINDS, RegistryEntry
from cortex.hub.paths import cortex_home, safe_join, validate_name
from cortex.hub.registry import Registry, default_registry, resolve_model_path, sha256_file

__all__ = [
    "KINDS",
    "Registry",
    "RegistryEntry",
    "cortex_home",
    "default_registry",
    "resolve_model_path",
    "safe_join",
    "sha256_file",
    "validate_name",
]
