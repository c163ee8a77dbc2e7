"""``mypyc_attr`` for the core's classes, without needing mypy at run time.

mypyc reads the decorator when it compiles the core (it resolves to
``mypy_extensions.mypyc_attr``) and leaves no call to it in the build; the
interpreted source gets this module's no-op, so the pure core keeps needing
nothing of mypy.  Not itself compiled (setup.py), so that its interpreted
branch is reachable.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, TypeVar

T = TypeVar("T")

if TYPE_CHECKING:
    from mypy_extensions import mypyc_attr as mypyc_attr
else:
    def mypyc_attr(*flags: str, **attrs: Any) -> Callable[[T], T]:
        """What the decorator does to an interpreted class: nothing."""
        return lambda cls: cls
