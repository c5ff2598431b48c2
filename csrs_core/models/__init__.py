"""Base classifiers: the architectures by name (the user's own registered with register_architecture,
docs/architectures.md) and CSRS's own checkpoint format (safe loading only)."""
from csrs_core.models.architectures import register_architecture

__all__ = ["register_architecture"]
