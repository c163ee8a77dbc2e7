"""An echoing RPCServer run as a child process by the fuzz tests.

``python -m tests.grenache.echo_server PORT MAX_BODY``; key ``crash`` makes
the handler raise, to exercise the ERR_INTERNAL path under fuzzing.
"""
import sys

from twisted.internet import reactor

from twisted_exchange.grenache import RPCServer


def echo(key: str, payload: object) -> object:
    if key == "crash":
        raise ValueError("crash requested")
    return {"key": key, "echo": payload}


def main() -> None:
    port, max_body = map(int, sys.argv[1:3])
    server = RPCServer(echo, port=port, max_body=max_body)
    reactor.callWhenRunning(server.start)
    reactor.run()


if __name__ == "__main__":
    main()
