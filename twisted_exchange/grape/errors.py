"""The grape's one error type.

A ``GrapeError`` carries the exact reply a Node grape gives: ``code`` is the
wire text (``ERR_GRAPE_LOOKUP``, or the DHT's ``No nodes to query``) and
``status`` the HTTP status. With status 200 the API answers the code as a JSON
string; with any other status it answers the raw text, as grenache-grape does.
``twisted_exchange.grape.api`` turns it into that reply, in one place.
"""


class GrapeError(Exception):
    """An error reply of the Grape API, raised wherever it is detected."""

    def __init__(self, code: str, status: int = 200) -> None:
        super().__init__(code)
        self.code = code
        self.status = status
