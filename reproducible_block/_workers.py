"""DataLoader workers: seed NumPy and Python ``random`` per worker, and give blocks the root.

A worker's global generators should differ from its siblings' (else NumPy augmentations repeat
across workers), while a block inside a worker must derive from the *parent's* root seed, so that
``ReproducibleBlock(("sample", index))`` gives a sample the same augmentation whichever worker,
and however many workers, load it. With the fork start method the worker inherits the root; with
spawn (or forkserver) the library's module state is gone, so the root seed has to travel:

* :func:`seed_worker` reads it from the environment variable that :func:`set_seed` exports
  (``REPRODUCIBLE_BLOCK_SEED``): the root at the time the workers start.
* :class:`WorkerInit` captures it when it is constructed and travels pickled with the loader:
  the root at the time the loader was built, whatever the start method and environment.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from . import _activation
from ._derivation import slot, worker_bits
from ._distributed import process_rank
from ._errors import ReproducibleBlockTypeError, ReproducibleBlockValueError
from ._root import current_root, peek_root, replace_root
from ._seeding import MAX_SEED, SEED_ENVIRONMENT_VARIABLE, seed_all_sources, validate_seed
from ._sources import registry

__all__ = ["WorkerInit", "seed_worker"]


def _check_worker_id(worker_id: object) -> None:
    if isinstance(worker_id, (bool, np.bool_)) or not isinstance(worker_id, (int, np.integer)):
        raise ReproducibleBlockTypeError(
            f"worker_id must be the int a DataLoader passes to worker_init_fn; got "
            f"{type(worker_id).__name__} {worker_id!r}. Pass worker_init_fn=seed_worker."
        )
    if worker_id < 0:
        raise ReproducibleBlockValueError(
            f"worker_id must be a non-negative int (a DataLoader numbers its workers from 0); got "
            f"{worker_id}. Pass worker_init_fn=seed_worker and let the DataLoader call it."
        )


def _seed_from_environment() -> int | None:
    """The root seed exported by ``set_seed`` in a parent process, or None if there is none."""
    text = os.environ.get(SEED_ENVIRONMENT_VARIABLE)
    if text is None:
        return None
    try:
        return validate_seed(int(text))
    except (ValueError, ReproducibleBlockValueError):
        raise ReproducibleBlockValueError(
            f"the environment variable {SEED_ENVIRONMENT_VARIABLE}={text!r} is not a seed; "
            f"set_seed() writes an int from 0 to MAX_SEED = {MAX_SEED} there. Unset it, or call "
            "set_seed(seed) in the parent process before the DataLoader starts its workers."
        ) from None


def _install_root(seed: int) -> None:
    """Make ``seed`` this process's root, as ``set_seed`` would, without changing any generator."""
    root = peek_root()
    if root is not None and root.seed == seed:
        return
    with _activation.lock:
        sources = registry.active()
        saved = [source.capture() for source in sources]
        try:
            root = seed_all_sources(seed)
        finally:
            _activation._restore_all(sources, saved)
        replace_root(root)


def _seed_globals_per_worker(worker_id: int, rank: int) -> None:
    """Python ``random``, NumPy's global and torch from (the loader's base seed, worker, rank)."""
    bits = worker_bits(torch.initial_seed() - worker_id, worker_id, rank)
    with _activation.lock:
        for source in registry.builtin():
            if source.slot in ("random", "numpy", "torch"):
                source.install(source.derive(slot(bits, source.slot)))


def seed_worker(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: per-worker global seeds, and the parent's root for blocks.

    In each worker, NumPy's global RNG and Python ``random`` are seeded from
    ``torch.initial_seed()`` (which the DataLoader sets to ``base_seed + worker_id``), as
    PyTorch's reproducibility notes recommend, so workers draw different global streams and the
    streams repeat from run to run. torch's own generator is left as the DataLoader seeded it.

    Blocks inside the worker derive from the parent's root seed, not the worker's, so
    ``with ReproducibleBlock(("sample", index)):`` in ``Dataset.__getitem__`` gives a sample the
    same draws in every worker, for any ``num_workers``. With the fork start method the worker
    inherits the root; otherwise it is rebuilt from the environment variable
    ``REPRODUCIBLE_BLOCK_SEED`` that :func:`set_seed` exports, read when the worker starts. If
    neither exists (no ``set_seed`` in the parent), blocks in the worker raise
    :class:`NotSeededError`. With forkserver, whose server process keeps the environment of its
    own start, use :class:`WorkerInit` instead.

    If you have your own ``worker_init_fn``, call ``seed_worker(worker_id)`` first in it.

    >>> import torch
    >>> from torch.utils.data import DataLoader
    >>> from reproducible_block import seed_worker, set_seed
    >>> _ = set_seed(0)
    >>> loader = DataLoader(range(8), batch_size=4, num_workers=2, worker_init_fn=seed_worker)
    >>> [batch.tolist() for batch in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    True
    """
    _check_worker_id(worker_id)
    if peek_root() is None:
        seed = _seed_from_environment()
        if seed is not None:
            _install_root(seed)
    _seed_globals_per_worker(worker_id, process_rank())


class WorkerInit:
    """A picklable ``worker_init_fn`` that carries the root seed of the process that made it.

    It does what :func:`seed_worker` does, but the root seed travels inside the object (pickled
    with the DataLoader), so blocks in workers derive from the root that was current when the
    ``WorkerInit`` was constructed, with every start method (fork, spawn, forkserver) and without
    the environment variable. Construct it after :func:`set_seed` (else it raises
    :class:`NotSeededError`), for example right where the DataLoader is built.

    >>> import pickle
    >>> from reproducible_block import WorkerInit, set_seed
    >>> _ = set_seed(3)
    >>> init = WorkerInit()
    >>> init.root_seed == 3 and pickle.loads(pickle.dumps(init)).root_seed == 3
    True
    """

    __slots__ = ("_root_seed",)

    def __init__(self) -> None:
        self._root_seed = current_root("creating a WorkerInit").seed

    @property
    def root_seed(self) -> int:
        """The root seed that blocks in the workers derive from."""
        return self._root_seed

    def __getstate__(self) -> int:
        return self._root_seed

    def __setstate__(self, state: int) -> None:
        self._root_seed = validate_seed(state)

    def __repr__(self) -> str:
        return f"WorkerInit(root_seed={self._root_seed})"

    def __call__(self, worker_id: int) -> None:
        """Run in each worker by the DataLoader: install the root, then seed the globals."""
        _check_worker_id(worker_id)
        _install_root(self._root_seed)
        _seed_globals_per_worker(worker_id, process_rank())
