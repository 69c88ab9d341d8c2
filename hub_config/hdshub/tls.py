"""TLS of the public URL: the certificate the proxy serves, and how it serves it.

`hdshub up` serves https only. Without a site certificate it generates a self-signed one
into the state directory (with the `cryptography` package, already needed by JupyterHub),
valid for the host of the public URL; a site gives its own with --tls-cert/--tls-key, checked
here before anything starts. The proxy (Debian's configurable-http-proxy on Node.js) speaks
TLS 1.2 and 1.3 only, with forward-secret AEAD cipher suites; the hub adds HSTS.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .state import write_private

# Node.js's own floor is TLS 1.2, but NODE_OPTIONS can lower it: the proxy gets it explicitly.
NODE_TLS_OPTIONS = "--tls-min-v1.2"
# Mozilla's "intermediate" TLS 1.2 suites (forward secrecy, AEAD only), then TLS 1.3's.
CIPHERS = ":".join([
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])
HSTS = "max-age=31536000"  # one year; no includeSubDomains: the hub does not own its parent domain
GENERATED_DAYS = 365
RENEW_BEFORE_DAYS = 30


class TLSError(ValueError):
    """A certificate or key that cannot be served; the message says what to do."""


@dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path
    generated: bool


def _host_entry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def generate_self_signed(cert_file: Path, key_file: Path, host: str) -> None:
    """A self-signed certificate for `host` (an IP address or a DNS name), key mode 600."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hdshub (self-signed)"),
        x509.NameAttribute(NameOID.COMMON_NAME, host[:64]),
    ])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=GENERATED_DAYS))
        .add_extension(x509.SubjectAlternativeName([_host_entry(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file.parent.mkdir(mode=0o700, exist_ok=True)
    write_private(key_file, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    ).decode())
    write_private(cert_file, cert.public_bytes(serialization.Encoding.PEM).decode())


def load_certificate(cert_file: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
    except (OSError, ValueError) as error:
        raise TLSError(f"{cert_file}: not a readable PEM certificate ({error}); give the "
                       "certificate chain in PEM form, leaf first") from None


def covers(cert: x509.Certificate, host: str) -> bool:
    """Whether the certificate names `host` (exact names and one-label wildcards)."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        return ipaddress.ip_address(host) in names.get_values_for_type(x509.IPAddress)
    except ValueError:
        pass
    host = host.lower().rstrip(".")
    for dns in names.get_values_for_type(x509.DNSName):
        dns = dns.lower().rstrip(".")
        if dns == host or (dns.startswith("*.") and host.partition(".")[2] == dns[2:]):
            return True
    return False


def certificate_problems(cert: x509.Certificate, host: str, where: str) -> list[str]:
    """What is wrong with serving `cert` for `host` today; `where` names it in messages."""
    found = []
    now = _now()
    if cert.not_valid_after_utc <= now:
        found.append(f"{where} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    elif cert.not_valid_after_utc - now < datetime.timedelta(days=RENEW_BEFORE_DAYS):
        found.append(f"{where} expires on {cert.not_valid_after_utc:%Y-%m-%d}, in less "
                     f"than {RENEW_BEFORE_DAYS} days")
    if cert.not_valid_before_utc > now:
        found.append(f"{where} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}")
    if not covers(cert, host):
        found.append(f"{where} does not name {host} in its subjectAltName")
    return found


def problems(cert_file: Path, key_file: Path, host: str) -> list[str]:
    """What is wrong with serving this certificate and key for `host`; empty if nothing."""
    cert = load_certificate(cert_file)
    found = certificate_problems(cert, host, str(cert_file))
    mode = stat.S_IMODE(os.stat(key_file).st_mode)
    if mode & 0o077:
        found.append(f"{key_file} has mode {mode:o}: others can read the private key "
                     f"(chmod 600 {key_file})")
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        found.append(f"{key_file}: not an unencrypted PEM private key ({error})")
    else:
        if _spki(key.public_key()) != _spki(cert.public_key()):
            found.append(f"{key_file} is not the private key of {cert_file}")
    return found


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def handshake(host: str, port: int, version: str, ciphers: str = "ALL:@SECLEVEL=0") -> str:
    """The protocol a server agrees to with a client offering only `version` ('TLSv1',
    'TLSv1_1', 'TLSv1_2', 'TLSv1_3'), or 'refused: <reason>'.

    SECLEVEL=0 lets this client really offer TLS 1.0/1.1 and weak suites, so a refusal comes
    from the server, not from the client's own OpenSSL defaults."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1 and TLSv1_1 themselves
        context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
    context.set_ciphers(ciphers)
    try:
        with socket.create_connection((host, port), timeout=10) as raw, context.wrap_socket(raw) as conn:
            return conn.version()
    except (ssl.SSLError, ConnectionError) as error:
        return f"refused: {error}"


def served_certificate(host: str, port: int) -> x509.Certificate:
    """The certificate a server presents (not verified: the caller judges it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=10) as raw, context.wrap_socket(raw) as conn:
        return x509.load_der_x509_certificate(conn.getpeercert(binary_form=True))


def site_certificate(host: str, cert: Path | None, key: Path | None) -> TLSFiles:
    """The site's certificate and key, checked: a bad pair stops `hdshub up` before it starts."""
    if cert is None or key is None:
        raise TLSError("--tls-cert and --tls-key go together: give both, or neither for a "
                       "generated self-signed certificate")
    found = problems(cert, key, host)
    if found:
        raise TLSError("; ".join(found))
    return TLSFiles(cert.resolve(), key.resolve(), generated=False)


def self_signed(tls_dir: Path, host: str) -> TLSFiles:
    """The generated pair in tls_dir, made again when missing, expiring or naming another host."""
    cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
    if not (cert.exists() and key.exists()) or problems(cert, key, host):
        generate_self_signed(cert, key, host)
    return TLSFiles(cert, key, generated=True)
