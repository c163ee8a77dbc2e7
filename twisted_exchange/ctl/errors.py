"""The one error type of exchangectl.

Everything that goes wrong (supervisord down, a peer unreachable, an
``ERR_...`` reply, bad input) becomes a ``CtlError`` whose message is the
line the user sees after ``error: ``; the CLI turns it into exit status 1 in
exactly one place (``cli.CtlGroup.main``).
"""


class CtlError(Exception):
    """A failure to report to the user as ``error: <message>``.

    ``code`` is the ``ERR_...`` code when a peer or Grenache gave one.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code
