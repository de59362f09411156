"""``RNGState``: every managed stream as a ``state_dict`` / ``load_state_dict`` object.

The protocol ``torch.distributed.checkpoint`` (its ``Stateful``), Lightning callbacks and
accelerate's ``register_for_checkpointing`` share. Its state is a dict of plain values::

    {"format_version": 1, "states": bytes}   # torch.save of get_rng_state()'s list

One ``bytes`` item rather than the nested list: ``torch.distributed.checkpoint`` flattens nested
dicts into one item per leaf and loads into the keys of the state it is given, so a checkpoint of
2 ranks would not load into the state of 3; a single item loads whatever the world size was.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from typing import Any

import torch

from reproducible_block._checkpoint import WorldSizePolicy, get_rng_state, load_rng_state
from reproducible_block._support.checks import describe, read_fields
from reproducible_block._support.distributed import all_gather_objects, raise_if_refused
from reproducible_block._support.errors import (
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)

__all__ = ["RNGState"]

_FORMAT_VERSION = 1
_KEYS = ("format_version", "states")


def _decode(state_dict: object) -> tuple[list[Any], bytes]:
    """The list of rank entries a state holds, and the digest of its bytes; changes nothing."""
    if not isinstance(state_dict, Mapping):
        raise ReproducibleBlockTypeError(
            f"RNGState.load_state_dict() takes the dict RNGState.state_dict() returned; got "
            f"{describe(state_dict)}."
        )
    fields = read_fields(dict(state_dict), "the RNGState state", _KEYS)
    version, blob = fields["format_version"], fields["states"]
    if type(version) is not int or version != _FORMAT_VERSION:
        raise ReproducibleBlockValueError(
            f"the RNGState state's 'format_version' is {describe(version)}; this "
            f"reproducible_block reads format_version {_FORMAT_VERSION}. A newer version wrote "
            "it: upgrade reproducible_block to load it."
        )
    if not isinstance(blob, bytes):
        raise ReproducibleBlockValueError(
            f"the RNGState state's 'states' is {describe(blob)}; expected the bytes "
            "RNGState.state_dict() wrote. Save and load the state whole."
        )
    try:
        states = torch.load(io.BytesIO(blob), weights_only=True)
    except Exception as error:
        raise ReproducibleBlockValueError(
            f"the RNGState state's 'states' ({len(blob)} bytes) cannot be read "
            f"({type(error).__name__}: {error}); the checkpoint is damaged or truncated."
        ) from error
    return states, hashlib.sha256(blob).digest()


def _agree(reports: list[Any]) -> None:
    """Refuse on every rank when the ranks did not load the same state (from
    :func:`all_gather_objects`: a digest, or the message of a rank's refusal)."""
    raise_if_refused("RNGState.load_state_dict()", reports)
    others = [rank for rank, digest in enumerate(reports) if digest != reports[0]]
    if others:
        raise ReproducibleBlockValueError(
            f"RNGState.load_state_dict() was given another state on rank(s) {others} than on "
            "rank 0, so the ranks would disagree on the root and on each other's streams; no "
            "rank changed its generators. Load the same checkpoint on every rank."
        )


class RNGState:
    """Every managed stream as an object that checkpoint frameworks save and load.

    ``state_dict()`` returns :func:`get_rng_state` (every rank's entry, the root seed) in one
    dict of plain values that ``torch.load(path, weights_only=True)`` reads; ``load_state_dict``
    restores it with :func:`load_rng_state`, the same contract: each rank its own entry, checked
    before anything changes, all or nothing. Pass it as it is to
    ``torch.distributed.checkpoint.save`` / ``load`` (a ``Stateful``) or to accelerate's
    ``Accelerator.register_for_checkpointing``; for Lightning, mix it into a callback:
    ``class RNGCallback(RNGState, lightning.pytorch.Callback): pass``.

    Under ``torch.distributed`` both methods are collectives: every rank calls them, as the
    frameworks do. ``state_dict`` gathers every rank's entry on every rank, so whichever rank
    writes the checkpoint writes them all. ``load_state_dict`` refuses on every rank if one
    rank refuses, or if the ranks were given different states.

    Args:
        on_world_size_change: as for :func:`load_rng_state`: ``"error"`` (default) refuses a
            state saved by another number of ranks; ``"derive"`` restores the ranks it has and
            derives new ranks' states from its root seed.

    >>> import io, torch
    >>> from reproducible_block import RNGState, set_seed
    >>> _ = set_seed(0)
    >>> rng = RNGState()
    >>> buffer = io.BytesIO()
    >>> torch.save({"rng": rng.state_dict()}, buffer)
    >>> first = torch.rand(3)
    >>> _ = buffer.seek(0)
    >>> rng.load_state_dict(torch.load(buffer, weights_only=True)["rng"])
    >>> torch.equal(first, torch.rand(3))
    True
    """

    def __init__(self, *, on_world_size_change: WorldSizePolicy = "error") -> None:
        if on_world_size_change not in ("error", "derive"):
            raise ReproducibleBlockValueError(
                f"on_world_size_change={on_world_size_change!r} is not allowed; pass 'error' "
                "(the default) or 'derive'."
            )
        self.on_world_size_change: WorldSizePolicy = on_world_size_change

    def __repr__(self) -> str:
        return f"{type(self).__name__}(on_world_size_change={self.on_world_size_change!r})"

    def state_dict(self) -> dict[str, Any]:
        """Every rank's streams and the root seed, as ``{"format_version": 1, "states": bytes}``
        (a collective under ``torch.distributed``: call it on every rank)."""
        buffer = io.BytesIO()
        torch.save(get_rng_state(), buffer)
        return {"format_version": _FORMAT_VERSION, "states": buffer.getvalue()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved: each rank its own entry (a collective under
        ``torch.distributed``; a refusal on one rank is a refusal on every rank)."""
        failure: Exception | None = None
        digest: bytes | None = None
        states: list[Any] = []
        try:
            states, digest = _decode(state_dict)
        except Exception as error:  # every rank must reach the collective, whatever went wrong
            failure = error
        reports = all_gather_objects(digest if failure is None else str(failure))
        if failure is not None:
            raise failure
        _agree(reports)
        load_rng_state(states, on_world_size_change=self.on_world_size_change)
