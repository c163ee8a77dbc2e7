"""TLS for a Twisted connection through the standard library's ``ssl``.

Twisted's own TLS layer (``twisted.protocols.tls``) drives pyOpenSSL, a cffi
call per OpenSSL function and a Python buffer per record; this one drives
CPython's C ``ssl.SSLObject`` over two memory BIOs, as asyncio's sslproto
does.  Measured on a round trip of a 400-byte request and a 600-byte answer,
client and server in one process: TLS added 29 us of CPU through pyOpenSSL
and 11 us through this (grenache/bench.py has the RPC figures).

It does what secure mode needs (tls.py) and no more: the handshake before
any application data, then records both ways; the wrapped protocol gets
``handshakeCompleted`` (``IHandshakeListener``) and the verified certificate
of the other side in ``peer_certificate``.  ``loseConnection`` sends a TLS
close_notify and then closes TCP without waiting for the other side's,
which HTTP, each message sized by its head, does not need; the other
side's close_notify is answered by closing TCP (``ConnectionDone``).
Records leave at once (writenow.py), not on the reactor's next turn.  A TLS
error (a refused certificate, garbage) sends OpenSSL's alert, closes, and
is the reason ``connectionLost`` gives the wrapped protocol; TCP closed
without a close_notify is ``ConnectionLost`` (what came may be cut short),
as in Twisted's layer.
"""
from __future__ import annotations

import ssl
from typing import Any

from cryptography import x509
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHandshakeListener
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

from twisted_exchange.grenache import tls as secure
from twisted_exchange.grenache.writenow import write_now

#: Decrypted bytes asked of OpenSSL per read: more than a TLS record holds.
READ_SIZE = 65536


class TLSProtocol(ProtocolWrapper):
    """One TLS connection: records on ``transport``, plaintext to ``wrappedProtocol``."""

    factory: TLSFactory
    peer_certificate: x509.Certificate | None = None
    _error: ssl.SSLError | None = None
    _notified = False  # the other side's close_notify came

    def __init__(self, factory: TLSFactory, wrapped: Any) -> None:
        super().__init__(factory, wrapped)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = factory.context.wrap_bio(self._incoming, self._outgoing,
                                             server_side=factory.server_side)
        self._handshaking = True
        self._closing = False
        self._unsent: list[bytes] = []  # written during the handshake

    def makeConnection(self, transport: Any) -> None:
        super().makeConnection(transport)
        self._advance()  # a client's hello

    def dataReceived(self, data: bytes) -> None:
        self._incoming.write(data)
        self._advance()

    def _advance(self) -> None:
        """Run the handshake on, then hand up what was decrypted; send what TLS wrote."""
        try:
            if self._handshaking:
                try:
                    self._tls.do_handshake()
                except ssl.SSLWantReadError:
                    return
                self._handshaken()
            received, closed = self._read()
        except ssl.SSLError as error:
            self._fail(error)
            return
        finally:
            self._send()
        if received and not self._closing:
            self.wrappedProtocol.dataReceived(received)
        if closed:  # the other side is done: close TCP without a close_notify of ours, which
            self._closing = self._notified = True  # would only meet its closed socket (a reset)
            self.transport.loseConnection()

    def _handshaken(self) -> None:
        self._handshaking = False
        self.peer_certificate = secure.peer_certificate(self._tls)
        unsent, self._unsent = self._unsent, []
        for data in unsent:
            self._tls.write(data)
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def _read(self) -> tuple[bytes, bool]:
        """(the plaintext received so far, whether the other side sent close_notify).

        OpenSSL reads a memory BIO one record at a time, so once the BIO is
        empty and nothing decrypted is left, a read can only raise
        SSLWantReadError: the loop stops before it instead (an exception
        per message received was a few microseconds of every RPC).
        """
        chunks = []
        incoming, tls = self._incoming, self._tls
        while incoming.pending or tls.pending():
            try:
                chunk = tls.read(READ_SIZE)
            except ssl.SSLWantReadError:  # a record not complete yet
                break
            if not chunk:  # close_notify
                return b"".join(chunks), True
            chunks.append(chunk)
        return b"".join(chunks), False

    def _send(self) -> None:
        if self._outgoing.pending:
            write_now(self.transport, self._outgoing.read())

    def _fail(self, error: ssl.SSLError) -> None:
        self._error = error
        self._closing = True
        self._send()  # OpenSSL's alert, if it wrote one
        self.transport.loseConnection()

    def write(self, data: bytes) -> None:
        if self._closing:
            return
        if self._handshaking:
            self._unsent.append(data)
            return
        self._tls.write(data)  # whole: a memory BIO never pushes back
        self._send()

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """Send close_notify (once the handshake is done), then close TCP."""
        if self._closing:
            return
        self._closing = True
        if not self._handshaking:
            try:
                self._tls.unwrap()
            except ssl.SSLError:  # SSLWantReadError: the other side's close_notify is not awaited
                pass
            self._send()
        self.transport.loseConnection()

    def abortConnection(self) -> None:
        """Close TCP at once: no close_notify, nothing still buffered is sent."""
        self._closing = True
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        if self._error is not None:
            reason = Failure(self._error)
        elif self._notified:
            reason = Failure(ConnectionDone("the other side closed TLS cleanly"))
        elif not (self._handshaking or self._closing):  # TCP closed under TLS: maybe cut short
            reason = Failure(ConnectionLost("closed without a TLS close_notify"))
        super().connectionLost(reason)


class TLSFactory(WrappingFactory):
    """Wraps every connection of ``wrapped`` in TLS with ``context``."""

    protocol = TLSProtocol
    noisy = False

    def __init__(self, context: ssl.SSLContext, wrapped: Any, *, server_side: bool) -> None:
        super().__init__(wrapped)
        self.context = context
        self.server_side = server_side
