"""The one switch of the fast paths (``_fast.views.ENABLED``), flipped for a test and put back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from reproducible_block._fast import views


@contextmanager
def fast_paths(enabled: bool) -> Iterator[None]:
    """Run the body with the fast paths on or off (what ``REPRODUCIBLE_BLOCK_FAST_PATHS=0``
    sets for a whole process), then put the switch back as it was."""
    saved = views.ENABLED
    views.ENABLED = enabled
    try:
        yield
    finally:
        views.ENABLED = saved
