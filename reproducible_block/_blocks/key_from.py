"""``key_from=``: a decorated function's key takes a part from each call's arguments.

``@ReproducibleBlock("step", key_from="step")`` runs each call in the block ``("step", step)``;
a tuple key gets the part appended, so ``("train", "step")`` gives ``("train", "step", step)``.
``key_from`` is the name of an argument, or a callable that takes the call's arguments and
returns a key part or a tuple of parts. The argument's place is found once, when the function is
decorated (``inspect.signature``); each call then reads it from the positional arguments or the
keywords wrapt passes, which never include the ``self`` or ``cls`` of a method.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from reproducible_block._streams.keys import BlockKey, validate_key
from reproducible_block._support.errors import (
    ReproducibleBlockError,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)

__all__ = ["KeyFrom", "check_key_from"]

_EMPTY = inspect.Parameter.empty
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def check_key_from(key_from: object) -> str | Callable[..., Any] | None:
    """A ``key_from=`` argument's type: None, an argument name, or a callable."""
    if key_from is None or callable(key_from):
        return key_from
    if isinstance(key_from, str) and key_from.isidentifier():
        return key_from
    raise ReproducibleBlockTypeError(
        f"key_from must be the name of an argument of the decorated function (such as "
        f"key_from='step') or a callable that takes the call's arguments and returns a key part; "
        f"got {type(key_from).__name__} {key_from!r}."
    )


class KeyFrom:
    """``key_from`` resolved for one decorated function: the key of each call."""

    __slots__ = (
        "_base",
        "_default",
        "_function",
        "_index",
        "_keyword",
        "_name",
        "_static",
        "_where",
    )

    def __init__(self, key_from: str | Callable[..., Any], base: BlockKey, wrapped: Any) -> None:
        function = getattr(wrapped, "__func__", wrapped)  # staticmethod / classmethod objects
        self._base = base if isinstance(base, tuple) else (base,)
        self._static = isinstance(wrapped, staticmethod)
        self._where = f"key_from={key_from!r} of {getattr(function, '__qualname__', function)!r}"
        self._function: Callable[..., Any] | None = None
        self._name = ""
        self._index: int | None = None
        self._keyword = False
        self._default: object = _EMPTY
        if callable(key_from):
            self._function = key_from
            return
        try:
            parameters = inspect.signature(function).parameters
        except (TypeError, ValueError):  # pragma: no cover - a callable without a signature
            parameters = {}  # type: ignore[assignment]
        parameter = parameters.get(key_from)
        if parameter is None or parameter.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            named = [
                name
                for name, item in parameters.items()
                if item.kind
                not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            ]
            raise ReproducibleBlockValueError(
                f"{self._where} names no argument of it; its arguments are {named!r}. Name one "
                "of them, or pass a callable that takes the call's arguments and returns a key "
                "part."
            )
        self._name = key_from
        self._keyword = parameter.kind != inspect.Parameter.POSITIONAL_ONLY
        if parameter.kind in _POSITIONAL:
            self._index = list(parameters).index(key_from)
        self._default = parameter.default

    def key(self, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BlockKey:
        """The key of one call: the base key and the part(s) its arguments give, validated."""
        if self._function is not None:
            part = self._function(*args, **kwargs)
        else:
            part = self._argument(instance, args, kwargs)
        parts = part if isinstance(part, tuple) else (part,)
        try:
            return validate_key(self._base + parts)
        except ReproducibleBlockError as error:
            raise type(error)(f"{self._where} gave {part!r} for this call: {error}") from None

    def _argument(self, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._keyword and self._name in kwargs:
            return kwargs[self._name]
        if self._index is not None:
            # wrapt passes a method's arguments without its self or cls (``instance``).
            position = self._index - (instance is not None and not self._static)
            if position < 0:
                return instance
            if position < len(args):
                return args[position]
        if self._default is not _EMPTY:
            return self._default
        raise ReproducibleBlockTypeError(
            f"{self._where}: this call does not pass the argument {self._name!r} (arguments "
            f"{args!r}, keywords {sorted(kwargs)!r}), so the block has no key. Pass it."
        )
