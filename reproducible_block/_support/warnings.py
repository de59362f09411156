"""Warn once, at the user's line: the one frame walk every warning of the library uses.

A warning raised deep in the library should point at the line the user wrote, not at the
library's own frames nor at the standard-library code that drives a block (``contextlib``'s
``ExitStack``, ``asyncio``'s event loop stepping a decorated coroutine, ``wrapt``'s wrappers,
the frames ``torch.compile`` puts around code it runs outside a graph).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings

import torch
import wrapt

__all__ = [
    "PACKAGE_DIRECTORY",
    "RepetitionWarning",
    "first_time",
    "user_frame",
    "user_place",
    "warn_at_user_line",
]


class RepetitionWarning(UserWarning):
    """A block entered again with a key it already used drew the same numbers again.

    A key names one stream (per root seed, and rank or worker with ``per_rank``/``per_worker``):
    a function decorated with ``@ReproducibleBlock(key)`` and called every step, or a ``with``
    block in an epoch loop whose key lacks the epoch, replays one stream at every entry. Give
    each call or epoch its own key (``key_from=``, ``("train", epoch)``), or pass
    ``replay=True`` where the replay is deliberate. Silence it with the ``warnings`` filters:
    ``warnings.filterwarnings("ignore", category=RepetitionWarning)``.
    """


RepetitionWarning.__module__ = "reproducible_block"

#: The folder of the package, with a trailing separator (every module of the library is in it).
PACKAGE_DIRECTORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

# Frames skipped on the way to the user's line.
_SKIPPED = (
    PACKAGE_DIRECTORY,
    os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "_dynamo") + os.sep,
    contextlib.__file__,
    os.path.join(os.path.dirname(contextlib.__file__), "asyncio") + os.sep,
    os.path.dirname(os.path.abspath(wrapt.__file__)) + os.sep,
)

_warned: dict[str, object] = {}


def first_time(seen: dict[str, object], key: str) -> bool:
    """Whether this is the first call with ``key`` (for ``seen``); one caller gets True even
    when threads call at once (``dict.setdefault`` is atomic)."""
    mine = object()
    return seen.setdefault(key, mine) is mine


def user_frame() -> tuple[str, int, dict[str, object]]:
    """The file, line and globals of the innermost frame outside the skipped code."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_SKIPPED):
        frame = frame.f_back
    return frame.f_code.co_filename, frame.f_lineno, frame.f_globals


def user_place(depth: int = 1) -> tuple[str, int]:
    """The file and line of the innermost frame outside the skipped code, looking first
    ``depth`` frames above the caller: a guess that is right costs no walk."""
    frame = sys._getframe(depth)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_SKIPPED):
        frame = frame.f_back
    return frame.f_code.co_filename, frame.f_lineno


def warn_at_user_line(
    message: str,
    category: type[Warning] = UserWarning,
    *,
    once: str | None = None,
    seen: dict[str, object] | None = None,
) -> None:
    """Warn with ``message`` at the user's line; with ``once``, only the first time per process
    that key is seen (threads included), in ``seen`` (a caller's own record) or the shared one.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_at_user_line("look here", once="doctest-example")
    ...     warn_at_user_line("look here", once="doctest-example")
    >>> [str(warning.message) for warning in caught]
    ['look here']
    """
    if once is not None and not first_time(_warned if seen is None else seen, once):
        return
    filename, line, module_globals = user_frame()
    registry = module_globals.setdefault("__warningregistry__", {})
    warnings.warn_explicit(
        message,
        category,
        filename,
        line,
        module=str(module_globals.get("__name__", "<unknown>")),
        registry=registry if isinstance(registry, dict) else None,
        # Code with no file ("<string>": python -c, exec) has no source a loader can give:
        # the globals of python -c name a loader that raises when the line is looked up.
        module_globals=None if filename.startswith("<") else module_globals,
    )
