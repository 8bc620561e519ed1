"""Provider dialects: routes, key injection, body peeks, error shapes, usage. Sans-IO."""

from .base import Dialect, Route, Usage
from .registry import dialect_for

__all__ = ["Dialect", "Route", "Usage", "dialect_for"]
