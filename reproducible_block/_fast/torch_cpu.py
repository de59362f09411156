"""torch's CPU generator state: its byte layout, checked once, and a fast read of its bytes.

torch's CPU generator state is a 5056-byte tensor: the initial seed (u64), ``left`` (i32),
``seeded`` (i32), ``next`` (u64), then the 624 key words each stored as u64, then the cached
normals. torch does not document it, so :func:`cpu_layout` checks it once against a generator
seeded the public way. The layout is not a speed trick: it is the only way to install a key
derived from all 128 bits (``manual_seed`` keeps 32), so the switch leaves it on and the streams
are the same either way; if a future torch changes it, blocks fall back to ``manual_seed``.
The switch governs :func:`state_bytes`, which reads a state's bytes through its data pointer.
"""

from __future__ import annotations

import ctypes
import struct

import torch

from reproducible_block._fast import views
from reproducible_block._support.transforms import outside_functorch

__all__ = ["KEY_AT", "STATE_BYTES", "cpu_layout", "state_bytes"]

KEY_WORDS = 624  # MT19937's key
STATE_BYTES = 5056
#: Where the key words start (each a u64).
KEY_AT = 24
_layout: tuple[bytes, bytes] | None = None  # the template's bytes around the seed and words
_checked = False


def cpu_layout() -> tuple[bytes, bytes] | None:
    """The bytes of a state between the seed and the key, and after the key (checked once);
    None if torch's layout is not the expected one.

    >>> layout = cpu_layout()
    >>> layout is None or len(layout[0]) + 8 + 8 * 624 + len(layout[1]) == STATE_BYTES
    True
    """
    global _layout, _checked
    if not _checked:
        probe_seed = 0x1234_5678_9ABC
        generator = torch.Generator()
        generator.manual_seed(probe_seed)
        with outside_functorch():  # the first block may open under torch.func.grad
            data = generator.get_state().numpy().tobytes()
        ok = (
            len(data) == STATE_BYTES
            and struct.unpack_from("<QiiQ", data, 0) == (probe_seed, 1, 1, 0)
            and struct.unpack_from("<Q", data, KEY_AT)[0] == probe_seed & 0xFFFFFFFF
        )
        _layout = (data[8:KEY_AT], data[KEY_AT + 8 * KEY_WORDS :]) if ok else None
        _checked = True
        if not ok:
            views.warn_fallback(
                "torch's CPU generator",
                "its state layout is not the expected one; blocks seed it with manual_seed, "
                "which keeps 32 bits, so rare keys may share a torch stream",
            )
    return _layout


def state_bytes(state: torch.Tensor) -> bytes:
    """The bytes of a CPU state tensor (fresh and contiguous, as ``get_state`` returns it):
    copied from its data pointer when the switch is on, through NumPy when it is off.

    >>> state = torch.Generator().get_state()
    >>> state_bytes(state) == state.numpy().tobytes()
    True
    """
    with outside_functorch():
        if views.ENABLED:
            return ctypes.string_at(state.data_ptr(), state.numel())
        return state.numpy().tobytes()


# --- Reading a CPU generator's Mersenne Twister in place (the block ledger's record) ---------
# A torch.Generator object holds one pointer to its C++ CPUGeneratorImpl, whose mt19937 engine
# keeps the seed (u64), left (i32), seeded (bool), next (u32) and the 624 key words (u32), then
# the cached float and double normals (std::optional). get_state() copies all of it into a new
# 5056-byte tensor; the ledger needs 19 numbers of it. EngineView finds the engine by scanning
# for a probe's seed and is used only for a generator whose fields, read in place, rebuilt the
# bytes of its get_state() (checked on a probe in four states, and on the generator itself).

_ENGINE_HEAD = struct.Struct("<QiB3xIIII")  # seed, left, seeded, next, the first three words
_NORMALS = struct.Struct("<f?3xd?")  # the optional float, then the optional double
_NORMALS_AT = 24 + 4 * KEY_WORDS  # after the engine's key words (and its padding to 8 bytes)
_ENGINE_BYTES = _NORMALS_AT + _NORMALS.size
#: get_state()'s bytes around the key words: seed, left, seeded, next; normal_x, normal_y,
#: normal_rho, normal_is_valid, the float normal and whether it is valid.
_EXTRA = struct.Struct("<QiiQdddi4xf?3x")
_KEY_ID = struct.Struct("<II")
#: The engine's head and its normals as bytes, in one read (the key words between are skipped).
_RECORDED = struct.Struct(
    f"={_ENGINE_HEAD.size}s{_NORMALS_AT - _ENGINE_HEAD.size}x{_NORMALS.size}s"
)
_engine_at: list[int | None] = []  # where the engine sits in the generator's impl (found once)


def _impl_address(generator: torch.Generator) -> int:
    """The address of the C++ generator behind ``generator`` (the pointer after its header)."""
    return int(ctypes.c_void_p.from_address(id(generator) + object.__basicsize__).value or 0)


class EngineView:
    """A CPU ``torch.Generator``'s Mersenne Twister, read in place: the fields the block ledger
    records, without ``get_state()``. Made by :func:`engine_view`, which checks it first.

    >>> generator = torch.Generator()
    >>> view = engine_view(generator)
    >>> view is None or view.twister_fields() == twister_fields_of(generator.get_state())
    True
    >>> view is None or view.twister_fields() is view.twister_fields()  # the same bytes: kept
    True
    """

    def __init__(self, generator: torch.Generator, offset: int) -> None:
        self.generator = generator  # keeps the C++ object alive while the view is used
        self._view = views.memory_view(_impl_address(generator) + offset, _ENGINE_BYTES)
        # The last read's bytes and fields: the fields are a function of those bytes.
        self._last: tuple[tuple[bytes, bytes], tuple[bytes, int, bytes] | None] = ((b"", b""), None)

    def twister_fields(self) -> tuple[bytes, int, bytes]:
        """(The second and third key words as 8 bytes, the position in the key, the bytes of
        ``get_state()`` around the key words), as :func:`twister_fields_of` reads them.

        The block ledger reads them at every block exit: the engine's bytes that hold them are
        read in one piece and, when they are those of the last read (a block that drew what
        the last one drew), the last fields are returned (the same tuple).
        """
        recorded = _RECORDED.unpack_from(self._view)
        last = self._last
        if recorded == last[0] and last[1] is not None:
            return last[1]
        head, normals = recorded
        seed, left, seeded, following, _, first, second = _ENGINE_HEAD.unpack(head)
        single, has_single, double, has_double = _NORMALS.unpack(normals)
        extra = _EXTRA.pack(
            seed,
            left,
            seeded,
            following,
            0.0,
            double if has_double else 0.0,
            0.0,
            has_double,
            single if has_single else 0.0,
            has_single,
        )
        fields = _KEY_ID.pack(first, second), 625 - left, extra
        self._last = (recorded, fields)  # one assignment: never half of a pair
        return fields


def twister_fields_of(state: torch.Tensor) -> tuple[bytes, int, bytes]:
    """What :meth:`EngineView.twister_fields` returns, from a ``get_state()`` tensor (torch
    counts ``left`` down from 624 after a twist, 1 right after seeding)."""
    data = state_bytes(state)
    _, left, _, _, _, first, second = struct.unpack_from("<QiiQQQQ", data)
    return _KEY_ID.pack(first, second), 625 - left, data[:KEY_AT] + data[KEY_AT + 8 * KEY_WORDS :]


def _with_float_normal(state: torch.Tensor) -> torch.Tensor:
    """``state`` with a cached float normal (no draw caches one; set_state reads it)."""
    data = bytearray(state_bytes(state))
    struct.pack_into("<f?", data, STATE_BYTES - 8, 0.75, True)
    return torch.frombuffer(data, dtype=torch.uint8)


def _engine_offset() -> int | None:
    """Where the engine sits in a CPU generator's C++ object, found and checked on a probe in
    four states (seeded; drawn; a cached double normal; a cached float normal); None if not."""
    probe_seed = 0x1234_5678_9ABC
    probe = torch.Generator()
    probe.manual_seed(probe_seed)
    impl = ctypes.string_at(_impl_address(probe), 512)
    offset = impl.find(struct.pack("<QiB", probe_seed, 1, 1))
    if offset < 0:
        return None
    with outside_functorch():
        steps = (
            lambda: None,
            lambda: torch.rand(3, generator=probe),
            lambda: torch.randn(1, generator=probe),  # caches a double normal
            lambda: probe.set_state(_with_float_normal(probe.get_state())),
        )
        for step in steps:
            step()
            if EngineView(probe, offset).twister_fields() != twister_fields_of(probe.get_state()):
                return None
    return offset


def engine_view(generator: torch.Generator) -> EngineView | None:
    """A checked :class:`EngineView` of a CPU ``generator`` (a plain ``torch.Generator``); None
    when torch's layout is not the expected one (the ledger then reads ``get_state()``)."""
    if views.FREE_THREADED or type(generator) is not torch.Generator:
        return None
    if generator.device.type != "cpu" or cpu_layout() is None:
        return None
    if not _engine_at:
        _engine_at.append(_engine_offset())
        if _engine_at[0] is None:
            views.warn_fallback(
                "the block ledger's reading of torch's CPU generator",
                "its C++ layout is not the expected one; records read get_state()",
            )
    offset = _engine_at[0]
    if offset is None:
        return None
    view = EngineView(generator, offset)
    with outside_functorch():
        same = view.twister_fields() == twister_fields_of(generator.get_state())
    return view if same else None
