"""Client SSL contexts: the system trust store (or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``) plus
a provider's own CA bundle; hostname checks on, ALPN ``http/1.1``."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Mapping

from .errors import TLSConfigError


def client_context(ca_pem: str | None, environ: Mapping[str, str]) -> ssl.SSLContext:
    """The context for one provider's upstream TLS. ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` are
    read from ``environ`` (OpenSSL reads the same names from the process environment).

    Contexts are cached: loading the system store takes milliseconds."""
    return _context(
        ca_pem, environ.get("SSL_CERT_FILE") or None, environ.get("SSL_CERT_DIR") or None
    )


@functools.lru_cache(maxsize=64)
def _context(ca_pem: str | None, cafile: str | None, capath: str | None) -> ssl.SSLContext:
    try:
        if cafile or capath:
            context = ssl.create_default_context(cafile=cafile, capath=capath)
        else:
            context = ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(
            "the trust store (SSL_CERT_FILE / SSL_CERT_DIR) cannot be loaded "
            f"({type(exc).__name__})"
        ) from None
    if ca_pem:
        try:
            context.load_verify_locations(cadata=ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise TLSConfigError(f"ca_file is not a PEM CA bundle ({type(exc).__name__})") from None
    context.set_alpn_protocols(["http/1.1"])
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context
