"""The root of the bridge's own errors: every error a user can be shown derives from it."""


class TrioBridgeError(Exception):
    """An error the bridge reports in one line; its message is safe to print (no secret)."""
