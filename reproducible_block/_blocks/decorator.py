"""``@ReproducibleBlock(key)``: the wrappers for functions, methods, classes and resumables.

Functions and methods are wrapped with ``wrapt`` (name, docstring, signature and binding kept),
in a wrapper that pickles by reference like the function it decorates, so decorated functions
travel to spawn and forkserver workers, ``multiprocessing.Pool`` and ``mp.spawn``. A class is not
wrapped: its ``__init__`` is, in place, so the class stays itself (``type(Net()) is Net``, its
instances pickle, subclasses inherit the block through ``super().__init__()``).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import pickle
from collections.abc import Callable
from typing import Any, TypeVar, cast

import wrapt

from reproducible_block._blocks import repetition as _repetition
from reproducible_block._blocks import stack as _stack
from reproducible_block._blocks.key_from import KeyFrom
from reproducible_block._blocks.repetition import checking as _checking  # read on the hot path
from reproducible_block._blocks.resumable import (
    Stream,
    run_async_generator,
    run_coroutine,
    run_generator,
)
from reproducible_block._support.errors import ReproducibleBlockTypeError
from reproducible_block._support.transforms import (
    dynamo_callback,
    is_compiling,
    is_dynamo_compiling,
)

__all__ = ["decorate", "wrap_function"]

F = TypeVar("F", bound=Callable[..., Any])

# wrapt's wrapper types (generic in its stubs, plain classes at run time in older wrapt).
_FunctionWrapper: Any = wrapt.FunctionWrapper
_BoundFunctionWrapper: Any = wrapt.BoundFunctionWrapper
# wrapt's proxy answers ``__class__`` with the wrapped function's class (isinstance and inspect
# see a function); this is that descriptor.
_PROXIED_CLASS: Any = next(
    kind.__dict__["__class__"] for kind in _FunctionWrapper.__mro__ if "__class__" in kind.__dict__
)


def _class_seen(wrapper: Any) -> type:
    """``wrapper.__class__``: the wrapped function's class, except to torch.compile.

    While dynamo traces, a proxy that passes for the function would be inlined as the plain
    function (its ``__code__``, from the proxy), silently dropping the block. Told the truth,
    dynamo calls the wrapper as it is (a graph break), and the call switches streams outside the
    graph (see ``_transforms``).
    """
    if is_compiling():
        return type(wrapper)
    return _PROXIED_CLASS.__get__(wrapper)  # type: ignore[no-any-return]


def _set_class(wrapper: Any, value: type) -> None:
    _PROXIED_CLASS.__set__(wrapper, value)


def _resolve(module: str, qualname: str) -> Any:
    """The object named ``qualname`` in ``module`` (how a decorated function is unpickled)."""
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def _reference(wrapper: Any) -> tuple[Any, ...]:
    """Pickle a decorated function by reference: its module and qualified name."""
    qualname = wrapper.__qualname__
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise pickle.PicklingError(
            f"cannot pickle the decorated function {qualname!r}: it is defined inside a "
            "function (or is a lambda), so another process cannot import it. Define it at "
            "module level, as pickle requires for any function."
        )
    return (_resolve, (wrapper.__module__, qualname))


class _BoundBlockFunction(_BoundFunctionWrapper):  # type: ignore[misc]
    """A decorated method bound to an instance or class."""

    __class__ = property(_class_seen, _set_class)

    def __reduce_ex__(self, protocol: object) -> tuple[Any, ...]:
        instance = self._self_instance
        if instance is None:  # accessed on the class: the function itself
            return _reference(self)
        return (getattr, (instance, self.__name__))

    # Copied as Python copies bound methods: a shallow copy is the same method, a deep copy is
    # bound to a deep copy of the instance (wrapt's proxies refuse both by default).
    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        instance = self._self_instance
        if instance is None:
            return self
        return getattr(copy.deepcopy(instance, memo), self.__name__)


class _BlockFunction(_FunctionWrapper):  # type: ignore[misc]
    """A decorated function: wrapt's wrapper, pickled by reference, copied as itself (as Python
    copies functions: ``copy.deepcopy`` of a model that holds one works)."""

    __bound_function_wrapper__ = _BoundBlockFunction
    __class__ = property(_class_seen, _set_class)

    def __reduce_ex__(self, protocol: object) -> tuple[Any, ...]:
        return _reference(self)

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self


def _block_for(block: Any, keyed: KeyFrom | None, instance: Any, args: Any, kwargs: Any) -> Any:
    """The block one call runs in: ``block``, or with ``key_from`` the call's own block."""
    if keyed is None:
        return block
    return block._for_call(keyed.key(instance, args, kwargs))


def _open_call(
    block: Any, keyed: KeyFrom | None, instance: Any, args: Any, kwargs: Any
) -> _stack.Frame:
    # The user's call is 2 frames above: call(), then the caller (wrapt's wrapper is C code).
    return _block_for(block, keyed, instance, args, kwargs)._open(2)  # type: ignore[no-any-return]


def _call(block: Any, keyed: KeyFrom | None) -> Callable[..., Any]:
    def call(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        if not block._enabled:
            return wrapped(*args, **kwargs)
        if is_dynamo_compiling() or dynamo_callback() is not None:  # inline: bench "repeated key"
            from reproducible_block._support.compiled import hidden_call

            frame = hidden_call(_open_call, block, keyed, instance, args, kwargs)
            try:
                return wrapped(*args, **kwargs)
            finally:
                hidden_call(_repetition.leave, frame)
        frame = _open_call(block, keyed, instance, args, kwargs)
        try:
            return wrapped(*args, **kwargs)
        finally:
            if _checking:  # a repeated key's first repetition is open: _repetition.leave
                _repetition.leave(frame)
            else:
                _stack.leave(frame)

    return call


def _stepped(
    block: Any, keyed: KeyFrom | None, runner: Callable[[Stream, Any], Any]
) -> Callable[..., Any]:
    """A wrapper for generator, coroutine or async generator functions: ``runner`` drives the
    object a call returns, inside a stream that lives as long as that object."""

    def call(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        if not block._enabled:
            return wrapped(*args, **kwargs)
        if keyed is None:
            here = block
        elif is_dynamo_compiling() or dynamo_callback() is not None:
            from reproducible_block._support.compiled import hidden_call

            here = hidden_call(_block_for, block, keyed, instance, args, kwargs)
        else:
            here = _block_for(block, keyed, instance, args, kwargs)
        return runner(Stream(here), wrapped(*args, **kwargs))

    return call


def _decorate_class(block: Any, cls: type) -> type:
    """Run ``cls.__init__`` (its own or the one it inherits) in the block, in place."""
    init = cls.__init__  # type: ignore[misc]
    keyed = None if block._key_from is None else KeyFrom(block._key_from, block._key, init)
    cls.__init__ = _BlockFunction(init, _call(block, keyed))  # type: ignore[misc]
    return cls


def decorate(block: Any, wrapped: F) -> F:
    """``wrapped`` run in ``block`` on every call (see ``ReproducibleBlock``)."""
    if isinstance(wrapped, type):
        return cast(F, _decorate_class(block, wrapped))
    function = getattr(wrapped, "__func__", wrapped)  # staticmethod / classmethod objects
    if not callable(function):
        raise ReproducibleBlockTypeError(
            f"@ReproducibleBlock(...) decorates functions, methods and classes; got "
            f"{type(wrapped).__name__} {wrapped!r}."
        )
    keyed = None if block._key_from is None else KeyFrom(block._key_from, block._key, wrapped)
    wrapper: Callable[..., Any]
    if inspect.isasyncgenfunction(function):
        wrapper = _stepped(block, keyed, run_async_generator)
    elif inspect.iscoroutinefunction(function):
        wrapper = _stepped(block, keyed, run_coroutine)
    elif inspect.isgeneratorfunction(function):
        wrapper = _stepped(block, keyed, run_generator)
    else:
        wrapper = _call(block, keyed)
    return cast(F, _BlockFunction(wrapped, wrapper))


def wrap_function(function: F, wrapper: Callable[..., Any]) -> F:
    """``function`` behind a ``wrapt`` ``wrapper(wrapped, instance, args, kwargs)`` that
    pickles by reference (for other decorators of the library)."""
    return cast(F, _BlockFunction(function, wrapper))
