"""The proxy-mode certificate authority: loading it from PEM and creating a new one.

A :class:`CertificateAuthority` holds the CA certificate and its private key in memory;
its ``repr`` never shows the key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ..errors import TrioBridgeError

CA_VALIDITY = dt.timedelta(days=3650)


class CAError(TrioBridgeError):
    """The CA cannot be loaded or created; the message never quotes key material."""


CAKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, eq=False)
class CertificateAuthority:
    """A CA certificate and its key. ``fingerprint`` identifies the pair (cache key)."""

    cert: x509.Certificate
    key: CAKey = field(repr=False)
    cert_pem: bytes = field(repr=False)

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.cert_pem).hexdigest()


def load_ca(cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
    """Parse and check a CA pair: the key must match the certificate, which must be a CA."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise CAError("ca_cert is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CAError("ca_key is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CAError("ca_key must be an EC or RSA key")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise CAError("ca_key does not match ca_cert")
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is None or not basic.ca:
        raise CAError("ca_cert is not a CA certificate (basicConstraints CA:TRUE missing)")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    return CertificateAuthority(cert=cert, key=key, cert_pem=pem)


def new_ca(common_name: str = "trio-bridge proxy CA") -> tuple[bytes, bytes]:
    """A fresh self-signed ECDSA P-256 CA: ``(cert_pem, key_pem)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def write_new_ca(directory: Path) -> tuple[Path, Path]:
    """Write ``ca.pem`` and ``ca.key`` (mode 0600) into ``directory``, creating it.

    Refuses (CAError) when either file exists: an operator's CA is never overwritten."""
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    for path in (cert_path, key_path):
        if path.exists():
            raise CAError(f"{path} already exists; not overwriting it")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CAError(f"cannot create {directory}: {exc.strerror or exc}") from None
    cert_pem, key_pem = new_ca()
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        fd = os.open(cert_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem)
    except OSError as exc:
        raise CAError(f"cannot write the CA into {directory}: {exc.strerror or exc}") from None
    return cert_path, key_path
