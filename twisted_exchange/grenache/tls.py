"""Grenache secure mode: mutual TLS with the cluster's certificates.

As grenache-nodejs-http's ``secure: {key, cert, ca}``, one ``Credential``
(PEM key, certificate, CA certificate; see ``twisted_exchange.pki``) is all
a server or a client needs.  Both sides send their certificate and verify
the other's against the CA (TLS 1.2 at least); neither checks host names or
IPs, because the address came from an untrusted DHT and proves nothing: what
counts is the identity the certificate names (``Caller`` on the server,
``expect`` on the client).  OpenSSL also checks the extended key usage, so
only a peer certificate can serve.

Mixed modes fail at once with a readable reason (server.py): a server in
secure mode answers plain HTTP with a plain 400 ``ERR_TLS_REQUIRED``, a
plain server answers a TLS handshake with a 400 ``ERR_REQUEST_INVALID``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from twisted.internet import ssl
from twisted.internet.interfaces import ISSLTransport

from twisted_exchange.pki import Credential, Identity, identity_of

#: The first byte of the record that opens every TLS connection.
TLS_HANDSHAKE = b"\x16"


def options(credential: Credential) -> ssl.CertificateOptions:
    """TLS options for either side: present our certificate, require and
    verify the other side's against the CA."""
    return ssl.CertificateOptions(
        # cryptography objects, which Twisted only hands to pyOpenSSL's
        # Context.use_privatekey/use_certificate: its PKey and X509 are deprecated there
        privateKey=load_pem_private_key(credential.key, None),
        certificate=x509.load_pem_x509_certificate(credential.cert),
        # a trustRoot also makes a server require the client's certificate
        trustRoot=ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(credential.ca)]),
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2)


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


def certificate_of(transport: Any) -> x509.Certificate | None:
    """The verified certificate of the other end of a TLS transport, else None."""
    peer = transport.getPeerCertificate() if ISSLTransport.providedBy(transport) else None
    return peer.to_cryptography() if peer is not None else None


def caller_of(transport: Any) -> Caller:
    """The ``Caller`` at the other end of a server connection."""
    address = transport.getPeer()
    certificate = certificate_of(transport)
    return Caller(f"{address.host}:{address.port}", certificate,
                  identity_of(certificate) if certificate is not None else None)
