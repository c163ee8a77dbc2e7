"""The cluster's PKI: one CA, and certificates that say who holds them.

Every peer and every client holds a key and a certificate issued by the
cluster CA; TLS proves the holder has the key, the CA's signature proves the
certificate, and the certificate names an ``Identity``: a kind (``peer`` or
``client``) and a name (the peer id, the client name).

The identity is one URI in the subject alternative names,
``twisted-exchange:<kind>:<name>`` (e.g. ``twisted-exchange:peer:peer1``),
as SPIFFE puts workload identities in a URI SAN: SANs are where X.509 puts
identities (the CN is free text), one value carries kind and name without
ambiguity, and Node shows it to its handlers in ``meta.cert.subjectaltname``
as ``URI:twisted-exchange:peer:peer1``.  The kinds differ in their extended
key usage too: a peer certificate is good for TLS servers and clients, a
client certificate only for TLS clients, so OpenSSL (ours and Node's)
refuses a client certificate presented by a server before any identity is
read.

Peer certificates also carry IP and DNS SANs for the addresses they serve
on: Node's https client (``tls.checkServerIdentity``) checks the address it
dialled against them, an IP only against ``IP Address`` SANs, never the CN.

Keys are ECDSA P-256 with SHA-256 signatures: accepted by every TLS stack
involved (OpenSSL through Python's ssl, Node 20), cheaper to sign with than
RSA, and small.  On disk, in one directory: ``ca.crt`` (and ``ca.key`` where
certificates are issued), ``<kind>-<name>.crt`` and ``<kind>-<name>.key``;
key files are written 0600, atomically.  No Twisted here.
"""
from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEER = "peer"
CLIENT = "client"
KINDS = (PEER, CLIENT)
URI_SCHEME = "twisted-exchange"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Certificates start this long before they are issued, for clock skew between machines.
_SKEW = datetime.timedelta(minutes=5)
_USAGES = {PEER: [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
           CLIENT: [ExtendedKeyUsageOID.CLIENT_AUTH]}


class CertificateError(ValueError):
    """A certificate that does not prove an identity of this cluster."""


@dataclass(frozen=True)
class Identity:
    """Who holds a certificate: ``Identity("peer", "peer1")``."""

    kind: str
    name: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        if not isinstance(self.name, str) or _NAME.fullmatch(self.name) is None:
            raise ValueError(f"name must match {_NAME.pattern}, not {self.name!r}")

    @property
    def uri(self) -> str:
        """The SAN URI naming it, ``twisted-exchange:peer:peer1``."""
        return f"{URI_SCHEME}:{self.kind}:{self.name}"

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Credential:
    """PEM key, certificate and CA certificate: Node's ``secure: {key, cert, ca}``."""

    key: bytes
    cert: bytes
    ca: bytes


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _san_of(identity: Identity, addresses: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
    for address in addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            names.append(x509.DNSName(address))
    return names


class CA:
    """The cluster CA: a P-256 key and its self-signed certificate."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self.key = key
        self.certificate = certificate

    @classmethod
    def create(cls, name: str = "twisted-exchange cluster CA",
               valid_for: datetime.timedelta = datetime.timedelta(days=3650),
               now: datetime.datetime | None = None) -> CA:
        """A new CA, valid from ``now`` (minus clock skew) for ``valid_for``."""
        now = now or _now()
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, URI_SCHEME),
                             x509.NameAttribute(NameOID.COMMON_NAME, name)])
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW).not_valid_after(now + valid_for)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))
        return cls(key, certificate)

    def issue(self, identity: Identity, addresses: Iterable[str] = (),
              valid_for: datetime.timedelta = datetime.timedelta(days=825),
              now: datetime.datetime | None = None) -> Credential:
        """A new key and certificate naming ``identity``.

        ``addresses`` (IPs or DNS names) are the ones a peer serves on, for
        clients that check them (Node's).
        """
        now = now or _now()
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, URI_SCHEME),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.kind),
                             x509.NameAttribute(NameOID.COMMON_NAME, identity.name)])
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self.certificate.subject).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW).not_valid_after(now + valid_for)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(_USAGES[identity.kind]), critical=False)
            .add_extension(x509.SubjectAlternativeName(_san_of(identity, addresses)),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256()))
        return Credential(_pem_key(key), _pem(certificate), _pem(self.certificate))

    def save(self, directory: Path | str) -> None:
        """Write ``ca.crt`` and ``ca.key`` (0600) into ``directory``."""
        directory = _directory(directory)
        _write(directory / "ca.crt", _pem(self.certificate), 0o600)
        _write(directory / "ca.key", _pem_key(self.key), 0o600)

    @classmethod
    def load(cls, directory: Path | str) -> CA:
        """The CA saved in ``directory``."""
        directory = Path(directory)
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(f"{directory / 'ca.key'} is not an EC key")
        return cls(key, x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes()))


def _directory(directory: Path | str) -> Path:
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` atomically, with ``mode`` from its creation on."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is masked by the umask, and ignored if it existed
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def paths(directory: Path | str, identity: Identity) -> dict[str, Path]:
    """Where ``identity``'s files are: ``{"key": ..., "cert": ..., "ca": ...}``."""
    directory = Path(directory)
    stem = f"{identity.kind}-{identity.name}"
    return {"key": directory / f"{stem}.key", "cert": directory / f"{stem}.crt",
            "ca": directory / "ca.crt"}


def save(directory: Path | str, identity: Identity, credential: Credential) -> dict[str, Path]:
    """Write ``identity``'s key, certificate and the CA certificate, all 0600
    (in a 0700 directory); their paths."""
    files = paths(_directory(directory), identity)
    for part in ("key", "cert", "ca"):
        _write(files[part], getattr(credential, part), 0o600)
    return files


def ensure(directory: Path | str, identity: Identity, addresses: Iterable[str] = ()) -> dict[str, Path]:
    """``identity``'s files in ``directory``, issued on first use; their paths.

    A directory with neither ``ca.crt`` nor ``ca.key`` gets a new cluster CA
    first.  One that holds ``ca.crt`` without ``ca.key`` (a machine that does
    not issue) must already hold the credential: CertificateError otherwise,
    never a second CA.  Processes of one machine may race (three peers
    starting at once): an exclusive lock on ``directory/.lock`` makes it one
    CA and one credential each.
    """
    directory = _directory(directory)
    files = paths(directory, identity)
    with os.fdopen(os.open(directory / ".lock", os.O_WRONLY | os.O_CREAT, 0o600), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if files["key"].exists() and files["cert"].exists():
            return files
        if not (directory / "ca.crt").exists() and not (directory / "ca.key").exists():
            CA.create().save(directory)
        elif not (directory / "ca.key").exists():
            raise CertificateError(f"{directory} has no credential for {identity} and no ca.key to "
                                   f"issue one: issue it where the CA key is and copy it here")
        save(directory, identity, CA.load(directory).issue(identity, addresses))
    return files


def load(directory: Path | str, identity: Identity) -> Credential:
    """``identity``'s credential as ``save`` wrote it."""
    files = paths(directory, identity)
    return Credential(files["key"].read_bytes(), files["cert"].read_bytes(),
                      files["ca"].read_bytes())


def obtain(directory: Path | str, identity: Identity, addresses: Iterable[str] = ()) -> Credential:
    """``identity``'s credential from ``directory``, issued on first use (``ensure``, then ``load``)."""
    ensure(directory, identity, addresses)
    return load(directory, identity)


def identity_of(certificate: x509.Certificate) -> Identity | None:
    """The identity a certificate names, or None if it names none or several.

    It says nothing about trust: call it on a certificate that verified
    against the CA (a TLS peer's, or after ``verify``).
    """
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    found = []
    for uri in san.value.get_values_for_type(x509.UniformResourceIdentifier):
        scheme, _, rest = uri.partition(":")
        kind, _, name = rest.partition(":")
        if scheme == URI_SCHEME:
            try:
                found.append(Identity(kind, name))
            except ValueError:
                return None
    return found[0] if len(found) == 1 else None


def verify(certificate: x509.Certificate, ca: x509.Certificate,
           now: datetime.datetime | None = None) -> Identity:
    """The identity of a certificate issued by ``ca`` and valid at ``now``.

    CertificateError otherwise: another issuer, a bad signature, outside its
    (or the CA's) validity, or no identity.
    """
    now = now or _now()
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise CertificateError(f"not issued by this cluster's CA: {e or type(e).__name__}") from None
    for cert, what in ((ca, "the CA"), (certificate, "the certificate")):
        if now < cert.not_valid_before_utc:
            raise CertificateError(f"{what} is not valid before {cert.not_valid_before_utc}")
        if now > cert.not_valid_after_utc:
            raise CertificateError(f"{what} expired at {cert.not_valid_after_utc}")
    identity = identity_of(certificate)
    if identity is None:
        raise CertificateError("the certificate names no twisted-exchange identity")
    return identity
