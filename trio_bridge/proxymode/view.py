"""What one snapshot holds for proxy mode: the CA, the host map, the passthrough hosts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..config.model import ProxyModeSettings
from ..config.secrets import KeyResolutionError
from ..sources.resolve import ResolvedSecrets

if TYPE_CHECKING:
    from .ca import CertificateAuthority
from .hostmap import HostMap, build_host_map, host_key


@dataclass(frozen=True, eq=False)
class ProxyView:
    """Proxy mode as one snapshot serves it. ``ca`` is None when it failed to load
    (``error`` says why, never quoting key material); then no host is intercepted."""

    ca: CertificateAuthority | None
    hosts: HostMap = field(default_factory=HostMap)
    passthrough: frozenset[str] = frozenset()
    error: str | None = None

    @property
    def fingerprint(self) -> str:
        return "" if self.ca is None else self.ca.fingerprint

    def with_hosts(self, served: Iterable[tuple[str, str]]) -> ProxyView:
        """This view with the host map of ``(provider name, base_url)`` pairs (none while
        the CA is broken: nothing is intercepted then)."""
        if self.ca is None:
            return self
        return replace(self, hosts=build_host_map(served))


def plan_proxy_view(settings: ProxyModeSettings, secrets: ResolvedSecrets) -> ProxyView:
    """Load the CA from its resolved key references; the host map comes later
    (:meth:`ProxyView.with_hosts`), from the providers the snapshot serves."""
    from .ca import CAError, load_ca  # cryptography loads only when proxy mode is configured

    passthrough = frozenset(host_key(*_split(h)) for h in settings.passthrough_hosts)
    try:
        cert_pem = secrets.get(settings.ca_cert).encode()
        key_pem = secrets.get(settings.ca_key).encode()
        ca = load_ca(cert_pem + b"\n", key_pem + b"\n")
    except (KeyResolutionError, CAError) as exc:
        return ProxyView(None, HostMap(), passthrough, f"proxy_mode: {exc}")
    return ProxyView(ca, HostMap(), passthrough)


def _split(host_port: str) -> tuple[str, int]:
    host, _, port = host_port.rpartition(":")
    return host, int(port)


def proxy_mode_document(view: ProxyView) -> dict[str, Any]:
    """``proxy_mode`` of ``/-/snapshot``: the CA's subject and expiry (never its key), the
    host map, hosts shared by several providers (served by none), passthrough hosts."""
    ca = view.ca
    return {
        "ca_subject": ca.subject if ca is not None else None,
        "ca_not_after": ca.not_after.isoformat().replace("+00:00", "Z") if ca else None,
        "error": view.error,
        "hosts": dict(view.hosts.hosts),
        "shared_hosts": {k: list(v) for k, v in view.hosts.shared.items()},
        "passthrough_hosts": sorted(view.passthrough),
    }
