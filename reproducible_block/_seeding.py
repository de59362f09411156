"""``set_seed``: the usual seeding recipe, plus the root snapshot that blocks derive from."""

from __future__ import annotations

import logging
import os
import secrets

import numpy as np

from ._activation import refuse_inside_block
from ._errors import ReproducibleBlockTypeError, ReproducibleBlockValueError
from ._root import Root, replace_root
from ._sources import registry
from .deterministic import configure_deterministic_mode

__all__ = ["MAX_SEED", "SEED_ENVIRONMENT_VARIABLE", "get_random_seed", "set_seed", "validate_seed"]

logger = logging.getLogger("reproducible_block")

#: The largest seed accepted (NumPy's legacy ``np.random.seed`` takes 32 bits).
MAX_SEED = 2**32 - 1

#: Where :func:`set_seed` exports the root seed, so that processes started afterwards (DataLoader
#: workers with the spawn start method) can rebuild the root: see ``seed_worker``.
SEED_ENVIRONMENT_VARIABLE = "REPRODUCIBLE_BLOCK_SEED"


def validate_seed(seed: object) -> int:
    """Return ``seed`` as an int in ``[0, MAX_SEED]``, or raise a clear error.

    >>> validate_seed(np.uint8(7))
    7
    >>> validate_seed(1.0)
    Traceback (most recent call last):
    ...
    reproducible_block._errors.ReproducibleBlockTypeError: seed must be an int ...
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise ReproducibleBlockTypeError(
            f"seed must be an int (NumPy integers too) from 0 to MAX_SEED = {MAX_SEED}; got "
            f"{type(seed).__name__} {seed!r}. Pass int(seed) if it holds a whole number, or "
            "None to draw a fresh seed."
        )
    value = int(seed)
    if not 0 <= value <= MAX_SEED:
        raise ReproducibleBlockValueError(
            f"seed must be from 0 to MAX_SEED = {MAX_SEED} (2**32 - 1); got {value}. "
            f"Use seed % (MAX_SEED + 1) to fold a larger number into range."
        )
    return value


def get_random_seed() -> int:
    """A fresh seed from the operating system's entropy, in ``[0, MAX_SEED]``.

    It does not draw from (or advance) any of the generators the library manages.

    >>> 0 <= get_random_seed() <= MAX_SEED
    True
    """
    return secrets.randbelow(MAX_SEED + 1)


def seed_all_sources(seed: int) -> Root:
    """Seed every managed source with ``seed`` (the recipe) and return the root it gives.

    The caller holds the block lock and decides what to do with the root (and the states).
    """
    sources = registry.active()
    for source in sources:
        source.seed(seed)
    return Root(seed, {source.name: source.capture() for source in sources})


def set_seed(seed: int | None = None, *, deterministic: bool = False) -> int:
    """Seed every managed generator and snapshot the root that blocks derive from.

    Python ``random``, NumPy's global RNG and torch (CPU and every device) are seeded exactly as
    ``random.seed(s); np.random.seed(s); torch.manual_seed(s)`` would, so code outside blocks
    sees the streams it always saw. Generators registered with :func:`register_generator` are
    seeded from (``s``, their name). ``None`` draws a seed with :func:`get_random_seed`, logs it
    at INFO on the ``reproducible_block`` logger and returns it, so the run can be repeated.

    Call it once at the start of the program, outside every block (inside one it raises).
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
    if not isinstance(deterministic, bool):
        raise ReproducibleBlockTypeError(
            f"deterministic must be True or False; got {type(deterministic).__name__} "
            f"{deterministic!r}. True also turns on deterministic kernels for the process."
        )
    if seed is None:
        value = get_random_seed()
        logger.info("set_seed: no seed given, drew %d; call set_seed(%d) to repeat this run",
                    value, value)
    else:
        value = validate_seed(seed)
    with refuse_inside_block("set_seed()"):
        replace_root(seed_all_sources(value))
        if deterministic:
            configure_deterministic_mode()
        os.environ[SEED_ENVIRONMENT_VARIABLE] = str(value)
    return value
