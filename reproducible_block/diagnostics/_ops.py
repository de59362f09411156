"""Tracing the torch ops a run makes, and naming the first op where two traces differ.

A :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees every op torch runs in this thread
(below autograd: forward, backward and in-place ops alike) and fingerprints its outputs. Global
``nn.Module`` forward hooks keep a stack of the modules being called, so each op gets the path of
the module it ran in (``Net.encoder.0``), and the first Python frame outside torch and this
library gives the line that called it. Two traces compared op by op name the first that differs.
"""

from __future__ import annotations

import functools
import linecache
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, ParamSpec, Protocol, TypeVar

import torch
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from reproducible_block._support.errors import ReproducibleBlockTypeError
from reproducible_block._support.fingerprint import fingerprint
from reproducible_block._support.warnings import PACKAGE_DIRECTORY
from reproducible_block.diagnostics._compare import mismatch
from reproducible_block.diagnostics._op_records import (
    SCALAR_DTYPES,
    OpCall,
    OpDivergence,
    OpOutput,
    OpTrace,
)

__all__ = [
    "KEPT_VALUES_BYTES",
    "WriteWatch",
    "check_callable",
    "compare_traces",
    "trace_ops",
    "traced",
]

P = ParamSpec("P")
R = TypeVar("R")

#: A trace keeps a CPU copy of op outputs up to this many bytes, to measure a difference.
KEPT_VALUES_BYTES = 256 * 2**20
# Ops whose outputs are uninitialised memory: their values differ between runs by design.
_UNINITIALISED = frozenset(
    {
        "empty",
        "empty_like",
        "empty_strided",
        "empty_permuted",
        "new_empty",
        "new_empty_strided",
        "resize_",
    }
)
_TORCH_DIRECTORY = os.path.dirname(torch.__file__) + os.sep
_LIBRARY_DIRECTORY = PACKAGE_DIRECTORY


class WriteWatch(Protocol):
    """What a tracer tells about in-place writes, around each op (see ``_find._Writes``)."""

    def will_write(self, func: Any, args: Any, kwargs: dict[str, Any]) -> list[int]: ...

    def wrote(
        self, func: Any, args: Any, kwargs: dict[str, Any], result: Any, mine: list[int]
    ) -> None: ...


class _ModuleStack:
    """The modules being called in each thread, with their paths, kept by global forward hooks."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._names: dict[tuple[torch.nn.Module, torch.nn.Module], str] = {}

    def _stack(self) -> list[tuple[torch.nn.Module, str]]:
        stack: list[tuple[torch.nn.Module, str]] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _path(self, parent: tuple[torch.nn.Module, str] | None, module: torch.nn.Module) -> str:
        if parent is None:
            return type(module).__name__
        found = self._names.get((parent[0], module))
        if found is None:
            name = next(
                (name for name, child in parent[0].named_modules() if child is module and name),
                f"<{type(module).__name__}>",
            )
            found = self._names[(parent[0], module)] = name
        return f"{parent[1]}.{found}"

    def push(self, module: torch.nn.Module, *_: object) -> None:
        stack = self._stack()
        stack.append((module, self._path(stack[-1] if stack else None, module)))

    def pop(self, module: torch.nn.Module, *_: object) -> None:
        stack = self._stack()
        if stack and stack[-1][0] is module:  # not when tracing started inside this module
            stack.pop()

    def current(self) -> tuple[str, str] | tuple[None, None]:
        stack = self._stack()
        if not stack:
            return None, None
        module, path = stack[-1]
        return path, type(module).__name__

    @contextmanager
    def installed(self) -> Iterator[None]:
        before = register_module_forward_pre_hook(self.push)
        after = register_module_forward_hook(self.pop, always_call=True)
        try:
            yield
        finally:
            before.remove()
            after.remove()


@functools.lru_cache(maxsize=4096)
def _is_torch(filename: str) -> bool:
    return filename.startswith(_TORCH_DIRECTORY) or filename.startswith("<frozen")


def _calling_line() -> tuple[str, str] | None:
    """``(file:line, source)`` of the first frame outside torch, for an op being dispatched.

    None when that frame is this library's own code (its ops, such as deriving a block's state
    on a cache miss, are not traced), except ``traced`` itself: there ``fn`` is a torch
    function, so the line is where the trace was asked for.
    """
    frame: FrameType | None = sys._getframe(2)  # the caller of __torch_dispatch__
    while frame is not None and _is_torch(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRECTORY):
        if frame.f_code is not traced.__code__:
            return None
        while frame is not None and (
            _is_torch(frame.f_code.co_filename)
            or frame.f_code.co_filename.startswith(_LIBRARY_DIRECTORY)
        ):
            frame = frame.f_back
    if frame is None:  # every frame is torch's (a caller's frame is usually there)
        return "<torch>", ""
    line = frame.f_lineno
    return f"{frame.f_code.co_filename}:{line}", linecache.getline(
        frame.f_code.co_filename, line
    ).strip()


class _Tracer(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Records every op run in this thread while active, with its module and line; with
    ``writes``, also what the ops overwrite of the state that existed before."""

    def __init__(self, modules: _ModuleStack, writes: WriteWatch | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.calls: list[OpCall] = []
        self._modules = modules
        self._budget = KEPT_VALUES_BYTES
        self._writes = writes

    def _output(self, value: object, compared: bool) -> OpOutput | None:
        if isinstance(value, torch.Tensor):
            dtype, shape = str(value.dtype), tuple(value.shape)
            if not compared or value.layout != torch.strided or value.is_quantized or value.is_meta:
                return OpOutput(None, dtype, shape)
            values = None
            size = value.numel() * value.element_size()
            if size <= self._budget:
                self._budget -= size
                values = value.detach().to("cpu", copy=True)
            # The fingerprint reads the kept copy when there is one: one copy off the device.
            return OpOutput(fingerprint(value if values is None else values), dtype, shape, values)
        if isinstance(value, (bool, int, float, complex)):
            kind = type(value).__name__
            try:
                kept: torch.Tensor | None = torch.tensor(
                    value, dtype=SCALAR_DTYPES.get(kind, torch.complex128)
                )
            except (OverflowError, RuntimeError, ValueError):  # an int beyond int64
                kept = None
            return OpOutput(fingerprint(value), kind, (), kept)
        return None  # dtypes, devices, None...: not results

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        writes = self._writes
        if writes is None:
            result = func(*args, **kwargs)
        else:
            mine = writes.will_write(func, args, kwargs)
            result = func(*args, **kwargs)
            writes.wrote(func, args, kwargs, result, mine)
        called_from = _calling_line()
        if called_from is None:
            return result
        compared = (
            func.overloadpacket.__name__ not in _UNINITIALISED
            and torch.Tag.nondeterministic_bitwise not in func.tags
        )
        outputs = tuple(
            output
            for output in (self._output(leaf, compared) for leaf in tree_leaves(result))
            if output is not None
        )
        module, module_type = self._modules.current()
        line, source = called_from
        self.calls.append(
            OpCall(len(self.calls), str(func), module, module_type, line, source, outputs)
        )
        return result


def check_callable(fn: object) -> None:
    if not callable(fn):
        raise ReproducibleBlockTypeError(
            f"a callable is needed first, then its arguments; got {type(fn).__name__} {fn!r}. "
            "Write find_nondeterminism(model, x), not find_nondeterminism(model(x))."
        )


def traced(
    writes: WriteWatch | None, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs
) -> tuple[OpTrace, R]:
    """One traced run of ``fn``; with ``writes``, what it overwrites (see :class:`WriteWatch`)."""
    check_callable(fn)
    modules = _ModuleStack()
    tracer = _Tracer(modules, writes)
    with modules.installed(), tracer:
        result = fn(*args, **kwargs)
    return OpTrace(tuple(tracer.calls)), result


def trace_ops(fn: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> OpTrace:
    """Run ``fn(*args, **kwargs)`` once and return every torch op it ran, with fingerprints.

    Each op is recorded with its outputs' fingerprints (and a CPU copy of their values while
    the trace holds less than :data:`KEPT_VALUES_BYTES`), the module it ran in and the line
    that called it. Ops that other threads run are not seen (dispatch modes are per thread);
    ``fn``'s random draws are not undone (use :func:`find_nondeterminism` for two runs from one
    state). For a difference that only shows across processes, trace in each process, move
    the traces with :meth:`OpTrace.to_json`/:meth:`OpTrace.from_json` and
    :func:`compare_traces` them.

    >>> import torch
    >>> trace = trace_ops(lambda x: (x * 2).sum(), torch.ones(3))
    >>> [call.op for call in trace.ops] == ["aten.mul.Tensor", "aten.sum.default"]
    True
    """
    return traced(None, fn, *args, **kwargs)[0]


def _where(call: OpCall) -> str:
    place = f"{call.op} (op {call.index})"
    if call.module is not None:
        place += f" in module {call.module} ({call.module_type})"
    return place + f", called at {call.line}" + (f": {call.source}" if call.source else "")


def _size(first: OpOutput, second: OpOutput) -> tuple[int | None, int | None, float | None, str]:
    """(differing elements, elements, max abs difference, words) for two outputs that differ."""
    if first.dtype != second.dtype:
        return None, None, None, f"dtype {first.dtype} vs {second.dtype}"
    if first.shape != second.shape:
        return None, None, None, f"shape {first.shape} vs {second.shape}"
    elements = math.prod(first.shape)
    a, b = first.values, second.values
    if a is None or b is None:
        return (
            None,
            elements,
            None,
            (
                "the values differ (not kept: over the trace's "
                "KEPT_VALUES_BYTES, or an int beyond int64)"
            ),
        )
    found = mismatch(a, b)
    if found.differing == 0:
        return (
            0,
            elements,
            0.0,
            ("the bits differ where the values compare equal (signed zeros or NaN payloads)"),
        )
    return found.differing, elements, found.largest, str(found)


def compare_traces(first: OpTrace, second: OpTrace) -> OpDivergence | None:
    """The first op where two traces differ, or None when every op's outputs are the same.

    Ops are compared in order: their names, then their outputs' fingerprints. The first
    difference is either an op whose outputs differ (with how many elements and by how much),
    or a different op (the runs took different paths), or one trace ending early.

    >>> import torch
    >>> one = trace_ops(lambda: torch.ones(2) + 1)
    >>> two = trace_ops(lambda: torch.ones(2) + 2)
    >>> found = compare_traces(one, two)
    >>> found.op == "aten.add.Tensor" and found.max_abs_difference == 1.0
    True
    """
    for call_a, call_b in zip(first.ops, second.ops):  # noqa: B905 - lengths checked below
        if call_a.op != call_b.op or len(call_a.outputs) != len(call_b.outputs):
            return OpDivergence(
                f"the runs took different paths at op {call_a.index}: the first ran "
                f"{_where(call_a)}, the second {_where(call_b)}",
                call_a.index,
                call_a.op,
                call_a.module,
                call_a.module_type,
                call_a.line,
                call_a.source,
            )
        for number, (out_a, out_b) in enumerate(zip(call_a.outputs, call_b.outputs)):  # noqa: B905
            if out_a.fingerprint is None or out_b.fingerprint is None:
                continue
            if (out_a.fingerprint, out_a.dtype, out_a.shape) == (
                out_b.fingerprint,
                out_b.dtype,
                out_b.shape,
            ):
                continue
            differing, elements, gap, words = _size(out_a, out_b)
            which = "" if len(call_a.outputs) == 1 else f" (output {number})"
            return OpDivergence(
                f"the first op whose outputs differ is {_where(call_a)}{which}: {words}",
                call_a.index,
                call_a.op,
                call_a.module,
                call_a.module_type,
                call_a.line,
                call_a.source,
                number,
                differing,
                elements,
                gap,
            )
    if len(first.ops) != len(second.ops):
        shorter, longer = (first, second) if len(first.ops) < len(second.ops) else (second, first)
        extra = longer.ops[len(shorter.ops)]
        which = "first" if longer is first else "second"
        return OpDivergence(
            f"every op both runs ran agrees, but the {which} ran more: it goes on with "
            f"{_where(extra)} ({len(longer.ops)} ops against {len(shorter.ops)})",
            extra.index,
            extra.op,
            extra.module,
            extra.module_type,
            extra.line,
            extra.source,
        )
    return None
