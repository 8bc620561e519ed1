"""Leaf certificates for intercepted hosts, minted from the proxy-mode CA and cached per host.

Each leaf is an ECDSA P-256 key and a certificate whose SAN is the host, valid for
``LEAF_VALIDITY`` (backdated an hour for clock skew). A cache belongs to one CA: when the
CA changes, the owner makes a new cache and the old leaves are gone with it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import ssl
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .ca import CertificateAuthority

LEAF_VALIDITY = dt.timedelta(hours=24)
RENEW_BEFORE = dt.timedelta(hours=1)
MAX_HOSTS = 1024


@dataclass(frozen=True)
class Leaf:
    """A server-side TLS context for one host and when its certificate expires (wall clock)."""

    context: ssl.SSLContext
    cert_pem: bytes
    not_after: float


def mint_leaf_pem(ca: CertificateAuthority, host: str) -> tuple[bytes, bytes, float]:
    """``(chain_pem, key_pem, not_after)`` for ``host`` (a DNS name or an IP address)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    not_after = now + LEAF_VALIDITY
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(min(not_after, ca.not_after))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca.cert_pem
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return chain, key_pem, min(not_after, ca.not_after).timestamp()


def server_context(chain_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2+, ALPN ``http/1.1`` only) holding the leaf.

    The stdlib loads certificates only from files: the key is written encrypted under a
    one-time password held in memory, to a private temporary directory removed at once, so
    the plaintext key never touches the disk."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    password = secrets.token_bytes(32)
    key = serialization.load_pem_private_key(key_pem, password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with tempfile.TemporaryDirectory(prefix="trio-bridge-leaf-") as tmp:
        cert_path, key_path = os.path.join(tmp, "leaf.pem"), os.path.join(tmp, "leaf.key")
        for path, data in ((cert_path, chain_pem), (key_path, encrypted)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        context.load_cert_chain(cert_path, key_path, password=password)
    return context


def mint_leaf(ca: CertificateAuthority, host: str) -> Leaf:
    chain, key_pem, not_after = mint_leaf_pem(ca, host)
    return Leaf(server_context(chain, key_pem), chain, not_after)


class LeafCache:
    """Leaves of one CA by host, at most ``MAX_HOSTS`` (least recently used dropped).

    Concurrent requests for one host mint it once; minting runs in a worker thread."""

    def __init__(self, ca: CertificateAuthority, *, max_hosts: int = MAX_HOSTS) -> None:
        self.ca = ca
        self._max = max_hosts
        self._leaves: OrderedDict[str, Leaf] = OrderedDict()
        self._minting: dict[str, trio.Event] = {}
        self.minted = 0

    async def get(self, host: str) -> Leaf:
        host = host.lower()
        while True:
            leaf = self._leaves.get(host)
            if leaf is not None and leaf.not_after - time.time() > RENEW_BEFORE.total_seconds():
                self._leaves.move_to_end(host)
                return leaf
            pending = self._minting.get(host)
            if pending is None:
                break
            await pending.wait()
        done = self._minting[host] = trio.Event()
        try:
            leaf = await trio.to_thread.run_sync(mint_leaf, self.ca, host)
            self.minted += 1
            self._leaves[host] = leaf
            self._leaves.move_to_end(host)
            while len(self._leaves) > self._max:
                self._leaves.popitem(last=False)
            return leaf
        finally:
            del self._minting[host]
            done.set()
