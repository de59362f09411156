"""CUDA and other accelerators as sources: every device's default generator, one seed for all.

CUDA is never initialised by the library: until something else initialises it, the CUDA state
is the seeding torch has queued for its initialisation (``torch.manual_seed`` queues a seed for
every device), and blocks swap that queue (directly through ``_fast.cuda_queue`` while the fast
paths are on; through ``torch.cuda.manual_seed_all``/``manual_seed`` when they are off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from reproducible_block._fast import views as _memory
from reproducible_block._fast.cuda_queue import (
    Fields,
    SeedAll,
    SeedCurrent,
    SeedQueue,
    queued_calls,
    queued_fields,
)
from reproducible_block._sources import GeneratorSource
from reproducible_block._streams.derivation import philox_seed
from reproducible_block._support.checks import invalid, read_fields, read_int, read_tensor
from reproducible_block._support.errors import ReproducibleBlockValueError

__all__ = ["AcceleratorSource", "CudaSource", "QueuedSeeds"]

_MAX_U64 = 2**64 - 1
_MAX_DEVICES = 2**16


@dataclass(frozen=True)
class QueuedSeeds:
    """The CUDA seeding torch has queued for CUDA's initialisation, in the order it applies.

    Each item is ``("all", seed)`` (``torch.cuda.manual_seed_all``, which ``torch.manual_seed``
    calls) or ``("current", seed)`` (``torch.cuda.manual_seed``: the device current at
    initialisation). Empty when nothing is queued.
    """

    calls: tuple[tuple[str, int], ...]


def _queue_publicly(calls: tuple[tuple[str, int], ...]) -> None:
    """Queue ``calls`` through torch's public seeding (the fast paths off, or no record).

    torch's calls add to what is queued and cannot empty it, so calls without a seed-all one
    start with a seed-all of torch's default seed, which every CUDA generator has at
    initialisation anyway: CUDA starts in the same states, though the queue then reads
    ``("all", 67280421310721)`` first.
    """
    if all(kind != "all" for kind, _ in calls):
        torch.cuda.manual_seed_all(torch.Generator().initial_seed())
    for kind, seed in calls:
        (torch.cuda.manual_seed_all if kind == "all" else torch.cuda.manual_seed)(seed)


def _device_states(value: object, where: str, sizes: list[int]) -> list[torch.Tensor]:
    if not isinstance(value, list) or len(value) != len(sizes):
        raise invalid(where, value, f"a list of {len(sizes)} uint8 tensors, one per device")
    return [
        read_tensor(item, f"{where}[{index}]", torch.uint8, size)
        for index, (item, size) in enumerate(zip(value, sizes, strict=True))
    ]


def _device_count(value: object, where: str, kind: str, now: int) -> int:
    saved = read_int(value, where, 0, _MAX_DEVICES)
    if saved != now:
        raise ReproducibleBlockValueError(
            f"{where}: the states were saved with {saved} {kind} device(s) and this process sees "
            f"{now}. Resume on as many devices per process (check CUDA_VISIBLE_DEVICES), or "
            "call set_seed() to start the streams afresh instead of loading them."
        )
    return saved


class CudaSource(GeneratorSource[Any]):
    """Every CUDA device's default generator, without ever initialising CUDA itself.

    Before CUDA initialises, the state is what torch has queued (:class:`QueuedSeeds`); after,
    the per-device state tensors. A block's state is one Philox seed for all devices, as
    ``torch.manual_seed`` gives them: model init on ``cuda:0`` of one rank equals model init on
    ``cuda:1`` of another.
    """

    name = "cuda"
    slot = "accelerator"
    checkpoint_kind = "cuda"

    def __init__(self) -> None:
        self._queue = SeedQueue()

    @staticmethod
    def _initialized() -> bool:
        return bool(torch.cuda.is_initialized())  # type: ignore[no-untyped-call]

    def get_state(self) -> Any:
        if self._initialized():  # pragma: no cover - needs a GPU
            return tuple(torch.cuda.get_rng_state_all())
        return QueuedSeeds(queued_calls())

    def set_state(self, state: Any) -> None:
        if isinstance(state, QueuedSeeds):
            if self._initialized():  # pragma: no cover - needs a GPU
                for kind, seed in state.calls:
                    (SeedAll if kind == "all" else SeedCurrent)(seed)()
            elif (tracker := self._queue.live()) is not None:
                with _memory.switching, self._queue.lock:
                    SeedQueue.write(tracker, queued_fields(state.calls))
            else:
                _queue_publicly(state.calls)
            return
        if not self._initialized():  # pragma: no cover - needs a GPU
            torch.cuda.init()  # type: ignore[no-untyped-call]  # per-device states need it
        torch.cuda.set_rng_state_all(state)  # pragma: no cover - needs a GPU

    def save(self) -> Any:
        queue = self._queue
        tracker = queue.live()
        if tracker is None:  # the switch is off, or torch uses another record now
            return self.get_state()
        with _memory.switching, queue.lock:
            if self._initialized():  # pragma: no cover - needs a GPU
                return self.get_state()
            return SeedQueue.read(tracker)

    def restore(self, saved: Any) -> None:
        queue = self._queue
        if type(saved) is not Fields:
            self.set_state(saved)
            return
        tracker = queue.live()
        if tracker is None:  # the switch is off, or torch uses another record now
            self.set_state(QueuedSeeds(saved.calls()))
            return
        with _memory.switching, queue.lock:
            if not self._initialized():
                SeedQueue.write(tracker, saved)
                return
        # CUDA started inside the block: apply the caller's queued seeding now, as CUDA's
        # initialisation would have.
        for entry in saved.order:  # pragma: no cover - needs a GPU
            if entry is not None:
                entry[0]()

    def seed(self, seed: int) -> None:
        self.set_state(QueuedSeeds((("all", seed),)))

    def from_bits(self, bits: bytes) -> Any:
        calls = (("all", philox_seed(bits)),)
        return QueuedSeeds(calls) if self._queue.tracker is None else queued_fields(calls)

    def to_checkpoint(self, state: Any) -> Any:
        count = torch.cuda.device_count()
        if isinstance(state, QueuedSeeds):
            return {"device_count": count, "queued": [[kind, seed] for kind, seed in state.calls]}
        return {"device_count": count, "states": [device.clone() for device in state]}

    def from_checkpoint(self, data: object, where: str) -> Any:
        now = torch.cuda.device_count()
        if isinstance(data, dict) and "queued" in data:
            fields = read_fields(data, where, ("device_count", "queued"))
            _device_count(fields["device_count"], f"{where}['device_count']", "CUDA", now)
            calls = fields["queued"]
            if (
                not isinstance(calls, list)
                or len(calls) > 2
                or not all(
                    isinstance(call, list) and len(call) == 2 and call[0] in ("all", "current")
                    for call in calls
                )
            ):
                raise invalid(f"{where}['queued']", calls, "a list of ['all' or 'current', seed]")
            return QueuedSeeds(
                tuple(
                    (kind, read_int(seed, f"{where}['queued'][{index}][1]", 0, _MAX_U64))
                    for index, (kind, seed) in enumerate(calls)
                )
            )
        fields = read_fields(data, where, ("device_count", "states"))
        count = _device_count(fields["device_count"], f"{where}['device_count']", "CUDA", now)
        if self._initialized():  # pragma: no cover - needs a GPU
            sizes = [state.numel() for state in torch.cuda.get_rng_state_all()]
        else:
            sizes = [16] * count  # Philox: the seed and the offset, 8 bytes each
        return tuple(_device_states(fields["states"], f"{where}['states']", sizes))


class AcceleratorSource(GeneratorSource[list[torch.Tensor]]):  # pragma: no cover - no such device
    """The default generators of a non-CUDA accelerator that ``torch.accelerator`` reports."""

    slot = "accelerator"
    checkpoint_kind = "accelerator"

    def __init__(self, device_type: str) -> None:
        self.name = device_type
        self._module: Any = torch.get_device_module(device_type)

    def _count(self) -> int:
        return int(torch.accelerator.device_count())

    def get_state(self) -> list[torch.Tensor]:
        return [self._module.get_rng_state(i) for i in range(self._count())]

    def set_state(self, state: list[torch.Tensor]) -> None:
        for index, device_state in enumerate(state):
            self._module.set_rng_state(device_state, index)

    def seed(self, seed: int) -> None:
        seed_all = getattr(self._module, "manual_seed_all", None) or self._module.manual_seed
        seed_all(seed)

    def from_bits(self, bits: bytes) -> list[torch.Tensor]:
        saved = self.get_state()
        try:
            self.seed(philox_seed(bits))
            return self.get_state()
        finally:
            self.set_state(saved)

    def to_checkpoint(self, state: list[torch.Tensor]) -> Any:
        return {"device_count": len(state), "states": [device.clone() for device in state]}

    def from_checkpoint(self, data: object, where: str) -> list[torch.Tensor]:
        live = self.get_state()
        fields = read_fields(data, where, ("device_count", "states"))
        _device_count(fields["device_count"], f"{where}['device_count']", self.name, len(live))
        sizes = [state.numel() for state in live]
        return _device_states(fields["states"], f"{where}['states']", sizes)
