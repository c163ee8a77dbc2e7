"""The pure matching core: commands in, replies and fills out.

    >>> from twisted_exchange.core import Exchange
    >>> ex = Exchange()
    >>> ex.apply({"action": "submit", "client": "alice", "request": "r1",
    ...           "symbol": "BTCUSD", "side": "buy", "type": "limit",
    ...           "price": "100.5", "quantity": "2"})["order"]["status"]
    'open'

No I/O, no clock, no randomness, no Twisted: the same commands in the same
order give the same replies and the same :meth:`Exchange.state_hash` on every
peer.  Decisions, all part of the contract:

Commands
  ``submit`` (symbol, side, type, quantity; price for limit; optional tif,
  default ``gtc`` for limit and ``ioc`` for market; optional ``post_only``,
  a real boolean), ``cancel`` (order_id) and ``amend`` (order_id, new
  ``price`` and/or new total ``quantity``).  Every command needs ``client``
  (1-64 printable characters) and ``request`` (1-128, unused here: retry
  dedupe is replication's job).  Unknown fields are refused.
Numbers
  Decimal strings only, at most 8 decimal places, > 0 and <= 10^12; held as
  integer ticks of 10^-8; printed canonically (``"100.5"``, ``"2"``).
  Symbols match ``[A-Z0-9]{2,12}``; a book is created on first use.
Matching
  Price-time priority, trades at the maker's price.  ``gtc`` rests its
  remainder; ``ioc`` and market orders cancel it (a market order may be
  ``fok``, never ``gtc``, never takes a price).  ``fok`` is checked first
  without changing anything and refused with ERR_FOK_UNFILLABLE unless it
  fills completely.  ``post_only`` needs ``gtc`` and is refused with
  ERR_POST_ONLY_WOULD_TAKE if its price crosses the best opposite price
  (whoever owns it).
Self-trade prevention: cancel resting
  An incoming order never trades with its own client's resting orders: each
  one met while matching is cancelled (status ``cancelled``) and matching
  goes on.  A fok order counts only other clients' liquidity.
Amend
  ``quantity`` is the new total and must exceed the filled part.  Lowering it
  keeps queue priority; raising it moves the order to the back of its level.
  A new price takes the order out and re-enters it like a new taker with the
  same id: it may trade at once (post_only orders are refused instead), and
  its remainder rests last at the new price.  Only open orders can be amended.
Cancel / amend errors
  ERR_UNKNOWN_ORDER (never seen, or forgotten), ERR_NOT_OWNER (another
  client's order, checked before the status), ERR_ORDER_CLOSED (filled or
  cancelled).  Malformed input of any kind: ERR_INVALID_ORDER.
Replies
  ``{"ok": True, "order": {...}, "fills": [...]}`` for every accepted
  command, ``{"ok": False, "error": "ERR_<CODE>: <reason>"}`` otherwise, and
  then nothing changed.  Order fields: id, client, symbol, side, type, price
  (``None`` for market), quantity, filled, remaining, cancelled, status
  (open, partially_filled, filled, cancelled), tif, post_only; always
  ``filled + remaining + cancelled == quantity``.
Ids and retention
  Order and trade ids are decimal strings from counters in the state ("1",
  "2", ...); refused commands consume none.  The last 10,000 closed orders
  stay queryable with :meth:`Exchange.order` and the last 1,000 trades per
  symbol with :meth:`Exchange.trades` (newest first); both bounds are
  constructor arguments, and the retained data is part of the snapshot and
  the hash.
Queries and state
  ``book(symbol, depth=10)``, ``order(id)`` (``None`` if unknown),
  ``trades(symbol, limit=100)``, ``stats()``.  ``book``/``trades`` with a
  malformed symbol, depth or limit raise :class:`ExchangeError` with code
  ERR_INVALID_QUERY.  ``snapshot()`` is canonical JSON-able data,
  ``state_hash()`` the SHA-256 of its canonical JSON, and
  :meth:`Exchange.restore` checks a snapshot's consistency and raises
  ERR_INVALID_SNAPSHOT rather than build a state that could fail later.
Speed
  See :mod:`.bench` (``python -m twisted_exchange.core.bench``) and
  :mod:`.peers.bench` (against the order books of PyPI).  Compiled, orders
  and trades are not tracked by the cyclic collector (see :mod:`.order`),
  whose scans of them were the largest cost that is not the engine's own;
  the source's still are, so a long-running process on the source holding a
  big book may call ``gc.freeze()`` after restoring it.
Pure or compiled
  The modules on the path of :meth:`Exchange.apply` are plain Python and also
  compile, unchanged, with mypyc (``make core-compiled``, see setup.py) into
  extension modules beside them, which Python then imports instead.
  :data:`COMPILED` says which one runs.  ``TWISTED_EXCHANGE_CORE=pure`` in the
  environment loads the source even where a build exists (the test suites
  use it, so the pure path stays tested); ``=compiled`` refuses to import
  without a build (so a test of the build cannot silently test the source).
  A build older than its source (edited or checked out since) is not used:
  the source runs until ``make core-compiled`` builds it again (``make test``
  does).  What keeps the source fast once compiled: public
  entry points take ``object`` and check it themselves (a compiled function
  raises TypeError on a wrong argument type before our ERR_ checks could
  answer), module constants are ``Final`` (else every use is a dict lookup),
  expected refusals are returned, not raised (a raise through compiled
  frames builds a traceback entry per frame), and orders and trades are
  left out of the cyclic collector (:mod:`.order`, :mod:`.native`).
"""
import os
import sys
from importlib.machinery import SOURCE_SUFFIXES, FileFinder, SourceFileLoader



def _stale_build(directory: str) -> bool:
    """Is a built module's source newer than the build (edited or checked out
    since)?  The build's time is its newest file: mypyc rewrites the shared
    library that holds the code at every build, not each module's shim."""
    built = {name.partition(".")[0]: os.path.getmtime(os.path.join(directory, name))
             for name in os.listdir(directory) if name.endswith(".so")}
    if not built:
        return False
    newest = max(built.values())
    return any(os.path.getmtime(os.path.join(directory, module + ".py")) > newest
               for module in built if os.path.exists(os.path.join(directory, module + ".py")))


_CHOICE = os.environ.get("TWISTED_EXCHANGE_CORE", "")
_STALE = _CHOICE != "pure" and _stale_build(__path__[0])
if _CHOICE == "pure" or (_STALE and _CHOICE != "compiled"):
    # This package's modules are then found by a finder that knows only source files.
    sys.path_importer_cache[__path__[0]] = FileFinder(__path__[0], (SourceFileLoader, SOURCE_SUFFIXES))

from . import exchange  # noqa: E402  (after the choice of finder)
from .errors import ExchangeError  # noqa: E402
from .exchange import Exchange  # noqa: E402

#: True when the mypyc build runs, False for the pure-Python source.
COMPILED = not exchange.__file__.endswith(".py")
if _CHOICE == "compiled" and (_STALE or not COMPILED):
    raise ImportError("TWISTED_EXCHANGE_CORE=compiled, but the core is not built, or its source changed "
                      "since (make core-compiled)")

__all__ = ["COMPILED", "Exchange", "ExchangeError"]
