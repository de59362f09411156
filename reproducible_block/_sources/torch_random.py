"""torch's CPU generators as sources: the default generator and users' ``torch.Generator`` objects.

The CUDA and other accelerator sources live in ``devices.py``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from reproducible_block._fast import views as _memory
from reproducible_block._fast.torch_cpu import (
    KEY_AT,
    STATE_BYTES,
    EngineView,
    cpu_layout,
    engine_view,
    state_bytes,
)
from reproducible_block._sources import GeneratorSource
from reproducible_block._streams.derivation import MT_WORDS, mt_keys, mt_words, philox_seed
from reproducible_block._support.checks import invalid, read_fields, read_tensor

__all__ = ["TorchDefaultSource", "TorchGeneratorSource", "torch_cpu_state", "torch_cpu_states"]

_MAX_SEED = 2**63 - 1  # torch's seeds (DataLoader workers' included) fit an int64
_HEAD = struct.Struct("<QiiQQQQ")  # seed, left, seeded, next, then the first three key words
_KEY_ID = struct.Struct("<II")


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
    template = _template()
    if template is None:
        fallback = torch.Generator()
        fallback.manual_seed(philox_seed(bits) & _MAX_SEED)
        return fallback.get_state()
    # The layout was checked (little-endian): the template's counters and the rest, the seed,
    # each key word widened to a u64 in one copy. torch.frombuffer reads the u64 array's bytes
    # (and keeps it alive): fewer steps than from_numpy of a uint8 view.
    state = template.copy()
    state[0] = _SEED.unpack_from(bits)[0] & _MAX_SEED
    state[_KEY_AT_U64 : _KEY_AT_U64 + MT_WORDS] = mt_words(bits)
    return torch.frombuffer(state, dtype=torch.uint8)


def torch_cpu_states(bits: Sequence[bytes]) -> list[torch.Tensor]:
    """:func:`torch_cpu_state` of each item of ``bits``: the batch written into one array.

    Each state is a tensor of its own over a row of that array (torch's ``set_state`` reads a
    state from the start of its storage, so a state must never be a view at an offset).

    >>> states = torch_cpu_states([bytes(16), b"1" * 16])
    >>> [torch.equal(state, torch_cpu_state(item)) for state, item in
    ...  zip(states, [bytes(16), b"1" * 16])]
    [True, True]
    """
    template = _template()
    if template is None:
        return [torch_cpu_state(item) for item in bits]
    states = np.empty((len(bits), STATE_BYTES), np.uint8)
    states[:] = template.view(_UINT8)
    states[:, KEY_AT : KEY_AT + 8 * MT_WORDS].view("<u8")[:] = mt_keys(bits)
    seeds = np.frombuffer(b"".join([item[:8] for item in bits]), "<u8") & _MAX_SEED
    states[:, :8].view("<u8")[:, 0] = seeds
    return [torch.from_numpy(row) for row in states]


# A state as u64s (its fields are 8-byte aligned: STATE_BYTES and KEY_AT are multiples of 8).
_KEY_AT_U64 = KEY_AT // 8
_UINT8 = np.dtype(np.uint8)
_SEED = struct.Struct("<Q")
#: (torch's layout, the template made from it): made again if a test probes the layout anew.
_templates: list[tuple[tuple[bytes, bytes], np.ndarray]] = []


def _template() -> np.ndarray | None:
    """A state with a zero seed and key and torch's bytes around them (the counters, the
    cached normals), as STATE_BYTES // 8 little-endian u64s; None if torch's layout is not the
    expected one."""
    layout = cpu_layout()
    if layout is None:
        return None
    if _templates and _templates[0][0] is layout:
        return _templates[0][1]
    return _template_of(layout)


def _template_of(layout: tuple[bytes, bytes]) -> np.ndarray:
    """:func:`_template` made from ``layout`` (what :func:`cpu_layout` found), and kept."""
    data = bytes(8) + layout[0] + bytes(8 * MT_WORDS) + layout[1]
    template: np.ndarray = np.frombuffer(data, "<u8").copy()
    template.flags.writeable = False  # states are copies of it
    _templates[:] = [(layout, template)]
    return template


class TorchGeneratorSource(GeneratorSource[torch.Tensor]):
    """A ``torch.Generator`` a user registered (CPU or a device)."""

    checkpoint_kind = "torch-generator"

    def __init__(self, generator: torch.Generator, name: str) -> None:
        self.generator = generator
        self.name = name
        self._on_cpu = generator.device.type == "cpu"  # a generator never changes device
        self.mersenne_twister = self._on_cpu  # a device generator is a Philox
        self._engine: EngineView | bool | None = False  # False: not looked for yet
        # The hot path is the generator's own pair of calls: no Python in between.
        self.save = generator.get_state  # type: ignore[method-assign]
        self.restore = generator.set_state  # type: ignore[method-assign,assignment]
        if self._on_cpu:  # a fresh block's derivation calls the function itself
            self.from_bits = torch_cpu_state  # type: ignore[method-assign]

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

    def from_bits_batch(self, bits: Sequence[bytes]) -> list[Any]:
        if self._on_cpu:
            return torch_cpu_states(bits)
        return super().from_bits_batch(bits)  # pragma: no cover - needs a GPU

    def twister_state(self, saved: Any) -> tuple[bytes, int, bytes] | None:
        if not self._on_cpu or cpu_layout() is None:
            return None  # a device generator (Philox), or a CPU layout not checked
        # The layout was checked (little-endian); a saved state is a fresh contiguous tensor.
        data = state_bytes(saved)
        # torch counts down ``left`` from 624 after a twist (1 right after seeding).
        _, left, _, _, _, first, second = _HEAD.unpack_from(data)
        extra = data[:KEY_AT] + data[KEY_AT + 8 * MT_WORDS :]
        return _KEY_ID.pack(first, second), 625 - left, extra

    def twister_now(self) -> tuple[bytes, int, bytes] | None:
        # The engine's fields read in place (checked once per generator), when the switch is
        # on: get_state() copies 5 KB into a new tensor.
        engine = self._engine
        if engine is False:
            engine = self._engine = self._on_cpu and engine_view(self.generator)
        if engine and _memory.ENABLED:
            return engine.twister_fields()  # type: ignore[union-attr]
        return self.twister_state(self.generator.get_state())

    def to_checkpoint(self, state: torch.Tensor) -> Any:
        return {"device": str(self.generator.device), "state": state.clone()}

    def from_checkpoint(self, data: object, where: str) -> torch.Tensor:
        fields = read_fields(data, where, ("device", "state"))
        device = str(self.generator.device)
        if fields["device"] != device:
            raise invalid(
                f"{where}['device']",
                fields["device"],
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
    mersenne_twister = True

    def __init__(self) -> None:
        super().__init__(torch.default_generator, "torch")

    def __reduce__(self) -> tuple[Any, ...]:
        return (TorchDefaultSource, ())  # torch's default generator: there is one per process

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)
