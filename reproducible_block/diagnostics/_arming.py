"""Starting and stopping a block ledger: :func:`record_blocks`, the environment variable
``REPRODUCIBLE_BLOCK_LEDGER`` (armed at import, for a whole run), :func:`ledger_note`, and what a
forked child does with its parent's ledger.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

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
    before the suffix: ``ledger.jsonl`` becomes ``ledger.rank1.jsonl``. Blocks in DataLoader
    worker processes and in forked children are not recorded: record with ``num_workers=0``
    (per-sample blocks give the same numbers whatever ``num_workers``).

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
    with _stack.held("record_blocks()"):
        try:
            ledger._open()
        except OSError as error:
            raise ReproducibleBlockValueError(
                f"cannot write the block ledger at {str(path)!r}: {error}. Pass a path in a "
                "writable folder, such as 'runs/a/ledger.jsonl'."
            ) from None
        previous = set_recording(ledger)
    try:
        yield ledger
    finally:
        with _stack.held("record_blocks()"):
            set_recording(previous)
            ledger.close()


def _start_from_environment() -> None:
    """Arm a ledger for the whole run when ``REPRODUCIBLE_BLOCK_LEDGER`` is set (at import).

    The file opens at the first record, when ``torch.distributed`` is usually initialised.
    """
    path = os.environ.get(LEDGER_ENVIRONMENT_VARIABLE)
    if not path:
        return
    parent = _processes.parent_from_environment()
    _processes.announce(launcher_rank())
    set_recording(BlockLedger(path, from_environment=True, parent=parent))


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
    if recording._from_environment:
        parent_rank = recording._file_rank if recording.path is not None else launcher_rank()
        set_recording(
            BlockLedger(
                recording._requested,
                from_environment=True,
                parent=(os.getppid(), parent_rank),
                forked=True,
            )
        )
        _processes.announce(parent_rank)
    else:
        set_recording(None)


os.register_at_fork(after_in_child=_after_fork_in_child)
_start_from_environment()
