"""``get_rng_state`` and ``load_rng_state``: every managed stream, saved and resumed bit-exactly.

One entry per global rank, each a dict of plain values (each source writes its own state: see
its ``to_checkpoint``) that ``torch.save`` writes and ``torch.load(..., weights_only=True)``
reads::

    {"format_version": 1, "derivation": DERIVATION_VERSION, "rank": int, "world_size": int,
     "open_blocks": [labels of the blocks open at capture, outermost first],
     "sources": {name: {"kind": str, "state": ...}, ...},     # every managed source
     "root": None or {"seed": int}}

The root is its seed: blocks derive the same streams after a load as before the save.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from reproducible_block._blocks import atomic as _atomic
from reproducible_block._blocks import stack as _stack
from reproducible_block._sources import GeneratorSource
from reproducible_block._sources.registry import registry
from reproducible_block._streams import other_seeders as _other_seeders
from reproducible_block._streams import root as _root
from reproducible_block._streams.derivation import (
    DERIVATION_VERSION,
    new_rank_bits,
    new_rank_named_bits,
    slot,
)
from reproducible_block._streams.root import MAX_SEED
from reproducible_block._support.checks import describe, invalid, read_fields, read_int
from reproducible_block._support.distributed import (
    all_gather_objects,
    global_rank,
    is_distributed,
    raise_if_refused,
    world_size,
)
from reproducible_block._support.errors import (
    BlockUsageError,
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)

__all__ = ["FORMAT_VERSION", "get_rng_state", "load_rng_state", "new_rank_states"]

#: The version of the entries :func:`get_rng_state` writes; :func:`load_rng_state` reads it.
FORMAT_VERSION = 1
_ENTRY_KEYS = (
    "format_version",
    "derivation",
    "rank",
    "world_size",
    "open_blocks",
    "sources",
    "root",
)
_MAX_RANKS = 2**31 - 1

WorldSizePolicy = Literal["error", "derive"]


def _capture_entry() -> dict[str, Any]:
    seed = _root.seed
    return {
        "format_version": FORMAT_VERSION,
        "derivation": DERIVATION_VERSION,
        "rank": global_rank(),
        "world_size": world_size(),
        "open_blocks": list(_stack.open_labels()),
        "sources": {
            source.name: {
                "kind": source.checkpoint_kind,
                "state": source.to_checkpoint(source.get_state()),
            }
            for source in registry.active()
        },
        "root": None if seed is None else {"seed": seed},
    }


def get_rng_state() -> list[dict[str, Any]]:
    """Every managed generator's state and the root, as a list indexed by global rank.

    One entry per process: just one outside ``torch.distributed``; with an initialised process
    group, every rank's entry, gathered with ``all_gather_object`` (a collective: call it on every
    rank, and save the list from one of them; with NCCL, ``torch.cuda.set_device`` first). An
    entry holds Python ``random``, NumPy's global generator, torch's CPU generator, every CUDA
    device, the generators registered with :func:`register_generator` (by name), the root seed
    (so blocks derive the same after a load), the stream derivation version and a format
    version. It holds only tensors, int, float, str, None, lists and dicts:
    ``torch.load(path, weights_only=True)`` reads it.

    Inside a block it captures the block's streams; load them at the same place (see
    :func:`load_rng_state`).

    >>> import torch
    >>> from reproducible_block import get_rng_state, load_rng_state, set_seed
    >>> _ = set_seed(0)
    >>> states = get_rng_state()
    >>> first = torch.rand(3)
    >>> load_rng_state(states)
    >>> torch.equal(first, torch.rand(3))
    True
    """
    failure: Exception | None = None
    entry: dict[str, Any] | None = None
    try:
        with _stack.held("get_rng_state()"):
            entry = _capture_entry()
    except Exception as error:  # every rank must reach the collective, whatever went wrong
        failure = error
    entries = all_gather_objects(entry if failure is None else str(failure))
    if failure is not None:
        raise failure
    raise_if_refused("get_rng_state()", entries)
    return cast("list[dict[str, Any]]", entries)


@dataclass
class _Plan:
    """What a load installs: checked states for every managed source, the root, the place.

    ``portable`` says whether the states are in ``get_state``'s form (from a checkpoint) or in
    ``restore``'s (derived for a new rank).
    """

    sources: list[GeneratorSource[Any]]
    states: list[Any]
    portable: bool
    root_seed: int | None
    open_blocks: tuple[str, ...]


def _check_header(entry: object, index: int, count: int) -> dict[str, Any]:
    where = f"states[{index}]"
    if not isinstance(entry, dict):
        raise invalid(where, entry, "a dict, one entry of what get_rng_state() returned")
    version = entry.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ReproducibleBlockValueError(
            f"{where}['format_version'] is {describe(version)}; this reproducible_block reads "
            f"format_version {FORMAT_VERSION}. A newer version wrote it: upgrade "
            "reproducible_block to load it, or the checkpoint is not from get_rng_state()."
        )
    derivation = entry.get("derivation")
    if type(derivation) is not int or derivation != DERIVATION_VERSION:
        raise ReproducibleBlockValueError(
            f"{where}['derivation'] is {describe(derivation)}: the states were saved by a "
            f"reproducible_block whose streams follow derivation version {derivation!r}, and this "
            f"one derives version {DERIVATION_VERSION}. Blocks would derive other streams after "
            "the load, so it is refused. Resume with the reproducible_block version that saved "
            "the checkpoint (see the stream stability policy in the docs), or start the streams "
            "afresh with set_seed()."
        )
    read_fields(entry, where, _ENTRY_KEYS)
    read_int(entry["rank"], f"{where}['rank']", index, index)
    read_int(entry["world_size"], f"{where}['world_size']", count, count)
    return entry


def _decode_root(data: object, where: str) -> int | None:
    if data is None:
        return None
    fields = read_fields(data, where, ("seed",))
    return read_int(fields["seed"], f"{where}['seed']", 0, MAX_SEED)


def _decode_entry(entry: dict[str, Any], where: str) -> _Plan:
    """Check and decode one entry against the sources managed in this process."""
    labels = entry["open_blocks"]
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise invalid(f"{where}['open_blocks']", labels, "a list of block labels (str)")
    sources = registry.active()
    saved = entry["sources"]
    if not isinstance(saved, dict):
        raise invalid(f"{where}['sources']", saved, "a dict of source states by name")
    names = [source.name for source in sources]
    if set(saved) != set(names):
        missing, extra = sorted(set(names) - set(saved)), sorted(set(saved) - set(names))
        raise ReproducibleBlockValueError(
            f"{where} holds the sources {sorted(saved)} and this process manages "
            f"{sorted(names)} (missing from the states: {missing}; not managed here: {extra}). "
            "Register the same generators, by name, with register_generator() before loading, "
            "and resume on the same kind of devices."
        )
    states = []
    for source in sources:
        item_where = f"{where}['sources'][{source.name!r}]"
        item = read_fields(saved[source.name], item_where, ("kind", "state"))
        if item["kind"] != source.checkpoint_kind:
            if not isinstance(item["kind"], str):
                raise invalid(f"{item_where}['kind']", item["kind"], "a str naming the kind")
            raise ReproducibleBlockValueError(
                f"{item_where}['kind']: the states saved {source.name!r} as a {item['kind']!r} "
                f"and {source.name!r} is a {source.checkpoint_kind!r} here "
                f"({type(source).__name__}). Register the same kind of generator under "
                f"{source.name!r} as when the states were saved, or save them anew."
            )
        states.append(source.from_checkpoint(item["state"], f"{item_where}['state']"))
    root_seed = _decode_root(entry["root"], f"{where}['root']")
    return _Plan(list(sources), states, True, root_seed, tuple(labels))


def new_rank_states(
    root_seed: int, rank: int, sources: Sequence[GeneratorSource[Any]]
) -> list[Any]:
    """The states (``restore``'s form) a rank that a checkpoint has no entry for starts from:
    derived from (the saved root seed, the rank), independent of every block's stream."""
    builtin = new_rank_bits(root_seed, rank)
    return [
        source.from_bits(
            new_rank_named_bits(root_seed, rank, source.name)
            if source.slot is None
            else slot(builtin, source.slot)
        )
        for source in sources
    ]


def _derive_for_new_rank(plan: _Plan, rank: int) -> _Plan:  # pragma: no cover - spawned ranks
    """Fresh states for a rank the checkpoint has no entry for: from (saved root seed, rank)."""
    if plan.root_seed is None:
        raise ReproducibleBlockValueError(
            "on_world_size_change='derive' derives the states of new ranks from the saved root "
            "seed, and states[0] holds none (set_seed() was not called before get_rng_state()). "
            "Resume on the saved number of ranks."
        )
    states = new_rank_states(plan.root_seed, rank, plan.sources)
    return _Plan(plan.sources, states, False, plan.root_seed, plan.open_blocks)


def _check_place(saved: tuple[str, ...]) -> None:
    """Refuse a load in another place than the save: the block stack must be the same."""
    here = _stack.open_labels()
    if here == saved:
        return
    if not saved:
        raise BlockUsageError(
            f"load_rng_state() was called inside an open block ({here[-1]}), and the states were "
            "saved outside every block; the block would undo the load on exit. Call it outside "
            "every block, where get_rng_state() was called."
        )
    raise BlockUsageError(
        f"the states were saved inside the blocks {list(saved)} and load_rng_state() was called "
        f"inside {list(here) or 'no block'}. Load them where they were saved: for a decorated "
        "training function, inside it, before the first draw of the resumed steps."
    )


def _plan(states: object, on_world_size_change: object) -> _Plan:
    """Check everything a load needs, changing nothing."""
    if on_world_size_change not in ("error", "derive"):
        raise ReproducibleBlockValueError(
            f"on_world_size_change={on_world_size_change!r} is not allowed; pass 'error' (the "
            "default) or 'derive'."
        )
    if not isinstance(states, (list, tuple)) or not states:
        raise ReproducibleBlockTypeError(
            f"load_rng_state() takes the list get_rng_state() returned (one dict per rank); got "
            f"{describe(states)}. Save and load that list whole."
        )
    if len(states) > _MAX_RANKS:  # pragma: no cover - a list that long does not fit in memory
        raise invalid("states", states, f"at most {_MAX_RANKS} entries")
    entries = [_check_header(entry, index, len(states)) for index, entry in enumerate(states)]
    rank, size = global_rank(), world_size()
    if len(entries) != size and on_world_size_change == "error":
        raise ReproducibleBlockValueError(
            f"the states were saved by {len(entries)} rank(s) and this run has {size}. Resume on "
            f"{len(entries)} rank(s), or pass on_world_size_change='derive': ranks below "
            f"{min(len(entries), size)} then restore their own states, and new ranks get states "
            "derived from the saved root seed and their rank."
        )
    if rank < len(entries):
        plan = _decode_entry(entries[rank], f"states[{rank}]")
    else:
        plan = _derive_for_new_rank(_decode_entry(entries[0], "states[0]"), rank)
    _check_place(plan.open_blocks)
    return plan


def _tell_peers(failure: Exception | None) -> None:
    """Share whether this rank refused; raise if another did (a collective under distributed)."""
    if not is_distributed():
        return
    reports = all_gather_objects(None if failure is None else str(failure))
    if failure is None:
        raise_if_refused("load_rng_state()", reports)


def load_rng_state(
    states: Sequence[dict[str, Any]], *, on_world_size_change: WorldSizePolicy = "error"
) -> None:
    """Restore what :func:`get_rng_state` saved: each rank installs its own entry.

    Everything is checked before anything changes: the format and derivation versions, the
    number of ranks, each device count, the managed sources (names and kinds) and every field
    of every state. A refused load raises and leaves every generator and the root as they were;
    under ``torch.distributed`` it is refused on every rank if one rank refuses (it is a
    collective there: call it on every rank). A load also exports the loaded root seed, as
    :func:`set_seed` does, for the DataLoader workers started afterwards.

    Load where you saved. States saved outside every block load outside every block (inside one
    it raises :class:`BlockUsageError`). States saved inside blocks, such as a training function
    decorated with ``@ReproducibleBlock("train")``, load inside the same blocks: the resumed
    function carries on the saved streams, and its caller gets its own back when it returns.

    Args:
        states: the list :func:`get_rng_state` returned, indexed by global rank.
        on_world_size_change: ``"error"`` (default) refuses states saved by a different number
            of ranks. ``"derive"`` accepts them: ranks the checkpoint has restore their own
            entry, and each new rank gets states derived from the root seed of ``states[0]`` and
            its rank (deterministic, and independent of every block's stream).

    >>> import io, torch
    >>> from reproducible_block import get_rng_state, load_rng_state, set_seed
    >>> _ = set_seed(0)
    >>> buffer = io.BytesIO()
    >>> torch.save({"rng": get_rng_state()}, buffer)
    >>> first = torch.rand(3)
    >>> _ = buffer.seek(0)
    >>> load_rng_state(torch.load(buffer, weights_only=True)["rng"])
    >>> torch.equal(first, torch.rand(3))
    True
    """
    with _stack.held_for_collective("load_rng_state()", _tell_peers):
        # Checked and installed first, then agreed on: a source may refuse its state only when
        # it is installed, and a rank that installed must undo it if another rank refused.
        try:
            plan = _plan(states, on_world_size_change)
            install = _atomic.install_portable if plan.portable else _atomic.install
            saved = _atomic.apply_all(plan.sources, install, plan.states)
        except Exception as error:  # every rank must reach the collective, whatever went wrong
            _tell_peers(error)
            raise
        try:
            _tell_peers(None)
        except BaseException:
            _atomic.restore_all(plan.sources, saved)
            raise
        _root.replace_seed(plan.root_seed)
        if not _stack.open_count():  # inside a block, the states outside it are left as they are
            _other_seeders.settle()
        _root.export_seed(plan.root_seed)
