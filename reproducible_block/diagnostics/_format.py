"""What a ledger line holds, for the writer and the reader alike: the format's names and
versions, block keys as JSON, a Mersenne Twister key's digest, and watched or noted values.

A block record is ``{"key", "entry", "rank", "t", "state", ["per_rank"], ["per_worker"],
["watch"], ["notes"]}``: ``entry`` counts this key's exits in the process that wrote it, ``t`` is
when it was written (``time.monotonic_ns()``, one clock for every process of a machine: it orders
a rank's records across its processes). Each ``state`` entry is ``[fingerprint]``, or ``[crc32,
position, key digest]`` for a Mersenne Twister (see :func:`mt_key_digest`). A watched value is
``[fingerprint]`` or ``[fingerprint, number]`` (see :func:`noted`); ``notes`` maps each name to
the list of its values in the order they were noted. The other records: ``{"root", "t"}`` (a new
root seed), ``{"notes", "rank", "t"}`` (a note outside every block) and ``{"stopped", "t"}`` (a
failure stopped the ledger: what follows in this process was not recorded).

Version 2 keeps every note of a name (version 1 kept the last) and adds ``t``, the ``stopped``
record and the header's ``run`` and ``worker``; readers refuse other versions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from reproducible_block._streams.derivation import DERIVATION_VERSION
from reproducible_block._support.errors import ReproducibleBlockTypeError
from reproducible_block._support.fingerprint import fingerprint, plain_tensor
from reproducible_block._support.transforms import outside_functorch

__all__ = [
    "DERIVATION",
    "DIGEST",
    "LEDGER_FORMAT",
    "LEDGER_VERSION",
    "check_note_name",
    "key_from_json",
    "key_to_json",
    "mt_key_digest",
    "noted",
    "watched",
]

LEDGER_FORMAT = "reproducible_block-ledger"
LEDGER_VERSION = 2
#: The derivation scheme the replay (``_replay.entry_state_images``) implements; the diff replays
#: only ledgers of it.
DERIVATION = f"v{DERIVATION_VERSION}"
#: Keys are told apart by their 2nd and 3rd words; states by a CRC-32 of the rest.
DIGEST = "key-words-64+crc32"


def key_to_json(key: object) -> object:
    """A block key as JSON data: ints and str as they are, a tuple as a list (round-trips).

    >>> import json
    >>> key_from_json(json.loads(json.dumps(key_to_json(("sample", 12))))) == ("sample", 12)
    True
    """
    return list(key) if isinstance(key, tuple) else key


def key_from_json(value: object) -> Any:
    """The block key a :func:`key_to_json` value stands for (a list becomes a tuple)."""
    return tuple(value) if isinstance(value, list) else value


def mt_key_digest(key_words: bytes) -> str:
    """What the ledger records to tell one 624-word Mersenne Twister key from the next: its
    second and third words (``key_words`` is the key as uint32, little-endian), in hex."""
    return key_words[4:12].hex()


def _constant(value: object) -> Callable[[], object]:
    return lambda: value


def watched(watch: object) -> list[tuple[str, Callable[[], object]]]:
    """``watch`` as (name, getter) pairs, checked."""
    if watch is None:
        return []
    allowed = (
        "a dict from names to tensors, nn.Modules (their state_dict is fingerprinted) or "
        "callables with no arguments, e.g. watch={'model': model, 'lr': lambda: scheduler.lr}"
    )
    if not isinstance(watch, Mapping):
        raise ReproducibleBlockTypeError(f"watch={watch!r} is not allowed; pass {allowed}.")
    pairs: list[tuple[str, Callable[[], object]]] = []
    for name, value in watch.items():
        if not isinstance(name, str) or not name:
            raise ReproducibleBlockTypeError(
                f"watch has the name {name!r}; names are non-empty str. Pass {allowed}."
            )
        if isinstance(value, torch.nn.Module):
            pairs.append((name, value.state_dict))
        elif isinstance(value, torch.Tensor):
            pairs.append((name, _constant(value)))
        elif callable(value):
            pairs.append((name, value))
        else:
            raise ReproducibleBlockTypeError(
                f"watch[{name!r}] is {type(value).__name__} {value!r}; pass {allowed}."
            )
    return pairs


def noted(value: object) -> list[object]:
    """A watched or noted value as [fingerprint], or [fingerprint, number] for one number.

    A tensor under ``torch.func`` is read through its wrappers; a sparse one by its values.
    """
    entry: list[object] = [fingerprint(value)]
    number: object = None
    if isinstance(value, torch.Tensor):
        value = plain_tensor(value)
        if value.numel() == 1:
            with outside_functorch():
                number = (value if value.layout is torch.strided else value.to_dense()).item()
    elif isinstance(value, np.ndarray) and value.size == 1:
        number = value.item()
    elif isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        number = value.item() if isinstance(value, np.generic) else value
    if isinstance(number, bool):
        number = int(number)
    if isinstance(number, float) and not math.isfinite(number):
        number = repr(number)  # JSON has no NaN or infinity: 'nan', 'inf', '-inf'
    if isinstance(number, (int, float, str)):
        entry.append(number)
    return entry


def check_note_name(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ReproducibleBlockTypeError(
            f"a note's name must be a non-empty str, such as 'loss'; got "
            f"{type(name).__name__} {name!r}."
        )
