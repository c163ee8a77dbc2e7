"""Human output of exchangectl: aligned tables, a book with bids and asks
side by side, orders and fills.  Pure text in, text out; ``--json`` output
bypasses this module entirely.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import click

from twisted_exchange.ctl.consistency import Verdict

ORDER_COLUMNS = ("id", "client", "symbol", "side", "type", "price", "quantity", "filled",
                 "remaining", "status", "tif")
FILL_COLUMNS = ("trade_id", "price", "quantity", "taker_side", "maker_order", "taker_order",
                "maker_client", "taker_client")
HASH_WIDTH = 12


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *,
          right: Iterable[int] = (), highlight: Iterable[int] = ()) -> str:
    """Columns padded to their widest cell; ``right`` aligns columns by index
    (numbers), ``highlight`` shows rows by index in bold red (on a terminal)."""
    cells = [[_cell(v) for v in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    right, highlight = set(right), {i + 1 for i in highlight}
    lines = []
    for n, row in enumerate(cells):
        line = "  ".join(v.rjust(w) if i in right else v.ljust(w)
                         for i, (v, w) in enumerate(zip(row, widths))).rstrip()
        lines.append(click.style(line, fg="red", bold=True) if n in highlight else line)
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def book(reply: Mapping[str, Any]) -> str:
    """Bids and asks side by side, best prices on the first row, prices in the middle."""
    bids, asks = reply.get("bids", []), reply.get("asks", [])
    head = f"{reply.get('symbol', '')} on {reply.get('peer', '?')} (applied {reply.get('applied', '?')})"
    if not bids and not asks:
        return f"{head}\n(empty book)"
    rows = []
    for i in range(max(len(bids), len(asks))):
        bid_price, bid_quantity = bids[i] if i < len(bids) else ("", "")
        ask_price, ask_quantity = asks[i] if i < len(asks) else ("", "")
        rows.append((bid_quantity, bid_price, "|", ask_price, ask_quantity))
    return head + "\n" + table(("BID QTY", "BID", "|", "ASK", "ASK QTY"), rows, right=(0, 1))


def records(items: Sequence[Mapping[str, Any]], preferred: Sequence[str] = ()) -> str:
    """Dicts as a table: ``preferred`` columns first (if present), then any other keys."""
    if not items:
        return "(none)"
    keys: list[str] = [k for k in preferred if any(k in item for item in items)]
    for item in items:
        keys += [k for k in item if k not in keys]
    return table([k.upper() for k in keys], ([item.get(k) for k in keys] for item in items))


def orders(reply: Mapping[str, Any]) -> str:
    return f"open orders on {reply.get('peer', '?')}\n" + records(reply.get("orders", []), ORDER_COLUMNS)


def trades(reply: Mapping[str, Any]) -> str:
    """A tape: oldest first, newest last (ordered by trade id when ids are numbers)."""
    fills = list(reply.get("trades", []))
    if all(str(f.get("trade_id", "")).isdigit() for f in fills):
        fills.sort(key=lambda f: int(f["trade_id"]))
    return (f"{reply.get('symbol', '')} trades on {reply.get('peer', '?')}, newest last\n"
            + records(fills, FILL_COLUMNS))


def order(reply: Mapping[str, Any]) -> str:
    """One order, a field per line."""
    found = reply.get("order", {})
    keys = [k for k in ORDER_COLUMNS if k in found] + [k for k in found if k not in ORDER_COLUMNS]
    width = max((len(k) for k in keys), default=0)
    return "\n".join(f"{k.ljust(width)}  {_cell(found[k])}" for k in keys)


def command_result(reply: Mapping[str, Any]) -> str:
    """The order a submit/cancel/amend produced, then its fills."""
    placed = reply.get("order") or {}
    text = "order " + " ".join(f"{k}={_cell(placed[k])}" for k in ORDER_COLUMNS if k in placed)
    fills = reply.get("fills") or []
    if fills:
        text += f"\n{len(fills)} fill{'s' if len(fills) != 1 else ''}\n" + records(fills, FILL_COLUMNS)
    return text


def status(processes: Mapping[str, Mapping[str, Any]], peers: Mapping[str, Any],
           verdict: Verdict) -> str:
    """One row per supervisord program, with the peer's own status when it is a peer.

    Rows of peers caught in a divergence are highlighted and explained below,
    as are programs supervisord could not start, and peers that did not
    answer or report themselves unhealthy.
    """
    diverged = {p for d in verdict.divergences for p in d.hashes}
    names = list(processes) + [p for p in peers if p not in processes]
    rows, marked, notes = [], [], []
    for n, name in enumerate(names):
        info = processes.get(name, {})
        process = info.get("statename", "-")
        if info.get("statename") == "RUNNING":
            process += f" pid {info.get('pid')}"
        elif info.get("spawnerr"):  # why supervisord could not start it (FATAL, BACKOFF)
            notes.append(f"{name}: {process}: {info['spawnerr']}")
        reply = peers.get(name)
        if isinstance(reply, dict):
            digest = str(reply.get("digest", ""))[:HASH_WIDTH]
            rows.append((name, process, reply.get("role"), reply.get("term"), reply.get("leader"),
                         reply.get("commit"), reply.get("applied"), digest))
        else:
            rows.append((name, process, "" if reply is None else "unreachable"))
            if reply is not None:
                notes.append(f"{name}: {reply}")
        if name in diverged:
            marked.append(n)
    notes += [f"{name}: unhealthy: {', '.join(problems)}" for name, problems in verdict.unhealthy.items()]
    lines = [table(("NAME", "PROCESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "DIGEST"),
                   [row + ("",) * (8 - len(row)) for row in rows], right=(3, 5, 6), highlight=marked)]
    lines += [click.style(f"DIVERGENCE: {d}", fg="red", bold=True) for d in verdict.divergences]
    return "\n".join(lines + notes)


def verdict(result: Verdict) -> str:
    """The per-peer reports of ``check`` and its one-line conclusion."""
    rows = [(peer, result.applied[peer], result.hashes[peer][:HASH_WIDTH]) for peer in sorted(result.applied)]
    rows += [(peer, "-", f"unreachable: {reason}") for peer, reason in sorted(result.unreachable.items())]
    diverged = {p for d in result.divergences for p in d.hashes}
    marked = [n for n, row in enumerate(rows) if row[0] in diverged]
    text = table(("PEER", "APPLIED", "DIGEST"), rows, right=(1,), highlight=marked)
    return f"{text}\n{'ok' if result.ok else 'FAILED'}: {result.summary()}"
