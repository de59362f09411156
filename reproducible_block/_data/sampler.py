""":class:`ReproducibleSampler`: a data order that is a pure function of (root seed, key, epoch).

The global order of epoch ``e`` is ``torch.randperm(n, generator=torch_generator((key, e)))``,
the same for any number of DataLoader workers, any world size and any resume point. Rank ``r``
of ``W`` takes every ``W``-th position of it; the state is the epoch and the global position
(how many samples of the epoch's global sequence all ranks together have taken).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from reproducible_block._blocks.states import validate_and_encode
from reproducible_block._data.generators import torch_generator
from reproducible_block._streams.keys import BlockKey
from reproducible_block._support.checks import check_bool, check_int, describe
from reproducible_block._support.distributed import is_distributed
from reproducible_block._support.errors import (
    ReproducibleBlockTypeError,
    ReproducibleBlockValueError,
)

__all__ = ["ReproducibleSampler", "SampleIndex", "epoch_key"]

_STATE_FORMAT = 1
_STATE_FIELDS = ("format", "epoch", "position", "length", "key", "shuffle")


def epoch_key(key: BlockKey, *parts: int) -> BlockKey:
    """``key`` with ``parts`` appended: ``("order", 3)``, or ``("order", "val", 3)`` for a tuple.

    >>> epoch_key("order", 3), epoch_key(("order", "val"), 3, 7)
    (('order', 3), ('order', 'val', 3, 7))
    """
    return (*key, *parts) if isinstance(key, tuple) else (key, *parts)


class SampleIndex(int):
    """An ``int`` that carries the epoch of the pass that yielded it.

    :class:`ReproducibleSampler` yields these, so that a plain dataset indexes with them as with
    any int (lists, tensors, NumPy arrays; ``default_collate`` makes a tensor of them) while
    :class:`ReproducibleDataset` reads ``index.epoch`` to give the sample a new block each
    epoch. Arithmetic returns plain ints; pickles (spawn workers) keep the epoch.

    >>> import pickle
    >>> index = SampleIndex(5, epoch=2)
    >>> index == 5, index.epoch, [10, 11, 12, 13, 14, 15][index]
    (True, 2, 15)
    >>> pickle.loads(pickle.dumps(index)).epoch
    2
    """

    epoch: int

    def __new__(cls, value: int, epoch: int) -> SampleIndex:
        if type(value) is not int or value < 0:  # a sampler's ints need no check's text
            value = check_int(value, "a SampleIndex's value")
        if type(epoch) is not int or epoch < 0:
            epoch = check_int(epoch, "a SampleIndex's epoch")
        index = super().__new__(cls, value)
        index.epoch = epoch
        return index

    def __reduce__(self) -> tuple[Any, ...]:
        return (SampleIndex, (int(self), self.epoch))

    def __repr__(self) -> str:
        return f"SampleIndex({int(self)}, epoch={self.epoch})"


class _Pass:
    """One pass of a sampler over an epoch: where it started, how many it yields, how far."""

    __slots__ = ("count", "epoch", "start", "yielded")

    def __init__(self, epoch: int, start: int, count: int) -> None:
        self.epoch = epoch
        self.start = start
        self.count = count
        self.yielded = 0


def _length_of(data_source: object) -> int:
    if isinstance(data_source, Sized):
        return check_int(
            len(data_source),
            "len(data_source)",
            advice="Pass a dataset with a length, or the length itself.",
        )
    if isinstance(data_source, (int, np.integer)) and not isinstance(data_source, bool):
        return check_int(data_source, "data_source", advice="Pass a length of 0 or more.")
    raise ReproducibleBlockTypeError(
        f"data_source must be a dataset with a length (a Sized, such as a map-style Dataset) "
        f"or the length as an int; got {describe(data_source)}. An IterableDataset has no "
        "indices to order: wrap it in ReproducibleIterableDataset instead."
    )


class ReproducibleSampler(Sampler[int]):
    """A data order that depends only on (root seed, key, epoch), for any workers and world size.

    The global order of epoch ``e`` is ``torch.randperm(n, generator=torch_generator((key,
    e)))`` (with a tuple key, ``key + (e,)``); ``shuffle=False`` gives ``range(n)``. It does not
    depend on ``num_workers``, persistent workers, other draws, the world size or where a run
    resumed: the root comes from :func:`set_seed` (read when a pass starts).

    Epochs: :meth:`set_epoch` sets the epoch of the next pass (Lightning and accelerate call it).
    Without it, every new pass takes the next epoch (0, 1, 2, ...), so a forgotten
    ``set_epoch`` never repeats an order. A pass starts at its first index (an iterator that is
    never advanced takes no epoch; the DataLoader makes and drops one such iterator).

    Distributed without a second object: ``num_replicas`` and ``rank`` default to the world size
    and rank of the initialised default process group (else 1 and 0; nothing is initialised).
    Rank ``r`` of ``W`` takes global positions ``p + r, p + r + W, ...`` of the epoch's global
    sequence (``p``: the resume position, 0 normally): the union of what the ranks take is the
    same global sequence for every world size. When ``n % W != 0``, ``drop_last=False`` pads
    by wrapping to the start of the epoch's order so that every rank takes the same count
    (DDP needs equal counts); ``drop_last=True`` leaves the last incomplete round out.

    Resuming at any sample without replaying: :meth:`state_dict` gives the epoch and the global
    position (plain ints and strs, safe for ``torch.load(weights_only=True)``);
    :meth:`load_state_dict` makes the next pass start there, on any world size. torchdata's
    ``StatefulDataLoader`` saves and restores it by itself, at the sample consumed. A plain
    DataLoader with workers prefetches, so save ``sampler.state_dict(consumed=k)`` with ``k``
    the samples this rank has consumed in the epoch (batches done times the batch size).

    The indices are :class:`SampleIndex`, ints that carry their epoch, for
    :class:`ReproducibleDataset` (a per-sample block per epoch).

    Args:
        data_source: the dataset (anything with a length) or its length as an int, read once.
        key: the key of the order; distinct keys give independent orders.
        shuffle: ``False`` gives ``range(n)`` every epoch (the state still works).
        num_replicas: the world size; ``None`` reads the default process group's.
        rank: this process's rank in ``[0, num_replicas)``; ``None`` reads the group's.
        drop_last: leave out the last round when ``n`` is not a multiple of the world size.

    >>> import torch
    >>> from torch.utils.data import DataLoader
    >>> from reproducible_block import ReproducibleSampler, set_seed, torch_generator
    >>> _ = set_seed(0)
    >>> sampler = ReproducibleSampler(10)
    >>> first = list(sampler)  # epoch 0
    >>> first == torch.randperm(10, generator=torch_generator(("order", 0))).tolist()
    True
    >>> list(sampler) != first  # epoch 1 without set_epoch: a new order
    True
    >>> sampler.set_epoch(0)
    >>> loader = DataLoader(range(10), sampler=sampler, batch_size=5, num_workers=2)
    >>> torch.cat(list(loader)).tolist() == first  # the same order with workers
    True
    """

    def __init__(
        self,
        data_source: Sized | int,
        key: BlockKey = "order",
        *,
        shuffle: bool = True,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        length = _length_of(data_source)
        validate_and_encode(key)  # a bad key fails here, not at the first pass
        shuffle = check_bool(shuffle, "shuffle", "False gives range(n) every epoch.")
        drop_last = check_bool(
            drop_last, "drop_last", "True leaves out the last round that not every rank fills."
        )
        if num_replicas is None:
            num_replicas = torch.distributed.get_world_size() if is_distributed() else 1
        replicas = check_int(
            num_replicas,
            "num_replicas",
            1,
            advice="Pass the world size, or None to read the default process group's.",
        )
        if rank is None:
            rank = torch.distributed.get_rank() if is_distributed() else 0
        checked_rank = check_int(
            rank,
            "rank",
            0,
            replicas - 1,
            advice=f"The rank must be below num_replicas={replicas}; pass None to read the "
            "default process group's.",
        )
        self._length = length
        self._key = key
        self._shuffle = shuffle
        self._replicas = replicas
        self._rank = checked_rank
        self._drop_last = drop_last
        self._next_epoch = 0  # the epoch of the next pass
        self._next_start = 0  # the global position the next pass starts at
        self._live: _Pass | None = None  # the pass that last started, while it counts

    # What the sampler is.

    @property
    def key(self) -> BlockKey:
        """The key of the order."""
        return self._key

    @property
    def epoch(self) -> int:
        """The epoch of the pass running now, else of the next pass."""
        live = self._running()
        return self._next_epoch if live is None else live.epoch

    @property
    def num_replicas(self) -> int:
        """The world size the order is split over."""
        return self._replicas

    @property
    def rank(self) -> int:
        """This process's rank among ``num_replicas``."""
        return self._rank

    def __repr__(self) -> str:
        return (
            f"ReproducibleSampler({self._length}, key={self._key!r}, shuffle={self._shuffle}, "
            f"num_replicas={self._replicas}, rank={self._rank}, drop_last={self._drop_last})"
        )

    def _count(self, start: int) -> int:
        """How many indices this rank takes in a pass from global position ``start``."""
        remaining = self._length - start
        if remaining <= 0:
            return 0
        if self._drop_last:
            return remaining // self._replicas
        return -(-remaining // self._replicas)

    def _running(self) -> _Pass | None:
        live = self._live
        return None if live is None or live.yielded >= live.count else live

    def __len__(self) -> int:
        """How many indices this rank takes in the pass running now, else in the next pass."""
        live = self._running()
        return self._count(self._next_start) if live is None else live.count

    def order(self, epoch: int) -> list[int]:
        """The global order of ``epoch``: every index once, before any split between ranks.

        >>> from reproducible_block import ReproducibleSampler, set_seed
        >>> _ = set_seed(0)
        >>> sorted(ReproducibleSampler(5).order(3)) == [0, 1, 2, 3, 4]
        True
        """
        epoch = check_int(epoch, "epoch")
        if not self._shuffle:
            return list(range(self._length))
        generator = torch_generator(epoch_key(self._key, epoch))
        order: list[int] = torch.randperm(self._length, generator=generator).tolist()
        return order

    # Epochs and passes.

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass run epoch ``epoch``, from its start.

        After :meth:`load_state_dict`, setting the loaded epoch keeps the loaded position (a
        resumed run that calls ``set_epoch`` at the top of each epoch continues mid-epoch).
        """
        epoch = check_int(
            epoch, "epoch", advice="Epochs count from 0; pass the number of the next pass."
        )
        if epoch != self._next_epoch:
            self._next_start = 0
        self._next_epoch = epoch
        self._live = None

    def __iter__(self) -> Iterator[int]:
        return self._pass()

    def _pass(self) -> Iterator[SampleIndex]:
        # A generator: nothing happens until the first index is asked for.
        epoch, start = self._next_epoch, self._next_start
        current = _Pass(epoch, start, self._count(start))
        self._next_epoch, self._next_start = epoch + 1, 0
        self._live = current
        if current.count == 0:
            return
        order = self.order(epoch)
        length, replicas = self._length, self._replicas
        position = start + self._rank
        for _ in range(current.count):
            index = SampleIndex(order[position % length], epoch)
            current.yielded += 1  # before the yield: a snapshot taken now counts this index
            position += replicas
            yield index

    # State.

    def state_dict(self, *, consumed: int | None = None) -> dict[str, Any]:
        """Where the next pass starts: the epoch and the global position, as plain values.

        With a pass running, the position is the one after the indices its iterator has
        yielded (what torchdata's ``StatefulDataLoader`` and a loader without workers have
        consumed); ``consumed=k`` gives the position after the first ``k`` indices this rank
        took in the pass instead (a plain DataLoader with workers prefetches: pass the samples
        consumed, batches done times the batch size). A finished pass gives the next epoch
        from position 0. ``torch.save`` it; ``torch.load(..., weights_only=True)`` reads it.

        >>> from reproducible_block import ReproducibleSampler, set_seed
        >>> _ = set_seed(0)
        >>> sampler = ReproducibleSampler(10)
        >>> indices = iter(sampler)
        >>> first_three = [next(indices) for _ in range(3)]
        >>> state = sampler.state_dict()
        >>> state["epoch"], state["position"]
        (0, 3)
        >>> resumed = ReproducibleSampler(10)
        >>> resumed.load_state_dict(state)
        >>> first_three + list(resumed) == sampler.order(0)
        True
        """
        epoch, position = self._next_epoch, self._next_start
        live = self._live
        if consumed is not None:
            if live is None:
                raise ReproducibleBlockValueError(
                    f"state_dict(consumed={consumed!r}): no pass has started since the last "
                    "set_epoch or load_state_dict, so there is nothing consumed to count; call "
                    "state_dict() without consumed."
                )
            taken = check_int(
                consumed,
                "consumed",
                0,
                advice="Pass how many indices of the running pass this rank has consumed.",
            )
            epoch, position = live.epoch, live.start + min(taken, live.count) * self._replicas
            if taken >= live.count:
                epoch, position = live.epoch + 1, 0
        elif live is not None and live.yielded < live.count:
            epoch, position = live.epoch, live.start + live.yielded * self._replicas
        elif live is not None:
            epoch, position = live.epoch + 1, 0
        if position >= self._length:
            epoch, position = epoch + 1, 0
        return {
            "format": _STATE_FORMAT,
            "epoch": epoch,
            "position": position,
            "length": self._length,
            "key": repr(self._key),
            "shuffle": self._shuffle,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Make the next pass start at the epoch and global position of ``state_dict``.

        The state may come from a run on another world size: the global sequence is the same.
        Everything is checked before anything changes; a state of another dataset length,
        key or ``shuffle`` is refused.
        """
        hint = "Load a state that ReproducibleSampler.state_dict() wrote for this sampler."
        if not isinstance(state_dict, Mapping) or set(state_dict) != set(_STATE_FIELDS):
            raise ReproducibleBlockValueError(
                f"A ReproducibleSampler state is a dict with the keys {sorted(_STATE_FIELDS)}; "
                f"got {describe(state_dict)}. {hint}"
            )
        version = check_int(state_dict["format"], "state_dict['format']", read=True)
        if version != _STATE_FORMAT:
            raise ReproducibleBlockValueError(
                f"state_dict['format'] is {version}; this version reads format "
                f"{_STATE_FORMAT}. {hint}"
            )
        length = check_int(state_dict["length"], "state_dict['length']", read=True)
        if length != self._length:
            raise ReproducibleBlockValueError(
                f"The state was saved for a dataset of {length} samples; this sampler has "
                f"{self._length}. The order of another length is another order: resume with "
                "the same dataset."
            )
        if state_dict["key"] != repr(self._key):
            raise ReproducibleBlockValueError(
                f"The state was saved for the key {state_dict['key']}; this sampler's key is "
                f"{self._key!r}. Build the sampler with the key it was saved with."
            )
        if state_dict["shuffle"] is not self._shuffle:
            raise ReproducibleBlockValueError(
                f"The state was saved with shuffle={state_dict['shuffle']!r}; this sampler has "
                f"shuffle={self._shuffle}. Build the sampler as it was saved."
            )
        epoch = check_int(state_dict["epoch"], "state_dict['epoch']", read=True)
        position = check_int(
            state_dict["position"],
            "state_dict['position']",
            0,
            self._length,
            advice=hint,
            read=True,
        )
        if position == self._length:
            epoch, position = epoch + 1, 0
        self._next_epoch, self._next_start, self._live = epoch, position, None
