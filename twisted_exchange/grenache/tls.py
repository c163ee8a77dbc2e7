"""Grenache secure mode: mutual TLS with the cluster's certificates.

As grenache-nodejs-http's ``secure: {key, cert, ca}``, one ``Credential``
(PEM key, certificate, CA certificate; see ``twisted_exchange.pki``) is all
a server or a client needs.  Both sides send their certificate and verify
the other's against the CA (TLS 1.2 at least); neither checks host names or
IPs, because the address came from an untrusted DHT and proves nothing: what
counts is the identity the certificate names (``Caller`` on the server,
``expect`` on the client).  OpenSSL also checks the extended key usage, so
only a peer certificate can serve.  The connections run TLS through the
standard library's ``ssl`` (tlsbio.py).

Mixed modes fail at once with a readable reason (server.py): a server in
secure mode answers plain HTTP with a plain 400 ``ERR_TLS_REQUIRED``, a
plain server answers a TLS handshake with a 400 ``ERR_REQUEST_INVALID``.
"""
from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from twisted_exchange.pki import Credential, Identity, identity_of

_memfd_create = getattr(os, "memfd_create", None)  # Linux

#: The first byte of the record that opens every TLS connection.
TLS_HANDSHAKE = b"\x16"


def context(credential: Credential, server_side: bool) -> ssl.SSLContext:
    """TLS for one side: present our certificate, require and verify the
    other side's against the CA (a server also asks for the client's)."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.options |= ssl.OP_NO_RENEGOTIATION  # TLS 1.2 renegotiation: CPU for an attacker, nothing for us
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_REQUIRED
    tls.load_verify_locations(cadata=credential.ca.decode("ascii"))
    with _as_file(credential.key + b"\n" + credential.cert) as path:
        tls.load_cert_chain(path)  # ssl reads a key only from a file
    return tls


@contextmanager
def _as_file(data: bytes) -> Iterator[str]:
    """A path to ``data`` while the block runs: an anonymous file in memory
    (Linux memfd), else a private temporary file, deleted at once."""
    if _memfd_create is not None:
        fd = _memfd_create("credential", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
    else:
        with tempfile.NamedTemporaryFile(prefix="credential-") as file:  # mode 0600
            file.write(data)
            file.flush()
            yield file.name


@dataclass(frozen=True)
class Caller:
    """Who made an RPC call, for handlers that ask (``RPCServer(with_caller=True)``).

    ``certificate`` is the client's, verified against the CA, and
    ``identity`` what it names; both None over plain HTTP.  ``address`` is
    ``"ip:port"``, for logs only.
    """

    address: str
    certificate: x509.Certificate | None = None
    identity: Identity | None = None


def peer_certificate(tls: ssl.SSLObject | ssl.SSLSocket) -> x509.Certificate | None:
    """The other side's certificate once a handshake is done (OpenSSL verified
    it), else None; ssl.SSLError if cryptography's stricter parser refuses it."""
    der = tls.getpeercert(binary_form=True)
    try:
        return x509.load_der_x509_certificate(der) if der else None
    except ValueError as error:
        raise ssl.SSLError(f"the other side's certificate cannot be read: {error}") from None


def certificate_of(transport: Any) -> x509.Certificate | None:
    """The verified certificate of the other end of a TLS transport, else None."""
    return getattr(transport, "peer_certificate", None)


def caller_of(transport: Any) -> Caller:
    """The ``Caller`` at the other end of a server connection."""
    address = transport.getPeer()
    certificate = certificate_of(transport)
    return Caller(f"{address.host}:{address.port}", certificate,
                  identity_of(certificate) if certificate is not None else None)
