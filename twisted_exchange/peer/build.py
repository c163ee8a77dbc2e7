"""Which state-machine code a peer runs, so that a digest split can be told
apart from a bug.

The applied-state digest is a hash chain over every command and its result
(replication/state_machine.py), so code that answers some command
differently (a new reply field, a fixed rounding) makes a peer that replays
its log tail under it disagree, for good, with peers that applied those
entries under the old code, though every book agrees.  Each peer reports a
fingerprint of the source that decides results, and ``exchangectl check``
names the fingerprints when the peers that diverge report several.  A
fingerprint is of the source text, so it also changes with a comment: it
explains a split, it does not prove one harmless.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

#: The package's directory.
PACKAGE = Path(__file__).resolve().parent.parent

#: What decides a committed command's result: the matching core, and the
#: session table that answers retries from kept results.
RESULT_SOURCES = ("core/*.py", "replication/state_machine.py", "replication/sessions.py")


def state_machine_code(package: Path = PACKAGE) -> str:
    """16 hex digits of blake2b over RESULT_SOURCES, by path, in path order."""
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted({path for pattern in RESULT_SOURCES for path in package.glob(pattern)}):
        name = path.relative_to(package).as_posix().encode()
        digest.update(b"%d:%s:" % (len(name), name))
        digest.update(hashlib.blake2b(path.read_bytes()).digest())
    return digest.hexdigest()
