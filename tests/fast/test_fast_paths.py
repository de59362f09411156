"""Fast paths copy C state directly; they must equal the public API, Gaussian caches included.

Python ``random`` and NumPy's global generator are copied from their C structs, and Mersenne
Twister keys are derived through a PCG64 whose state is written in place (``_fast``). Every test
of a copy runs with the fast paths on and off (the one switch, ``REPRODUCIBLE_BLOCK_FAST_PATHS``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reproducible_block import ReproducibleBlock, set_seed
from reproducible_block._blocks.states import CACHE_SIZE, cached_states, clear_cache
from reproducible_block._sources.numpy_random import NumpyGlobalSource
from reproducible_block._sources.python_random import PythonRandomSource
from reproducible_block._sources.registry import registry
from reproducible_block._streams import derivation as _derivation
from tests._fast_switch import fast_paths
from tests._spawn import run_python

FAST_SOURCES = (PythonRandomSource, NumpyGlobalSource)


@pytest.fixture(params=[True, False], ids=["fast", "public"])
def fast_path(request: pytest.FixtureRequest) -> Iterator[bool]:
    """The test twice: with the fast paths on, and with the public API only."""
    with fast_paths(bool(request.param)):
        yield bool(request.param)


def _full_state() -> tuple[Any, ...]:
    name, key, position, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    return (name, key.tolist(), position, has_gauss, gauss, random.getstate())


@pytest.mark.parametrize("kind", FAST_SOURCES)
def test_the_fast_paths_are_available_here(kind: type) -> None:
    (source,) = [source for source in registry.builtin() if isinstance(source, kind)]
    with fast_paths(True):
        saved = source.save()
        assert type(saved[0]) is bytes  # a C image, not the public state
        source.restore(saved)
    with fast_paths(False):
        assert type(source.save()[0]) is not bytes  # the public state


@pytest.mark.slow
def test_the_switch_is_read_from_the_environment() -> None:
    import subprocess
    import sys

    code = "from reproducible_block._fast import views; print(views.ENABLED)"
    for value, expected in (("0", "False"), ("1", "True"), ("", "True")):
        env = {**__import__("os").environ, "REPRODUCIBLE_BLOCK_FAST_PATHS": value}
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
        )
        assert result.stdout.strip() == expected, result.stderr


def test_the_fast_expansion_equals_the_public_one() -> None:
    for index in range(20):
        bits = index.to_bytes(16, "little")
        assert np.array_equal(
            _derivation.mt_words(bits)[1:], _derivation._public_expansion(bits).view("<u4")[1:]
        )


def test_streams_are_the_same_without_the_fast_paths() -> None:
    draws = []
    for enabled in (True, False):
        with fast_paths(enabled):
            clear_cache()
            expanded = _derivation._fast_expansion.outputs(bytes(16), _derivation.PCG_INCREMENT)
            assert (expanded is None) is not enabled
            set_seed(0)
            with ReproducibleBlock(("x", 1)):
                draws.append((random.random(), np.random.rand(), torch.rand(2)))
    clear_cache()
    fast, public = draws
    assert fast[:2] == public[:2]
    assert torch.equal(fast[2], public[2])


def test_the_fast_expansion_follows_a_changed_increment(monkeypatch: pytest.MonkeyPatch) -> None:
    bits = bytes(range(16))
    before = _derivation.mt_words(bits).copy()
    monkeypatch.setattr(_derivation, "PCG_INCREMENT", _derivation.PCG_INCREMENT + 2)
    changed = _derivation.mt_words(bits)
    with fast_paths(False):
        assert np.array_equal(_derivation.mt_words(bits), changed)
    assert not np.array_equal(before, changed)


@pytest.mark.parametrize("first", [True, False], ids=["fast-then-public", "public-then-fast"])
def test_a_caller_state_saved_by_one_path_is_restored_by_the_other(first: bool) -> None:
    set_seed(0)
    random.gauss(0, 1)
    np.random.randn()  # both leave a Gaussian cached
    expected = _full_state()
    with fast_paths(first):
        block = ReproducibleBlock("switch")
        block.__enter__()
    with fast_paths(not first):  # the switch flips while the block is open
        np.random.randn()
        random.gauss(0, 1)
        block.__exit__(None, None, None)
    assert _full_state() == expected


@pytest.mark.parametrize("before", [0, 1, 2, 3])
@pytest.mark.parametrize("inside", [0, 1, 2])
def test_full_state_after_a_block_equals_the_state_without_it(
    fast_path: bool, before: int, inside: int
) -> None:
    set_seed(0)
    np.random.randn(before)
    expected = _full_state()
    with ReproducibleBlock("g"):
        np.random.randn(inside)
        np.random.rand(inside)
    assert _full_state() == expected


@pytest.mark.parametrize("before", [0, 1])
def test_block_starts_without_the_callers_gaussian(fast_path: bool, before: int) -> None:
    set_seed(0)
    with ReproducibleBlock("g"):
        first = np.random.randn(3).tolist()
    set_seed(0)
    np.random.randn(before)
    with ReproducibleBlock("g"):
        assert np.random.randn(3).tolist() == first


def test_generator_keeps_its_own_cached_gaussian_across_yields(fast_path: bool) -> None:
    @ReproducibleBlock("gen")
    def normals() -> Iterator[tuple[float, float]]:
        for _ in range(4):
            # Odd counts: a Gaussian stays cached between resumes.
            yield float(np.random.randn()), random.gauss(0, 1)

    set_seed(0)
    with ReproducibleBlock("gen"):
        expected = [(float(np.random.randn()), random.gauss(0, 1)) for _ in range(4)]
    np.random.randn(1)
    random.gauss(0, 1)
    outside = _full_state()
    got = []
    for value in normals():
        got.append(value)
        assert _full_state() == outside  # the caller's Gaussian is back between resumes
    assert got == expected


# A program: a list of operations, each a draw or a block around more operations.
operations = st.recursive(
    st.one_of(
        st.tuples(st.just("randn"), st.integers(0, 3)),
        st.tuples(st.just("rand"), st.integers(0, 3)),
        st.tuples(st.just("gauss"), st.integers(0, 3)),
    ),
    lambda children: st.tuples(st.just("block"), st.integers(0, 3), st.lists(children, max_size=4)),
    max_leaves=12,
)


def _run(program: list[Any], out: list[Any]) -> None:
    for operation in program:
        if operation[0] == "block":
            with ReproducibleBlock(operation[1]):
                _run(operation[2], out)
        elif operation[0] == "randn":
            out.append(np.random.randn(operation[1]).tolist())
        elif operation[0] == "gauss":
            out.append([random.gauss(0, 1) for _ in range(operation[1])])
        else:
            out.append(np.random.rand(operation[1]).tolist())


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(st.lists(operations, max_size=6))
def test_fast_and_public_paths_give_the_same_draws_and_states(program: list[Any]) -> None:
    results = []
    for fast in (True, False):
        with fast_paths(fast):
            set_seed(0)
            out: list[Any] = []
            _run(program, out)
            results.append((out, _full_state()))
    assert results[0] == results[1]


def test_derived_state_cache_stays_bounded() -> None:
    set_seed(0)
    for index in range(CACHE_SIZE * 3):
        with ReproducibleBlock(("sample", index)):
            pass
    assert cached_states() <= CACHE_SIZE
    clear_cache()
    assert cached_states() == 0
    with ReproducibleBlock(("sample", 0)):  # recomputed on demand, the same stream
        pass
    assert cached_states() == 1


# The objects the public functions use can be replaced: a fast path must follow them or step
# aside, every time it is used (issue 21).


def _rebind_random_module(monkeypatch: pytest.MonkeyPatch, instance: random.Random) -> None:
    """Install ``instance`` as patching libraries do: ``random._inst`` and every module function
    bound to the old instance, rebound to it (monkeypatch puts them back)."""
    old = random._inst  # type: ignore[attr-defined]
    monkeypatch.setattr(random, "_inst", instance)
    for name in dir(random):
        value = getattr(random, name)
        if getattr(value, "__self__", None) is old:
            monkeypatch.setattr(random, name, getattr(instance, name))


class _SubclassedRandom(random.Random):
    """A user's subclass of ``random.Random`` (its C state is the base class's)."""


@pytest.mark.parametrize("kind", [random.Random, _SubclassedRandom])
def test_blocks_manage_the_random_instance_the_module_functions_were_rebound_to(
    monkeypatch: pytest.MonkeyPatch, kind: type[random.Random]
) -> None:
    set_seed(0)
    with ReproducibleBlock("first"):
        pass  # the built-in sources exist before the instance is replaced
    _rebind_random_module(monkeypatch, kind(5))
    expected_outside = random.Random(5)
    with ReproducibleBlock("rebound"):
        first = [random.random() for _ in range(3)]
    with ReproducibleBlock("rebound"):
        again = [random.random() for _ in range(3)]
    assert first == again
    assert random.random() == expected_outside.random()  # the caller's stream did not move


_SUBCLASS_BEFORE_FIRST_BLOCK = """
import random, sys
import reproducible_block as rb

class Mine(random.Random):
    pass

random._inst = Mine(5)  # replaced before the first block; the module functions not rebound
rb.set_seed(0)
expected_outside = random.getstate()
with rb.ReproducibleBlock("k"):
    first = [random.random() for _ in range(3)]
with rb.ReproducibleBlock("k"):
    again = [random.random() for _ in range(3)]
assert first == again, (first, again)
assert random.getstate() == expected_outside
print("ok")
"""


@pytest.mark.slow
def test_a_random_instance_replaced_before_the_first_block_does_not_mislead_the_fast_path() -> None:
    result = run_python(_SUBCLASS_BEFORE_FIRST_BLOCK)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


_FIRST_BLOCK_PROBE = """
import random
import reproducible_block as rb

calls = []

class Recording(random.Random):
    def random(self):
        calls.append("random")
        return super().random()

instance = Recording(5)
old = random._inst
random._inst = instance
for name in dir(random):
    if getattr(getattr(random, name), "__self__", None) is old:
        setattr(random, name, getattr(instance, name))
rb.set_seed(0)  # the first use of the process: the built-in sources check their layouts
with rb.ReproducibleBlock("first"):
    pass
assert calls == [], calls  # nothing drew from the user's object behind their back
print("ok")
"""


@pytest.mark.slow
def test_the_first_block_never_draws_from_the_users_random_instance() -> None:
    # The layout probe drew from the live object and rolled it back: a thread drawing from it at
    # that moment had its draw undone.
    result = run_python(_FIRST_BLOCK_PROBE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.fixture
def pcg64_legacy_global() -> Iterator[None]:
    """NumPy's legacy global over a PCG64 (``np.random.set_bit_generator``), put back after."""
    original = np.random.get_bit_generator()
    np.random.set_bit_generator(np.random.PCG64(7))
    try:
        yield
    finally:
        np.random.set_bit_generator(original)


def test_blocks_manage_a_legacy_global_over_another_bit_generator(
    pcg64_legacy_global: None, fast_path: bool
) -> None:
    set_seed(0)
    np.random.randn()  # a Gaussian cached by the caller
    expected = np.random.get_state(legacy=False)
    with ReproducibleBlock("pcg"):
        first = np.random.randn(3).tolist()
    assert np.random.get_state(legacy=False) == expected  # the caller's state came back
    np.random.rand(5)
    with ReproducibleBlock("pcg"):
        again = np.random.randn(3).tolist()
    assert first == again
    assert type(np.random.get_bit_generator()) is np.random.PCG64  # the same kind, kept
    with ReproducibleBlock("other"):
        assert np.random.randn(3).tolist() != first


def test_set_seed_and_checkpoints_work_with_a_legacy_global_over_pcg64(
    pcg64_legacy_global: None,
) -> None:
    from reproducible_block import get_rng_state, load_rng_state

    set_seed(3)
    first = np.random.rand(2).tolist()
    set_seed(3)
    assert np.random.rand(2).tolist() == first
    np.random.randn()
    saved = get_rng_state()
    expected = np.random.randn(4).tolist()
    load_rng_state(saved)
    assert np.random.randn(4).tolist() == expected


def test_blocks_manage_the_random_state_numpys_functions_were_rebound_to(
    monkeypatch: pytest.MonkeyPatch, fast_path: bool
) -> None:
    set_seed(0)
    with ReproducibleBlock("first"):
        pass  # the built-in sources exist before the global is replaced
    old, new = np.random.mtrand._rand, np.random.RandomState(5)
    monkeypatch.setattr(np.random.mtrand, "_rand", new)
    for name in dir(np.random):
        if getattr(getattr(np.random, name), "__self__", None) is old:
            monkeypatch.setattr(np.random, name, getattr(new, name))
    expected_outside = np.random.RandomState(5)
    with ReproducibleBlock("rebound"):
        first = np.random.randn(3).tolist()
    with ReproducibleBlock("rebound"):
        again = np.random.randn(3).tolist()
    assert first == again
    assert np.random.rand() == expected_outside.rand()  # the caller's stream did not move


def _builtin(name: str) -> Any:
    """The live built-in source ``name`` (the one blocks use)."""
    return next(source for source in registry.select(None).sources if source.name == name)


@pytest.mark.parametrize("name", ["random", "numpy"])
def test_an_installer_puts_in_what_restore_puts_in(name: str, fast_path: bool) -> None:
    # A batch of per-sample blocks installs each sample's states with the sources' installers.
    source = _builtin(name)
    set_seed(0)
    np.random.randn()  # Gaussians cached by the caller, which a derived state drops
    random.gauss(0, 1)
    derived = source.from_bits(bytes(range(16)))
    saved = source.save()
    source.restore(derived)
    expected = _full_state()
    source.restore(saved)
    install = source.installer()
    install(derived)
    assert _full_state() == expected
    install(saved)  # a caller's saved state goes back in the same way
    source.restore(derived)
    source.restore(saved)
    after_restore = _full_state()
    install(derived)
    install(saved)
    assert _full_state() == after_restore


def test_an_installer_follows_random_functions_rebound_after_it_was_made(
    monkeypatch: pytest.MonkeyPatch, fast_path: bool
) -> None:
    source = _builtin("random")
    set_seed(0)
    install = source.installer()  # made for the instance behind the functions now
    _rebind_random_module(monkeypatch, random.Random(5))
    derived = source.from_bits(bytes(range(16)))
    install(derived)  # must reach the instance the functions draw from now
    first = [random.random() for _ in range(3)]
    source.restore(derived)
    assert [random.random() for _ in range(3)] == first


def test_an_installer_follows_numpys_bit_generator_swapped_after_it_was_made(
    fast_path: bool,
) -> None:
    source = _builtin("numpy")
    set_seed(0)
    install = source.installer()  # made for the MT19937 behind the global now
    original = np.random.get_bit_generator()
    np.random.set_bit_generator(np.random.PCG64(7))
    try:
        derived = source.from_bits(bytes(range(16)))
        install(derived)  # must reach the PCG64 the global draws from now
        first = np.random.rand(3).tolist()
        source.restore(derived)
        assert np.random.rand(3).tolist() == first
    finally:
        np.random.set_bit_generator(original)


# Each fast path checks its layout against the public API and steps aside, warning once, when
# the check fails (a CPython, NumPy or torch laid out otherwise): simulated here by a view of
# zeros where the C state should be.


@pytest.fixture
def wrong_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every memory view reads zeros, as on an interpreter whose layout differs; the fallback
    warnings are not yet given in this process."""
    from reproducible_block._fast import views
    from reproducible_block._support import warnings as _warnings

    monkeypatch.setattr(views, "memory_view", lambda address, size: memoryview(bytearray(size)))
    monkeypatch.setattr(_warnings, "_warned", {})


def test_python_random_steps_aside_when_its_layout_differs(wrong_layout: None) -> None:
    from reproducible_block._fast.cpython_random import RandomImage

    with pytest.warns(RuntimeWarning, match="fast path for Python's random is off"):
        image = RandomImage()
    assert image.view() is None


def test_numpy_steps_aside_when_its_layout_differs(wrong_layout: None) -> None:
    from reproducible_block._fast.numpy_legacy import LegacyViews

    with pytest.warns(RuntimeWarning, match="fast path for NumPy's global generator is off"):
        legacy = LegacyViews()
    assert legacy.save() is None


def test_numpy_steps_aside_when_its_bit_generators_state_is_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reproducible_block._fast import views
    from reproducible_block._fast.numpy_legacy import LegacyViews

    legacy = LegacyViews()  # the Gaussian found where expected
    monkeypatch.setattr(views, "memory_view", lambda address, size: memoryview(bytearray(size)))
    assert not legacy._attach()  # the MT19937 state does not read as the public one
    assert not legacy.usable()


def test_the_expansion_steps_aside_when_pcg64s_layout_differs(wrong_layout: None) -> None:
    from reproducible_block._fast.pcg64 import InPlaceExpansion

    expansion = InPlaceExpansion(4, lambda bits: np.ones(4, dtype=np.uint64))
    with fast_paths(True):
        with pytest.warns(RuntimeWarning, match="deriving Mersenne Twister keys"):
            assert expansion.outputs(bytes(16), 1) is None
        assert expansion.outputs(bytes(16), 1) is None  # checked once: off from then on


def test_torch_cpu_states_fall_back_to_manual_seed_when_the_layout_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from reproducible_block._fast import torch_cpu
    from reproducible_block._sources.torch_random import torch_cpu_state
    from reproducible_block._support import warnings as _warnings

    monkeypatch.setattr(_warnings, "_warned", {})
    monkeypatch.setattr(torch_cpu, "_checked", False)  # put back with _layout afterwards
    monkeypatch.setattr(torch_cpu, "_layout", None)
    monkeypatch.setattr(torch_cpu, "STATE_BYTES", 1)  # no state is that long
    with pytest.warns(RuntimeWarning, match="blocks seed it with manual_seed"):
        state = torch_cpu_state(bytes(range(16)))
    expected = torch.Generator()
    expected.manual_seed(int.from_bytes(bytes(range(8)), "little"))
    assert torch.equal(state, expected.get_state())


def test_a_fork_waits_for_a_switch_then_goes_ahead_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import threading

    from reproducible_block._fast import views

    monkeypatch.setattr(views, "FORK_WAIT", 0.01)
    held, done = threading.Event(), threading.Event()

    def switch_that_never_ends() -> None:
        with views.switching:
            held.set()
            done.wait(30)

    thread = threading.Thread(target=switch_that_never_ends)
    thread.start()
    try:
        held.wait(30)
        with caplog.at_level("WARNING", logger="reproducible_block"):
            views._before_fork()
            views._after_fork_in_parent()  # held nothing: releases nothing
        assert "went ahead after waiting" in caplog.text
    finally:
        done.set()
        thread.join()


def test_a_forked_child_gets_a_fresh_switching_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    from reproducible_block._fast import views

    parents = views.switching
    monkeypatch.setattr(views, "switching", parents)  # put back afterwards
    views._before_fork()  # the parent holds it across the fork
    try:
        views._after_fork_in_child()
        assert views.switching is not parents
        assert not views._held_for_fork
    finally:
        monkeypatch.undo()
        parents.release()  # what the parent's after-fork handler does
