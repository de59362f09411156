"""``ReproducibleBlock``: a context manager and a decorator that gives code its own stream."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import numpy as np
import torch
import wrapt

from ._activation import Frame, enter, exit_
from ._derive import block_sequence, loader_sequence, seed_words, torch_cpu_state, words_to_int
from ._distributed import global_rank
from ._errors import ReproducibleBlockTypeError, ReproducibleBlockValueError
from ._keys import BlockKey, encode_per_rank, validate_and_encode
from ._root import current_root
from ._sources import GeneratorSource, registry, select_sources
from ._stepping import Stream, run_async_generator, run_coroutine, run_generator

__all__ = ["ReproducibleBlock"]

F = TypeVar("F", bound=Callable[..., Any])


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

    def __repr__(self) -> str:
        extra = "" if self._source_names is None else f", sources={self._source_names!r}"
        extra += "" if self._enabled else ", enabled=False"
        extra += ", per_rank=True" if self._per_rank else ""
        return f"ReproducibleBlock({self._key!r}{extra})"

    def _loader_sequence(self, kind: str) -> np.random.SeedSequence:
        root = current_root(f"{self!r}.{kind}_generator()")
        return loader_sequence(block_sequence(root.seed, self._words()), kind)

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
        sequence = self._loader_sequence("torch")
        if place.type == "cpu":
            generator = torch.Generator()
            generator.set_state(torch_cpu_state(seed_words(sequence)))
            return generator
        try:
            generator = torch.Generator(device=place)
        except RuntimeError:
            raise ReproducibleBlockValueError(
                f"device={device!r} has no generator here (no such device or backend); pass "
                "'cpu' (the default, what DataLoader samplers need) or a device this machine has."
            ) from None
        generator.manual_seed(words_to_int(seed_words(sequence)[:2]))  # pragma: no cover
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
        return np.random.default_rng(self._loader_sequence("numpy"))

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

    def _words(self) -> tuple[int, ...]:
        """The encoded key to derive from, with this process's rank folded in if per_rank."""
        if self._per_rank:
            return encode_per_rank(self._key_words, global_rank())
        return self._key_words

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
