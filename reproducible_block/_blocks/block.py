"""``ReproducibleBlock``: a context manager and a decorator that gives code its own stream."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from reproducible_block._blocks import repetition as _repetition
from reproducible_block._blocks import stack as _stack
from reproducible_block._blocks.decorator import decorate
from reproducible_block._blocks.key_from import check_key_from
from reproducible_block._blocks.repetition import SETTLED as _SETTLED  # read on the hot path
from reproducible_block._blocks.repetition import checking as _checking  # hot path too
from reproducible_block._blocks.repetition import record as _record  # hot path too
from reproducible_block._blocks.states import (
    block_states,
    checked_source_names,
    clear_cache,
    derivation_tail,
    derive_states,
    prepare_states,
    validate_and_encode,
    validate_and_encode_all,
)
from reproducible_block._blocks.states import derived as _cache  # read on the hot path
from reproducible_block._blocks.states import plain_keys as _plain_keys  # hot path too
from reproducible_block._sources.registry import Selection, registry
from reproducible_block._streams import root as _root
from reproducible_block._streams.keys import BlockKey
from reproducible_block._support.checks import check_bool
from reproducible_block._support.distributed import check_per_rank
from reproducible_block._support.errors import (
    BlockUsageError,
    ReproducibleBlockTypeError,
)
from reproducible_block._support.transforms import (
    dynamo_callback,
    is_dynamo_compiling,
)

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["ReproducibleBlock"]

# The caches live in states. _plain_keys and clear_cache, imported above, are also reached
# through this module: tests/streams/test_golden_streams.py clears them here, and it is never
# edited.

F = TypeVar("F", bound=Callable[..., Any])


class ReproducibleBlock:
    """Run code in a random stream that depends only on the root seed and ``block_seed``.

    On entry the caller's state of every managed generator (Python ``random``, NumPy's global
    RNG, torch CPU, every accelerator device, registered generators) is saved and the block's
    state is installed: a pure function of the root seed given to :func:`set_seed` and the key,
    whatever ran before. On exit (normal, exception or ``KeyboardInterrupt``) the caller's state
    is restored exactly, so the code outside continues as if the block had not run.

    Args:
        block_seed: the key: a non-negative int, a str, or a flat tuple of those, such as
            ``("epoch", 3)``. Distinct keys give independent streams; the key is part of the
            code, not a hyper-parameter (change the root seed to vary a run).
        sources: names of the sources to manage (for example ``("torch",)``); ``None``, the
            default, manages every source. Unnamed sources are left as they are. An
            accelerator type that this machine lacks (``"cuda"`` on a CPU machine) is a no-op.
        enabled: ``False`` turns the block into a no-op (handy to compare with and without).
        per_rank: ``True`` folds the global ``torch.distributed`` rank (the launcher's ``RANK``
            without an initialised process group, else 0) into the key, read at each entry:
            every rank gets its own stream, for dropout or augmentation that should differ per
            rank. The default gives every rank the same stream, as model initialisation needs.
            A process group (``dist.new_group(ranks)``) folds the rank *within that group*
            instead, by the same rule: rank ``r`` of the group gets the stream global rank ``r``
            gets with ``True``. With tensor-parallel groups {0, 1}, {2, 3} and data-parallel
            groups {0, 2}, {1, 3}, ``per_rank=data_parallel_group`` gives dropout that is the
            same within each tensor-parallel group and differs across the replicas. Entering
            the block on a rank outside the group raises.
        per_worker: ``True`` folds the DataLoader worker id (0 in the main process) into the
            key, read at each entry: every worker gets its own stream, for an
            ``IterableDataset`` whose ``__iter__`` runs once per worker.
        key_from: for a decorator only: a key part taken from each call's arguments, so that
            every call has a stream of its own. The name of an argument
            (``@ReproducibleBlock("step", key_from="step")`` runs each call in
            ``("step", step)``; a tuple key gets the part appended), or a callable that takes
            the call's arguments (without a method's ``self``) and returns a key part or a
            tuple of parts. Entering such a block with ``with`` raises ``BlockUsageError``.
        replay: ``True`` says that entering the block again replays its stream on purpose (an
            evaluation with a fixed mask, re-running a section to reproduce a result): such a
            block is never warned about. By default, a block entered again with a key it
            already used under the current root, that draws, warns once per key with a
            :class:`~reproducible_block.RepetitionWarning` (a decorated per-step function, a
            ``with`` block in a loop whose key lacks the epoch, one key at two places).

    Nesting: an inner block's stream equals the same key at top level, and after it exits the
    outer block continues where it was.

    As a decorator (``@ReproducibleBlock(key)``) every call starts the block afresh. Put it above
    ``@staticmethod``/``@classmethod``. On a class, construction (``__init__``) runs in the
    block and the class stays itself: ``type(Net()) is Net``, instances pickle. A function
    called once per epoch that needs a stream per epoch uses a tuple key inside:
    ``with ReproducibleBlock(("train", epoch)):``, or ``key_from="epoch"``. A decorated
    generator, coroutine or async
    generator keeps the block's stream across ``yield`` and ``await``: its draws continue on
    each resume, and none leak into the caller's stream.

    Threads: the global generators are process-wide, so blocks are serialised: while a block is
    open in one thread, a block entered in another thread waits for it to close (at most
    :func:`set_block_wait_timeout` seconds). Code outside blocks in other threads still shares
    the global generators.

    Compiled code and transforms: under ``torch.compile`` a block switches streams outside the
    graph (a graph break at its entry and exit; a ``with`` inside a compiled function makes
    dynamo run that function eagerly), and compiled code draws its own numbers from the stream.
    Blocks work inside ``torch.func.grad``, ``vmap`` and ``functional_call``.

    Copies and pickles of a block are new blocks with the same key and options. A copy of a
    block with ``per_rank=<group>`` shares the group; pickling one raises ``TypeError`` (a
    process group lives in the process that made it: build the block where it is used).

    The same key in another run gives the same numbers, whatever ran before the block:

    >>> import torch
    >>> from reproducible_block import ReproducibleBlock, set_seed
    >>> _ = set_seed(0)
    >>> with ReproducibleBlock("classifier"):
    ...     first = torch.nn.Linear(4, 2).weight
    >>> _ = set_seed(0)  # another run (a fresh record of keys: not a repetition)
    >>> _ = torch.rand(100)  # in which other code draws first
    >>> with ReproducibleBlock("classifier"):
    ...     second = torch.nn.Linear(4, 2).weight
    >>> torch.equal(first, second)
    True
    """

    __slots__ = (
        "__weakref__",
        "_enabled",
        "_frames",
        "_key",
        "_key_bytes",
        "_key_from",
        "_per_rank",
        "_per_worker",
        "_replay",
        "_source_names",
    )

    def __init__(
        self,
        block_seed: BlockKey,
        *,
        sources: Iterable[str] | None = None,
        enabled: bool = True,
        per_rank: bool | ProcessGroup = False,
        per_worker: bool = False,
        key_from: str | Callable[..., Any] | None = None,
        replay: bool = False,
    ) -> None:
        found_key = _plain_keys.get(block_seed) if type(block_seed) is str else None
        if found_key is None:
            if is_dynamo_compiling():  # built in traced code: the key is encoded outside it
                from reproducible_block._support.compiled import hidden_call

                found_key = hidden_call(validate_and_encode, block_seed)
            else:
                found_key = validate_and_encode(block_seed)
        self._key, self._key_bytes = found_key
        self._source_names = checked_source_names(sources)
        if enabled is not True and enabled is not False:
            check_bool(enabled, "enabled")
        if per_rank is not False and per_rank is not True:
            per_rank = check_per_rank(per_rank)
        if per_worker is not False:
            check_bool(
                per_worker, "per_worker", "True gives every DataLoader worker its own stream."
            )
        self._key_from = key_from if key_from is None else check_key_from(key_from)
        if replay is not False:
            check_bool(replay, "replay", "True marks a block that replays its stream on purpose.")
        self._replay = replay
        self._enabled = enabled
        self._per_rank = per_rank
        self._per_worker = per_worker
        self._frames: list[_stack.Frame] = []

    @classmethod
    def _checked(
        cls, key: BlockKey, key_bytes: bytes, source_names: tuple[str, ...] | None
    ) -> ReproducibleBlock:
        """``ReproducibleBlock(key, sources=source_names)`` for a key already validated and
        encoded, and sources already checked (a batch's blocks: ``_blocks.batch``)."""
        block = cls.__new__(cls)
        block._key, block._key_bytes, block._source_names = key, key_bytes, source_names
        block._enabled, block._per_rank, block._per_worker = True, False, False
        block._key_from, block._replay = None, False
        block._frames = []
        return block

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy or a pickle is a new, closed block: never the open frames, nor the cached
        # sources (which hold the process's generators themselves).
        if not isinstance(self._per_rank, bool):
            raise ReproducibleBlockTypeError(
                f"cannot pickle {self!r}: a torch.distributed process group exists only in the "
                "process that made it. Build the block in the process that enters it (copies "
                "are fine: they share the group), or pickle a block with per_rank=True."
            )
        return (_rebuild, self._options())

    def _options(self) -> tuple[Any, ...]:
        return (
            self._key,
            self._source_names,
            self._enabled,
            self._per_rank,
            self._per_worker,
            self._key_from,
            self._replay,
        )

    def __copy__(self) -> ReproducibleBlock:
        return _rebuild(*self._options())

    def __deepcopy__(self, memo: object) -> ReproducibleBlock:
        return _rebuild(*self._options())  # the key and options are immutable; a group is shared

    @property
    def key(self) -> BlockKey:
        """The block's key, as validated (NumPy integers become int)."""
        return self._key

    @property
    def enabled(self) -> bool:
        """Whether the block switches streams (``False``: a no-op)."""
        return self._enabled

    @property
    def per_rank(self) -> bool | ProcessGroup:
        """Whether the global rank (True) or the rank within a process group (the group) is
        folded into the key: a stream per rank."""
        return self._per_rank

    @property
    def per_worker(self) -> bool:
        """Whether the DataLoader worker id is folded into the key (a stream per worker)."""
        return self._per_worker

    @property
    def replay(self) -> bool:
        """Whether entering the block again replays its stream on purpose (never warned about)."""
        return self._replay

    @property
    def key_from(self) -> str | Callable[..., Any] | None:
        """Where a decorated call takes a part of its key from (None: the key is whole)."""
        return self._key_from

    def __repr__(self) -> str:
        extra = "" if self._source_names is None else f", sources={self._source_names!r}"
        extra += "" if self._enabled else ", enabled=False"
        if self._per_rank is not False:  # a group shows alike on every rank and in every run
            extra += ", per_rank=True" if self._per_rank is True else ", per_rank=<process group>"
        extra += ", per_worker=True" if self._per_worker else ""
        extra += "" if self._key_from is None else f", key_from={self._key_from!r}"
        extra += ", replay=True" if self._replay else ""
        return f"ReproducibleBlock({self._key!r}{extra})"

    def _for_call(self, key: BlockKey) -> ReproducibleBlock:
        """A block with this one's options and ``key`` (a call's key, see ``key_from``)."""
        return ReproducibleBlock(
            key,
            sources=self._source_names,
            per_rank=self._per_rank,
            per_worker=self._per_worker,
            replay=self._replay,
        )

    def _refuse_key_from(self, use: str) -> BlockUsageError:
        return BlockUsageError(
            f"{self!r} was {use}, but key_from takes a part of the key from the arguments of "
            "each call of a decorated function, and here there is no call. Put the part in a "
            "tuple key instead, such as ReproducibleBlock(('step', step)), or decorate the "
            "function."
        )

    def _states(self) -> tuple[Selection, list[Any]]:
        """The sources the block manages and the states to install (derived if not cached)."""
        if self._key_from is not None:
            raise self._refuse_key_from("entered with `with`")
        return block_states(self._key_bytes, self._source_names, self._per_rank, self._per_worker)

    def _open(self, depth: int = 1) -> _stack.Frame:
        """Switch to the block's stream; :func:`_repetition.leave` switches back. The user's
        code is ``depth`` frames above the caller (a repeated key's place; a guess)."""
        if self._key_from is not None:
            raise self._refuse_key_from("entered with `with`")
        tail = self._key_bytes
        if self._per_rank or self._per_worker:
            tail = derivation_tail(tail, self._per_rank, self._per_worker)
        selection, states = block_states(tail, self._source_names, False, False)
        frame = _stack.enter(self, selection.sources, states)
        if _record.get(tail) is not _SETTLED and not self._replay:
            _repetition.entered(self, tail, frame, depth + 1)
        return frame

    def _target(self) -> tuple[bytes, Selection, list[Any]] | None:
        """What an entry installs: (the derivation tail, the sources, their states), as
        ``__enter__`` finds them; None where an entry is more than a switch (disabled, a
        ``key_from``, compiled code). ``_blocks.batch`` switches from block to block with it."""
        if (
            not self._enabled
            or self._key_from is not None
            or is_dynamo_compiling()
            or dynamo_callback() is not None
        ):
            return None
        tail = self._key_bytes
        if self._per_rank or self._per_worker:
            tail = derivation_tail(tail, self._per_rank, self._per_worker)
        selection, states = block_states(tail, self._source_names, False, False)
        return tail, selection, states

    def __enter__(self) -> ReproducibleBlock:
        if self._enabled:
            if is_dynamo_compiling() or dynamo_callback() is not None:  # inline: "repeated key"
                from reproducible_block._support.compiled import hidden_call

                hidden_call(self._enter_eagerly)
                return self
            # _open() with _states() inlined (keep them alike with states.block_states): the hot
            # path of every block, the `make bench` row "repeated key".
            if self._key_from is not None:
                raise self._refuse_key_from("entered with `with`")
            seed = _root.seed
            if seed is None:
                seed = _root.current_seed()  # from the parent's set_seed, or NotSeededError
            selection = registry.selections.get(self._source_names)
            if selection is None:
                selection = registry.select(self._source_names)
            tail = self._key_bytes
            if self._per_rank or self._per_worker:
                tail = derivation_tail(tail, self._per_rank, self._per_worker)
            states = _cache.get((seed, tail, selection))
            if states is None:
                states = derive_states(seed, tail, selection)
            frame = _stack.enter(self, selection.sources, states)
            self._frames.append(frame)
            if _record.get(tail) is not _SETTLED and not self._replay:  # see _repetition
                _repetition.entered(self, tail, frame, 1)
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if self._enabled:
            if is_dynamo_compiling() or dynamo_callback() is not None:
                from reproducible_block._support.compiled import hidden_call

                hidden_call(self._close_last)
                return
            # _close_last(), inlined.
            frames = self._frames
            if not frames:
                raise self._not_open()
            if _checking:  # a repeated key's first repetition is open: _repetition.leave
                _repetition.leave(frames.pop())
            else:
                _stack.leave(frames.pop())

    def _enter_eagerly(self) -> None:
        """``__enter__``, without the check for torch.compile."""
        self._frames.append(self._open())

    def _close_last(self) -> None:
        """Close the frame the last entry opened."""
        if not self._frames:
            raise self._not_open()
        _repetition.leave(self._frames.pop())

    def _not_open(self) -> BlockUsageError:
        return BlockUsageError(
            f"{self!r}.__exit__() was called, but the block is not open. Use it as "
            "`with block:` (which enters and exits it) or as a decorator."
        )

    @classmethod
    def prepare(
        cls,
        keys: Iterable[BlockKey],
        *,
        sources: Iterable[str] | None = None,
        per_rank: bool = False,
        per_worker: bool = False,
    ) -> None:
        """Derive the states of the blocks with these keys now, so entering them is cheap.

        A block with a key not seen recently derives its states on entry (tens of µs between
        two samples' work, when none of that code is in the CPU's caches); deriving a whole
        batch's keys in one go costs a fraction of that, and each block then enters like a
        repeated key. Call it with the options the blocks will use, for example in
        ``Dataset.__getitems__``, which the DataLoader calls with a batch of indices. The
        states are cached (the cache holds the last 256 blocks), the streams are the same
        either way, and no generator changes.

        >>> import torch
        >>> from reproducible_block import ReproducibleBlock, set_seed
        >>> _ = set_seed(0)
        >>> ReproducibleBlock.prepare([("sample", index) for index in range(4)])
        >>> with ReproducibleBlock(("sample", 2)):
        ...     prepared = torch.rand(2)
        >>> ReproducibleBlock.clear_prepared()
        >>> with ReproducibleBlock(("sample", 2), replay=True):  # again, on purpose
        ...     derived = torch.rand(2)
        >>> torch.equal(prepared, derived)
        True
        """
        source_names = checked_source_names(sources)
        checked_per_rank = check_per_rank(per_rank)
        check_bool(per_worker, "per_worker", "True gives every DataLoader worker its own stream.")
        checked = validate_and_encode_all(keys)  # every key checked before any is derived
        encoded = [key_bytes for _, key_bytes in checked]
        prepare_states(encoded, source_names, checked_per_rank, per_worker)

    @staticmethod
    def clear_prepared() -> None:
        """Forget every cached derived state (they are derived again on demand)."""
        clear_cache()

    # The decorator.

    def __call__(self, wrapped: F) -> F:
        """Decorate ``wrapped`` so that every call runs in this block (see the class doc)."""
        return decorate(self, wrapped)


def _rebuild(
    key: BlockKey,
    sources: Sequence[str] | None,
    enabled: bool,
    per_rank: bool | ProcessGroup,
    per_worker: bool,
    key_from: str | Callable[..., Any] | None = None,
    replay: bool = False,
) -> ReproducibleBlock:
    return ReproducibleBlock(
        key,
        sources=sources,
        enabled=enabled,
        per_rank=per_rank,
        per_worker=per_worker,
        key_from=key_from,
        replay=replay,
    )
