"""``ReproducibleBlock``: a context manager and a decorator that gives code its own stream."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import numpy as np
import torch
import wrapt
from torch.utils.data import get_worker_info

from ._activation import Frame, enter, exit_
from ._derivation import (
    block_message,
    encode_key,
    fold_rank,
    fold_worker,
    loader_bits,
    philox_seed,
    seed_sequence,
)
from ._distributed import process_rank
from ._errors import ReproducibleBlockTypeError, ReproducibleBlockValueError
from ._keys import BlockKey, validate_key
from ._root import current_root
from ._sources import GeneratorSource, registry, select_sources, torch_cpu_state
from ._stepping import Stream, run_async_generator, run_coroutine, run_generator

__all__ = ["ReproducibleBlock"]

F = TypeVar("F", bound=Callable[..., Any])

_plain_keys: dict[object, tuple[BlockKey, bytes]] = {}
_PLAIN_KEYS_SIZE = 1024


def validate_and_encode(key: object) -> tuple[BlockKey, bytes]:
    """``validate_key`` then ``encode_key``, remembered for plain str and int keys.

    Only keys of exact type ``str`` or ``int`` are remembered (``True == 1``, so a bool must never
    hit the entry of ``1``); the memory is bounded.
    """
    kind = type(key)
    if kind is str or kind is int:
        found = _plain_keys.get((kind, key))
        if found is not None:
            return found
    checked = validate_key(key)
    result = (checked, encode_key(checked))
    if kind is str or kind is int:
        if len(_plain_keys) >= _PLAIN_KEYS_SIZE:
            _plain_keys.clear()
        _plain_keys[(kind, key)] = result
    return result


class ReproducibleBlock:
    """Run code in a random stream that depends only on the root seed and ``block_seed``.

    On entry the caller's state of every managed generator (Python ``random``, NumPy's global
    RNG, torch CPU, every accelerator device, registered generators) is saved and the block's
    state is installed: a pure function of the root snapshot taken by :func:`set_seed` and the
    key, whatever ran before. On exit (normal, exception or ``KeyboardInterrupt``) the caller's
    state is restored exactly, so the code outside continues as if the block had not run.

    Args:
        block_seed: the key: a non-negative int, a str, or a flat tuple of those, such as
            ``("epoch", 3)``. Distinct keys give independent streams; the key is part of the
            code, not a hyper-parameter (change the root seed to vary a run).
        sources: names of the sources to manage (for example ``("torch",)``); ``None``, the
            default, manages every source. Unnamed sources are left as they are.
        enabled: ``False`` turns the block into a no-op (handy to compare with and without).
        per_rank: ``True`` folds the global ``torch.distributed`` rank (0 without an initialised
            process group) into the key, read at each entry: every rank gets its own stream, for
            dropout or augmentation that should differ per rank. The default gives every rank
            the same stream, as model initialisation needs.
        per_worker: ``True`` folds the DataLoader worker id (0 in the main process) into the
            key, read at each entry: every worker gets its own stream, for an
            ``IterableDataset`` whose ``__iter__`` runs once per worker.

    Nesting: an inner block's stream equals the same key at top level, and after it exits the
    outer block continues where it was.

    As a decorator (``@ReproducibleBlock(key)``) every call starts the block afresh. Put it above
    ``@staticmethod``/``@classmethod``. A function called once per epoch that needs a stream per
    epoch uses a tuple key inside: ``with ReproducibleBlock(("train", epoch)):``. A decorated
    generator, coroutine or async generator keeps the block's stream across ``yield`` and
    ``await``: its draws continue on each resume, and none leak into the caller's stream.

    Threads: the global generators are process-wide, so blocks are serialised: while a block is
    open in one thread, a block entered in another thread waits for it to close. Code outside
    blocks in other threads still shares the global generators.

    >>> import torch
    >>> from reproducible_block import ReproducibleBlock, set_seed
    >>> _ = set_seed(0)
    >>> with ReproducibleBlock("classifier"):
    ...     first = torch.nn.Linear(4, 2).weight
    >>> _ = torch.rand(100)  # other code draws in between
    >>> with ReproducibleBlock("classifier"):
    ...     second = torch.nn.Linear(4, 2).weight
    >>> torch.equal(first, second)
    True
    """

    def __init__(
        self,
        block_seed: BlockKey,
        *,
        sources: Iterable[str] | None = None,
        enabled: bool = True,
        per_rank: bool = False,
        per_worker: bool = False,
    ) -> None:
        self._key, self._key_words = validate_and_encode(block_seed)
        self._source_names = select_sources(sources)
        if not isinstance(enabled, bool):
            raise ReproducibleBlockTypeError(
                f"enabled must be True or False; got {type(enabled).__name__} {enabled!r}."
            )
        self._enabled = enabled
        if not isinstance(per_rank, bool):
            raise ReproducibleBlockTypeError(
                f"per_rank must be True or False; got {type(per_rank).__name__} {per_rank!r}."
            )
        self._per_rank = per_rank
        if not isinstance(per_worker, bool):
            raise ReproducibleBlockTypeError(
                f"per_worker must be True or False; got {type(per_worker).__name__} "
                f"{per_worker!r}."
            )
        self._per_worker = per_worker
        self._frames: list[Frame] = []
        self._resolved: tuple[int, tuple[GeneratorSource[Any], ...], tuple[str, ...]] | None = None

    @property
    def key(self) -> BlockKey:
        """The block's key, as validated (NumPy integers become int)."""
        return self._key

    @property
    def enabled(self) -> bool:
        """Whether the block switches streams (``False``: a no-op)."""
        return self._enabled

    @property
    def per_rank(self) -> bool:
        """Whether the global rank is folded into the key (a stream per rank)."""
        return self._per_rank

    @property
    def per_worker(self) -> bool:
        """Whether the DataLoader worker id is folded into the key (a stream per worker)."""
        return self._per_worker

    def __repr__(self) -> str:
        extra = "" if self._source_names is None else f", sources={self._source_names!r}"
        extra += "" if self._enabled else ", enabled=False"
        extra += ", per_rank=True" if self._per_rank else ""
        extra += ", per_worker=True" if self._per_worker else ""
        return f"ReproducibleBlock({self._key!r}{extra})"

    def _loader_bits(self, kind: str) -> bytes:
        root = current_root(f"{self!r}.{kind}_generator()")
        return loader_bits(block_message(root.seed, self._words()), kind)

    def torch_generator(self, device: str | torch.device = "cpu") -> torch.Generator:
        """A new ``torch.Generator`` seeded from (root seed, key): a data order of its own.

        Pass it to ``DataLoader(..., shuffle=True, generator=...)`` or a sampler: the shuffle and
        the workers' base seed then come from it instead of torch's global generator, so a
        validation pass, an extra dropout layer or a changed model no longer changes the data
        order. Its stream is independent of the block's own streams and of every other key; each
        call returns a fresh generator in the same state. No global generator changes, and the
        block need not be entered (``sources`` and ``enabled`` do not matter here). Use a key
        per epoch, ``ReproducibleBlock(("data", epoch)).torch_generator()``, so that a resumed
        run gets the same order from its first epoch. Samplers need ``device="cpu"``.

        >>> import torch
        >>> from reproducible_block import ReproducibleBlock, set_seed
        >>> _ = set_seed(0)
        >>> first = torch.randperm(10, generator=ReproducibleBlock(("data", 0)).torch_generator())
        >>> _ = torch.rand(100)  # a validation pass, dropout... draws from the global generator
        >>> again = torch.randperm(10, generator=ReproducibleBlock(("data", 0)).torch_generator())
        >>> torch.equal(first, again)
        True
        """
        if not isinstance(device, (str, torch.device)):
            raise ReproducibleBlockTypeError(
                f"device must be a str or a torch.device such as 'cpu' (the default, what "
                f"DataLoader samplers need); got {type(device).__name__} {device!r}."
            )
        try:
            place = torch.device(device)
        except RuntimeError:
            raise ReproducibleBlockValueError(
                f"device={device!r} is not a torch device; pass 'cpu' (the default, what "
                "DataLoader samplers need) or an available device such as 'cuda:0'."
            ) from None
        bits = self._loader_bits("torch")
        if place.type == "cpu":
            generator = torch.Generator()
            generator.set_state(torch_cpu_state(bits))
            return generator
        try:
            generator = torch.Generator(device=place)
        except RuntimeError:
            raise ReproducibleBlockValueError(
                f"device={device!r} has no generator here (no such device or backend); pass "
                "'cpu' (the default, what DataLoader samplers need) or a device this machine has."
            ) from None
        generator.manual_seed(philox_seed(bits))  # pragma: no cover
        return generator  # pragma: no cover

    def numpy_generator(self) -> np.random.Generator:
        """A new ``np.random.Generator`` seeded from (root seed, key), like :meth:`torch_generator`.

        For NumPy-side shuffling, sampling or augmentation schedules that should not move when
        other code draws from the global generators. Independent of :meth:`torch_generator` and
        of the block's own streams; no global generator changes.

        >>> from reproducible_block import ReproducibleBlock, set_seed
        >>> _ = set_seed(0)
        >>> order = ReproducibleBlock(("data", 0)).numpy_generator().permutation(10)
        >>> bool((order == ReproducibleBlock(("data", 0)).numpy_generator().permutation(10)).all())
        True
        """
        return np.random.Generator(np.random.PCG64(seed_sequence(self._loader_bits("numpy"))))

    def _sources(self) -> tuple[tuple[GeneratorSource[Any], ...], tuple[str, ...]]:
        """The sources this block manages and their names, resolved once per registry change."""
        resolved = self._resolved
        if resolved is None or resolved[0] != registry.version:
            sources = registry.select(self._source_names)
            resolved = (registry.version, sources, registry.names_of(sources))
            self._resolved = resolved
        return resolved[1], resolved[2]

    def _enter(self) -> Frame:
        sources, names = self._sources()
        return enter(self, self._words(), sources, names)

    def _words(self) -> bytes:
        """The encoded key to derive from, with the rank and worker id folded in if asked."""
        if not (self._per_rank or self._per_worker):
            return self._key_words
        folds = fold_rank(process_rank()) if self._per_rank else b""
        if self._per_worker:
            info = get_worker_info()
            folds += fold_worker(0 if info is None else info.id)
        return folds + self._key_words

    def __enter__(self) -> ReproducibleBlock:
        if self._enabled:
            self._frames.append(self._enter())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._enabled:
            exit_(self._frames.pop())

    def _stream(self) -> Stream:
        return Stream(self, self._words(), *self._sources())

    # The wrappers take wrapt's (wrapped, instance, args, kwargs); wrapt binds methods for us.

    def _call(self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        if not self._enabled:
            return wrapped(*args, **kwargs)
        frame = self._enter()
        try:
            return wrapped(*args, **kwargs)
        finally:
            exit_(frame)

    def _stepped(self, runner: Callable[[Stream, Any], Any]) -> Callable[..., Any]:
        """A wrapper for generator, coroutine or async generator functions: ``runner`` drives
        the object a call returns, inside a stream that lives as long as that object."""

        def call(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
            if not self._enabled:
                return wrapped(*args, **kwargs)
            return runner(self._stream(), wrapped(*args, **kwargs))

        return call

    def __call__(self, wrapped: F) -> F:
        """Decorate ``wrapped`` so that every call runs in this block (see the class doc)."""
        function = getattr(wrapped, "__func__", wrapped)  # staticmethod / classmethod objects
        if not callable(function):
            raise ReproducibleBlockTypeError(
                f"@ReproducibleBlock(...) decorates functions, methods and classes; got "
                f"{type(wrapped).__name__} {wrapped!r}."
            )
        wrapper: Callable[..., Any]
        if inspect.isasyncgenfunction(function):
            wrapper = self._stepped(run_async_generator)
        elif inspect.iscoroutinefunction(function):
            wrapper = self._stepped(run_coroutine)
        elif inspect.isgeneratorfunction(function):
            wrapper = self._stepped(run_generator)
        else:
            wrapper = self._call
        return cast(F, wrapt.FunctionWrapper(wrapped, wrapper))
