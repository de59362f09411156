"""Helpers for your own test suite: leave every random generator as the test found it.

Tests that call ``set_seed``, draw from the global generators, register generators, turn on
deterministic mode or change the block wait limit change process-wide state that leaks into the
next test. :func:`isolated_random_state` saves all of it and puts it back on exit (exceptions
included); the ``restore_random_state`` pytest fixture does the same around a test. To apply it
to every test, add to your ``conftest.py``::

    import pytest
    from reproducible_block.testing import isolated_random_state

    @pytest.fixture(autouse=True)
    def _random_state():
        with isolated_random_state():
            yield
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from reproducible_block._blocks import atomic as _atomic
from reproducible_block._blocks import repetition as _repetition
from reproducible_block._blocks import stack as _stack
from reproducible_block._sources.registry import registry
from reproducible_block._streams import root as _root
from reproducible_block._streams.root import SEED_ENVIRONMENT_VARIABLE
from reproducible_block._support.deterministic import DeterministicSettings

__all__ = ["isolated_random_state"]


@contextmanager
def isolated_random_state() -> Iterator[None]:
    """Save every managed generator, the root, the registrations, the deterministic settings,
    the exported seed, the block wait limit and the record of keys entered (what
    :class:`~reproducible_block.RepetitionWarning` reads); restore them all on exit.

    Generators are saved in their portable form (as checkpoints do). Generators registered
    inside the section are unregistered on exit; those unregistered inside come back.

    >>> import torch
    >>> from reproducible_block import set_seed
    >>> from reproducible_block.testing import isolated_random_state
    >>> before = torch.get_rng_state()
    >>> with isolated_random_state():
    ...     _ = set_seed(123)
    ...     _ = torch.rand(10)
    >>> torch.equal(torch.get_rng_state(), before)
    True
    """
    with _stack.held("isolated_random_state()"):
        registered = registry.registered()
        sources = registry.active()
        states = [source.get_state() for source in sources]
        root = _root.peek_seed()
        torch_seed = _root.torch_seed
        own_export = _root.exported
        entered = _repetition.snapshot()
    settings = DeterministicSettings.current()
    exported = os.environ.get(SEED_ENVIRONMENT_VARIABLE)
    wait = _stack.get_block_wait_timeout()
    try:
        yield
    finally:
        # Everything is put back even if one source fails; then the first failure is raised.
        failure: BaseException | None = None
        with _stack.held("isolated_random_state()"):
            registry.restore_registered(registered)
            try:  # every source is tried (restore_all), not all or nothing: a test's leftovers
                _atomic.restore_all(sources, states, _atomic.install_portable)
            except BaseException as error:
                failure = error
            _root.replace_seed(root)
            _root.torch_seed = torch_seed
            _root.exported = own_export
            _repetition.restore(entered)
        settings.apply()
        if exported is None:
            os.environ.pop(SEED_ENVIRONMENT_VARIABLE, None)
        else:
            os.environ[SEED_ENVIRONMENT_VARIABLE] = exported
        _stack.set_block_wait_timeout(wait)
        if failure is not None:
            raise failure


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pass
else:

    @pytest.fixture
    def restore_random_state() -> Iterator[None]:
        """A pytest fixture: the test runs inside :func:`isolated_random_state`.

        Import it into a ``conftest.py`` (``from reproducible_block.testing import
        restore_random_state``) and request it, or mark tests with
        ``pytest.mark.usefixtures("restore_random_state")``.
        """
        with isolated_random_state():
            yield

    __all__ += ["restore_random_state"]
