"""The Grape HTTP API, answering exactly like grenache-grape.

Any method; the path picks ``/announce``, ``/lookup``, ``/put`` or ``/get``
(through grenache-grape's own camelCase mapping, so ``/Lookup`` and
``/_lookup`` work there and here, while ``/lookup/`` does not). The body is
JSON ``{"data": ...}``; replies are HTTP 200 with ``JSON.stringify(result)``,
errors too, as a JSON string. A body that is not JSON gets 500 and the raw
text ``ERR_GRAPE_PAYLOAD_INVALID``; one over the size limit 413
``ERR_GRAPE_PAYLOAD_SIZE``; the inputs on which Node's handlers throw a
TypeError get the same 500 text as Node.

Where Node crashes or answers nonsense, this API answers an error instead:
announce ports outside 0..65535 (``ERR_GRAPE_SERVICE_PORT``), announce names
that are not non-empty strings (``ERR_GRAPE_ANNOUNCE``), put values other
than strings and integers (``ERR_GRAPE_PUT_VALUE``), mutable puts
(``verification not supported``, what every grape's DHT answers), and /get
hashes that are not hex (``ERR_GRAPE_HASH_FORMAT``).
"""
from __future__ import annotations

import json
import math
import re
from typing import Callable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from twisted_exchange.grape.dht import MAX_VALUE_BYTES, DHTNode, Found
from twisted_exchange.grape.errors import GrapeError

UNDEFINED = object()
"""JavaScript's ``undefined``: a missing key, as opposed to JSON ``null``."""

_WORD_START = re.compile(r"(?:^\w|[A-Z]|\b\w|-\w|_\w)", re.ASCII)
_SEPARATORS = re.compile(r"(\s|_|-)+")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


def handler_name(path: str) -> str:
    """grenache-grape's ``upperFirst(camelCase('-' + path))``."""
    camel = _WORD_START.sub(lambda m: m.group().lower() if m.start() == 0 else m.group().upper(), "-" + path)
    camel = _SEPARATORS.sub("", camel)
    return camel[:1].upper() + camel[1:]


def js_bytes(text: str) -> bytes:
    """``Buffer.from(text)``: UTF-8, lone surrogates replaced by U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def _is_integer(value: object) -> bool:
    """``Number.isInteger``."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())


def _cannot_read(value: object, prop: str) -> GrapeError:
    """The TypeError Node throws reading ``prop`` of null or undefined."""
    kind = "null" if value is None else "undefined"
    return GrapeError(f"Cannot read properties of {kind} (reading '{prop}')", status=500)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_body(body: bytes) -> object:
    """The request's JSON, or GrapeError 500 ``ERR_GRAPE_PAYLOAD_INVALID``."""
    try:
        return json.loads(body.decode("utf-8", "replace"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise GrapeError("ERR_GRAPE_PAYLOAD_INVALID", status=500) from None


class GrapeAPI(Resource):
    """The HTTP face of one ``DHTNode``."""

    isLeaf = True
    log = Logger()

    def __init__(self, dht: DHTNode, max_payload_size: int | None = None,
                 count: Callable[[str, bool], None] | None = None) -> None:
        """``count(endpoint, ok)``, if given, hears of every answered request
        (``endpoint``: the handler's lower-case name, whatever the path)."""
        super().__init__()
        self._dht = dht
        self._max_payload_size = max_payload_size
        self._count = count
        self._handlers: dict[str, Callable[[object], object]] = {
            "Announce": self.announce, "Lookup": self.lookup, "Put": self.put, "Get": self.get,
        }

    def render(self, request: Request) -> object:
        request.defaultContentType = None
        body = request.content.read()
        if self._max_payload_size is not None and len(body) > self._max_payload_size:
            self._counted(request, False)
            self._reply(request, 413, b"ERR_GRAPE_PAYLOAD_SIZE")
            return NOT_DONE_YET
        d = defer.maybeDeferred(self.dispatch, request.uri.decode("latin-1"), body)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(request,), errbackArgs=(request,))
        return NOT_DONE_YET

    def dispatch(self, uri: str, body: bytes) -> object:
        """The result of the request for ``uri`` with ``body`` (maybe a Deferred)."""
        message = parse_body(body)
        if message is None:
            raise _cannot_read(message, "data")
        data = message.get("data", UNDEFINED) if isinstance(message, dict) else UNDEFINED
        handler = self._handlers.get(handler_name(uri[1:]))
        if handler is None:
            raise GrapeError("ERR_REQ_NOTFOUND")
        return handler(data)

    def _counted(self, request: Request, ok: bool) -> None:
        if self._count is not None:
            self._count(handler_name(request.uri.decode("latin-1")[1:]).lower(), ok)

    def _answered(self, result: object, request: Request) -> None:
        self._counted(request, True)
        body = b"" if result is None else json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode()
        self._reply(request, 200, body)

    def _failed(self, failure: Failure, request: Request) -> None:
        self._counted(request, False)
        if failure.check(GrapeError):
            error = failure.value
        else:
            self.log.failure("grape API request {uri!r} failed", failure, uri=request.uri)
            error = GrapeError("ERR_GRAPE_GENERIC", status=500)
        if error.status == 200:
            self._reply(request, 200, json.dumps(error.code).encode())
        else:
            self._reply(request, error.status, error.code.encode())

    @staticmethod
    def _reply(request: Request, status: int, body: bytes) -> None:
        if request._disconnected or request.finished:
            return
        request.setResponseCode(status)
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()

    # -- the four endpoints, with grenache-grape's checks in its order --------------

    def announce(self, data: object) -> defer.Deferred:
        if not isinstance(data, list):
            raise GrapeError("ERR_GRAPE_ANNOUNCE")
        name = data[0] if data else UNDEFINED
        port = data[1] if len(data) > 1 else UNDEFINED
        if not _is_integer(port) or not 0 <= port <= 0xFFFF:
            raise GrapeError("ERR_GRAPE_SERVICE_PORT")
        if not isinstance(name, str) or not name:
            raise GrapeError("ERR_GRAPE_ANNOUNCE")
        return self._dht.announce(js_bytes(name), int(port) or self._dht.port)

    def lookup(self, data: object) -> defer.Deferred:
        if not isinstance(data, str) or not data:
            raise GrapeError("ERR_GRAPE_LOOKUP")
        return self._dht.lookup(js_bytes(data))

    def put(self, data: object) -> defer.Deferred:
        if data is None or data is UNDEFINED:
            raise _cannot_read(data, "k")
        if isinstance(data, str):
            data = {"v": data}
        value = data.get("v", UNDEFINED) if isinstance(data, dict) else UNDEFINED
        if value is UNDEFINED:
            raise GrapeError("opts.v not given")
        if value is None:
            raise GrapeError("Cannot read properties of null (reading 'length')")
        if isinstance(value, (str, list)) and _js_length(value) >= MAX_VALUE_BYTES:
            raise GrapeError("v must be less than 1000 bytes in put()")
        if _js_truthy(data.get("k")):
            raise GrapeError(_mutable_put_error(data["k"]))
        if isinstance(value, str):
            return self._dht.put(js_bytes(value)).addCallback(bytes.hex)
        if _is_integer(value):
            return self._dht.put(int(value)).addCallback(bytes.hex)
        raise GrapeError("ERR_GRAPE_PUT_VALUE")

    def get(self, data: object) -> defer.Deferred | None:
        if data is None or data is UNDEFINED:
            raise _cannot_read(data, "salt")
        key = data.get("hash", UNDEFINED) if isinstance(data, dict) else data
        if not isinstance(key, str):
            raise GrapeError("ERR_GRAPE_GENERIC")
        if not _HEX.fullmatch(key):
            raise GrapeError("ERR_GRAPE_HASH_FORMAT")
        return self._dht.get(bytes.fromhex(key)).addCallback(_found_as_json)


def _found_as_json(found: Found | None) -> dict | None:
    """grenache-grape's rendering of a BEP44 get result."""
    if found is None:
        return None
    value = found.value
    return {
        "id": found.node_id.hex(),
        "token": None if found.token is None else found.token.hex(),
        "v": value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value),
    }


def _js_length(value: str | list) -> int:
    """``.length``: UTF-16 code units for a string."""
    return len(value.encode("utf-16-le", "surrogatepass")) // 2 if isinstance(value, str) else len(value)


def _js_truthy(value: object) -> bool:
    if value is UNDEFINED or value is None or value is False:
        return False
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return bool(value) and value == value
    return True


def _mutable_put_error(k: object) -> str:
    """Why a mutable put (``k`` given) fails: Node's key check, else BEP44 verification."""
    if not isinstance(k, str) or len(_node_hex(k)) != 32:
        return "opts.k ed25519 public key must be 32 bytes"
    return "verification not supported"


def _node_hex(text: str) -> bytes:
    """``Buffer.from(text, 'hex')``: the longest valid prefix."""
    match = re.match(r"(?:[0-9a-fA-F]{2})*", text)
    return bytes.fromhex(match.group())
