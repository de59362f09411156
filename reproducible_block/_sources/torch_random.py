"""torch's generators as sources: the CPU default generator, users' generators, accelerators.

CUDA is never initialised by the library: until something else initialises it, the CUDA state
is the seeding torch has queued for its initialisation (``torch.manual_seed`` queues a seed for
every device), and blocks swap that queue.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass
from typing import Any

import torch

from reproducible_block._fast import views as _memory
from reproducible_block._sources import GeneratorSource
from reproducible_block._streams.derivation import MT_WORDS, mt_words, philox_seed
from reproducible_block._support.checks import invalid, read_fields, read_int, read_tensor
from reproducible_block._support.errors import ReproducibleBlockValueError
from reproducible_block._support.transforms import outside_functorch

__all__ = [
    "AcceleratorSource",
    "CudaSource",
    "QueuedSeeds",
    "TorchDefaultSource",
    "TorchGeneratorSource",
    "torch_cpu_state",
]

_MAX_U64 = 2**64 - 1
_MAX_SEED = 2**63 - 1  # torch's seeds (DataLoader workers' included) fit an int64
_MAX_DEVICES = 2**16

# torch's CPU generator state is a 5056-byte tensor: the initial seed (u64), ``left`` (i32),
# ``seeded`` (i32), ``next`` (u64), then the 624 words each stored as u64, then the cached
# normals. torch does not document it, so it is checked once against a generator seeded the
# public way; if a future torch changes it, blocks fall back to ``manual_seed`` (32 bits).
_STATE_BYTES = 5056
_WORDS_AT = 24
_HEAD = struct.Struct("<QiiQQQQ")  # seed, left, seeded, next, then the first three key words
_KEY_ID = struct.Struct("<II")
_layout: tuple[bytes, bytes] | None = None  # the template's bytes around the seed and words
_checked = False


def _cpu_layout() -> tuple[bytes, bytes] | None:
    global _layout, _checked
    if not _checked:
        probe_seed = 0x1234_5678_9ABC
        generator = torch.Generator()
        generator.manual_seed(probe_seed)
        with outside_functorch():  # the first block may open under torch.func.grad
            data = generator.get_state().numpy().tobytes()
        ok = (
            len(data) == _STATE_BYTES
            and struct.unpack_from("<QiiQ", data, 0) == (probe_seed, 1, 1, 0)
            and struct.unpack_from("<Q", data, _WORDS_AT)[0] == probe_seed & 0xFFFFFFFF
        )
        _layout = (data[8:_WORDS_AT], data[_WORDS_AT + 8 * MT_WORDS :]) if ok else None
        _checked = True
        if not ok:  # pragma: no cover - only with a torch whose layout differs
            _memory.warn_fallback(
                "torch's CPU generator",
                "its state layout is not the expected one; blocks seed it with manual_seed, "
                "which keeps 32 bits, so rare keys may share a torch stream",
            )
    return _layout


def torch_cpu_state(bits: bytes) -> torch.Tensor:
    """A torch CPU generator state holding the Mersenne Twister key that ``bits`` derive.

    Its initial seed (what ``torch.initial_seed()`` reports in a block or a DataLoader worker)
    is the low 63 bits: below 2**63, as torch's own seeds, so code that puts it in an int64
    tensor (``default_collate``) works. The stream does not read it (the words come from all
    128 bits; ``manual_seed`` would keep only the low 32).

    >>> state = torch_cpu_state(bytes(16))
    >>> generator = torch.Generator().set_state(state)  # torch accepts it as valid
    >>> torch.equal(generator.get_state(), state), torch.equal(torch_cpu_state(b"1" * 16), state)
    (True, False)
    """
    layout = _layout if _checked else _cpu_layout()
    if layout is None:  # pragma: no cover - unknown layout
        fallback = torch.Generator()
        fallback.manual_seed(philox_seed(bits) & _MAX_SEED)
        return fallback.get_state()
    # The seed (little-endian, as the probe showed), the counters, each word as a u64, the rest.
    words = mt_words(bits).astype("<u8").tobytes()
    state = bytearray(bits[:7] + bytes((bits[7] & 0x7F,)) + layout[0] + words + layout[1])
    return torch.frombuffer(state, dtype=torch.uint8)


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


class TorchGeneratorSource(GeneratorSource[torch.Tensor]):
    """A ``torch.Generator`` a user registered (CPU or a device)."""

    checkpoint_kind = "torch-generator"

    def __init__(self, generator: torch.Generator, name: str) -> None:
        self.generator = generator
        self.name = name
        self._on_cpu = generator.device.type == "cpu"  # a generator never changes device
        # The hot path is the generator's own pair of calls: no Python in between.
        self.save = generator.get_state  # type: ignore[method-assign]
        self.restore = generator.set_state  # type: ignore[method-assign,assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        # save and restore are the generator's own bound methods: a copy binds them to its own
        # generator (a deep copy manages a copy of the generator, never the original).
        return (TorchGeneratorSource, (self.generator, self.name))

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def swap(self, state: torch.Tensor) -> torch.Tensor:
        generator = self.generator
        saved = generator.get_state()
        generator.set_state(state)  # torch checks a state before it changes anything
        return saved

    def from_bits(self, bits: bytes) -> torch.Tensor:
        if self._on_cpu:
            return torch_cpu_state(bits)
        # A device generator (Philox): a 64-bit seed is its whole key.
        scratch = torch.Generator(device=self.generator.device)  # pragma: no cover - needs a GPU
        scratch.manual_seed(philox_seed(bits))  # pragma: no cover - needs a GPU
        return scratch.get_state()  # pragma: no cover - needs a GPU

    def twister_state(self, saved: Any) -> tuple[bytes, int, bytes] | None:
        if not self._on_cpu or (_layout if _checked else _cpu_layout()) is None:
            return None  # a device generator (Philox), or a CPU layout not checked
        # The layout was checked (little-endian); a saved state is a fresh contiguous tensor.
        with outside_functorch():
            data = ctypes.string_at(saved.data_ptr(), _STATE_BYTES)
        # torch counts down ``left`` from 624 after a twist (1 right after seeding).
        _, left, _, _, _, first, second = _HEAD.unpack_from(data)
        extra = data[:_WORDS_AT] + data[_WORDS_AT + 8 * MT_WORDS :]
        return _KEY_ID.pack(first, second), 625 - left, extra

    def to_checkpoint(self, state: torch.Tensor) -> Any:
        return {"device": str(self.generator.device), "state": state.clone()}

    def from_checkpoint(self, data: object, where: str) -> torch.Tensor:
        fields = read_fields(data, where, ("device", "state"))
        device = str(self.generator.device)
        if fields["device"] != device:
            raise invalid(
                f"{where}['device']", fields["device"],
                f"{device!r}, the device of the generator {self.name!r} in this process",
            )
        size = self.generator.get_state().numel()
        state = read_tensor(fields["state"], f"{where}['state']", torch.uint8, size)
        if self.generator.device.type == "cpu":
            # torch checks a CPU state's Mersenne Twister position on set_state: ask a scratch one.
            try:
                torch.Generator().set_state(state)
            except RuntimeError as error:
                raise invalid(
                    f"{where}['state']", fields["state"], f"a valid torch CPU state ({error})"
                ) from None
        return state


class TorchDefaultSource(TorchGeneratorSource):
    """torch's CPU default generator (``torch.rand``, ``nn.init``, dropout on the CPU...)."""

    slot = "torch"

    def __init__(self) -> None:
        super().__init__(torch.default_generator, "torch")

    def __reduce__(self) -> tuple[Any, ...]:
        return (TorchDefaultSource, ())  # torch's default generator: there is one per process

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)


@dataclass(frozen=True)
class QueuedSeeds:
    """The CUDA seeding torch has queued for CUDA's initialisation, in the order it applies.

    Each item is ``("all", seed)`` (``torch.cuda.manual_seed_all``, which ``torch.manual_seed``
    calls) or ``("current", seed)`` (``torch.cuda.manual_seed``: the device current at
    initialisation). Empty when nothing is queued.
    """

    calls: tuple[tuple[str, int], ...]


class _SeedAll:
    """A queued ``manual_seed_all``, as torch queues one, minus the stack trace it formats."""

    __slots__ = ("seed",)

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self) -> None:  # pragma: no cover - runs when CUDA initialises (a GPU)
        for index in range(torch.cuda.device_count()):
            torch.cuda.default_generators[index].manual_seed(self.seed)


class _SeedCurrent(_SeedAll):
    """A queued ``manual_seed`` of the device current at CUDA's initialisation."""

    __slots__ = ()

    def __call__(self) -> None:  # pragma: no cover - runs when CUDA initialises (a GPU)
        torch.cuda.default_generators[torch.cuda.current_device()].manual_seed(self.seed)


def _queued_seed(callback: object) -> int | None:
    """The seed a queued callback applies: ours, or the ``seed`` torch's closure captured."""
    if isinstance(callback, _SeedAll):
        return callback.seed
    code = getattr(callback, "__code__", None)
    closure = getattr(callback, "__closure__", None)
    if code is None or closure is None or "seed" not in code.co_freevars:
        return None
    value = closure[code.co_freevars.index("seed")].cell_contents
    return value if isinstance(value, int) else None


class _SeedQueue:
    """torch's private record of the queued CUDA seeding (``torch.cuda._lazy_seed_tracker``).

    torch's own ``manual_seed_all`` formats a stack trace each time it queues a seed (about
    100 µs); blocks swap the record's three fields instead. The layout is checked once on a
    private record of the same class; if it differs, or torch uses another record now (checked
    at every use), blocks use the public calls.
    """

    def __init__(self) -> None:
        self.tracker: Any = None
        #: torch's lock around its lazy initialisation, which reads the record.
        self.lock: Any = getattr(torch.cuda, "_initialization_lock", None)
        tracker = getattr(torch.cuda, "_lazy_seed_tracker", None)
        fields = ("manual_seed_all_cb", "manual_seed_cb", "call_order")
        if (
            tracker is None
            or self.lock is None
            or not all(hasattr(tracker, name) for name in fields)
        ):
            return  # pragma: no cover - only with a torch without the record
        if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            return  # pragma: no cover - needs a GPU
        # Checked on a private record of the same class, never on the one torch uses: a seed
        # another thread queued while the check ran would be lost.
        entry = (_SeedAll(0xC0FFEE), ())
        try:
            scratch = type(tracker)()
            scratch.queue_seed_all(*entry)
        except Exception:  # pragma: no cover - only with a torch whose record differs
            return
        if (
            all(hasattr(scratch, name) for name in fields)
            and scratch.manual_seed_all_cb == entry
            and scratch.call_order[-1] is scratch.manual_seed_all_cb
        ):
            self.tracker = tracker

    def live(self) -> Any:
        """The checked record, if torch still uses it (and the same lock); else None."""
        tracker = self.tracker
        if (
            tracker is None
            or getattr(torch.cuda, "_lazy_seed_tracker", None) is not tracker
            or getattr(torch.cuda, "_initialization_lock", None) is not self.lock
        ):
            return None
        return tracker

    @staticmethod
    def read(tracker: Any) -> _Fields:
        return _Fields(tracker.manual_seed_all_cb, tracker.manual_seed_cb, tracker.call_order)

    @staticmethod
    def write(tracker: Any, fields: _Fields) -> None:
        tracker.manual_seed_all_cb = fields.seed_all
        tracker.manual_seed_cb = fields.seed_current
        tracker.call_order = fields.order


class _Fields:
    """The three fields of torch's record, as saved on a block's hot path (never mutated)."""

    __slots__ = ("order", "seed_all", "seed_current")

    def __init__(self, seed_all: Any, seed_current: Any, order: Any) -> None:
        self.seed_all = seed_all
        self.seed_current = seed_current
        self.order = order


def _queue_fields(calls: tuple[tuple[str, int], ...]) -> _Fields:
    """The tracker's fields for queued calls (ours, with no stack trace)."""
    seed_all = seed_current = None
    order: list[Any] = []
    for kind, seed in calls:
        entry = ((_SeedAll if kind == "all" else _SeedCurrent)(seed), ())
        if kind == "all":
            seed_all = entry
        else:
            seed_current = entry
    # torch keeps [the other one, the latest]; the latest is the last call.
    if calls and calls[-1][0] == "all":
        order = [seed_current, seed_all]
    elif calls:
        order = [seed_all, seed_current]
    return _Fields(seed_all, seed_current, order)


def _fields_calls(fields: _Fields) -> QueuedSeeds:
    """The queued calls that the record's fields hold, in the order they apply."""
    calls = []
    for entry in fields.order:
        if entry is not None:
            seed = _queued_seed(entry[0])
            if seed is None:  # pragma: no cover - a callback torch's own calls never queue
                raise ReproducibleBlockValueError(
                    f"the CUDA seeding queued in torch ({entry[0]!r}) holds no seed "
                    "reproducible_block can read; call torch.cuda.init() before blocks."
                )
            calls.append(("all" if entry is fields.seed_all else "current", seed))
    return QueuedSeeds(tuple(calls))


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
        self._queue = _SeedQueue()

    @staticmethod
    def _initialized() -> bool:
        return bool(torch.cuda.is_initialized())  # type: ignore[no-untyped-call]

    def get_state(self) -> Any:
        if self._initialized():  # pragma: no cover - needs a GPU
            return tuple(torch.cuda.get_rng_state_all())
        tracker = getattr(torch.cuda, "_lazy_seed_tracker", None)  # the one torch uses now
        calls: list[tuple[str, int]] = []
        for entry in getattr(tracker, "call_order", ()):
            if entry is None:
                continue
            seed = _queued_seed(entry[0])
            if seed is None:  # pragma: no cover - a callback torch's own calls never queue
                raise ReproducibleBlockValueError(
                    f"the CUDA seeding queued in torch ({entry[0]!r}) holds no seed "
                    "reproducible_block can read; call torch.cuda.init() before saving states."
                )
            is_all = entry is getattr(tracker, "manual_seed_all_cb", None)
            calls.append(("all" if is_all else "current", seed))
        return QueuedSeeds(tuple(calls))

    def set_state(self, state: Any) -> None:
        if isinstance(state, QueuedSeeds):
            if self._initialized():  # pragma: no cover - needs a GPU
                for kind, seed in state.calls:
                    (_SeedAll if kind == "all" else _SeedCurrent)(seed)()
            elif (tracker := self._queue.live()) is not None:
                with _memory.switching, self._queue.lock:
                    _SeedQueue.write(tracker, _queue_fields(state.calls))
            else:  # pragma: no cover - only with a torch without the record
                for kind, seed in state.calls:
                    (torch.cuda.manual_seed_all if kind == "all" else torch.cuda.manual_seed)(seed)
            return
        if not self._initialized():  # pragma: no cover - needs a GPU
            torch.cuda.init()  # type: ignore[no-untyped-call]  # per-device states need it
        torch.cuda.set_rng_state_all(state)  # pragma: no cover - needs a GPU

    def save(self) -> Any:
        queue = self._queue
        tracker = queue.live()
        if tracker is None:  # a torch without the record, or torch uses another one now
            return self.get_state()
        with _memory.switching, queue.lock:
            if self._initialized():  # pragma: no cover - needs a GPU
                return self.get_state()
            return _SeedQueue.read(tracker)

    def restore(self, saved: Any) -> None:
        queue = self._queue
        if type(saved) is not _Fields:
            self.set_state(saved)
            return
        tracker = queue.live()
        if tracker is None:  # torch uses another record now: through the public form
            self.set_state(_fields_calls(saved))
            return
        with _memory.switching, queue.lock:
            if not self._initialized():
                _SeedQueue.write(tracker, saved)
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
        return QueuedSeeds(calls) if self._queue.tracker is None else _queue_fields(calls)

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
            if not isinstance(calls, list) or len(calls) > 2 or not all(
                isinstance(call, list) and len(call) == 2 and call[0] in ("all", "current")
                for call in calls
            ):
                raise invalid(f"{where}['queued']", calls, "a list of ['all' or 'current', seed]")
            return QueuedSeeds(tuple(
                (kind, read_int(seed, f"{where}['queued'][{index}][1]", 0, _MAX_U64))
                for index, (kind, seed) in enumerate(calls)
            ))
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
