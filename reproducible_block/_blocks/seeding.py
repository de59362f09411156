"""``set_seed`` (the usual seeding recipe, and the root blocks derive from) and the registration of
users' generators."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch

from reproducible_block._blocks import atomic as _atomic
from reproducible_block._blocks import repetition as _repetition
from reproducible_block._blocks import stack as _stack
from reproducible_block._sources import GeneratorSource
from reproducible_block._sources.registry import check_name, make_source, registry
from reproducible_block._streams import other_seeders as _other_seeders
from reproducible_block._streams import root as _root
from reproducible_block._streams.root import (
    MAX_SEED,
    SEED_ENVIRONMENT_VARIABLE,
    seed_from_environment,
    validate_seed,
)
from reproducible_block._support.checks import check_bool
from reproducible_block._support.deterministic import (
    DeterministicSettings,
    configure_deterministic_mode,
)
from reproducible_block._support.distributed import (
    all_gather_objects,
    global_rank,
    owns_process_group,
    process_rank,
    raise_if_refused,
)
from reproducible_block._support.warnings import warn_at_user_line

__all__ = [
    "get_random_seed",
    "register_generator",
    "registered_generators",
    "seed_all_sources",
    "set_seed",
    "unregister_generator",
]

logger = logging.getLogger("reproducible_block")


def get_random_seed() -> int:
    """A fresh seed from the operating system's entropy, in ``[0, MAX_SEED]``.

    It does not draw from (or advance) any of the generators the library manages.

    >>> 0 <= get_random_seed() <= MAX_SEED
    True
    """
    return secrets.randbelow(MAX_SEED + 1)


def seed_all_sources(seed: int) -> None:
    """Seed every managed source with ``seed`` (the recipe) and make it the root.

    All or nothing: if a source's ``seed`` raises, every source gets its state back and the
    root stays as it was. The caller holds the block lock.
    """
    sources = registry.active()
    _atomic.apply_all(sources, _atomic.seed, [seed] * len(sources))
    _root.replace_seed(seed)
    _other_seeders.settle()


_DETERMINISTIC = "True also turns on deterministic kernels for the process."


def _exported_elsewhere() -> int | None:
    """The seed a launcher (or a parent process) put in ``REPRODUCIBLE_BLOCK_SEED``, else None.

    ``set_seed`` exports its own seed there too; a value that this process exported and still
    uses as its root is that export, so ``set_seed()`` called again draws a new seed. A root
    that a block took from the variable (a launcher's seed) is no export: it is taken again.
    """
    exported = seed_from_environment(
        "Set it to the seed every rank should use, or unset it (set_seed() then draws one), or "
        "pass the seed to set_seed(seed)."
    )
    return None if exported == _root.seed == _root.exported else exported


def _propose(seed: object) -> tuple[int, str]:
    """This process's seed and where it came from: ``"given"``, ``"environment"``, ``"drawn"``."""
    if seed is not None:
        return validate_seed(seed), "given"
    exported = _exported_elsewhere()
    if exported is not None:
        return exported, "environment"
    return get_random_seed(), "drawn"


def _settle(reports: Sequence[object], rank: int) -> tuple[int, str, list[int]]:
    """What every rank's proposal (or the message of its refusal) decides for ``rank``.

    A rank that gave a seed keeps it; a rank that gave none takes rank 0's (its own or the one
    rank 0 read from the environment or drew). Returns this rank's seed, where it came from and
    every rank's seed; raises if another rank refused.

    >>> _settle([(5, "drawn"), (9, "drawn"), (7, "given")], 1)
    (5, 'drawn', [5, 5, 7])
    """
    raise_if_refused("set_seed()", reports)
    proposals = [cast("tuple[int, str]", report) for report in reports]
    first = proposals[0]
    seeds = [value if origin == "given" else first[0] for value, origin in proposals]
    value, origin = proposals[rank] if proposals[rank][1] == "given" else first
    return value, origin, seeds


def _agree_with_peers(seed: object, deterministic: object) -> tuple[int, str, list[int]]:
    """``set_seed`` under a process group: one ``all_gather_object``, then seed this process.

    Every rank must call it; a refusal on one rank (a bad seed, an open block) is a refusal on
    every rank, after the collective, so that no rank waits for ever.
    """
    with _stack.held_for_collective("set_seed()", lambda error: all_gather_objects(str(error))):
        failure: Exception | None = None
        proposal: tuple[int, str] | None = None
        try:
            check_bool(deterministic, "deterministic", _DETERMINISTIC)
            with _stack.refuse_inside_block("set_seed()"):
                proposal = _propose(seed)
        except Exception as error:  # every rank must reach the collective, whatever went wrong
            failure = error
        reports = all_gather_objects(proposal if failure is None else str(failure))
        if failure is not None:
            raise failure
        value, origin, seeds = _settle(reports, global_rank())
        # A source may refuse its seed (a user source): installed, then agreed on, and undone
        # on the ranks that installed if another rank refused.
        undo = _Undo()
        try:
            _install(value, deterministic is True)
        except Exception as error:  # every rank must reach the collective
            failure = error
        reports = all_gather_objects(None if failure is None else str(failure))
        if failure is not None:
            undo()  # the sources are back already; deterministic mode may have changed
            raise failure
        try:
            raise_if_refused("set_seed()", reports)
        except BaseException:
            undo()
            raise
    return value, origin, seeds


class _Undo:
    """What :func:`_install` changes, saved; calling it puts everything back (lock held)."""

    def __init__(self) -> None:
        self.sources = registry.active()
        self.states = [source.save() for source in self.sources]
        self.root, self.torch_seed, self.exported = _root.seed, _root.torch_seed, _root.exported
        self.variable = os.environ.get(SEED_ENVIRONMENT_VARIABLE)
        self.settings = DeterministicSettings.current()

    def __call__(self) -> None:
        try:
            _atomic.restore_all(self.sources, self.states)
        finally:
            _root.replace_seed(self.root)
            _root.torch_seed, _root.exported = self.torch_seed, self.exported
            if self.variable is None:
                os.environ.pop(SEED_ENVIRONMENT_VARIABLE, None)
            else:
                os.environ[SEED_ENVIRONMENT_VARIABLE] = self.variable
            self.settings.apply()


def _install(value: int, deterministic: bool) -> None:
    """Seed every source, make ``value`` the root and export it (the caller holds the lock).

    A new run starts: the record of repeated keys starts afresh (see ``repetition``).
    """
    seed_all_sources(value)
    _repetition.forget()
    if deterministic:
        configure_deterministic_mode()
    _root.export_seed(value)


def set_seed(seed: int | None = None, *, deterministic: bool = False) -> int:
    """Seed every managed generator and make ``seed`` the root that blocks derive from.

    Python ``random``, NumPy's global RNG and torch (CPU and every device) are seeded exactly as
    ``random.seed(s); np.random.seed(s); torch.manual_seed(s)`` would, so code outside blocks
    sees the streams it always saw. Generators registered with :func:`register_generator` are
    seeded from (``s``, their name). Returns the seed.

    Call it once at the start of the program, outside every block (inside one it raises). With
    another seeder (Lightning's ``seed_everything``, ``transformers.set_seed``), call it right
    after that one, with the same seed: blocks derive from the root ``set_seed`` gives them, and
    the first block after a seeding the library did not make warns (once).
    ``deterministic=True`` also calls :func:`configure_deterministic_mode` (deterministic
    kernels for the rest of the process; call it before any CUDA work).

    ``None`` (no seed) takes the seed from the environment variable ``REPRODUCIBLE_BLOCK_SEED``
    (:data:`SEED_ENVIRONMENT_VARIABLE`) when a launcher or a parent process set it (a value
    that is not a seed raises); else, under an initialised ``torch.distributed`` process group,
    rank 0 draws one for every rank; else it draws one from the operating system's entropy.
    The seed is logged at INFO on the ``reproducible_block`` logger (by rank 0 only, when the
    ranks share it), and returned, so the run can be repeated.

    Under an initialised process group ``set_seed`` is a collective, with or without a seed:
    call it on every rank (after ``init_process_group``; with NCCL, after
    ``torch.cuda.set_device(local_rank)``). One ``all_gather_object`` shares rank 0's seed
    and checks the ranks: if they end up with different seeds (``set_seed(rank)``), rank 0
    warns, because model initialisation would then differ per rank (use
    ``ReproducibleBlock(key, per_rank=True)`` for what should differ). A refusal on one rank is
    a refusal on every rank. Without a process group, and in a process forked from a rank
    (DataLoader workers, a fork ``Pool``: the group they inherit is their parent's), nothing is
    communicated. Called before ``init_process_group``, ``set_seed()`` on each rank draws its
    own seed unless the launcher exports ``REPRODUCIBLE_BLOCK_SEED``.

    It exports the seed to ``REPRODUCIBLE_BLOCK_SEED``, so that processes started later, such
    as spawned DataLoader workers, can rebuild the root with ``seed_worker``; a second
    ``set_seed()`` in the same process draws a new seed rather than reading its own export.

    >>> import random, numpy as np, torch
    >>> from reproducible_block import set_seed
    >>> set_seed(42)
    42
    >>> drawn = (random.random(), np.random.rand(), torch.rand(1))
    >>> random.seed(42); np.random.seed(42); _ = torch.manual_seed(42)
    >>> drawn[:2] == (random.random(), np.random.rand()) and torch.equal(drawn[2], torch.rand(1))
    True
    """
    if owns_process_group():
        value, origin, seeds = _agree_with_peers(seed, deterministic)
        if global_rank() == 0:
            if len(set(seeds)) > 1:
                warn_at_user_line(_different_seeds(seeds))
            if origin != "given":
                _log_chosen(value, origin, len(seeds))
        return value
    check_bool(deterministic, "deterministic", _DETERMINISTIC)
    value, origin = _propose(seed)
    with _stack.refuse_inside_block("set_seed()"):
        _install(value, deterministic)
    if origin == "drawn" or (origin == "environment" and process_rank() == 0):
        _log_chosen(value, origin, 1)
    return value


def _log_chosen(value: int, origin: str, ranks: int) -> None:
    shared = f" for the {ranks} ranks" if ranks > 1 else ""
    if origin == "environment":
        logger.info(
            "set_seed: no seed given; using %s=%d%s", SEED_ENVIRONMENT_VARIABLE, value, shared
        )
    else:
        drew = "rank 0 drew" if ranks > 1 else "drew"
        logger.info(
            "set_seed: no seed given, %s %d%s; call set_seed(%d) to repeat this run",
            drew,
            value,
            shared,
            value,
        )


def _different_seeds(seeds: Sequence[int]) -> str:
    listed = ", ".join(f"rank {rank}: {seed}" for rank, seed in enumerate(seeds[:8]))
    more = f", ... ({len(seeds)} ranks)" if len(seeds) > 8 else ""
    return (
        f"set_seed() gave the ranks different seeds ({listed}{more}): model initialisation and "
        "everything drawn outside per-rank blocks differ from rank to rank. Pass the same seed "
        "on every rank (or none: rank 0 then chooses one for all), and use "
        "ReproducibleBlock(key, per_rank=True) for what should differ per rank."
    )


def register_generator(
    generator: torch.Generator | np.random.Generator | GeneratorSource[Any], *, name: str
) -> None:
    """Manage a generator you own: :func:`set_seed` seeds it and blocks isolate it.

    ``generator`` is a ``torch.Generator``, an ``np.random.Generator``, or an instance of your
    own :class:`GeneratorSource` subclass (for any other kind of generator). ``set_seed(s)``
    seeds it from (``s``, ``name``), so two registered generators get different streams and the
    order of registration does not matter. Inside a block it is in a state derived from (root,
    key, ``name``) and gets its caller's state back on exit; checkpoints save and load it by
    name. A generator registered after ``set_seed`` keeps its state until the next
    ``set_seed``. torch's and NumPy's global generators are managed already and are refused.

    >>> import torch
    >>> from reproducible_block import ReproducibleBlock, register_generator, set_seed
    >>> from reproducible_block import unregister_generator
    >>> g = torch.Generator()
    >>> register_generator(g, name="doc-augment")
    >>> _ = set_seed(0)
    >>> with ReproducibleBlock("aug"):
    ...     first = torch.rand(2, generator=g)
    >>> with ReproducibleBlock("aug", replay=True):  # again, on purpose
    ...     again = torch.rand(2, generator=g)
    >>> torch.equal(first, again)
    True
    >>> unregister_generator("doc-augment")
    """
    checked = check_name(name)
    with _stack.refuse_inside_block("register_generator()"):
        registry.add(make_source(generator, checked), checked)


def unregister_generator(name: str) -> None:
    """Stop managing the generator registered under ``name``; its state is left as it is."""
    check_name(name)
    with _stack.refuse_inside_block("unregister_generator()"):
        registry.remove(name)


def registered_generators() -> tuple[str, ...]:
    """The names of the generators registered with :func:`register_generator`."""
    return tuple(registry.registered())
