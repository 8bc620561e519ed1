"""Provider dialects: routes, key injection, body peeks, error shapes, usage. Sans-IO."""

from .base import Dialect, Route, TokenUsage
from .registry import dialect_for

__all__ = ["Dialect", "Route", "TokenUsage", "dialect_for"]
