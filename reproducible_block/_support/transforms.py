"""Blocks inside ``torch.compile`` and ``torch.func``: the stream switch stays outside both.

``torch.compile``: dynamo must never trace the switch. Traced, it would put the generators' state
tensors into a graph (a new key's derived state fails to trace), and a block's derived states
are plain Python work anyway. Worse, code that dynamo runs eagerly inside a compiled region (a
frame it gave up on) still has dynamo's frame callback set, and every Python function it calls
is compiled on its own: the library's internals included. So while that callback is set
(:data:`dynamo_callback`), blocks switch through the functions of ``_compiled``, which
``torch.compiler.disable`` hides from dynamo: to dynamo each is a graph break, and the library's
Python runs with no callback under it. Outside compiled code the check is one C call.

``torch.func``: under ``grad``, ``vmap`` or ``jvp``, reading a tensor's bytes (``.numpy()``)
raises "Cannot access data pointer of Tensor that doesn't have storage", and the first block of
a process reads torch's CPU state layout that way. Saving and installing states works under the
transforms; what reads bytes (deriving states, the ledger) runs :func:`outside_functorch`, with
the functorch layers excluded.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

__all__ = [
    "COMPILE_NOTE",
    "dynamo_callback",
    "is_compiling",
    "is_dynamo_compiling",
    "outside_functorch",
]

#: What dynamo reports at each graph break a block causes (and in a fullgraph=True error).
COMPILE_NOTE = (
    "reproducible_block switches the random generators in Python, outside the graph (a graph "
    "break at each block's entry and exit); with fullgraph=True, put the block around the "
    "compiled call instead of inside it"
)


def _never() -> bool:  # pragma: no cover - only with a torch that lacks the function
    return False


def _no_callback() -> None:  # pragma: no cover - only with a torch that lacks the function
    return None


#: Dynamo's frame callback, or None: not None while code runs inside a ``torch.compile``
#: region (compiled, or run eagerly by it). One C call: the check on a block's hot path.
dynamo_callback: Callable[[], object]
try:
    from torch._C._dynamo.eval_frame import get_eval_frame_callback as dynamo_callback
except ImportError:  # pragma: no cover - a torch without dynamo's C extension
    dynamo_callback = _no_callback

#: False when it runs; dynamo folds a call to it into True while it traces the caller (no graph
#: break, no call). The trace-time half of the check on a block's hot path.
is_dynamo_compiling: Callable[[], bool] = getattr(torch.compiler, "is_dynamo_compiling", _never)
#: True while torch.compile compiles, also in the Python that dynamo runs for real meanwhile
#: (attribute lookups on the objects it meets).
is_compiling: Callable[[], bool] = getattr(torch.compiler, "is_compiling", _never)


_disable_functorch: Callable[[], Any] | None = getattr(torch._C, "_DisableFuncTorch", None)
_layer_depth: Callable[[], int] = getattr(
    getattr(torch._C, "_functorch", None), "get_dynamic_layer_stack_depth", lambda: 1
)
_NO_CONTEXT = nullcontext()


def outside_functorch() -> AbstractContextManager[Any]:
    """A context where torch ops run below every ``torch.func`` transform (plain tensors).

    Outside every transform (the usual case) it is a shared no-op context: one C call.

    >>> import torch
    >>> def total(x):
    ...     with outside_functorch():
    ...         first = int(torch.tensor([7]).numpy()[0])  # raises under grad without it
    ...     return (x * first).sum()
    >>> torch.equal(torch.func.grad(total)(torch.ones(2)), torch.full((2,), 7.0))
    True
    """
    if _disable_functorch is None:  # pragma: no cover - a torch without functorch
        return _NO_CONTEXT
    if not _layer_depth():
        return _NO_CONTEXT
    return _disable_functorch()  # type: ignore[no-any-return]
