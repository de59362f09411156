"""Starting and stopping a block ledger: :func:`record_blocks`, the environment variable
``REPRODUCIBLE_BLOCK_LEDGER`` (armed at import, for a whole run), :func:`ledger_note`, and what a
child process does with its parent's ledger: a DataLoader worker records in a file of its own
(forked, it inherits the ledger; spawned, it arms from the environment at import), and an armed
worker leaves its file even when it entered no block, so that the reader can count the workers
that did not record.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from multiprocessing import util
from pathlib import Path

from reproducible_block._blocks import stack as _stack
from reproducible_block._support.distributed import launcher_rank
from reproducible_block._support.errors import ReproducibleBlockValueError
from reproducible_block._support.transforms import dynamo_callback, is_dynamo_compiling
from reproducible_block.diagnostics import _ledger, _processes
from reproducible_block.diagnostics._format import check_note_name
from reproducible_block.diagnostics._ledger import BlockLedger, set_recording

__all__ = ["LEDGER_ENVIRONMENT_VARIABLE", "ledger_note", "record_blocks"]

#: Set it to a path to record the whole run's blocks (one file per rank under torch.distributed).
LEDGER_ENVIRONMENT_VARIABLE = "REPRODUCIBLE_BLOCK_LEDGER"


def ledger_note(name: str, value: object) -> None:
    """Note ``value`` (a tensor, array, number or a container of those) as ``name`` in the
    ledger that is recording, if any (else nothing happens).

    The ledger is the one :func:`record_blocks` (or the ``REPRODUCIBLE_BLOCK_LEDGER``
    environment variable) started: a training step can call ``ledger_note("loss", loss)``
    whether or not a run records. Inside a block the note goes into that block's record (the
    innermost open block, at its exit); outside every block it is written at once as a record
    of its own. A one-element value is also recorded as a number, so the diff can show both.

    A name that is not a non-empty str is refused either way; nothing else raises, nor waits:
    a note from another thread while a block is open goes into that block's record; under
    ``torch.compile`` it runs outside the graph; under ``torch.func`` it reads the wrapped
    values; a sparse tensor is noted by its values. A value that cannot be fingerprinted stops
    the ledger with one warning.

    >>> ledger_note("loss", 0.25) is None  # nothing records here: a no-op
    True
    """
    check_note_name(name)
    active = _ledger.recording
    if active is None:
        return
    if is_dynamo_compiling() or dynamo_callback() is not None:
        from reproducible_block._support.compiled import hidden_call

        hidden_call(active._note, name, value)
    else:
        active._note(name, value)


@contextmanager
def record_blocks(
    path: str | os.PathLike[str], *, watch: Mapping[str, object] | None = None
) -> Iterator[BlockLedger]:
    """Record every block exit in ``path`` (JSON lines) while the ``with`` section runs.

    Each record holds the block's key, the rank, a running count of this key's exits
    (``entry``), and a short fingerprint of each managed generator's state at exit, with the
    position and a key digest for the Mersenne Twister generators (so ``python -m
    reproducible_block diff`` can count what a block drew). ``watch`` maps names to values
    fingerprinted at every block exit: a tensor (its current values), an ``nn.Module`` (its
    ``state_dict()``) or a callable with no arguments (it must not draw random numbers).
    Watching a large model at every exit is slow; :func:`ledger_note` records a value once, in
    the current block's record, e.g. the loss.

    The file is created (parent folders too) or truncated on entry, with a header line (format
    version, root seed, derivation scheme, library versions). Under an initialised
    ``torch.distributed`` group (or with a launcher's ``RANK``), ``.rank{N}`` is inserted
    before the suffix: ``ledger.jsonl`` becomes ``ledger.rank1.jsonl``. Each DataLoader worker
    records its blocks in a file of its own beside it (``ledger.worker0.pid123.jsonl``), with
    the fork and the spawn start methods, persistent or not; the diff reads them with the run
    and pairs records by key, so any ``num_workers`` gives the same ledger. Other child
    processes record nothing (``REPRODUCIBLE_BLOCK_LEDGER`` records them).

    Every line is written whole with one ``os.write`` on an ``O_APPEND`` descriptor, unbuffered:
    a killed run keeps every record of the blocks that had exited (at most the last line is
    torn; readers skip it). A failure to write stops the ledger with a ``RuntimeWarning``; the
    program goes on. For a whole run without code changes, set ``REPRODUCIBLE_BLOCK_LEDGER``.

    >>> import tempfile, torch
    >>> from reproducible_block import ReproducibleBlock, set_seed
    >>> _ = set_seed(0)
    >>> folder = tempfile.mkdtemp()
    >>> with record_blocks(f"{folder}/ledger.jsonl") as ledger:
    ...     for step in range(3):
    ...         with ReproducibleBlock(("step", step)):
    ...             ledger_note("loss", torch.rand(()))
    >>> ledger.records == 3
    True
    """
    ledger = BlockLedger(path, watch)
    saved = {name: os.environ.get(name) for name in _CHILD_VARIABLES}
    with _stack.held("record_blocks()"):
        try:
            ledger._open()
        except OSError as error:
            raise ReproducibleBlockValueError(
                f"cannot write the block ledger at {str(path)!r}: {error}. Pass a path in a "
                "writable folder, such as 'runs/a/ledger.jsonl'."
            ) from None
        previous = set_recording(ledger)
        # Spawned (and forkserver) loader workers arm from these (see _start_from_environment).
        os.environ[_processes.WORKERS_VARIABLE] = str(Path(path).absolute())
        _processes.announce(ledger._file_rank, ledger.run)
    try:
        yield ledger
    finally:
        with _stack.held("record_blocks()"):
            set_recording(previous)
            ledger.close()
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


#: What record_blocks() tells the processes it starts, restored when it ends.
_CHILD_VARIABLES = (_processes.WORKERS_VARIABLE, _processes.PARENT_VARIABLE)


def _start_from_environment() -> None:
    """Arm a ledger for the whole run when ``REPRODUCIBLE_BLOCK_LEDGER`` is set (at import).

    The file opens at the first record, when ``torch.distributed`` is usually initialised.
    """
    workers_path = os.environ.get(_processes.WORKERS_VARIABLE)
    parent = _processes.parent_from_environment()
    run = _processes.run_from_environment() if parent is not None else None
    if workers_path and parent is not None:  # a child of record_blocks(): loader workers record
        set_recording(BlockLedger(workers_path, parent=parent, workers_only=True, run=run))
        return
    path = os.environ.get(LEDGER_ENVIRONMENT_VARIABLE)
    if not path:
        return
    ledger = BlockLedger(path, from_environment=True, parent=parent, run=run)
    _processes.announce(launcher_rank(), ledger.run)
    set_recording(ledger)


def _after_fork_in_child() -> None:
    """A forked child never writes its parent's file (its lines would interleave).

    A ledger from the environment variable starts afresh in the child, lazily: a DataLoader
    worker records nothing, any other child writes its own ``.pid{PID}`` file (the rank file
    stays its parent's). A ledger from :func:`record_blocks` stops in the child.
    """
    recording = _ledger.recording
    if recording is None:
        return
    fd, recording._fd = recording._fd, None
    if fd is not None:
        os.close(fd)
    parent_rank = recording._file_rank if recording.path is not None else launcher_rank()
    if recording._worker is not None:
        parent_rank = recording._file_rank  # a worker's rank is its parent's
    set_recording(
        BlockLedger(
            recording._requested,
            from_environment=recording._from_environment,
            parent=(os.getppid(), parent_rank),
            forked=True,
            workers_only=not recording._from_environment,
            run=recording.run,
        )
    )
    if recording._from_environment:
        _processes.announce(parent_rank, recording.run)


class _Anchor:
    """What multiprocessing's after-fork registry holds (it keeps weak references)."""


_ANCHOR = _Anchor()


def _at_process_start(_: object) -> None:
    """In every multiprocessing child (fork, spawn, forkserver), once its finalizers are
    cleared: at its normal exit, an armed DataLoader worker that has no file yet writes one
    (its header), so that a worker with no file is a worker that did not record."""
    util.Finalize(None, _at_process_exit, exitpriority=100)


def _at_process_exit() -> None:
    recording = _ledger.recording
    if recording is not None and _processes.in_loader_worker():
        try:
            recording._ensure_open()
        except Exception as error:  # a ledger never breaks the program it watches
            recording._stop(error)
    if recording is not None:
        recording.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
util.register_after_fork(_ANCHOR, _at_process_start)
_start_from_environment()
