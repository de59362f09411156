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
