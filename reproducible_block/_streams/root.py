"""The process's root: the seed :func:`set_seed` used, which every derived stream starts from.

The root is an int and nothing else. Seeding the built-in generators with it (the usual recipe)
gives the states ``set_seed`` left, so no snapshot of them is kept: the compat
``Reproducible_Block``, DataLoader workers and checkpoints all start from the seed.
"""

from __future__ import annotations

import os

from reproducible_block._support.checks import check_int
from reproducible_block._support.errors import NotSeededError, ReproducibleBlockValueError

__all__ = [
    "MAX_SEED",
    "SEED_ENVIRONMENT_VARIABLE",
    "current_seed",
    "export_seed",
    "peek_seed",
    "replace_seed",
    "seed_from_environment",
    "validate_seed",
]

#: The largest seed accepted (NumPy's legacy ``np.random.seed`` takes 32 bits).
MAX_SEED = 2**32 - 1

#: Where :func:`set_seed` exports the root seed, so that processes started afterwards (DataLoader
#: workers with the spawn start method, ranks a launcher starts) can rebuild the root.
SEED_ENVIRONMENT_VARIABLE = "REPRODUCIBLE_BLOCK_SEED"

#: The root seed, or None before ``set_seed`` (read directly on the hot path).
seed: int | None = None
#: How many times the root was installed (``set_seed`` twice with one seed makes two roots).
generation = 0
#: torch's initial seed as the library last left it outside blocks (see ``_other_seeders``):
#: when the outermost block finds another, something else seeded torch. None: not yet seeded.
torch_seed: int | None = None
#: The seed this process last wrote to :data:`SEED_ENVIRONMENT_VARIABLE` (``set_seed``,
#: ``load_rng_state``), or None: a root equal to it is this process's own export, whereas a
#: root read from the variable (a launcher's seed, adopted by the first block) is not.
exported: int | None = None


def validate_seed(value: object) -> int:
    """Return ``value`` as an int in ``[0, MAX_SEED]``, or raise a clear error.

    >>> import numpy as np
    >>> validate_seed(np.uint8(7))
    7
    >>> validate_seed(1.0)
    Traceback (most recent call last):
    ...
    reproducible_block.ReproducibleBlockTypeError: seed must be from 0 to MAX_SEED ...
    """
    return check_int(
        value,
        "seed",
        0,
        MAX_SEED,
        "Pass int(seed) if it holds a whole number, seed % (MAX_SEED + 1) to fold a larger "
        "number into range, or None to draw a fresh seed.",
        allowed=f"from 0 to MAX_SEED = {MAX_SEED} (2**32 - 1), an int (NumPy integers too)",
    )


def seed_from_environment(what_to_do: str) -> int | None:
    """The seed in :data:`SEED_ENVIRONMENT_VARIABLE`, or None when it is unset.

    A value that is not a seed raises :class:`ReproducibleBlockValueError`; ``what_to_do`` (a
    sentence) ends the message.

    >>> os.environ[SEED_ENVIRONMENT_VARIABLE] = "7"
    >>> seed_from_environment("Unset it.")
    7
    >>> del os.environ[SEED_ENVIRONMENT_VARIABLE]
    """
    text = os.environ.get(SEED_ENVIRONMENT_VARIABLE)
    if text is None:
        return None
    try:
        return validate_seed(int(text))
    except (ValueError, ReproducibleBlockValueError):
        raise ReproducibleBlockValueError(
            f"the environment variable {SEED_ENVIRONMENT_VARIABLE}={text!r} is not a seed; "
            f"set_seed() writes an int from 0 to MAX_SEED = {MAX_SEED} there. {what_to_do}"
        ) from None


def current_seed(action: str = "entering a ReproducibleBlock") -> int:
    """The root seed, or :class:`NotSeededError` telling the user to call ``set_seed`` first.

    A process without a root (one started by spawn, ``multiprocessing.Pool`` or
    ``torch.multiprocessing.spawn``) takes the one its parent's ``set_seed`` exported.
    """
    if seed is None:
        exported = seed_from_environment(
            "Unset it, or call set_seed(seed) in the parent process before it starts this one."
        )
        if exported is None:
            raise NotSeededError(
                f"{action} needs a root seed, and set_seed() has not been called in this "
                "process nor in the process that started it. Call "
                "reproducible_block.set_seed(seed) once, before any block, at the start of your "
                "program (DataLoader workers: worker_init_fn=seed_worker)."
            )
        global torch_seed
        replace_seed(exported)
        torch_seed = None  # torch is as this process found it: nothing to compare with yet
        return exported
    return seed


def export_seed(value: int | None) -> None:
    """Write ``value`` to :data:`SEED_ENVIRONMENT_VARIABLE` (None: remove it) and remember it as
    this process's own export."""
    global exported
    if value is None:
        os.environ.pop(SEED_ENVIRONMENT_VARIABLE, None)
    else:
        os.environ[SEED_ENVIRONMENT_VARIABLE] = str(value)
    exported = value


def peek_seed() -> int | None:
    """The root seed if there is one, else None (for reports and fixtures)."""
    return seed


def replace_seed(new: int | None) -> int | None:
    """Install ``new`` as the root seed and return the previous one (so callers can restore it)."""
    global seed, generation
    previous, seed = seed, new
    generation += 1
    return previous
