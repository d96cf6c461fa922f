"""A test certificate authority and server certificates it signs, as PEM files, made with `cryptography`.

For anything that must serve or trust HTTPS in a test: the local stack given `--tls-cert`/`--tls-key`
(`devstack.launcher.start_stack(tls_cert=..., tls_key=...)`), a client given `verify=ca.cert_path`, or a
sync config's `ca_certificate` given `ca.cert_pem`. Keys are EC P-256 (fast to make); certificates are
valid from an hour ago for a day.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "localhost")
_VALIDITY = timedelta(days=1)
_CLOCK_SKEW = timedelta(hours=1)


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed CA: its certificate (PEM text and file) and the key it signs with."""

    name: str
    cert_pem: str
    cert_path: Path
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def make_ca(directory: Path, name: str = "Flowgate Test CA") -> CertificateAuthority:
    """A new CA; its certificate is written to `directory`/<slug of name>-ca.pem (replacing one there)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public = key.public_key()
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
    cert_path = Path(directory) / f"{_slug(name)}-ca.pem"
    cert_path.write_text(cert_pem)
    return CertificateAuthority(name, cert_pem, cert_path, certificate, key)


def issue_server_certificate(
    ca: CertificateAuthority, directory: Path, hosts: Sequence[str] = DEFAULT_HOSTS
) -> tuple[Path, Path]:
    """A server certificate signed by `ca` for `hosts` (IP addresses become IP SANs, names DNS SANs), and
    its unencrypted key: (cert_path, key_path), written to `directory` as <first host>-cert.pem/-key.pem
    (replacing files of those names)."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_general_name(host) for host in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    stem = Path(directory) / _slug(hosts[0])
    cert_path, key_path = stem.with_name(stem.name + "-cert.pem"), stem.with_name(stem.name + "-key.pem")
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "cert"
