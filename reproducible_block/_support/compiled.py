"""The stream switch as ``torch.compile`` sees it: functions dynamo never traces.

The one way the library's Python escapes dynamo. Callers check first, inline
(``is_dynamo_compiling() or dynamo_callback() is not None``: one C call on every block), and
only then import :func:`hidden_call`, in their own frame: dynamo counts a graph break inside a
helper frame twice, and a program that does not compile never imports ``torch._dynamo``
through the library. :func:`hidden_call` is
``torch.compiler.disable``\\ d: dynamo calls it as it is, a graph break, and no frame of the
library runs under dynamo's callback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

from reproducible_block._support.transforms import COMPILE_NOTE

__all__ = ["hidden_call"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _hidden(function: F) -> F:
    """``function``, which dynamo calls without tracing it (nor anything it calls)."""
    try:
        return torch.compiler.disable(function, reason=COMPILE_NOTE)  # type: ignore[no-untyped-call,no-any-return]
    except TypeError:  # pragma: no cover - a torch whose disable() takes no reason
        return torch.compiler.disable(function)  # type: ignore[no-untyped-call,no-any-return]


@_hidden
def hidden_call(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``, run by Python even where dynamo traces the caller."""
    return function(*args)
