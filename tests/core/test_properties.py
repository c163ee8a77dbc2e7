"""Property tests: the engine against the naive reference model, and its invariants.

Random command sequences over a few clients, prices and quantities (so that
orders cross, partially fill, self-trade and get amended often) are applied
to :class:`Exchange` and to
:class:`~twisted_exchange.core.reference.ReferenceExchange`; after every
command the replies, books, order states and trades must be identical and
the invariants must hold.
"""
import json
import random
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted_exchange.core import Exchange
from twisted_exchange.core.reference import ReferenceExchange

from .builders import amend, cancel, submit

SYMBOLS = ["BTCUSD", "ETHUSD"]
CLIENTS = st.sampled_from(["alice", "bob", "carol"])
OWNER = "<owner>"  # stands for the order's own client, resolved when applied
ISSUERS = st.sampled_from(["alice", OWNER, OWNER, OWNER])
PRICES = st.sampled_from(["99", "100", "100.5", "101"])
QUANTITIES = st.sampled_from(["0.5", "1", "1.5", "2", "3", "0.00000001"])
RECENT = st.integers(0, 6).map(lambda age: f"#{age}")  # the age-th newest order, resolved when applied
MAYBE = lambda strategy: st.one_of(st.none(), strategy)  # noqa: E731


@st.composite
def submits(draw):
    market = draw(st.integers(0, 9)) == 0
    fields = {}
    tif = draw(st.sampled_from([None, "gtc", "ioc", "fok", "gtc", None]))
    if tif is not None:
        fields["tif"] = tif
    if draw(st.integers(0, 5)) == 0:
        fields["post_only"] = True
    return submit(draw(CLIENTS), draw(st.sampled_from(["buy", "sell"])),
                  None if market else draw(PRICES), draw(QUANTITIES),
                  symbol=draw(st.sampled_from(SYMBOLS[:1] * 4 + SYMBOLS[1:])), **fields)


@st.composite
def amends(draw):
    fields = {}
    price, quantity = draw(MAYBE(PRICES)), draw(MAYBE(QUANTITIES))
    if price is not None:
        fields["price"] = price
    if quantity is not None:
        fields["quantity"] = quantity
    return amend(draw(ISSUERS), draw(RECENT), **fields)


COMMANDS = st.one_of(
    submits(), submits(), submits(), submits(),
    st.builds(cancel, ISSUERS, RECENT),
    amends(), amends(),
)


def market_flow(rng, length):
    """A seeded, market-like command stream: few price levels, deep queues, many amends.

    Hypothesis shrinks command lists well but favours simple values; this stream
    complements it with long sequences where queue priority matters often.
    """
    commands = []
    for _ in range(length):
        roll = rng.random()
        if roll < 0.6:
            side = rng.choice(["buy", "sell"])
            offset = rng.choice([-1, -0.5, 0, 0.5, 1]) + (-0.5 if side == "buy" else 0.5)
            kind = rng.random()
            fields = {"tif": "ioc"} if kind < 0.1 else {"tif": "fok"} if kind < 0.17 else {}
            if 0.17 <= kind < 0.22:
                fields["post_only"] = True
            price = None if kind >= 0.92 else str(100 + offset)
            if price is None:
                fields.pop("tif", None)
            commands.append(submit(rng.choice(["alice", "bob", "carol"]), side, price,
                                   rng.choice(["0.5", "1", "1.5", "2", "3"]),
                                   symbol="BTCUSD" if rng.random() < 0.85 else "ETHUSD", **fields))
            continue
        issuer = OWNER if rng.random() < 0.85 else "alice"
        order_id = f"#{rng.randrange(8)}"
        if roll < 0.75:
            commands.append(cancel(issuer, order_id))
        else:
            change = rng.random()
            fields = {}
            if change < 0.75:
                fields["quantity"] = rng.choice(["0.5", "1", "2", "3", "4"])
            if change > 0.5:
                fields["price"] = str(100 + rng.choice([-1.5, -1, -0.5, 0, 0.5, 1, 1.5]))
            commands.append(amend(issuer, order_id, **fields))
    return commands


FLOWS = st.builds(lambda seed, length: market_flow(random.Random(seed), length),
                  st.integers(0, 2**32 - 1), st.integers(1, 120))
BOUNDS = st.sampled_from([{}, {"closed_orders_kept": 3, "trades_kept": 2}, {"closed_orders_kept": 0}])


class Driver:
    """Applies generated commands, resolving "the age-th newest order" and "its owner"."""

    def __init__(self, *exchanges):
        self.exchanges = exchanges
        self.last_id = 0

    def apply(self, command):
        if "order_id" in command:
            age = int(command["order_id"][1:])
            command = dict(command, order_id=str(max(1, self.last_id - age)))
            if command["client"] == OWNER:
                order = self.exchanges[-1].order(command["order_id"])
                command["client"] = order["client"] if order else "alice"
        wire = json.dumps(command)  # fresh, non-interned strings, as a peer would decode them
        replies = [exchange.apply(json.loads(wire)) for exchange in self.exchanges]
        if replies[-1]["ok"]:
            self.last_id = max(self.last_id, int(replies[-1]["order"]["id"]))
        return command, replies


def error_code(reply):
    return reply["error"].split(":")[0] if not reply["ok"] else None


class AgainstReferenceTests(unittest.TestCase):
    @settings(max_examples=200)
    @given(bounds=BOUNDS, commands=st.lists(COMMANDS, max_size=60))
    def test_engine_matches_reference_after_every_command(self, bounds, commands):
        self.check_against_reference(bounds, commands)

    @settings(max_examples=200)
    @given(bounds=BOUNDS, commands=FLOWS)
    def test_engine_matches_reference_on_market_like_flows(self, bounds, commands):
        self.check_against_reference(bounds, commands)

    def check_against_reference(self, bounds, commands):
        exchange, reference = Exchange(**bounds), ReferenceExchange(**bounds)
        driver = Driver(exchange, reference)
        fills_seen = {}
        for step, command in enumerate(commands):
            command, (got, want) = driver.apply(command)
            context = f"step {step}: {command}"
            self.assertEqual(error_code(got), error_code(want), context)
            if got["ok"]:
                self.assertEqual(got, want, context)
                for fill in got["fills"]:
                    for order_id in (fill["maker_order"], fill["taker_order"]):
                        fills_seen[order_id] = fills_seen.get(order_id, 0) + ticks(fill["quantity"])
            for symbol in SYMBOLS:
                self.assertEqual(exchange.book(symbol, 100), reference.book(symbol, 100), context)
                self.assertEqual(exchange.trades(symbol, 1000), reference.trades(symbol, 1000), context)
            for n in range(1, step + 2):
                self.assertEqual(exchange.order(str(n)), reference.order(str(n)), context)
            self.check_invariants(exchange, fills_seen, step + 1)

    def check_invariants(self, exchange, fills_seen, horizon):
        for symbol in SYMBOLS:
            book = exchange.book(symbol, 1)
            if book["bids"] and book["asks"]:
                self.assertLess(ticks(book["bids"][0][0]), ticks(book["asks"][0][0]), "crossed book")
        for n in range(1, horizon + 1):
            order = exchange.order(str(n))
            if order is None:
                continue
            quantity, filled, remaining, cancelled = (
                ticks(order[k]) for k in ("quantity", "filled", "remaining", "cancelled"))
            self.assertEqual(filled + remaining + cancelled, quantity, order)
            self.assertTrue(0 <= filled <= quantity and remaining >= 0 and cancelled >= 0, order)
            self.assertEqual(fills_seen.get(order["id"], 0), filled, order)
            if order["status"] in ("filled", "cancelled"):
                self.assertEqual(remaining, 0, order)


class SnapshotPropertyTests(unittest.TestCase):
    @given(bounds=BOUNDS, before=st.lists(COMMANDS, max_size=40), after=st.lists(COMMANDS, max_size=20))
    def test_restore_of_snapshot_has_same_hash_and_same_future(self, bounds, before, after):
        exchange = Exchange(**bounds)
        driver = Driver(exchange)
        for command in before:
            driver.apply(command)
        restored = Exchange.restore(json.loads(json.dumps(exchange.snapshot())))
        self.assertEqual(restored.state_hash(), exchange.state_hash())
        driver.exchanges = (restored, exchange)
        for command in after:
            _, (got, want) = driver.apply(command)
            self.assertEqual(got, want)
            self.assertEqual(restored.state_hash(), exchange.state_hash())

    @given(bounds=BOUNDS, before=FLOWS, after=FLOWS)
    def test_reference_restored_from_a_snapshot_agrees_with_the_engine(self, bounds, before, after):
        exchange = Exchange(**bounds)
        driver = Driver(exchange)
        for command in before:
            driver.apply(command)
        snapshot = json.loads(json.dumps(exchange.snapshot()))
        driver.exchanges = (ReferenceExchange.restore(snapshot), exchange)
        for command in after:
            command, (want, got) = driver.apply(command)
            self.assertEqual(error_code(got), error_code(want), command)
            if got["ok"]:
                self.assertEqual(got, want, command)
        for symbol in SYMBOLS:
            self.assertEqual(driver.exchanges[0].book(symbol, 100), exchange.book(symbol, 100))
            self.assertEqual(driver.exchanges[0].trades(symbol, 1000), exchange.trades(symbol, 1000))

    @given(commands=st.lists(COMMANDS, max_size=40))
    def test_same_commands_give_same_hash_and_differing_states_differ(self, commands):
        one, two = Exchange(), Exchange()
        driver = Driver(one, two)
        for command in commands:
            driver.apply(command)
        self.assertEqual(one.state_hash(), two.state_hash())
        if two.apply(submit("zed", "buy", "1", "1"))["ok"]:
            self.assertNotEqual(one.state_hash(), two.state_hash())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
FIELDS = st.sampled_from(["action", "client", "request", "symbol", "side", "type", "price",
                          "quantity", "tif", "post_only", "order_id", "extra"])


@st.composite
def mangled(draw):
    """A valid command with some fields replaced by arbitrary values or removed."""
    command = dict(draw(COMMANDS))
    for _ in range(draw(st.integers(1, 3))):
        field = draw(FIELDS)
        if draw(st.booleans()):
            command[field] = draw(JSON | st.sampled_from(["submit", "cancel", "amend", "market", "1e3", "NaN"]))
        else:
            command.pop(field, None)
    return command


class FuzzTests(unittest.TestCase):
    @settings(max_examples=300)
    @given(setup=st.lists(COMMANDS, max_size=10), command=st.one_of(JSON, mangled()))
    def test_apply_never_raises_and_refusals_change_nothing(self, setup, command):
        exchange = Exchange()
        driver = Driver(exchange)
        for valid in setup:
            driver.apply(valid)
        before = exchange.state_hash()
        reply = exchange.apply(command)
        self.assertIs(type(reply["ok"]), bool)
        if reply["ok"]:
            self.assertEqual(set(reply), {"ok", "order", "fills"})
        else:
            self.assertRegex(reply["error"], r"^ERR_[A-Z_]+: .+")
            self.assertEqual(exchange.state_hash(), before)


def ticks(text):
    """Exact value of a canonical decimal string, as an integer count of 10^-8."""
    whole, _, fraction = text.partition(".")
    return int(whole) * 10**8 + int(fraction.ljust(8, "0"))
