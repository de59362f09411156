"""``set_seed`` (the usual seeding recipe, and the root blocks derive from) and the registration of
users' generators."""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any

import numpy as np
import torch

from . import _other_seeders, _root, _stack
from ._checks import check_bool
from ._root import MAX_SEED, SEED_ENVIRONMENT_VARIABLE, validate_seed
from ._sources import GeneratorSource
from ._sources.registry import check_name, make_source, registry
from .deterministic import configure_deterministic_mode

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

    The caller holds the block lock.
    """
    for source in registry.active():
        source.seed(seed)
    _root.replace_seed(seed)
    _other_seeders.settle()


def set_seed(seed: int | None = None, *, deterministic: bool = False) -> int:
    """Seed every managed generator and make ``seed`` the root that blocks derive from.

    Python ``random``, NumPy's global RNG and torch (CPU and every device) are seeded exactly as
    ``random.seed(s); np.random.seed(s); torch.manual_seed(s)`` would, so code outside blocks
    sees the streams it always saw. Generators registered with :func:`register_generator` are
    seeded from (``s``, their name). ``None`` draws a seed with :func:`get_random_seed`, logs it
    at INFO on the ``reproducible_block`` logger and returns it, so the run can be repeated.

    Call it once at the start of the program, outside every block (inside one it raises). With
    another seeder (Lightning's ``seed_everything``, ``transformers.set_seed``), call it right
    after that one, with the same seed: blocks derive from the root ``set_seed`` gives them, and
    the first block after a seeding the library did not make warns (once).
    ``deterministic=True`` also calls :func:`configure_deterministic_mode` (deterministic
    kernels for the rest of the process; call it before any CUDA work).

    It also sets the environment variable ``REPRODUCIBLE_BLOCK_SEED`` (see
    :data:`SEED_ENVIRONMENT_VARIABLE`) to the seed, so that processes started later, such as
    spawned DataLoader workers, can rebuild the root with ``seed_worker``.

    >>> import random, numpy as np, torch
    >>> from reproducible_block import set_seed
    >>> set_seed(42)
    42
    >>> drawn = (random.random(), np.random.rand(), torch.rand(1))
    >>> random.seed(42); np.random.seed(42); _ = torch.manual_seed(42)
    >>> drawn[:2] == (random.random(), np.random.rand()) and torch.equal(drawn[2], torch.rand(1))
    True
    """
    check_bool(deterministic, "deterministic", "True also turns on deterministic kernels for the "
               "process.")
    if seed is None:
        value = get_random_seed()
        logger.info("set_seed: no seed given, drew %d; call set_seed(%d) to repeat this run",
                    value, value)
    else:
        value = validate_seed(seed)
    with _stack.refuse_inside_block("set_seed()"):
        seed_all_sources(value)
        if deterministic:
            configure_deterministic_mode()
        os.environ[SEED_ENVIRONMENT_VARIABLE] = str(value)
    return value


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
    >>> with ReproducibleBlock("aug"):
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
