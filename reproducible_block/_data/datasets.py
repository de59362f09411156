"""Dataset wrappers that run each sample, or each worker's stream, in a block of its own.

:class:`ReproducibleDataset` gives a map-style dataset (a torchvision-style one that draws its
augmentation inside ``__getitem__`` and never sees a key) per-sample randomness keyed by
(key, epoch, index); :class:`ReproducibleIterableDataset` gives an iterable dataset a stream per
worker and epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from torch.utils.data import Dataset, IterableDataset

from reproducible_block._blocks.batch import each_in_block_of
from reproducible_block._blocks.block import ReproducibleBlock
from reproducible_block._blocks.states import validate_and_encode
from reproducible_block._data.sampler import SampleIndex, epoch_key
from reproducible_block._streams.derivation import epoch_index_encoder
from reproducible_block._streams.keys import BlockKey
from reproducible_block._support.checks import check_int, describe
from reproducible_block._support.errors import ReproducibleBlockTypeError

__all__ = ["ReproducibleDataset", "ReproducibleIterableDataset"]

_KEY_INTS = 1 << 64  # a key's int parts are below this
T_co = TypeVar("T_co", covariant=True)


def _checked_sources(key: BlockKey, sources: Iterable[str] | None) -> tuple[str, ...] | None:
    """``sources`` checked now by building a block (not at the first sample), as the block
    keeps them."""
    chosen = None if sources is None else tuple(sources)
    return ReproducibleBlock(epoch_key(key, 0, 0), sources=chosen)._source_names


class ReproducibleDataset(Dataset[T_co]):
    """A map-style dataset whose every sample runs in a block of its own, new each epoch.

    ``dataset[index]`` runs ``self.dataset[int(index)]`` inside
    ``ReproducibleBlock((key, epoch, index))``, with the epoch that the
    :class:`ReproducibleSampler` index carries (:class:`SampleIndex`). A transform drawn in the
    wrapped ``__getitem__`` (torchvision-style: it never sees the index) then depends only on
    (root seed, key, epoch, index): not on ``num_workers``, the order, persistent workers or
    where a run resumed; a new augmentation each epoch, the same every run. A plain ``int``
    index (from another sampler, or ``dataset[i]`` by hand) runs in ``(key, index)`` instead:
    the same draws every epoch, as in a hand-written ``ReproducibleBlock(("sample", index))``.

    The DataLoader calls ``__getitems__`` with a batch: the batch's keys are checked and their
    block states derived at once, then each sample runs in its block with the
    wrapped ``__getitem__`` (the wrapped ``__getitems__``, if any, is not used: one block per
    sample), the generators switching from one sample's block straight to the next: the
    caller's streams come back once, after the batch (a block entered in another thread
    meanwhile waits for the whole batch). ``sources=("torch",)`` manages only torch's
    generator (cheaper, when the transform draws only from torch). The wrapped dataset is
    ``.dataset``; ``len()`` is its length.

    >>> import torch
    >>> from torch.utils.data import DataLoader
    >>> from reproducible_block import ReproducibleDataset, ReproducibleSampler, set_seed
    >>> class Noisy(torch.utils.data.Dataset):
    ...     def __len__(self):
    ...         return 8
    ...     def __getitem__(self, index):
    ...         return index + torch.rand(())  # a transform that draws from the global RNG
    >>> _ = set_seed(0)
    >>> def epoch_of(num_workers):
    ...     sampler = ReproducibleSampler(8)
    ...     loader = DataLoader(ReproducibleDataset(Noisy()), sampler=sampler, batch_size=4,
    ...                         num_workers=num_workers)
    ...     return torch.cat(list(loader))
    >>> torch.equal(epoch_of(0), epoch_of(2))
    True
    """

    def __init__(
        self,
        dataset: Dataset[T_co],
        key: BlockKey = "sample",
        *,
        sources: Iterable[str] | None = None,
    ) -> None:
        if not hasattr(dataset, "__getitem__"):
            raise ReproducibleBlockTypeError(
                f"ReproducibleDataset wraps a map-style dataset (one with __getitem__); got "
                f"{describe(dataset)}. Wrap an IterableDataset in ReproducibleIterableDataset."
            )
        valid = validate_and_encode(key)[0]
        self._sources = _checked_sources(valid, sources)
        self._dataset = dataset
        self._key = key
        self._prefix = key if isinstance(key, tuple) else (key,)  # of every sample's key
        # The sampler's keys (key, epoch, index), validated and encoded without a check per part.
        self._valid_prefix = valid if isinstance(valid, tuple) else (valid,)
        self._encode = epoch_index_encoder(self._valid_prefix)

    @property
    def dataset(self) -> Dataset[T_co]:
        """The wrapped dataset."""
        return self._dataset

    @property
    def key(self) -> BlockKey:
        """The first part of every sample's key."""
        return self._key

    def __repr__(self) -> str:
        return f"ReproducibleDataset({self._dataset!r}, key={self._key!r})"

    def __len__(self) -> int:
        return len(self._dataset)  # type: ignore[arg-type]

    def sample_key(self, index: int) -> BlockKey:
        """The key of ``index``'s block: ``(key, epoch, index)``, or ``(key, index)`` for an int.

        >>> from reproducible_block import ReproducibleDataset, SampleIndex
        >>> wrapped = ReproducibleDataset([10, 20, 30])
        >>> wrapped.sample_key(SampleIndex(2, epoch=5)), wrapped.sample_key(2)
        (('sample', 5, 2), ('sample', 2))
        """
        if type(index) is SampleIndex:  # the sampler's: its value was checked when made
            epoch = index.epoch
            if type(epoch) is int and epoch >= 0:
                return (*self._prefix, epoch, int(index))
        elif type(index) is int and index >= 0:  # the common cases, without check_int's text
            return (*self._prefix, index)
        number = check_int(
            index,
            "index",
            advice="A ReproducibleDataset takes the non-negative int indices a sampler yields.",
        )
        if isinstance(index, SampleIndex):
            return epoch_key(self._key, index.epoch, number)
        return epoch_key(self._key, number)

    def __getitem__(self, index: int) -> T_co:
        with ReproducibleBlock(self.sample_key(index), sources=self._sources):
            return self._dataset[int(index)]

    def _checked_key(self, index: int) -> tuple[BlockKey, bytes]:
        """The key of ``index``'s block, validated and encoded: a sampler's index (its value
        checked when it was made) without a check per part."""
        if type(index) is SampleIndex:
            epoch = index.epoch
            if type(epoch) is int and 0 <= epoch < _KEY_INTS and index < _KEY_INTS:
                value = int(index)
                return (*self._valid_prefix, epoch, value), self._encode(epoch, value)
        return validate_and_encode(self.sample_key(index))

    def __getitems__(self, indices: Sequence[int]) -> list[T_co]:
        checked = [self._checked_key(index) for index in indices]
        # As `with ReproducibleBlock(key): self._dataset[int(index)]` per sample, the batch's
        # states derived at once, switching straight from one sample's block to the next: the
        # caller's states come back once, after the batch.
        dataset = self._dataset

        def sample(index: int) -> T_co:
            return dataset[index]

        return each_in_block_of(checked, self._sources, sample, [int(index) for index in indices])


def _iterate(dataset: Iterable[Any]) -> Iterator[Any]:
    yield from dataset


class ReproducibleIterableDataset(IterableDataset[T_co]):
    """An iterable dataset whose iteration runs in a stream per worker and epoch.

    Each pass iterates the wrapped dataset inside ``ReproducibleBlock((key, epoch),
    per_worker=True)``: every DataLoader worker (0 without workers) has a stream of its own,
    the same every run, and the caller's code between samples stays in its own stream. The
    epoch is the one given to :meth:`set_epoch` plus the passes this copy of the dataset has
    started since then:

    * ``num_workers=0``: the dataset itself iterates: call ``set_epoch(e)`` each epoch, or
      never (passes count 0, 1, 2, ...).
    * Workers that are not persistent get a fresh copy of the dataset each epoch: call
      ``set_epoch(e)`` before each epoch (without it every epoch is epoch 0).
    * Persistent workers keep the copy made at the first epoch and count their passes: the
      epoch set before the first epoch, plus one per epoch. A ``set_epoch`` later does not
      reach them, so calling ``set_epoch(e)`` with consecutive epochs (0, 1, 2 or, resumed,
      3, 4, ...) gives the same epochs in all three cases.

    ``set_epoch`` is passed on to the wrapped dataset if it has one. ``sources=`` as for
    :class:`ReproducibleDataset`.

    >>> import torch
    >>> from reproducible_block import ReproducibleIterableDataset, set_seed
    >>> class Stream(torch.utils.data.IterableDataset):
    ...     def __iter__(self):
    ...         return iter(torch.rand(3).tolist())
    >>> _ = set_seed(0)
    >>> stream = ReproducibleIterableDataset(Stream())
    >>> stream.set_epoch(4)
    >>> first = list(stream)
    >>> stream.set_epoch(4)
    >>> first == list(stream) and list(stream) != first  # epoch 4 again, then epoch 5
    True
    """

    def __init__(
        self,
        dataset: Iterable[T_co],
        key: BlockKey = "stream",
        *,
        sources: Iterable[str] | None = None,
    ) -> None:
        if not hasattr(dataset, "__iter__"):
            raise ReproducibleBlockTypeError(
                f"ReproducibleIterableDataset wraps an iterable dataset (one with __iter__); "
                f"got {describe(dataset)}. Wrap a map-style dataset in ReproducibleDataset."
            )
        self._sources = _checked_sources(key, sources)
        self._dataset = dataset
        self._key = key
        self._epoch = 0
        self._passes = 0

    @property
    def dataset(self) -> Iterable[T_co]:
        """The wrapped dataset."""
        return self._dataset

    @property
    def key(self) -> BlockKey:
        """The first part of every pass's key."""
        return self._key

    @property
    def epoch(self) -> int:
        """The epoch of the next pass of this copy."""
        return self._epoch + self._passes

    def __repr__(self) -> str:
        return f"ReproducibleIterableDataset({self._dataset!r}, key={self._key!r})"

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass run epoch ``epoch`` (see the class doc for workers)."""
        checked = check_int(
            epoch, "epoch", advice="Epochs count from 0; pass the number of the next pass."
        )
        forward = getattr(self._dataset, "set_epoch", None)
        if callable(forward):
            forward(checked)
        self._epoch, self._passes = checked, 0

    def __iter__(self) -> Iterator[T_co]:
        epoch = self._epoch + self._passes
        self._passes += 1
        block = ReproducibleBlock(
            epoch_key(self._key, epoch), per_worker=True, sources=self._sources
        )
        stream: Iterator[T_co] = block(_iterate)(self._dataset)
        return stream
