"""DataLoader worker seeding: per-worker, per-rank global streams, the parent's root for blocks.

A worker's global generators should differ from its siblings' and from the workers of other
ranks (else "random" augmentations outside blocks repeat), while a block inside a worker must
derive from the *parent's* root seed, so that ``ReproducibleBlock(("sample", index))`` gives a
sample the same augmentation whichever worker, and however many workers, load it. With the fork
start method the worker inherits the root; with spawn or forkserver the library's module state
is gone, so the root has to travel:

* :data:`seed_worker` carries the root seed and the rank of the process that starts the
  workers: the DataLoader pickles its ``worker_init_fn`` when it starts them, and the pickle
  holds the root current at that moment. Without one (a worker process started some other way)
  it falls back to the environment variable :func:`set_seed` exports.
* :class:`WorkerInit` carries the root seed and rank current when it is constructed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from reproducible_block._blocks import atomic as _atomic
from reproducible_block._blocks import stack as _stack
from reproducible_block._sources.registry import registry
from reproducible_block._streams import other_seeders as _other_seeders
from reproducible_block._streams import root as _root
from reproducible_block._streams.derivation import (
    slot,
    worker_bits,
)
from reproducible_block._streams.root import seed_from_environment, validate_seed
from reproducible_block._support.checks import check_int
from reproducible_block._support.distributed import process_rank
from reproducible_block._support.errors import (
    ReproducibleBlockValueError,
)

if TYPE_CHECKING:
    pass

__all__ = ["WorkerInit", "seed_worker"]

_WORKER_SLOTS = ("random", "numpy", "torch")


def _check_worker_id(worker_id: object) -> int:
    return check_int(
        worker_id,
        "worker_id",
        0,
        advice="A DataLoader numbers its workers from 0 and passes the id to worker_init_fn: pass "
        "worker_init_fn=seed_worker and let the DataLoader call it.",
    )


def _seed_worker_globals(worker_id: int, rank: int) -> None:
    """Python ``random``, NumPy's global and torch from (the loader's base seed, worker, rank).

    The DataLoader seeds torch with ``base_seed + worker_id`` before calling ``worker_init_fn``;
    ``base_seed`` comes from the loader's generator, so the streams repeat between runs.
    """
    bits = worker_bits(torch.initial_seed() - worker_id, worker_id, rank)
    sources, states = [], []
    for source in registry.builtin():
        if source.slot is not None and source.slot in _WORKER_SLOTS:
            sources.append(source)
            states.append(source.from_bits(slot(bits, source.slot)))
    with _stack.held("seed_worker()"):
        _atomic.apply_all(sources, _atomic.install, states)  # all or nothing
        _other_seeders.settle()


def _check_rank(rank: object) -> int:
    return check_int(
        rank,
        "the rank a pickled worker_init_fn holds",
        0,
        advice="Pickle only what reproducible_block itself wrote.",
        read=True,
    )


class _SeedWorker:
    """The type of :data:`seed_worker`: a function that carries the root when it is pickled."""

    __slots__ = ("_rank", "_root_seed")

    def __init__(self, root_seed: int | None = None, rank: int | None = None) -> None:
        self._root_seed = root_seed
        self._rank = rank

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled when a DataLoader starts spawn or forkserver workers: the root and the rank
        # of the process starting them travel along.
        return (_SeedWorker, (_root.seed, process_rank()))

    # A copy in this process is the function itself (as for any function): only a pickle, sent
    # to another process, carries the root of the moment.
    def __copy__(self) -> _SeedWorker:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _SeedWorker:
        return self

    def __setstate__(self, state: object) -> None:  # not produced by pickle
        raise ReproducibleBlockValueError("seed_worker carries no state of its own.")

    def __repr__(self) -> str:
        return "<function reproducible_block.seed_worker>"

    def __call__(self, worker_id: int) -> None:
        """A DataLoader ``worker_init_fn``: per-worker global streams, the parent's root.

        In each worker, Python ``random``, NumPy's global RNG and torch are seeded from (the
        loader's base seed for the epoch, the worker id, the global rank), so workers draw
        different global streams from their siblings and from the workers of other ranks, and
        the streams repeat from run to run (give the loader its own ``generator=`` for that).

        Blocks inside the worker derive from the parent's root seed, not the worker's, so
        ``with ReproducibleBlock(("sample", index)):`` in ``Dataset.__getitem__`` gives a sample
        the same draws in every worker, for any ``num_workers``. With the fork start method the
        worker inherits the root; with spawn and forkserver the root current when the DataLoader
        started its workers travels with ``seed_worker`` itself (pickled); otherwise it is read
        from the environment variable ``REPRODUCIBLE_BLOCK_SEED`` that :func:`set_seed` exports.
        If there is none (no ``set_seed`` in the parent), blocks in the worker raise
        :class:`NotSeededError`.

        If you have your own ``worker_init_fn``, call ``seed_worker(worker_id)`` first in it.

        >>> import torch
        >>> from torch.utils.data import DataLoader
        >>> from reproducible_block import seed_worker, set_seed
        >>> _ = set_seed(0)
        >>> loader = DataLoader(range(8), batch_size=4, num_workers=2, worker_init_fn=seed_worker)
        >>> [batch.tolist() for batch in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]
        True
        """
        worker = _check_worker_id(worker_id)
        if self._root_seed is not None:
            root = validate_seed(self._root_seed)
            _root.replace_seed(root)
        elif _root.seed is None:
            exported = seed_from_environment(
                "Unset it, or call set_seed(seed) in the parent process before the DataLoader "
                "starts its workers."
            )
            if exported is not None:
                _root.replace_seed(exported)
        rank = process_rank() if self._rank is None else _check_rank(self._rank)
        _seed_worker_globals(worker, rank)


#: A DataLoader ``worker_init_fn``: ``DataLoader(..., worker_init_fn=seed_worker)``. Per-worker
#: and per-rank global streams in each worker, and the parent's root for blocks (see its call).
seed_worker = _SeedWorker()


class WorkerInit:
    """A picklable ``worker_init_fn`` that carries the root seed of the process that made it.

    It does what :data:`seed_worker` does, but with the root seed and the rank current when the
    ``WorkerInit`` was constructed, with every start method and without the environment. Build
    it after :func:`set_seed` (else it raises :class:`NotSeededError`), for example right where
    the DataLoader is built.

    >>> import pickle
    >>> from reproducible_block import WorkerInit, set_seed
    >>> _ = set_seed(3)
    >>> init = WorkerInit()
    >>> init.root_seed == 3 and pickle.loads(pickle.dumps(init)).root_seed == 3
    True
    """

    __slots__ = ("_rank", "_root_seed")

    def __init__(self) -> None:
        self._root_seed = _root.current_seed("creating a WorkerInit")
        self._rank = process_rank()

    @property
    def root_seed(self) -> int:
        """The root seed that blocks in the workers derive from."""
        return self._root_seed

    def __reduce__(self) -> tuple[Any, ...]:
        return (_worker_init, (self._root_seed, self._rank))

    def __repr__(self) -> str:
        return f"WorkerInit(root_seed={self._root_seed})"

    def __call__(self, worker_id: int) -> None:
        """Run in each worker by the DataLoader: install the root, then seed the globals."""
        worker = _check_worker_id(worker_id)
        _root.replace_seed(self._root_seed)
        _seed_worker_globals(worker, self._rank)


def _worker_init(root_seed: object, rank: object) -> WorkerInit:
    """Unpickle a :class:`WorkerInit`, checking what the pickle holds."""
    init = WorkerInit.__new__(WorkerInit)
    init._root_seed = validate_seed(root_seed)
    init._rank = _check_rank(rank)
    return init
