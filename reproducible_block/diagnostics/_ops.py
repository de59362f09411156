"""The first torch op whose outputs differ between two runs: its name, module, line and size.

A :class:`~torch.utils._python_dispatch.TorchDispatchMode` sees every op torch runs in this thread
(below autograd: forward, backward and in-place ops alike) and fingerprints its outputs. Global
``nn.Module`` forward hooks keep a stack of the modules being called, so each op gets the path of
the module it ran in (``Net.encoder.0``), and the first Python frame outside torch and this
library gives the line that called it. Two traces compared op by op name the first that differs.
"""

from __future__ import annotations

import functools
import json
import linecache
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, ParamSpec, TypeVar

import torch
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from reproducible_block._support.errors import (
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)
from reproducible_block._support.fingerprint import fingerprint
from reproducible_block._support.warnings import PACKAGE_DIRECTORY
from reproducible_block.diagnostics._compare import first_difference
from reproducible_block.diagnostics._consumption import run_from_same_state

__all__ = [
    "KEPT_VALUES_BYTES",
    "OpCall",
    "OpDivergence",
    "OpOutput",
    "OpTrace",
    "compare_traces",
    "find_nondeterminism",
    "trace_ops",
]

P = ParamSpec("P")
R = TypeVar("R")

#: A trace keeps a CPU copy of op outputs up to this many bytes, to measure a difference.
KEPT_VALUES_BYTES = 256 * 2**20
_TRACE_FORMAT = "reproducible_block-op-trace"
_TRACE_VERSION = 1
# Ops whose outputs are uninitialised memory: their values differ between runs by design.
_UNINITIALISED = frozenset({
    "empty", "empty_like", "empty_strided", "empty_permuted", "new_empty", "new_empty_strided",
    "resize_",
})
_TORCH_DIRECTORY = os.path.dirname(torch.__file__) + os.sep
_LIBRARY_DIRECTORY = PACKAGE_DIRECTORY


@dataclass(frozen=True)
class OpOutput:
    """One output of an op: its fingerprint, dtype and shape, and its values when kept."""

    #: A short fingerprint of the values; None for outputs that are not compared
    #: (uninitialised memory, such as ``aten.empty``'s).
    fingerprint: str | None
    dtype: str
    shape: tuple[int, ...]
    #: A CPU copy of the values (within the trace's budget, :data:`KEPT_VALUES_BYTES`). Not
    #: compared by ``==`` (the fingerprint stands for them; tensors have no single truth value).
    values: torch.Tensor | None = field(default=None, compare=False)


@dataclass(frozen=True)
class OpCall:
    """One op as traced: which, where (module path, Python line) and its outputs."""

    index: int
    #: The op, as torch names it: ``aten.add.Tensor``.
    op: str
    #: The module it ran in, as a path from the outermost module called: ``Net.encoder.0``.
    module: str | None
    #: That module's class name: ``Linear``.
    module_type: str | None
    #: ``file:line`` of the first Python frame outside torch (ops called from
    #: reproducible_block itself are not traced).
    line: str
    #: The source code on that line ("" when it cannot be read).
    source: str
    outputs: tuple[OpOutput, ...]


def _tensor_json(values: torch.Tensor | None) -> list[Any] | None:
    if values is None or values.is_complex():
        return None
    flat: list[Any] = values.reshape(-1).tolist()
    return flat


# Python scalars (``.item()``) keep their type's name as dtype; ``torch.float`` would be float32.
_SCALAR_DTYPES = {"float": torch.float64, "int": torch.int64, "bool": torch.bool}


def _tensor_from_json(values: list[Any] | None, dtype: str, shape: tuple[int, ...]) -> Any:
    if values is None:
        return None
    torch_dtype = _SCALAR_DTYPES.get(dtype) or getattr(torch, dtype.removeprefix("torch."))
    return torch.tensor(values, dtype=torch_dtype).reshape(shape)


@dataclass(frozen=True)
class OpTrace:
    """Every op one run of a function ran, in order: what :func:`trace_ops` returns.

    Compare two with :func:`compare_traces`. :meth:`to_json` and :meth:`from_json` carry a trace
    between processes, for nondeterminism that only shows across them (``PYTHONHASHSEED``).
    """

    ops: tuple[OpCall, ...]

    def __len__(self) -> int:
        return len(self.ops)

    def to_json(self) -> str:
        """The trace as JSON text (kept values included)."""
        return json.dumps({
            "format": _TRACE_FORMAT,
            "version": _TRACE_VERSION,
            "ops": [
                {
                    "op": call.op, "module": call.module, "module_type": call.module_type,
                    "line": call.line, "source": call.source,
                    "outputs": [
                        {"fingerprint": output.fingerprint, "dtype": output.dtype,
                         "shape": list(output.shape), "values": _tensor_json(output.values)}
                        for output in call.outputs
                    ],
                }
                for call in self.ops
            ],
        })

    @classmethod
    def from_json(cls, text: str) -> OpTrace:
        """Rebuild a trace from :meth:`to_json`'s text.

        >>> import torch
        >>> trace = trace_ops(lambda: torch.ones(2) + 1)
        >>> again = OpTrace.from_json(trace.to_json())
        >>> compare_traces(trace, again) is None and again.ops[-1].op == "aten.add.Tensor"
        True
        """
        try:
            data = json.loads(text)
            if data.get("format") != _TRACE_FORMAT or data.get("version") != _TRACE_VERSION:
                raise ValueError("not an op trace of this version")
            calls = []
            for index, call in enumerate(data["ops"]):
                outputs = tuple(
                    OpOutput(output["fingerprint"], output["dtype"], tuple(output["shape"]),
                             _tensor_from_json(output["values"], output["dtype"],
                                               tuple(output["shape"])))
                    for output in call["outputs"]
                )
                calls.append(OpCall(index, call["op"], call["module"], call["module_type"],
                                    call["line"], call["source"], outputs))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ReproducibleBlockValueError(
                f"this text is not an op trace that OpTrace.from_json reads ({error}); pass "
                "what OpTrace.to_json() returned, from the same version of reproducible_block."
            ) from None
        return cls(tuple(calls))


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
            name = next((name for name, child in parent[0].named_modules()
                         if child is module and name), f"<{type(module).__name__}>")
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
    on a cache miss, are not traced), except ``_traced`` itself: there ``fn`` is a torch
    function, so the line is where the trace was asked for.
    """
    frame: FrameType | None = sys._getframe(2)  # the caller of __torch_dispatch__
    while frame is not None and _is_torch(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRECTORY):
        if frame.f_code is not _traced.__code__:
            return None
        while frame is not None and (_is_torch(frame.f_code.co_filename)
                                     or frame.f_code.co_filename.startswith(_LIBRARY_DIRECTORY)):
            frame = frame.f_back
    if frame is None:  # pragma: no cover - some frame is always the caller's
        return "<torch>", ""
    line = frame.f_lineno
    return f"{frame.f_code.co_filename}:{line}", linecache.getline(frame.f_code.co_filename,
                                                                   line).strip()


# Ops that wrap data made outside torch's dispatch (NumPy arrays, Python lists) in a new tensor.
_LIFTS = frozenset({"lift_fresh", "lift_fresh_copy", "lift"})


@functools.lru_cache(maxsize=4096)
def _written(func: Any) -> tuple[tuple[int, str], ...]:
    """(position, name) of the arguments ``func`` writes to (``self`` of ``add_``, ``out=``)."""
    return tuple(
        (position, argument.name)
        for position, argument in enumerate(func._schema.arguments)
        if argument.alias_info is not None and argument.alias_info.is_write
    )


@functools.lru_cache(maxsize=4096)
def _makes_new(func: Any) -> bool | None:
    """Whether ``func``'s outputs are new tensors: True for a lift (its input is data made
    outside torch), None when they may still share an input's memory (``_unsafe_view``), False
    for views of, or writes into, its inputs."""
    if func.overloadpacket.__name__ in _LIFTS:
        return True
    return None if all(result.alias_info is None for result in func._schema.returns) else False


def _storages(value: object) -> Iterator[torch.UntypedStorage]:
    """The storages of a tensor or of a list of tensors (``Tensor(a!)[]`` arguments); none for
    tensors without memory of their own (meta, sparse, wrapper subclasses such as DTensor)."""
    for leaf in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(leaf, torch.Tensor) and leaf.layout == torch.strided \
                and not leaf.is_meta and not leaf.is_quantized:
            try:
                storage = leaf.untyped_storage()
                storage.data_ptr()  # raises for a wrapper subclass's placeholder storage
            except (RuntimeError, NotImplementedError):
                continue
            yield storage


class _Writes:
    """The storages a run writes to in place that existed before it, as they were before.

    Tensors the run makes (every op's new outputs) are its own; a storage that existed before
    (a BatchNorm's running statistics, parameters an optimizer steps) is copied at its first
    write, so that :meth:`restore` starts a second run from the state the first started from.
    """

    def __init__(self) -> None:
        self._made: set[int] = set()
        self._before: dict[int, tuple[torch.UntypedStorage, torch.UntypedStorage]] = {}

    def will_write(self, func: Any, args: Any, kwargs: dict[str, Any]) -> list[int]:
        """Save what ``func`` is about to overwrite; return the written storages it made."""
        mine: list[int] = []
        for position, name in _written(func):
            value = args[position] if position < len(args) else kwargs.get(name)
            for storage in _storages(value):
                key = storage._cdata
                if key in self._made:
                    mine.append(key)
                elif key not in self._before and storage.nbytes():
                    self._before[key] = (storage, storage.clone())  # type: ignore[no-untyped-call]
        return mine

    def wrote(self, func: Any, args: Any, kwargs: dict[str, Any], result: Any,
              mine: list[int]) -> None:
        """Note the storages ``func`` made (``set_``, ``resize_`` may give a tensor a new one)."""
        new = _makes_new(func)
        if new is not False:
            inputs = set() if new else {
                storage._cdata for storage in _storages(tree_leaves((args, kwargs)))
            }
            self._made.update(storage._cdata for storage in _storages(tree_leaves(result))
                              if storage._cdata not in inputs)
        if mine:
            for position, name in _written(func):
                value = args[position] if position < len(args) else kwargs.get(name)
                self._made.update(storage._cdata for storage in _storages(value))

    def restore(self) -> None:
        """Put every storage the run wrote to back as it was before the run."""
        for storage, before in self._before.values():
            if storage.nbytes() == before.nbytes():  # not when the run resized it
                storage.copy_(before)


class _Tracer(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Records every op run in this thread while active, with its module and line; with
    ``writes``, also what the ops overwrite of the state that existed before."""

    def __init__(self, modules: _ModuleStack, writes: _Writes | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.calls: list[OpCall] = []
        self._modules = modules
        self._budget = KEPT_VALUES_BYTES
        self._writes = writes

    def _output(self, value: object, compared: bool) -> OpOutput | None:
        if isinstance(value, torch.Tensor):
            dtype, shape = str(value.dtype), tuple(value.shape)
            if not compared or value.layout != torch.strided or value.is_quantized \
                    or value.is_meta:
                return OpOutput(None, dtype, shape)
            values = None
            size = value.numel() * value.element_size()
            if size <= self._budget:
                self._budget -= size
                values = value.detach().to("cpu", copy=True)
            # The fingerprint reads the kept copy when there is one: one copy off the device.
            return OpOutput(fingerprint(value if values is None else values), dtype, shape,
                            values)
        if isinstance(value, (bool, int, float, complex)):
            kind = type(value).__name__
            try:
                kept: torch.Tensor | None = torch.tensor(
                    value, dtype=_SCALAR_DTYPES.get(kind, torch.complex128))
            except (OverflowError, RuntimeError, ValueError):  # an int beyond int64
                kept = None
            return OpOutput(fingerprint(value), kind, (), kept)
        return None  # dtypes, devices, None...: not results

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
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
        compared = (func.overloadpacket.__name__ not in _UNINITIALISED
                    and torch.Tag.nondeterministic_bitwise not in func.tags)
        outputs = tuple(
            output for output in (self._output(leaf, compared) for leaf in tree_leaves(result))
            if output is not None
        )
        module, module_type = self._modules.current()
        line, source = called_from
        self.calls.append(OpCall(len(self.calls), str(func), module, module_type, line, source,
                                 outputs))
        return result


def _check_callable(fn: object) -> None:
    if not callable(fn):
        raise ReproducibleBlockTypeError(
            f"a callable is needed first, then its arguments; got {type(fn).__name__} {fn!r}. "
            "Write find_nondeterminism(model, x), not find_nondeterminism(model(x))."
        )


def _traced(writes: _Writes | None, fn: Callable[P, R], *args: P.args,
            **kwargs: P.kwargs) -> tuple[OpTrace, R]:
    """One traced run of ``fn``; with ``writes``, what it overwrites (see :class:`_Writes`)."""
    _check_callable(fn)
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
    return _traced(None, fn, *args, **kwargs)[0]


@dataclass(frozen=True)
class OpDivergence:
    """Where two runs first differ, op by op: what :func:`find_nondeterminism` returns.

    ``op``, ``module``, ``module_type``, ``line`` and ``source`` describe the first op whose
    outputs differ (``index`` is its number among the ops; ``output`` which of its outputs).
    ``differing`` of ``elements`` values differ there, by at most ``max_abs_difference``
    (None when the values were not kept or are not numbers). When the two runs ran different
    ops, ``op`` is the first run's (``description`` says what the other ran). When every op
    agreed but the results did not, ``index`` and ``op`` are None: the difference comes from
    code outside torch ops. ``str()`` gives ``description``.
    """

    description: str
    index: int | None = None
    op: str | None = None
    module: str | None = None
    module_type: str | None = None
    line: str | None = None
    source: str | None = None
    output: int | None = None
    differing: int | None = None
    elements: int | None = None
    max_abs_difference: float | None = None

    def __str__(self) -> str:
        return self.description


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
        return None, elements, None, ("the values differ (not kept: over the trace's "
                                      "KEPT_VALUES_BYTES, or an int beyond int64)")
    same = a == b
    if a.is_floating_point() or a.is_complex():
        same |= torch.isnan(a) & torch.isnan(b)
    differing = int((~same).sum())
    if differing == 0:
        return 0, elements, 0.0, ("the bits differ where the values compare equal "
                                        "(signed zeros or NaN payloads)")
    wide = torch.complex128 if a.is_complex() else torch.float64
    gap = float((a[~same].to(wide) - b[~same].to(wide)).abs().max()) if a.dtype != torch.bool \
        else 1.0
    return differing, elements, gap, (f"{differing:,} of {elements:,} elements differ, largest "
                                      f"absolute difference {gap:.3g}")


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
                call_a.index, call_a.op, call_a.module, call_a.module_type, call_a.line,
                call_a.source,
            )
        for number, (out_a, out_b) in enumerate(zip(call_a.outputs, call_b.outputs)):  # noqa: B905
            if out_a.fingerprint is None or out_b.fingerprint is None:
                continue
            if (out_a.fingerprint, out_a.dtype, out_a.shape) == (out_b.fingerprint, out_b.dtype,
                                                                 out_b.shape):
                continue
            differing, elements, gap, words = _size(out_a, out_b)
            which = "" if len(call_a.outputs) == 1 else f" (output {number})"
            return OpDivergence(
                f"the first op whose outputs differ is {_where(call_a)}{which}: {words}",
                call_a.index, call_a.op, call_a.module, call_a.module_type, call_a.line,
                call_a.source, number, differing, elements, gap,
            )
    if len(first.ops) != len(second.ops):
        shorter, longer = (first, second) if len(first.ops) < len(second.ops) else (second, first)
        extra = longer.ops[len(shorter.ops)]
        which = "first" if longer is first else "second"
        return OpDivergence(
            f"every op both runs ran agrees, but the {which} ran more: it goes on with "
            f"{_where(extra)} ({len(longer.ops)} ops against {len(shorter.ops)})",
            extra.index, extra.op, extra.module, extra.module_type, extra.line, extra.source,
        )
    return None


def find_nondeterminism(fn: Callable[P, Any], /, *args: P.args,
                        **kwargs: P.kwargs) -> OpDivergence | None:
    """Run ``fn`` twice from the same random state and name the first torch op that differs.

    Like :func:`assert_deterministic`, both runs start from the caller's state of every managed
    generator and the root, and the caller's state is put back afterwards. Tensors that existed
    before the call and that ``fn`` changes in place (a BatchNorm's running statistics in train
    mode, parameters an optimizer steps) are put back before the second run too, so that both
    runs start from the same state (afterwards they hold what one run left). Each run is traced
    (see :func:`trace_ops`); the result is None when every op's outputs and the two results are
    the same, else an :class:`OpDivergence` naming the first op whose outputs differ, the module
    it ran in (``Net.encoder.0``, from global forward hooks: ops outside every module, the
    backward pass included, have none), the line that called it and how many values differ by
    how much. If no op differs but the results do, the difference comes from code outside torch
    ops (Python or NumPy arithmetic, ops run in other threads) and ``op`` is None.

    It returns rather than raises, so you can print or inspect what it found: ``assert
    find_nondeterminism(step, batch) is None`` in a test. The first op that differs is where
    the difference enters torch: an op fed by an unseeded NumPy generator shows as
    ``aten.lift_fresh`` (the tensor made from NumPy data) at the line that made it.

    >>> import numpy as np, torch
    >>> from reproducible_block.diagnostics import find_nondeterminism
    >>> unseeded = np.random.default_rng()
    >>> found = find_nondeterminism(lambda x: x + torch.from_numpy(unseeded.random(3)),
    ...                             torch.zeros(3, dtype=torch.float64))
    >>> found.op == "aten.lift_fresh.default" and found.differing == 3
    True
    >>> find_nondeterminism(lambda x: torch.nn.functional.dropout(x, 0.5), torch.ones(8)) is None
    True
    """
    _check_callable(fn)
    writes = _Writes()

    def second_run() -> tuple[OpTrace, Any]:
        writes.restore()  # the state the first run started from, not the state it left
        return _traced(None, fn, *args, **kwargs)

    first_run: Callable[[], tuple[OpTrace, Any]] = functools.partial(
        _traced, writes, fn, *args, **kwargs)
    runs = run_from_same_state([first_run, second_run])
    (first, first_result), (second, second_result) = runs
    found = compare_traces(first, second)
    if found is not None:
        return found
    difference = first_difference(first_result, second_result)
    if difference is None:
        return None
    return OpDivergence(
        f"every torch op's outputs agree ({len(first.ops)} ops), but the results differ at "
        f"result{difference.path}: {difference.description}. The difference comes from code "
        "outside torch ops: Python or NumPy arithmetic, or ops run in other threads."
    )
