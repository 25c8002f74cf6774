"""Throw-away keys and self-signed certificates for the demo and the flow tests.

Everything here is for loopback use only: the demo proxy, its SAML peers and the TLS
listener of the proxy all get fresh RSA keys and self-signed certificates. Real deployments
bring their own keys (see ``proxy_conf/``); nothing generated here is ever committed.

>>> import tempfile, pathlib
>>> pki = generate_demo_pki(pathlib.Path(tempfile.mkdtemp()))
>>> pki.tls.cert_path.name
'tls.crt'
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["KeyPair", "DemoPki", "generate_key", "self_signed_cert", "write_key_pair", "generate_demo_pki"]

KEY_SIZE = 2048
CERT_DAYS = 3650


@dataclass(frozen=True)
class KeyPair:
    """Paths of a PEM private key and its self-signed PEM certificate."""

    key_path: Path
    cert_path: Path


@dataclass(frozen=True)
class DemoPki:
    """Every key the demo needs, by role."""

    frontend: KeyPair  # proxy as SAML IdP towards the SPs (signs responses and assertions)
    backend: KeyPair  # proxy as SAML SP towards the institutional IdP (signs AuthnRequests)
    oidc: KeyPair  # OIDC frontend id_token signing key (only the key is used)
    idp: KeyPair  # demo institutional IdP
    sp: KeyPair  # demo service provider
    tls: KeyPair  # HTTPS listener of the proxy on 127.0.0.1 / localhost
    emulator: KeyPair  # ORCID emulator id_token signing key (kept across restarts: stable kid)
    emulator_sp: KeyPair  # ORCID emulator's SAML SP (ORCID's institutional sign-in)


def generate_key(bits: int = KEY_SIZE) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def self_signed_cert(
    key: rsa.RSAPrivateKey,
    common_name: str,
    *,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str] = (),
    days: int = CERT_DAYS,
    now: _dt.datetime | None = None,
) -> x509.Certificate:
    """A self-signed certificate for ``key``; with SANs it is usable as a TLS server cert."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "satosa-orcid demo"),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if sans:
        # A self-signed server cert that clients pin by path: it is its own CA (so OpenSSL
        # accepts it as a trust anchor) and names the loopback host in subjectAltName.
        builder = (
            builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=True,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        )
    return builder.sign(key, hashes.SHA256())


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def write_key_pair(
    directory: Path,
    name: str,
    common_name: str,
    *,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str] = (),
    bits: int = KEY_SIZE,
) -> KeyPair:
    """Write ``<name>.key`` (0600, unencrypted PKCS#8) and ``<name>.crt`` into ``directory``."""
    key = generate_key(bits)
    cert = self_signed_cert(key, common_name, dns_names=dns_names, ip_addresses=ip_addresses)
    pair = KeyPair(Path(directory) / f"{name}.key", Path(directory) / f"{name}.crt")
    _write(
        pair.key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write(pair.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return pair


def _existing(directory: Path, name: str) -> KeyPair | None:
    pair = KeyPair(Path(directory) / f"{name}.key", Path(directory) / f"{name}.crt")
    return pair if pair.key_path.is_file() and pair.cert_path.is_file() else None


def generate_demo_pki(directory: Path, *, reuse: bool = True) -> DemoPki:
    """Create (or, with ``reuse``, keep existing) keys for every demo role in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    def pair(name: str, cn: str, **kw) -> KeyPair:
        found = _existing(directory, name) if reuse else None
        return found or write_key_pair(directory, name, cn, **kw)

    return DemoPki(
        frontend=pair("frontend", "satosa-orcid proxy SAML IdP (frontend)"),
        backend=pair("backend", "satosa-orcid proxy SAML SP (backend)"),
        oidc=pair("oidc", "satosa-orcid proxy OIDC signing"),
        idp=pair("idp", "satosa-orcid demo institutional IdP"),
        sp=pair("sp", "satosa-orcid demo SP"),
        tls=pair("tls", "127.0.0.1", dns_names=["localhost"], ip_addresses=["127.0.0.1"]),
        emulator=pair("emulator", "satosa-orcid ORCID emulator signing"),
        emulator_sp=pair("emulator-sp", "satosa-orcid ORCID emulator SAML SP"),
    )
