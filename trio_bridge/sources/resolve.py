"""Key references resolved once, off the event loop, and handed over with a source's contents.

A source calls :func:`resolve_references` in its worker thread (it reads key files); the
snapshot build then only looks values up (:meth:`ResolvedSecrets.get`) and never does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from ..config.model import KeyRef, ProviderSpec
from ..config.secrets import KeyResolutionError, resolve_key

__all__ = ["ResolvedSecrets", "provider_references", "resolve_references"]


class ResolvedSecrets:
    """What each key reference resolved to: its secret, or the (value-free) reason it did not.

    Immutable. ``value:`` references need no resolution and are answered from the reference.
    The repr never shows a secret.
    """

    __slots__ = ("_errors", "_values")

    def __init__(
        self,
        values: Mapping[KeyRef, str] | None = None,
        errors: Mapping[KeyRef, str] | None = None,
    ) -> None:
        self._values: dict[KeyRef, str] = dict(values or {})
        self._errors: dict[KeyRef, str] = dict(errors or {})

    def get(self, ref: KeyRef) -> str:
        """The secret ``ref`` names; KeyResolutionError (naming the reference) otherwise."""
        if ref.value is not None:
            return ref.value
        value = self._values.get(ref)
        if value is not None:
            return value
        raise KeyResolutionError(
            self._errors.get(ref, f"key reference {ref.describe()} was not resolved")
        )

    def __contains__(self, ref: object) -> bool:
        return ref in self._values or ref in self._errors

    def __iter__(self) -> Iterator[KeyRef]:
        yield from self._values
        yield from (ref for ref in self._errors if ref not in self._values)

    def __len__(self) -> int:
        return len(set(self._values) | set(self._errors))

    def union(self, other: ResolvedSecrets | None) -> ResolvedSecrets:
        """These resolutions with ``other``'s on top."""
        if other is None:
            return self
        values = {**self._values, **other._values}
        errors = {**self._errors, **other._errors}
        for ref in other._values:
            errors.pop(ref, None)
        for ref in other._errors:
            values.pop(ref, None)
        return ResolvedSecrets(values, errors)

    def __repr__(self) -> str:
        return f"ResolvedSecrets({len(self._values)} resolved, {len(self._errors)} failed)"


def provider_references(spec: ProviderSpec) -> list[KeyRef]:
    """Every key reference a provider spec holds: keys, Bedrock credentials, ``ca_file``."""
    refs = list(spec.keys)
    if spec.bedrock is not None:
        b = spec.bedrock
        refs += [r for r in (b.access_key, b.access_key_secret, b.session_token) if r]
    if spec.ca_file is not None:
        refs.append(spec.ca_file)
    return refs


def resolve_references(
    refs: Iterable[KeyRef], secrets_dir: Path | None, environ: Mapping[str, str]
) -> ResolvedSecrets:
    """Resolve each reference once (reads key files: call it in a worker thread)."""
    values: dict[KeyRef, str] = {}
    errors: dict[KeyRef, str] = {}
    for ref in refs:
        if ref.value is not None or ref in values or ref in errors:
            continue
        try:
            values[ref] = resolve_key(ref, secrets_dir, environ)
        except KeyResolutionError as exc:
            errors[ref] = str(exc)
    return ResolvedSecrets(values, errors)
