"""CPython's ``random.Random`` C state, viewed directly: the index, then the 624 key words.

``random.getstate``/``setstate`` build and parse a 625-item tuple (about 12 µs); copying the C
struct behind them costs about 0.3 µs. The layout is checked once on a private instance (never
the user's: a thread drawing from it would have its draw rolled back), with two different states
(a draw in between); the view is used only while ``random.random`` and ``random.getstate`` are
bound to a plain ``random.Random`` (checked at every use): a replaced instance
(``random._inst``) of a subclass, or functions bound to anything else, take the public calls.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

from reproducible_block._fast import views

__all__ = ["IMAGE_BYTES", "RandomImage", "image_of"]

KEY_WORDS = 624  # MT19937's key
#: CPython's RandomObject after the object header: int index, then uint32 state[624].
IMAGE_BYTES = 4 + 4 * KEY_WORDS


def image_of(state: tuple[Any, ...]) -> bytes:
    """The C struct bytes (index, then the key) that ``random.getstate()``'s state describes.

    >>> image_of(random.Random(1).getstate())[:4] == (624).to_bytes(4, "little")
    True
    """
    internal = state[1]
    return struct.pack(f"=i{KEY_WORDS}I", internal[KEY_WORDS], *internal[:KEY_WORDS])


def _layout_checked() -> bool:
    """Whether a ``random.Random``'s C state sits right after the object header, checked once."""
    if views.FREE_THREADED:
        return False
    probe = random.Random(0x5EED)
    view = views.memory_view(id(probe) + object.__basicsize__, IMAGE_BYTES)
    if bytes(view) != image_of(probe.getstate()):
        return False
    probe.random()
    return bytes(view) == image_of(probe.getstate())


def _managed() -> Any:
    """The object Python's ``random.*`` functions use: what ``random.getstate`` is bound to
    (``random._inst`` unless a library rebound the functions), if ``random.random`` is too."""
    instance = getattr(random.getstate, "__self__", None)
    return instance if getattr(random.random, "__self__", None) is instance else None


class RandomImage:
    """The view of the ``random.Random`` behind ``random``'s functions, while it may be used.

    >>> image = RandomImage()
    >>> view = image.view()
    >>> view is None or bytes(view) == image_of(random.getstate())
    True
    """

    def __init__(self) -> None:
        self._layout = _layout_checked()
        if not self._layout and not views.FREE_THREADED:
            views.warn_fallback("Python's random", "its C layout is not the expected one")
        # What the view points into, and the module's functions bound to it then: the view is
        # used only while random.random and random.getstate are still those.
        self.instance: Any = None
        self._random: Any = None
        self._getstate: Any = None
        self._view: memoryview | None = None
        self._attach()

    def _attach(self) -> None:
        """Point the view at the object ``random``'s functions use now, if it is a plain
        ``random.Random`` (a subclass may keep more state, or draw differently)."""
        instance = _managed()
        self.instance, self._random, self._getstate = instance, random.random, random.getstate
        if not self._layout or type(instance) is not random.Random:
            self._view = None
            return
        self._view = views.memory_view(id(instance) + object.__basicsize__, IMAGE_BYTES)

    def view(self) -> memoryview | None:
        """The view, if it may be used now (re-attached if the functions changed); None when
        the switch is off or the instance is not a plain ``random.Random``. Its Gaussian cache
        is ``self.instance.gauss_next``."""
        if not views.ENABLED:
            return None
        if (
            random.random is not self._random
            or random.getstate is not self._getstate
            or type(self.instance) is not random.Random  # __class__ assigned
        ):
            self._attach()
        return self._view

    def installer(self, fallback: Callable[[Any], None]) -> Callable[[Any], None]:
        """A function that copies a C image (``(image bytes, gauss_next)``) in through the view
        as it is now, with :meth:`view`'s checks inline; anything else, or any state once those
        checks fail, goes to ``fallback``. ``fallback`` itself if the view may not be used now.
        Made once per batch of per-sample blocks: one call per install, no lookups."""
        view = self.view()
        if view is None:
            return fallback
        instance, random_now, getstate = self.instance, self._random, self._getstate
        module, plain = random, random.Random

        def install(state: Any) -> None:
            image = state[0]
            if (
                type(image) is bytes
                and views.ENABLED
                and module.random is random_now
                and module.getstate is getstate
                and type(instance) is plain
            ):
                view[:] = image
                instance.gauss_next = state[1]  # type: ignore[attr-defined]
            else:
                fallback(state)

        return install
