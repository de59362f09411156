"""A user-defined generator kind whose state is whatever a test puts in it (all defaults)."""

from __future__ import annotations

from typing import Any

from reproducible_block import GeneratorSource


class PlainSource(GeneratorSource[Any]):
    """Keeps the defaults of GeneratorSource: its state is plain data, or is not."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def get_state(self) -> Any:
        return self.state

    def set_state(self, state: Any) -> None:
        self.state = state

    def from_bits(self, bits: bytes) -> Any:
        return {"seed": int.from_bytes(bits[:8], "little"), "words": [bits[8], bits[9]]}
