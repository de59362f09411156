"""What a block ledger's record says of the generators: the text of its ``"state"`` object.

The ``"state"`` object of a record holds one entry per source: ``["fp"]`` for any source, or
``["fp",position,"key digest"]`` for a Mersenne Twister, whose position counts the 32-bit words
used from the current key (624: all of them, the next draw twists). ``_ledger`` writes it at
every block exit; ``_read`` reads it back and ``_pairing`` compares it.
"""

from __future__ import annotations

import json
from typing import Any
from zlib import crc32

from reproducible_block._sources import GeneratorSource
from reproducible_block._support.fingerprint import fingerprint

__all__ = ["StateReader", "reader_for"]


class StateReader:
    """The text of a record's ``"state"`` object for one selection of sources (a block's sources
    are one tuple per selection), read at a block's exit.

    Each Mersenne Twister gives its recorded fields through its bound ``twister_now`` (read in
    place by the built-in ones); any other kind of generator, the fingerprint of its state, read
    whole. The text is a function of what was read, so the reader keeps the last reading and its
    text: a block that leaves its generators where the last one did (a repeated key that drew as
    much) costs the reads and one comparison, not the formatting.

    >>> from reproducible_block._sources.registry import registry
    >>> reader = StateReader(tuple(registry.active()))
    >>> reader.text() is reader.text()  # nothing drew in between: the same text, made once
    True
    >>> reader.text().startswith('"random":["')
    True
    """

    __slots__ = ("_last", "_names", "_reads", "sources")

    def __init__(self, sources: tuple[GeneratorSource[Any], ...]) -> None:
        self.sources = sources  # held, so that its id is not reused while this is cached
        self._names = tuple(json.dumps(source.name) + ":" for source in sources)
        self._reads = tuple(
            (source.twister_now if source.mersenne_twister else _no_twister, source)
            for source in sources
        )
        self._last: tuple[list[tuple[bytes, int, bytes] | str], str] = ([], "")

    def text(self) -> str:
        """The entries, comma-separated (without the braces)."""
        now: list[tuple[bytes, int, bytes] | str] = []
        for read, source in self._reads:  # a loop: no comprehension's frame on this hot path
            twister = read()
            # Not a Mersenne Twister now (or none): the fingerprint of its state, as text.
            now.append(fingerprint(source.get_state()) if twister is None else twister)
        last = self._last
        if now == last[0]:
            return last[1]
        parts = []
        for name, item in zip(self._names, now, strict=True):
            if isinstance(item, str):
                parts.append(f'{name}["{item}"]')
            else:
                key_id, position, rest = item
                parts.append(f'{name}["{crc32(rest):08x}",{position},"{key_id.hex()}"]')
        text = ",".join(parts)
        self._last = (now, text)  # one assignment: a reader never sees half of a pair
        return text


def _no_twister() -> None:
    """The ``twister_now`` of a source that is no Mersenne Twister: its state is read whole."""


#: Each block selection's reader, by the identity of its sources tuple. Sources need not be
#: hashable (a user's dataclass source with eq=True is not); a reader holds its tuple, so the id
#: is not reused while it is cached.
_reader_cache: dict[int, StateReader] = {}


def reader_for(sources: tuple[GeneratorSource[Any], ...]) -> StateReader:
    """The :class:`StateReader` of a selection of sources (made once per selection)."""
    reader = _reader_cache.get(id(sources))
    if reader is not None and reader.sources is sources:
        return reader
    reader = StateReader(sources)
    if len(_reader_cache) >= 64:
        _reader_cache.clear()
    _reader_cache[id(sources)] = reader
    return reader
