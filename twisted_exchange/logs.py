"""How the peer and grape processes log: one ``--log-level`` and one
``--log-format`` (text for people, JSON lines for log pipelines), the same on
both, to standard output (supervisord keeps it in the program's log).
"""
from __future__ import annotations

import datetime
from typing import IO, Any, Callable

import click
import orjson
from twisted.logger import (
    FilteringLogObserver, ILogObserver, LogLevel, LogLevelFilterPredicate, formatEvent,
    globalLogBeginner, textFileLogObserver,
)
from zope.interface import provider

LEVELS = ("debug", "info", "warn", "error", "critical")
FORMATS = ("text", "json")


def log_options(f: Callable) -> Callable:
    """The ``--log-level`` and ``--log-format`` options of a process's command line."""
    f = click.option("--log-format", type=click.Choice(FORMATS), default="text", show_default=True,
                     help="text: one readable line per event; json: one JSON object per line "
                          "(time, level, namespace, message, and the event's own fields).")(f)
    return click.option("--log-level", type=click.Choice(LEVELS), default="info", show_default=True,
                        help="The least severe level logged.")(f)


def begin_logging(out: IO[str], level: str = "info", form: str = "text") -> None:
    """Send every event of ``level`` or above to ``out`` in ``form``, from now on."""
    globalLogBeginner.beginLoggingTo([observer_for(out, level, form)], redirectStandardIO=False)


def observer_for(out: IO[str], level: str = "info", form: str = "text") -> ILogObserver:
    """An observer writing events of ``level`` or above to ``out`` in ``form``."""
    observer = json_lines_observer(out) if form == "json" else textFileLogObserver(out)
    least = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    return FilteringLogObserver(observer, [least])


def json_lines_observer(out: IO[str]) -> ILogObserver:
    """One JSON object per event and line: ``time`` (ISO 8601, UTC), ``level``,
    ``namespace``, ``message``, then the event's fields that JSON can hold."""
    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        record = {"time": datetime.datetime.fromtimestamp(event.get("log_time", 0), datetime.timezone.utc)
                  .isoformat(timespec="milliseconds"),
                  "level": event["log_level"].name if "log_level" in event else "info",
                  "namespace": event.get("log_namespace", ""),
                  "message": formatEvent(event)}
        if "log_failure" in event:
            record["failure"] = event["log_failure"].getTraceback()
        record.update((key, value) for key, value in event.items()
                      if key not in record and not key.startswith("log_")
                      and type(value) in (str, int, float, bool))
        out.write(orjson.dumps(record).decode() + "\n")
        out.flush()
    return observe
